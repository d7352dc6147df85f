"""Encode train/val/test files into a cached, reconciled Parquet dataset.

``encode_dataset`` parses each split once, in chunks of ``chunk_rows`` input lines (each chunk validated and
written to a staged Parquet part, so peak memory is bounded by the chunk, not the file), fits the vocabularies
on the training split's good rows only (per-field streaming group-bys over the staged parts), encodes part by
part and writes per split

* ``<split>.parquet``: encoded rows (``label``, ``idx_*``, ``val_*``, ``seq_*``, ``group``, passthrough),
* ``rejects_<split>.csv``: ``line, reason, raw`` for every row that could not be parsed,

plus ``vocab.json`` (the fitted encoder, needed again at serving time) and ``report.json`` (per split: rows
read / written / rejected, rejects by reason, OOV and missing counts per field). ``read == written + rejected``
is checked before the report is written. All files are written to a temporary name then ``os.replace``d.
A second call with the same sources and schema returns the cached report at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import polars as pl
from rich.console import Console

from linmix.apps.ctr.encoder import MISSING, OOV, FeatureEncoder
from linmix.apps.ctr.readers import EmptyFileError, check_file, iter_source_chunks
from linmix.apps.ctr.schema import DataSchema

SPLITS = ("train", "val", "test")


def fingerprint(sources: dict[str, Path], schema: DataSchema, extra: str = "") -> str:
    h = hashlib.sha256(json.dumps(schema.to_dict(), sort_keys=True).encode() + extra.encode())
    for split in sorted(sources):
        p = Path(sources[split])
        st = p.stat()
        h.update(f"{split}:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _reason_kinds(reasons: pl.Series) -> dict[str, int]:
    """Group reasons by kind (values masked, field names kept): "label '…' is not 0/1" counts all bad labels."""
    kinds = (reasons.str.replace_all(r"'[^']*'", "'…'").str.replace_all(r"value -?[\d.eE+-]+", "value …")
             .str.replace_all(r"found \d+", "found N"))
    vc = kinds.value_counts(sort=True)
    return {str(k): int(c) for k, c in vc.iter_rows()}


LIBFM_CONVENTION = ("positional: the k-th idx:val pair of a line is field k and its idx is that field's token "
                    "(as Frappe and MovieLens ship); lines with another number of pairs are rejected")


def encode_dataset(sources: dict[str, str | Path], schema: DataSchema, out_dir: str | Path,
                   force: bool = False, console: Optional[Console] = None,
                   encoder: Optional[FeatureEncoder] = None, chunk_rows: int = 50_000) -> dict:
    """Encode ``sources`` ({"train": path, "val": path, "test": path}) into ``out_dir``; return the report.

    With a fitted ``encoder`` (e.g. to score a new file), nothing is refitted and no train split is needed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = {k: Path(v) for k, v in sources.items()}
    if "train" not in srcs and encoder is None:
        raise ValueError("encode_dataset needs a 'train' source to fit the vocabularies on")
    for p in srcs.values():
        check_file(p)
    fp = fingerprint(srcs, schema, json.dumps(encoder.to_dict(), sort_keys=True) if encoder else "")
    rep_path = out / "report.json"
    if not force and rep_path.is_file():
        rep = json.loads(rep_path.read_text())
        if rep.get("fingerprint") == fp and all((out / f"{s}.parquet").is_file() for s in srcs):
            return rep
    con = console or Console(stderr=True, quiet=True)
    staged: dict[str, list[Path]] = {}
    stage = out / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        for split, p in srcs.items():
            (stage / split).mkdir(parents=True)
            staged[split] = []
            with con.status(f"[ctr] parsing {split} ({p.name})"):
                for i, lf in enumerate(iter_source_chunks(p, schema, chunk_rows)):
                    part = stage / split / f"part-{i:05d}.parquet"
                    lf.with_columns(pl.when(pl.col("_reason").is_null()).then(None).otherwise(pl.col("_raw"))
                                    .alias("_raw")).collect().write_parquet(part)
                    staged[split].append(part)
            n = pl.scan_parquet(staged[split]).select(pl.len()).collect().item() if staged[split] else 0
            if n == 0:
                raise EmptyFileError(f"input file {p} has no data rows (header only or empty)")
        enc = encoder
        if enc is None:
            with con.status("[ctr] fitting vocabularies on train"):
                good_train = pl.scan_parquet(staged["train"]).filter(pl.col("_reason").is_null())
                enc = FeatureEncoder(schema).fit(good_train)
        report = {"fingerprint": fp, "schema": schema.to_dict(), "field_sizes": enc.field_sizes,
                  **({"libfm_convention": LIBFM_CONVENTION} if schema.format == "libfm" else {}),
                  "seq_sizes": enc.seq_sizes, "seq_len": enc.seq_len, "splits": {}}
        for split, p in srcs.items():
            with con.status(f"[ctr] encoding {split}"):
                v = pl.scan_parquet(staged[split])
                rej = v.filter(pl.col("_reason").is_not_null()).select(
                    pl.col("_line").alias("line"), pl.col("_reason").alias("reason"), pl.col("_raw").alias("raw"))
                rtmp = out / f".rejects_{split}.csv.tmp"
                rej.sink_csv(rtmp, engine="streaming")
                os.replace(rtmp, out / f"rejects_{split}.csv")
                parts = []
                for part in staged[split]:  # encode part by part (bounded memory), then one streamed concat
                    ep = part.with_name(f"enc-{part.name}")
                    enc.transform(pl.scan_parquet(part).filter(pl.col("_reason").is_null())).collect() \
                        .write_parquet(ep)
                    parts.append(ep)
                etmp = out / f".{split}.parquet.tmp"
                pl.scan_parquet(parts).sink_parquet(etmp, engine="streaming")
                os.replace(etmp, out / f"{split}.parquet")
                read = v.select(pl.len()).collect().item()
                reasons = v.filter(pl.col("_reason").is_not_null()).select("_reason").collect()["_reason"]
                encoded = pl.scan_parquet(out / f"{split}.parquet")
                written = encoded.select(pl.len()).collect().item()
                names = [f.name for f in schema.scalar_fields]
                cnt = encoded.select([(pl.col(f"idx_{c}") == OOV).sum().alias(f"oov_{c}") for c in names]
                                     + [(pl.col(f"idx_{c}") == MISSING).sum().alias(f"mis_{c}") for c in names]
                                     ).collect().row(0, named=True) if names else {}
                rs = {"source": str(p), "read": read, "written": written, "rejected": reasons.len(),
                      "rejects_file": str(out / f"rejects_{split}.csv"), "rejects_by_reason": _reason_kinds(reasons),
                      "oov": {c: int(cnt[f"oov_{c}"]) for c in names},
                      "missing": {c: int(cnt[f"mis_{c}"]) for c in names}}
                rs["oov_total"] = sum(rs["oov"].values())
                if rs["read"] != rs["written"] + rs["rejected"]:
                    raise RuntimeError(f"{split}: counts do not reconcile: read {read} != written {written} + "
                                       f"rejected {rs['rejected']}")
                report["splits"][split] = rs
                if written == 0:
                    top = "; ".join(f"{n:,} x {r}" for r, n in list(rs["rejects_by_reason"].items())[:3])
                    raise EmptyFileError(f"{split}: all {read:,} rows of {p} were rejected ({top}); each row and its "
                                         f"reason is in {out / f'rejects_{split}.csv'}")
                con.log(f"[ctr] {split}: read {read:,} written {written:,} rejected {rs['rejected']:,} "
                        f"oov {rs['oov_total']:,}")
        enc.save(out / "vocab.json")
        _atomic_json(rep_path, report)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return report

"""Encode train/val/test files into a cached, reconciled Parquet dataset.

``encode_dataset`` parses each split once, in chunks of ``chunk_rows`` input lines (each chunk validated and
written to a staged Parquet part, so peak memory is bounded by the chunk, not the file), fits the vocabularies
on the training split's good rows only (per-field streaming group-bys over the staged parts), encodes part by
part and writes per split

* ``<split>.parquet/``: encoded rows (``label``, ``idx_*``, ``val_*``, ``seq_*``, ``group``, passthrough) as
  Parquet shards with bounded row groups, and ``<split>.manifest.json`` (:mod:`linmix.apps.ctr.shards`),
* ``rejects_<split>.csv``: ``line, reason, raw`` for every row that could not be parsed,

plus ``vocab.json`` (the fitted encoder, needed again at serving time) and ``report.json`` (per split: rows
read / written / rejected, rejects by reason, OOV and missing counts per field). ``read == written + rejected``
is checked before the report is written. All files are written to a temporary name then ``os.replace``d.
A second call with the same sources and schema returns the cached report at once.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import polars as pl
from rich.console import Console

from linmix.apps.ctr.encoder import MISSING, OOV, FeatureEncoder, merge_counts
from linmix.apps.ctr.readers import EmptyFileError, MissingInputError, check_file, iter_source_chunks
from linmix.apps.ctr.schema import DataSchema
from linmix.apps.ctr.shards import ROW_GROUP_ROWS, manifest_path, publish_split, split_folder

SPLITS = ("train", "val", "test")


def source_list(src) -> list[Path]:
    """One path, a glob pattern, or a list of either -> the files, in sorted order per pattern."""
    items = src if isinstance(src, (list, tuple)) else [src]
    out: list[Path] = []
    for it in items:
        s = str(it)
        if any(ch in s for ch in "*?[") and not Path(s).exists():
            hits = sorted(glob.glob(s))
            if not hits:
                raise MissingInputError(f"no input file matches {s}")
            out += [Path(h) for h in hits]
        else:
            out.append(Path(s))
    return out


def fingerprint(sources: dict[str, list[Path]], schema: DataSchema, extra: str = "") -> str:
    h = hashlib.sha256(json.dumps(schema.to_dict(), sort_keys=True).encode() + extra.encode())
    for split in sorted(sources):
        for p in sources[split]:
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


def _parse_file(path: Path, schema_dict: dict, folder: Path, prefix: str, chunk_rows: int,
                count: bool) -> tuple[list[Path], dict]:
    """Parse one input file into staged parts ``<prefix>-NNNNN.parquet`` (validated rows, rejects kept); with
    ``count`` also the token counts and columns of its good rows (a process-pool task)."""
    schema = DataSchema.from_dict(schema_dict)
    parts = []
    for i, lf in enumerate(iter_source_chunks(path, schema, chunk_rows)):
        part = folder / f"{prefix}-{i:05d}.parquet"
        lf.with_columns(pl.when(pl.col("_reason").is_null()).then(None).otherwise(pl.col("_raw"))
                        .alias("_raw")).collect().write_parquet(part)
        parts.append(part)
    if not count or not parts:
        return parts, {}
    good = pl.scan_parquet(parts).filter(pl.col("_reason").is_null())
    return parts, FeatureEncoder(schema).count_tokens(good)


def _encode_part(part: Path, vocab: Path, out: Path, row_group_rows: int) -> Path:
    """Encode one staged part's good rows into ``out`` (row groups of at most ``row_group_rows``)."""
    enc = FeatureEncoder.load(vocab)
    enc.transform(pl.scan_parquet(part).filter(pl.col("_reason").is_null())).collect() \
        .write_parquet(out, row_group_size=row_group_rows)
    return out


def _run(fn, tasks: list[tuple], pool) -> list:
    """``[fn(*t) for t in tasks]``, in the process ``pool`` when there is one (results in task order)."""
    if pool is None or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    return list(pool.map(fn, *zip(*tasks)))


def _pool(workers: int, n_tasks: int):
    """A pool of ``workers`` spawned processes (polars is not fork-safe), or None for one."""
    if workers <= 1 or n_tasks <= 1:
        return contextlib.nullcontext()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=min(workers, n_tasks), mp_context=mp.get_context("spawn"))


def encode_dataset(sources: dict[str, str | Path | list], schema: DataSchema, out_dir: str | Path,
                   force: bool = False, console: Optional[Console] = None,
                   encoder: Optional[FeatureEncoder] = None, chunk_rows: int = 50_000, workers: int = 1,
                   row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """Encode ``sources`` ({"train": path, "val": path, "test": path}; a path may be a glob or a list of files)
    into ``out_dir``; return the report.

    Input files are parsed (and the training files' tokens counted) in ``workers`` processes, the counts summed
    exactly and thresholded once, and staged parts encoded in parallel too: the result is the same for any
    ``workers``. Each staged part becomes one shard of ``<split>.parquet/`` (:mod:`linmix.apps.ctr.shards`).
    With a fitted ``encoder`` (e.g. to score a new file), nothing is refitted and no train split is needed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = {k: source_list(v) for k, v in sources.items()}
    if "train" not in srcs and encoder is None:
        raise ValueError("encode_dataset needs a 'train' source to fit the vocabularies on")
    for ps in srcs.values():
        for p in ps:
            check_file(p)
    fp = fingerprint(srcs, schema, json.dumps(encoder.to_dict(), sort_keys=True) if encoder else "")
    rep_path = out / "report.json"
    if not force and rep_path.is_file():
        rep = json.loads(rep_path.read_text())
        if rep.get("fingerprint") == fp and all(manifest_path(out, s).is_file() for s in srcs):
            return rep
    con = console or Console(stderr=True, quiet=True)
    staged: dict[str, list[Path]] = {}
    stage = out / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    n_files = sum(map(len, srcs.values()))
    with _pool(workers, max(n_files, workers)) as pool:
        try:
            return _encode(srcs, schema, out, fp, con, encoder, chunk_rows, row_group_rows, pool, stage, staged)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _encode(srcs, schema, out, fp, con, encoder, chunk_rows, row_group_rows, pool, stage, staged) -> dict:
    """Parse (in ``pool``), fit, encode (in ``pool``), publish the shards and write the report."""
    tasks, keys = [], []
    for split, ps in srcs.items():
        (stage / split).mkdir(parents=True)
        for j, p in enumerate(ps):
            tasks.append((p, schema.to_dict(), stage / split, f"f{j:05d}", chunk_rows,
                          split == "train" and encoder is None))
            keys.append(split)
    with con.status(f"[ctr] parsing {len(tasks)} file(s)"):
        parsed = _run(_parse_file, tasks, pool)
    for split, ps in srcs.items():
        staged[split] = [q for k, r in zip(keys, parsed) if k == split for q in r[0]]
        n = pl.scan_parquet(staged[split]).select(pl.len()).collect().item() if staged[split] else 0
        if n == 0:
            names = ", ".join(str(p) for p in ps)
            raise EmptyFileError(f"input file {names} has no data rows (header only or empty)")
    enc = encoder
    if enc is None:
        with con.status("[ctr] fitting vocabularies on train"):
            good_train = pl.scan_parquet(staged["train"]).filter(pl.col("_reason").is_null())
            counts = merge_counts([r[1] for k, r in zip(keys, parsed) if k == "train"])
            enc = FeatureEncoder(schema)
            enc.fit_counts(counts, enc.normalize_stats(good_train), set(good_train.collect_schema().names()))
    vocab_tmp = stage / "vocab.json"
    enc.save(vocab_tmp)
    with con.status("[ctr] encoding"):
        enc_tasks = [(part, vocab_tmp, part.with_name(f"enc-{part.name}"), row_group_rows)
                     for split in srcs for part in staged[split]]
        encoded_parts = dict(zip([t[0] for t in enc_tasks], _run(_encode_part, enc_tasks, pool)))
    report = {"fingerprint": fp, "schema": schema.to_dict(), "field_sizes": enc.field_sizes,
              **({"libfm_convention": LIBFM_CONVENTION} if schema.format == "libfm" else {}),
              "seq_sizes": enc.seq_sizes, "seq_len": enc.seq_len, "splits": {}}
    for split, ps in srcs.items():
        p = ps[0] if len(ps) == 1 else ps
        v = pl.scan_parquet(staged[split])
        rej = v.filter(pl.col("_reason").is_not_null()).select(
            pl.col("_line").alias("line"), pl.col("_reason").alias("reason"), pl.col("_raw").alias("raw"))
        if len(ps) > 1:  # several files: name the file of each rejected line
            rej = pl.concat([pl.scan_parquet(q).filter(pl.col("_reason").is_not_null()).select(
                pl.lit(str(ps[int(q.name[1:6])])).alias("file"), pl.col("_line").alias("line"),
                pl.col("_reason").alias("reason"), pl.col("_raw").alias("raw")) for q in staged[split]])
        rtmp = out / f".rejects_{split}.csv.tmp"
        rej.sink_csv(rtmp, engine="streaming")
        os.replace(rtmp, out / f"rejects_{split}.csv")
        man = publish_split([encoded_parts[q] for q in staged[split]], out, split)
        read = v.select(pl.len()).collect().item()
        reasons = v.filter(pl.col("_reason").is_not_null()).select("_reason").collect()["_reason"]
        encoded = pl.scan_parquet(split_folder(out, split))
        written = man.rows
        names = [f.name for f in schema.scalar_fields]
        cnt = encoded.select([(pl.col(f"idx_{c}") == OOV).sum().alias(f"oov_{c}") for c in names]
                             + [(pl.col(f"idx_{c}") == MISSING).sum().alias(f"mis_{c}") for c in names]
                             ).collect().row(0, named=True) if names and written else {}
        rs = {"source": str(p) if not isinstance(p, list) else [str(q) for q in p], "read": read,
              "written": written, "rejected": reasons.len(),
              "rejects_file": str(out / f"rejects_{split}.csv"), "rejects_by_reason": _reason_kinds(reasons),
              "oov": {c: int(cnt.get(f"oov_{c}", 0)) for c in names},
              "missing": {c: int(cnt.get(f"mis_{c}", 0)) for c in names},
              "shards": len(man.shards), "row_group_rows": row_group_rows}
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
                f"oov {rs['oov_total']:,} shards {len(man.shards)}")
    enc.save(out / "vocab.json")
    _atomic_json(out / "report.json", report)
    return report

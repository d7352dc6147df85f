"""FHIR R4 (Bundles and bulk NDJSON) -> MEDS: ``linmix-ehr ingest INPUT... --out DIR``.

Pipeline: discover files -> read them (bulk NDJSON: msgspec typed block decoding into polars, with an orjson +
flattening general path for unusual or bad records; bounded blocks and chunks; with ``workers > 1`` a
process pool over batches of files, big plain NDJSON files cut into line-aligned byte ranges; optional per-resource
``fhir.resources.R4B`` validation) -> cross-resource checks in
polars (:mod:`linmix.apps.ehr.ingest.resolve`) -> MEDS dataset (:mod:`linmix.apps.ehr.meds`) + ``quarantine/*.ndjson`` +
``report.json``, all written into a temporary folder beside ``--out`` and renamed into place (atomic). The output
depends only on the input (no timestamps), so a rerun gives byte-identical files; a non-empty ``--out`` is refused
unless ``--overwrite``, and so is an ``--out`` that is a file, lies inside an input folder or holds an input.
Exit codes: 0 ok, 1 written but some files had errors (e.g. truncated gzip), 2 refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from linmix.apps.ehr.ingest.files import discover, fhir_kind, is_gzip
from linmix.apps.ehr.ingest.read import (
    E_SCHEMA,
    P_SCHEMA,
    V_SCHEMA,
    ReadResult,
    fetch_records,
    read_files,
    split_ranges,
)
from linmix.apps.ehr.ingest.report import IngestReport, category, write_quarantine
from linmix.apps.ehr.ingest.resolve import resolve
from linmix.apps.ehr.meds import dataset_metadata, write_dataset
from linmix.shared.argtypes import at_least
from linmix.shared.errors import UserError

log = logging.getLogger("linmix.apps.ehr.ingest")


class IngestError(UserError):
    """Ingestion refused (empty input, missing input, non-empty output folder, an output folder that is a file or
    overlaps the input): a user error, printed in one line with exit status 2 (:mod:`linmix.shared.errors`;
    importing it loads no torch)."""


#: With ``workers > 1``, plain NDJSON files larger than this are cut into line-aligned byte ranges read in parallel.
RANGE_BYTES = 32 << 20


def _items(files: list[Path], sizes: list[int], workers: int) -> tuple[list[tuple], list[int]]:
    """Read-task items ``(src, path, start, end, first_line)`` and their byte sizes, in input order."""
    items, nbytes = [], []
    for i, (f, size) in enumerate(zip(files, sizes, strict=True)):
        if workers > 1 and size > RANGE_BYTES and fhir_kind(f) == "ndjson" and not is_gzip(f):
            parts = min(4 * workers, -(-size // RANGE_BYTES))
            for start, end, first in split_ranges(f, parts):
                items.append((i, f, start, end, first))
                nbytes.append((size if end is None else end) - start)
        else:
            items.append((i, f, 0, None, 1))
            nbytes.append(size)
    return items, nbytes


def _batches(sizes: list[int], n_batches: int, max_bytes: int = 64 << 20) -> list[list[int]]:
    """Consecutive item indices grouped into batches (so many small Bundle files are not one task each)."""
    target = max(1, min(max_bytes, sum(sizes) // max(1, n_batches)))
    out, cur, acc = [], [], 0
    for i, s in enumerate(sizes):
        cur.append(i)
        acc += s
        if acc >= target:
            out.append(cur)
            cur, acc = [], 0
    if cur:
        out.append(cur)
    return out


def _read_all(files: list[Path], validate: bool, workers: int, progress: bool) -> list[ReadResult]:
    sizes = [f.stat().st_size for f in files]
    items, nbytes = _items(files, sizes, workers)
    batches = _batches(nbytes, 4 * workers if workers > 1 else 16)
    results: list[ReadResult | None] = [None] * len(batches)
    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True, disable=not progress)
    with bar:
        job = bar.add_task(f"reading {len(files)} files", total=sum(nbytes))
        if workers > 1 and len(batches) > 1:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futs = {pool.submit(read_files, [items[i] for i in b], validate): k for k, b in enumerate(batches)}
                for fut in as_completed(futs):
                    k = futs[fut]
                    results[k] = fut.result()
                    bar.advance(job, sum(nbytes[i] for i in batches[k]))
        else:
            for k, b in enumerate(batches):
                results[k] = read_files([items[i] for i in b], validate)
                bar.advance(job, sum(nbytes[i] for i in b))
    return results  # type: ignore[return-value]


def _concat(frames: list[pl.DataFrame], schema: dict) -> pl.DataFrame:
    return pl.concat(frames, rechunk=False) if frames else pl.DataFrame(schema=schema)  # no copy


def ingest(inputs: list[Path], out: Path, overwrite: bool = False, validate: bool = False, workers: int = 0,
           progress: bool = False) -> IngestReport:
    """Convert FHIR files/folders ``inputs`` into a MEDS dataset at ``out``; return the report (also printed by the
    CLI and written to ``out/report.json``). Raises :class:`IngestError` when refused (nothing is written)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = Path(out)
    inputs = [Path(p) for p in inputs]
    _check_out(inputs, out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise IngestError(f"output folder {out} is not empty: pass --overwrite to replace it")
    try:
        files, skipped = discover(inputs, exclude=[out])
    except FileNotFoundError as err:
        raise IngestError(str(err)) from None
    if not files:
        raise IngestError("empty input: no .ndjson, .jsonl, .json files (optionally .gz) found"
                          + (f" ({_skipped_text(skipped)})" if skipped else ""))
    results = _read_all(files, validate, workers, progress)
    c1 = time.process_time()
    read, ignored = Counter(), Counter()
    for r in results:
        read.update(r.read)
        ignored.update(r.ignored)
    if not read:
        raise IngestError(f"empty input: {len(files)} file(s) hold no FHIR resources")
    P = _concat([f for r in results for f in r.p], P_SCHEMA)
    E = _concat([f for r in results for f in r.e], E_SCHEMA)
    V = _concat([f for r in results for f in r.v], V_SCHEMA)
    for r in results:  # the concatenated frames now own the chunks
        r.p, r.e, r.v = [], [], []
    early = [(j["rtype"], j["rid"], j["reason"]) for r in results for j in r.rejects
             if j["rid"] is not None and j["rtype"] in ("Patient", "Encounter")]
    res = resolve(P, E, V, pl.DataFrame(early, schema=dict.fromkeys(("rtype", "rid", "reason"), pl.String),
                                        orient="row"))
    c2 = time.process_time()

    # quarantine records: read-time rejects carry the record; cross-resource rejects are fetched again
    def qrec(src, line, entry, rtype, reason, record) -> dict:
        return {"file": str(files[src]), "line": line, "entry": None if entry < 0 else entry, "resourceType": rtype,
                "reason": reason, "record": record}

    qrecs = [qrec(j["src"], j["line"], j["entry"], j["rtype"], j["reason"], j["record"])
             for r in results for j in r.rejects]
    for (src,), grp in res.rejects.group_by(["src"], maintain_order=True):
        keys = {(ln, en) for ln, en in grp.select("line", "entry").iter_rows()}
        raw = fetch_records(files[src], keys)
        for _s, ln, en, rtype, _rid, reason in grp.iter_rows():
            qrecs.append(qrec(src, ln, en, rtype, reason, raw.get((ln, en))))
    # file names may hold patient names (Synthea: Given_Family_uuid.json): report and logs use the file index;
    # the path is in quarantine/_files.ndjson
    ferrs = [{"file_index": fe["src"], "line": fe["line"], "reason": fe["reason"]}
             for r in results for fe in r.file_errors]
    qrecs += [qrec(fe["file_index"], fe["line"], -1, "(file)", fe["reason"], None) for fe in ferrs]

    rejected = Counter(q["resourceType"] for q in qrecs if q["resourceType"] != "(file)")
    counts = {t: {"read": read[t], "accepted": res.accepted.get(t, 0), "rejected": rejected[t],
                  "ignored": ignored[t]} for t in sorted(set(read) | set(rejected))}
    reasons = Counter(category(q["reason"]) for q in qrecs if q["resourceType"] != "(file)")
    report = IngestReport(counts=counts, reasons=dict(sorted(reasons.items())), files=len(files), file_errors=ferrs,
                          skipped_files=dict(sorted(Counter(r for _, r in skipped).items())),
                          codes=res.codes.height, stats=res.stats, suspicious=res.suspicious, validate=validate,
                          out=str(out))
    report.reconcile()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        report.rows_written = write_dataset(tmp, res.events, res.codes, res.subjects, dataset_metadata())
        report.subjects = {s: res.subjects.filter(pl.col("split") == s).height for s in report.rows_written}
        write_quarantine(tmp / "quarantine", qrecs + [
            {"file": str(p), "line": 0, "entry": None, "resourceType": "(skipped file)", "reason": r, "record": None}
            for p, r in skipped])
        (tmp / "report.json").write_bytes(report.to_json())
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - t0
    c3 = time.process_time()
    report.cpu_s = {"read": c1 - c0, "resolve": c2 - c1, "write": c3 - c2}  # this process (not pool workers)
    tot = report.total
    if tot["rejected"]:
        log.warning("%d of %d resources rejected (reasons in report.json, records in %s)", tot["rejected"],
                    tot["read"], out / "quarantine")
    if res.stats["patients_without_encounters"]:
        log.warning("%d patients have no encounters (kept)", res.stats["patients_without_encounters"])
    if skipped:
        log.warning("%d files skipped (%s; paths in %s)", len(skipped), _skipped_text(skipped),
                    out / "quarantine" / "_skipped_files.ndjson")
    sus = {k: v for k, v in report.suspicious.items() if v}
    if sus:
        log.warning("accepted but suspicious: %s (counts in report.json)",
                    ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sus.items()))
    for fe in ferrs:
        log.warning("file error in input file #%d at line %d: %s (path in %s)", fe["file_index"], fe["line"],
                    category(fe["reason"]), out / "quarantine" / "_files.ndjson")
    return report


def _skipped_text(skipped: list[tuple[Path, str]]) -> str:
    return ", ".join(f"{r}: {n}" for r, n in sorted(Counter(r for _, r in skipped).items()))


def _check_out(inputs: list[Path], out: Path) -> None:
    """Refuse an ``--out`` that is a file, is or lies inside an input folder, or holds an input."""
    if out.exists() and not out.is_dir():
        raise IngestError(f"--out {out} is a file, not a folder: name a new or empty folder (or a MEDS folder to "
                          "replace with --overwrite)")
    o = out.resolve()
    for inp in inputs:
        i = inp.resolve()
        if inp.is_dir() and o.is_relative_to(i):
            raise IngestError(f"--out {out} is inside the input folder {inp}: choose an output folder outside the "
                              "input (MEDS output is not FHIR input)")
        if i.is_relative_to(o):
            raise IngestError(f"input {inp} is inside --out {out}, which ingestion replaces: choose another --out")


def ingest_main(argv: list[str] | None = None) -> int:
    """``linmix-ehr ingest INPUT... --out DIR [--overwrite] [--validate] [--workers N]``."""
    ap = argparse.ArgumentParser(prog="linmix-ehr ingest", description=(
        "Convert FHIR R4 files (transaction/collection Bundles .json[.gz], bulk NDJSON .ndjson/.jsonl[.gz], any "
        "letter case) into a MEDS dataset: data/{train,tuning,held_out}/0.parquet, metadata/, quarantine/*.ndjson "
        "(rejected records with file, line and reason; skipped files) and report.json. Exit 0 ok, 1 written with "
        "file errors, 2 refused."))
    ap.add_argument("inputs", nargs="+", type=Path, help="FHIR files or folders (searched recursively)")
    ap.add_argument("--out", type=Path, required=True,
                    help="output MEDS folder (empty or absent, outside the input folders)")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    ap.add_argument("--validate", action="store_true",
                    help="also validate every resource with fhir.resources.R4B (slow; invalid ones are quarantined)")
    ap.add_argument("--workers", type=at_least(0), default=0, help="processes reading files in parallel (0/1: in-process)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        report = ingest(a.inputs, a.out, overwrite=a.overwrite, validate=a.validate, workers=a.workers,
                        progress=not a.quiet and sys.stderr.isatty())
    except IngestError as err:
        print(f"linmix-ehr ingest: error: {err}", file=sys.stderr)
        return 2
    if not a.quiet:
        report.print()
    return 1 if report.file_errors else 0

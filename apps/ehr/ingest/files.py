"""Input files: which are read and as what, which are skipped and why.

A file is read by its name, case-insensitively: ``.ndjson`` and ``.jsonl`` as NDJSON (one resource or Bundle per
line), ``.json`` as one JSON document (a Bundle or a single resource), each optionally followed by ``.gz``.
Compression is recognised by the gzip magic bytes, not the name (a gzip file named ``.ndjson`` is read, and so is a
plain file named ``.ndjson.gz``). Every other file found under an input folder is skipped and listed (report,
log and ``quarantine/_skipped_files.ndjson``), as is every file inside a MEDS dataset folder within the inputs (a
folder with ``metadata/dataset.json`` and ``data/``, e.g. an earlier ``--out``): MEDS output is never read back as
FHIR.
"""

from __future__ import annotations

import gzip
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
SKIP_MEDS = "inside a MEDS dataset folder"


def fhir_kind(path: Path) -> str | None:
    """``"ndjson"``, ``"json"`` or None (not read) from the file name, case-insensitive, ``.gz`` allowed."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    if name.endswith(".json"):
        return "json"
    return None


def is_gzip(path: Path) -> bool:
    """The file starts with the gzip magic bytes."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_input(path: Path, gz: bool | None = None):
    """Binary reader of an input file, decompressing when it is gzip (by its magic bytes unless ``gz`` is given)."""
    if gz is None:
        gz = is_gzip(path)
    return gzip.open(path, "rb") if gz else open(path, "rb", buffering=1 << 20)


def is_meds_folder(d: Path) -> bool:
    """``d`` holds a MEDS dataset (``metadata/dataset.json`` and ``data/``)."""
    return (d / "metadata" / "dataset.json").is_file() and (d / "data").is_dir()


def _skip_reason(path: Path) -> str:
    suffix = path.suffix.lower()
    if not suffix or len(suffix) > 12 or not suffix[1:].isalnum():
        suffix = "(none)" if not suffix else "(other)"
    return f"not a FHIR file name: {suffix}"


def discover(inputs: list[Path], exclude: list[Path] = ()) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files under ``inputs`` to read (sorted per input, without duplicates, nothing under ``exclude``) and the
    files skipped, with their reasons. Raises FileNotFoundError for a missing input."""
    ex = [Path(p).resolve() for p in exclude]
    found: dict[Path, None] = {}
    skipped: dict[Path, str] = {}
    for inp in inputs:
        inp = Path(inp)
        if not inp.exists():
            raise FileNotFoundError(f"input not found: {inp}")
        cands = [inp] if inp.is_file() else sorted(p for p in inp.rglob("*") if p.is_file())
        meds = [] if inp.is_file() else sorted({p.parent.parent for p in cands if p.name == "dataset.json"
                                                and p.parent.name == "metadata" and is_meds_folder(p.parent.parent)})
        for p in cands:
            if any(p.resolve().is_relative_to(e) for e in ex):
                continue
            if any(p.is_relative_to(m) for m in meds):
                skipped.setdefault(p, SKIP_MEDS)
            elif fhir_kind(p) is None:
                skipped.setdefault(p, _skip_reason(p))
            else:
                found.setdefault(p, None)
    return list(found), [(p, r) for p, r in skipped.items() if p not in found]

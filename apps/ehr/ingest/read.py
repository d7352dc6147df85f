"""Reading FHIR files into flat polars frames: read tasks, bounded chunks, quarantine re-reads.

Formats (:mod:`linmix.apps.ehr.ingest.files`): bulk NDJSON (``.ndjson``, ``.jsonl``; any resource types per file,
Bundles on a line are unpacked) and JSON files (``.json``) holding a Bundle of any type or a single resource; gzip
by its magic bytes. Resources in ``contained`` are counted as ignored, per type, under ``(contained) <Type>``. NDJSON is read in blocks of
whole lines: a block of the common shape is decoded at once by :mod:`linmix.apps.ehr.ingest.fast` (msgspec + polars, one
frame per block); anything else goes line by line through the general path (orjson + :class:`linmix.apps.ehr.ingest.fhir.
Flattener`, which gives the quarantine reasons), in input order. Every ``chunk`` general-path records the columns
become polars frames, so raw JSON is never held beyond one block or chunk. GC is paused while parsing (no cycles).

A task reads a batch of items (whole files, or line-aligned byte ranges of a big plain NDJSON file with the number of
its first line, so line numbers stay exact) and returns a :class:`ReadResult`: frames, per-type ``read``/``ignored``
counts, the rejects found while reading (with the raw record) and file-level errors (e.g. a truncated gzip stream:
what came before it is kept).
"""

from __future__ import annotations

import gc
import gzip
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from linmix.apps.ehr.ingest.checks import malformed_reason
from linmix.apps.ehr.ingest.fast import BLOCK_BYTES, SUB_LINES, block_type, decode_block
from linmix.apps.ehr.ingest.fhir import SUPPORTED, Flattener, Reject
from linmix.apps.ehr.ingest.files import fhir_kind, is_gzip, open_input

MALFORMED, NOT_FHIR, CONTAINED = "(malformed)", "(not FHIR)", "(contained)"
P_SCHEMA = {"src": pl.Int32, "line": pl.Int64, "entry": pl.Int32, "rid": pl.String, "gender": pl.String,
            "birth": pl.String, "death": pl.String, "deceased_flag": pl.Boolean}
E_SCHEMA = {"src": pl.Int32, "line": pl.Int64, "entry": pl.Int32, "rid": pl.String, "subject": pl.String,
            "cls": pl.String, "cls_display": pl.String, "start": pl.String, "end": pl.String}
V_SCHEMA = {"src": pl.Int32, "line": pl.Int64, "entry": pl.Int32, "rtype": pl.String, "rid": pl.String,
            "subject": pl.String, "enc": pl.String, "time": pl.String, "code": pl.String, "desc": pl.String,
            "num": pl.Float64, "text": pl.String, "unit": pl.String}


@dataclass
class ReadResult:
    p: list[pl.DataFrame] = field(default_factory=list)
    e: list[pl.DataFrame] = field(default_factory=list)
    v: list[pl.DataFrame] = field(default_factory=list)
    read: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    rejects: list[dict] = field(default_factory=list)  # src, line, entry, rtype, rid, reason, record
    file_errors: list[dict] = field(default_factory=list)  # src, line, reason


class _Reader:
    def __init__(self, src: int, validate: bool, chunk: int) -> None:
        self.src, self.validate, self.chunk = src, validate, chunk
        self.res = ReadResult()
        self.flat = Flattener()
        self.n = 0  # resources in the current chunk
        self._models: dict = {}

    def flush(self) -> None:
        f = self.flat
        for rows, schema, frames in ((f.p, P_SCHEMA, self.res.p), (f.e, E_SCHEMA, self.res.e),
                                     (f.v, V_SCHEMA, self.res.v)):
            if rows:
                cols = list(zip(*rows, strict=True))
                frames.append(pl.DataFrame({c: cols[k] for k, c in enumerate(schema)}, schema=schema))
        self.flat = Flattener()
        self.n = 0

    def add_frame(self, kind: str, df: pl.DataFrame, rtype: str) -> None:
        """A fast-path block frame; rows still pending in the Flattener go first (input order)."""
        if len(self.flat):
            self.flush()
        {"p": self.res.p, "e": self.res.e, "v": self.res.v}[kind].append(df)
        self.res.read[rtype] += df.height  # one row per resource on the fast path

    def reject(self, line: int, entry: int, rtype: str, rid, reason: str, record) -> None:
        self.res.rejects.append({"src": self.src, "line": line, "entry": entry, "rtype": rtype,
                                 "rid": rid if isinstance(rid, str) else None, "reason": reason, "record": record})

    def resource(self, d: object, line: int, entry: int, urls: dict | None) -> None:
        if not isinstance(d, dict) or not isinstance(d.get("resourceType"), str):
            self.res.read[NOT_FHIR] += 1
            self.reject(line, entry, NOT_FHIR, None, "not FHIR: JSON object without a resourceType", d)
            return
        rtype = d["resourceType"]
        if rtype == "Bundle":
            self.bundle(d, line)
            return
        self.res.read[rtype] += 1
        contained = d.get("contained")
        if contained:
            self.contained(contained)
        if rtype not in SUPPORTED:
            self.res.ignored[rtype] += 1
            return
        try:
            if self.validate:
                self._validate(rtype, d)
            self.flat.add(d, rtype, self.src, line, entry, urls)
        except Reject as err:
            self.reject(line, entry, rtype, d.get("id"), str(err), d)
        self.n += 1
        if self.n >= self.chunk:
            self.flush()

    def contained(self, items: object) -> None:
        """Count contained resources as ignored, per type (they are not read as resources of their own)."""
        for c in items if isinstance(items, list) else [items]:
            t = c.get("resourceType") if isinstance(c, dict) else None
            key = f"{CONTAINED} {t if isinstance(t, str) and t else NOT_FHIR}"
            self.res.read[key] += 1
            self.res.ignored[key] += 1

    def _validate(self, rtype: str, d: dict) -> None:
        from pydantic import ValidationError

        model = self._models.get(rtype)
        if model is None:
            from fhir.resources.R4B import get_fhir_model_class

            model = self._models[rtype] = get_fhir_model_class(rtype)
        try:
            model.model_validate(d)
        except ValidationError as err:
            errs = err.errors(include_input=False, include_url=False)
            loc = ".".join(str(x) for x in errs[0]["loc"]) if errs else "?"
            msg = errs[0]["msg"] if errs else str(err)[:200]
            raise Reject(f"R4B validation failed: {len(errs)} error(s); first at {loc}: {msg}") from None

    def bundle(self, b: dict, line: int) -> None:
        entries = b.get("entry") or []
        urls = {}
        for en in entries:
            r = en.get("resource") if isinstance(en, dict) else None
            if isinstance(r, dict) and isinstance(en.get("fullUrl"), str) and isinstance(r.get("resourceType"), str):
                rid = r.get("id") or (en["fullUrl"][9:] if en["fullUrl"].startswith("urn:uuid:") else None)
                if rid:
                    urls[en["fullUrl"]] = (r["resourceType"], rid)
        for i, en in enumerate(entries):
            r = en.get("resource") if isinstance(en, dict) else None
            if isinstance(r, dict) and "id" not in r and isinstance(en.get("fullUrl"), str) \
                    and en["fullUrl"] in urls:
                r = {**r, "id": urls[en["fullUrl"]][1]}
            if r is None:
                self.res.read[NOT_FHIR] += 1
                self.reject(line, i, NOT_FHIR, None, "not FHIR: Bundle entry without a resource", en)
                continue
            self.resource(r, line, i, urls)


#: A read task item: file index, path, byte range [start, end) (end None = to the end) and the 1-based number of
#: the first line in the range. Ranges start at line starts (see :func:`split_ranges`).
Item = tuple[int, Path, int, "int | None", int]


def read_files(items: list[Item], validate: bool = False, chunk: int = 100_000) -> ReadResult:
    """Read a batch of items (one task for the process pool), ``chunk`` resources per frame.

    Never raises on bad content: it is rejected (with the record) or recorded as a file error.
    """
    rd = _Reader(0, validate, chunk)
    for src, path, start, end, first_line in items:
        rd.src = src
        _read_into(rd, src, Path(path), start, end, first_line)
    rd.flush()
    return rd.res


def read_file(src: int, path: Path, validate: bool = False, chunk: int = 100_000) -> ReadResult:
    """Read one whole file; see :func:`read_files`."""
    return read_files([(src, path, 0, None, 1)], validate, chunk)


def split_ranges(path: Path, parts: int) -> list[tuple[int, int | None, int]]:
    """Cut a plain NDJSON file into about ``parts`` byte ranges at line starts: ``[(start, end, first_line)]``.

    One pass counting newlines (C speed) gives each range's first line number, so line numbers stay exact.
    """
    size = path.stat().st_size
    targets = [size * k // parts for k in range(1, parts)]
    bounds: list[tuple[int, int]] = [(0, 1)]
    pos, lines, ti = 0, 0, 0
    with open(path, "rb") as fh:
        while ti < len(targets):
            block = fh.read(1 << 24)
            if not block:
                break
            while ti < len(targets) and targets[ti] < pos + len(block):
                j = block.find(b"\n", max(0, targets[ti] - pos))
                if j < 0:
                    break  # the line goes on in the next block
                cut = pos + j + 1
                if cut > bounds[-1][0] and cut < size:
                    bounds.append((cut, lines + block.count(b"\n", 0, j + 1) + 1))
                while ti < len(targets) and targets[ti] < cut:
                    ti += 1
            lines += block.count(b"\n")
            pos += len(block)
    ends = [b[0] for b in bounds[1:]] + [None]
    return [(b[0], e, b[1]) for b, e in zip(bounds, ends, strict=True)]


def _ndjson_blocks(fh, gz: bool, start: int, end: int | None):
    """``(block, n_lines)``: blocks of whole lines (the file's last line may lack its newline) from byte ``start``
    to ``end`` (line starts), as memoryviews of one reused buffer (no page faults for fresh memory per block);
    a block is valid until the next one is requested.

    Gzip streams are read with ``readinto1`` (one decompression step at a time), so on a truncated stream every
    whole line before the break is still yielded before the error is raised."""
    if start:
        fh.seek(start)
    left = None if end is None else end - start
    buf = bytearray(BLOCK_BYTES)
    filled, eof = 0, False
    read = fh.readinto1 if gz else fh.readinto
    while not eof:
        err = None
        try:
            while filled < len(buf) and (left is None or left > 0):
                room = len(buf) - filled if left is None else min(len(buf) - filled, left)
                with memoryview(buf) as mv:
                    got = read(mv[filled:filled + room])
                if not got:
                    break
                filled += got
                if left is not None:
                    left -= got
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            err = e
        eof = err is not None or filled < len(buf)
        cut = buf.rfind(b"\n", 0, filled) + 1
        if eof and err is None:
            cut = filled  # the last line may lack its newline
        elif cut == 0 and err is None:  # a line longer than the buffer: grow it
            nb = bytearray(2 * len(buf))
            nb[:filled] = buf[:filled]
            buf = nb
            continue
        if cut:
            # newlines counted by numpy (SIMD compare; bytearray.count is a byte loop, ~3x slower)
            n = int(np.count_nonzero(np.frombuffer(buf, np.uint8, cut) == 10)) + (buf[cut - 1] != 10)
            with memoryview(buf) as mv, mv[:cut] as block:
                yield block, n
        if err is not None:
            raise err
        rest = filled - cut
        buf[:rest] = buf[cut:filled]
        filled = rest


def _general_lines(rd: _Reader, lines: list[bytes], first_line: int) -> None:
    """The general path, line by line: orjson + Flattener (precise reasons for malformed or unusual records)."""
    for k, raw in enumerate(lines):
        if not raw or raw.isspace():  # blank line
            continue
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            rd.res.read[MALFORMED] += 1
            rd.reject(first_line + k, -1, MALFORMED, None, malformed_reason(err, raw, ndjson=True),
                      raw.decode("utf-8", "replace").rstrip("\n"))
            continue
        rd.resource(d, first_line + k, -1, None)


def _try_fast(rd: _Reader, block, n: int, first_line: int) -> bool:
    """Decode ``n`` whole lines on the fast path into ``rd``; False (nothing read) when any line does not fit."""
    rtype = block_type(block)
    got = decode_block(block, rtype, rd.src, first_line, n) if rtype else None
    if got is None:
        return False
    rd.add_frame(*got, rtype)
    return True


def _read_block(rd: _Reader, block, n: int, first_line: int) -> None:
    """Read one block of ``n`` whole lines (fast path, else sub-blocks, else the general path)."""
    if not rd.validate and _try_fast(rd, block, n, first_line):
        return
    lines = bytes(block).split(b"\n")
    if len(lines) > n:
        lines.pop()  # the empty piece after the last newline
    if rd.validate or n <= SUB_LINES:
        _general_lines(rd, lines, first_line)
        return
    for k in range(0, n, SUB_LINES):
        sub = lines[k:k + SUB_LINES]
        if not _try_fast(rd, b"\n".join(sub), len(sub), first_line + k):
            _general_lines(rd, sub, first_line + k)


def _read_into(rd: _Reader, src: int, path: Path, start: int = 0, end: int | None = None,
               first_line: int = 1) -> None:
    enabled = gc.isenabled()
    gc.disable()
    line = first_line - 1
    try:
        gz = is_gzip(path)
        if fhir_kind(path) == "ndjson":
            with open_input(path, gz) as fh:
                for block, n in _ndjson_blocks(fh, gz, start, end):
                    _read_block(rd, block, n, line + 1)
                    line += n
        else:
            with open_input(path, gz) as fh:
                data = fh.read()
            if data.strip():
                try:
                    d = orjson.loads(data)
                except orjson.JSONDecodeError as err:
                    rd.res.read[MALFORMED] += 1
                    rd.reject(0, -1, MALFORMED, None, malformed_reason(err, data, ndjson=False),
                              data[:10_000].decode("utf-8", "replace"))
                else:
                    rd.resource(d, 0, 0, None)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
        kind = "truncated gzip" if isinstance(err, EOFError) else "unreadable file"
        msg = err.strerror if isinstance(err, OSError) and err.strerror else str(err)  # strerror: no path
        rd.res.file_errors.append({"src": src, "line": line, "reason": f"{kind}: {type(err).__name__}: {msg} "
                                                                        f"(records before line {line + 1} were read)"})
    finally:
        if enabled:
            gc.enable()


def fetch_records(path: Path, keys: set[tuple[int, int]]) -> dict[tuple[int, int], object]:
    """Re-read the raw records at ``(line, entry)`` keys of one file (for quarantine files)."""
    out: dict[tuple[int, int], object] = {}
    try:
        with open_input(path) as fh:
            if fhir_kind(path) == "ndjson":
                by_line: dict[int, list[int]] = {}
                for ln, en in keys:
                    by_line.setdefault(ln, []).append(en)
                for line, raw in enumerate(fh, 1):
                    if line in by_line:
                        d = orjson.loads(raw)
                        for en in by_line[line]:
                            out[(line, en)] = d if en < 0 else d["entry"][en]["resource"]
            else:
                d = orjson.loads(fh.read())
                for k in keys:
                    out[k] = d["entry"][k[1]]["resource"] if d.get("resourceType") == "Bundle" else d
    except (EOFError, zlib.error, OSError):
        pass  # a truncated file: records before the break were fetched
    return out

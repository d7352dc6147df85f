"""Records of delimited text (RFC 4180) with their line numbers, in bounded chunks.

A record is one line, or several when a quoted field holds a newline: lines are joined while the record has an odd
number of quote characters so far (RFC 4180: a field's own quotes are doubled, so a complete record always has an
even count). Records without a quote character are split by polars in one vectorised pass (the common case: Criteo
and Avazu files quote nothing); records with one are parsed by Python's ``csv`` module with ``strict=True``, which
honours quoted separators and newlines and doubled quotes, and reports malformed quoting (``"ab"c``, a quote left
open at the end of the file) as that record's error instead of guessing.

Bytes are decoded with the declared encoding, strictly: a byte that is not valid there stops the read with the line
and byte named (a Latin-1 ``é`` read as UTF-8 never becomes U+FFFD). A UTF-8 byte-order mark is stripped.
"""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import Iterator, Optional

import polars as pl

from linmix.shared.errors import UserError

__all__ = ["EncodingError", "iter_record_chunks", "parse_record", "physical_lines", "read_header_record"]


class EncodingError(UserError, ValueError):
    """A line of the file is not valid in the declared encoding."""


def _decode(raw: bytes, encoding: str, path: Path, line: int) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        bad = raw[e.start:e.start + 1].hex()
        raise EncodingError(f"{path} line {line}: byte 0x{bad} at column {e.start + 1} is not valid {encoding}; "
                            f"declare the file's encoding in the schema (e.g. `encoding: latin-1` or cp1252)") from None


def physical_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its line ending)."""
    enc = codecs.lookup(encoding).name
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            text = _decode(raw, encoding, path, n)
            if n == 1 and enc == "utf-8" and text.startswith("\ufeff"):
                text = text[1:]
            yield n, text


def _records(path: Path, encoding: str, quote: Optional[str]) -> Iterator[tuple[int, str]]:
    """(first line number, record text without its final line ending); quoted newlines stay inside the text."""
    start, parts, open_quote = 0, [], False
    for n, text in physical_lines(path, encoding):
        if not parts:
            start = n
        parts.append(text)
        if quote is not None and text.count(quote) % 2:
            open_quote = not open_quote
        if not open_quote:
            rec = "".join(parts)
            parts = []
            yield start, rec.removesuffix("\n").removesuffix("\r")
    if parts:  # a quote left open at the end of the file: the rest of the file is one (malformed) record
        yield start, "".join(parts).removesuffix("\n").removesuffix("\r")


def parse_record(text: str, sep: str, quote: Optional[str]) -> tuple[Optional[list[str]], Optional[str]]:
    """One record -> (fields, None) or (None, why the quoting is malformed)."""
    if quote is None or quote not in text:
        return text.split(sep), None
    try:
        rows = list(csv.reader([text], delimiter=sep, quotechar=quote, doublequote=True, strict=True))
    except csv.Error as e:
        return None, f"malformed quoting ({e})"
    if len(rows) != 1:
        return None, "malformed quoting (a newline outside quotes)"
    return rows[0], None


def read_header_record(path: Path, sep: str, quote: Optional[str], encoding: str) -> list[str]:
    """The first record's fields (the header), parsed with the same rules as the data."""
    for _, text in _records(path, encoding, quote):
        fields, err = parse_record(text, sep, quote)
        if err:
            raise EncodingError(f"{path} line 1 (header): {err}")
        return fields or []
    return []


def iter_record_chunks(path: Path, sep: str, quote: Optional[str], encoding: str, rows: int,
                       skip_header: bool) -> Iterator[pl.LazyFrame]:
    """Frames of at most ``rows`` records: ``_line`` (first line of the record), ``_raw`` (record text) and, when any
    record of the chunk holds a quote, ``_parts`` (list of fields; null for a malformed record) with ``_quote_error``."""
    it = _records(path, encoding, quote)
    if skip_header:
        next(it, None)
    while True:
        block = []
        for rec in it:
            block.append(rec)
            if len(block) >= rows:
                break
        if not block:
            return
        lines = pl.Series("_line", [b[0] for b in block], dtype=pl.Int64)
        raw = pl.Series("_raw", [b[1] for b in block], dtype=pl.String)
        if quote is None or not any(quote in b[1] for b in block):
            yield pl.LazyFrame([lines, raw])
        else:
            parsed = [parse_record(b[1], sep, quote) for b in block]
            yield pl.LazyFrame([lines, raw, pl.Series("_parts", [p[0] for p in parsed], dtype=pl.List(pl.String)),
                                pl.Series("_quote_error", [p[1] for p in parsed], dtype=pl.String)])
        if len(block) < rows:
            return

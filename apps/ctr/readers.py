"""Lazy readers for click logs (Criteo TSV, Avazu CSV, libfm/libsvm, schema-described CSV/Parquet).

Every reader returns a polars ``LazyFrame`` of *validated* rows with the columns

* ``_line`` (1-based line number in the file; row number + 1 for Parquet), ``_raw`` (the raw record),
* ``_reason`` (null for a good row, else why the row cannot be used: it goes to the rejects file),
* the label as ``Int8`` 0/1, categorical/sequence fields as ``String`` (null = missing), numeric fields as
  ``Float64`` (null = missing), ``<field>__val`` for libfm values, the group and passthrough columns.

Delimited text follows RFC 4180 (:mod:`linmix.apps.ctr.delimited`): quoted separators, quoted newlines and
doubled quotes are read as the values they stand for, a UTF-8 byte-order mark is stripped, bytes are decoded
strictly with the schema's ``encoding``, and a record with malformed quoting is rejected with its line number
instead of aborting the read. ``_line`` is the record's first line. ``scan_source`` gives the whole file as one
``LazyFrame``; ``iter_source_chunks`` gives the same validated rows as a sequence of bounded chunks (``rows``
records each, line numbers continuing across chunks), so files larger than memory are encoded chunk by chunk.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator, Optional

import polars as pl

from linmix.apps.ctr.delimited import EncodingError, iter_record_chunks, physical_lines, read_header_record
from linmix.apps.ctr.schema import DataSchema, FieldSpec, SchemaError
from linmix.shared.errors import UserError

__all__ = ["EmptyFileError", "EncodingError", "check_file", "iter_source_chunks", "scan_source"]

_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
_BOOL_LABELS = {"false": 0, "true": 1}  # a Parquet Boolean label column, cast to text
_LIBFM_LABELS = {"-1": 0, "+1": 1, "-1.0": 0, "+1.0": 1}
_SEP_NAMES = {"\t": "tab", ",": "comma", " ": "space", ";": "semicolon", "|": "pipe"}


class EmptyFileError(UserError, ValueError):
    """The input file has no data rows (or none that could be used)."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file named by the user does not exist."""


def check_file(path: str | Path) -> Path:
    """Raise a clear error for a missing or empty file."""
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"input file {p} does not exist")
    if p.stat().st_size == 0:
        raise EmptyFileError(f"input file {p} is empty (0 bytes, no data rows)")
    return p


def read_header(path: Path, schema: DataSchema) -> list[str]:
    """The header's column names (quoted names allowed); a name given twice is a :class:`SchemaError`."""
    try:
        names = read_header_record(path, schema.separator, schema.quote, schema.encoding)
    except EncodingError as e:
        raise SchemaError(str(e)) from None
    names = [n.strip() for n in names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SchemaError(f"{path}: the header names column(s) {dup} more than once; rename them so each column "
                          "has one name")
    return names


def _label_expr(s: pl.Expr, libfm: bool, boolean: bool = False) -> pl.Expr:
    mapping = dict(_LABELS, **(_LIBFM_LABELS if libfm else {}), **(_BOOL_LABELS if boolean else {}))
    return s.str.strip_chars().replace_strict(mapping, default=None, return_dtype=pl.Int8)


def _first_reason(reasons: list[pl.Expr]) -> pl.Expr:
    return pl.coalesce(reasons) if reasons else pl.lit(None, dtype=pl.String)


def _typed_columns(schema: DataSchema, get, libfm: bool = False,
                   boolean_label: bool = False) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Expressions turning raw strings (``get(column) -> Expr``) into typed columns, plus reason expressions."""
    exprs: list[pl.Expr] = []
    reasons: list[pl.Expr] = []
    raw_label = get(schema.label).str.strip_chars()
    label = _label_expr(raw_label, libfm, boolean_label)
    allowed = "0/1 (or -1/+1)" if libfm else "0/1 (or true/false)" if boolean_label else "0/1"
    reasons.append(pl.when(raw_label.is_null()).then(pl.lit("label is missing (null)"))
                   .when(label.is_null()).then(pl.format(f"label '{{}}' is not {allowed}", raw_label)))
    exprs.append(label.alias(schema.label))
    for f in schema.fields:
        s = get(f.source)
        if f.type == "numeric":
            e, r = _numeric(f, s)
            reasons.extend(r)
            exprs.append(e.alias(f.name))
            continue
        if f.preprocess is not None:
            reasons.append(pl.when(~s.str.contains(r"^\d{8}$")).then(
                pl.format(f"field {f.name}: hour '{{}}' is not YYMMDDHH", s)))
        exprs.append(categorical_expr(f, s).alias(f.name))
    if schema.group:
        exprs.append(get(schema.group).alias("_group"))
    for c in schema.passthrough:
        exprs.append(get(c).cast(pl.Float64, strict=False).alias(c))
    return exprs, reasons


def categorical_expr(f: FieldSpec, s: pl.Expr) -> pl.Expr:
    """Raw string -> categorical token (after the field's preprocess); empty = null (missing)."""
    if f.preprocess == "hour_of_day":
        s = s.str.slice(6, 2)
    elif f.preprocess == "weekday":
        s = s.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False).dt.weekday().cast(pl.String)
    return pl.when(s.str.len_bytes() == 0).then(None).otherwise(s)


def _numeric(f: FieldSpec, s: pl.Expr) -> tuple[pl.Expr, list[pl.Expr]]:
    s = s.str.strip_chars()
    x = s.cast(pl.Float64, strict=False)
    present = s.str.len_bytes() > 0
    reasons = [
        pl.when(present & x.is_null()).then(pl.format(f"non-numeric text '{{}}' in numeric field {f.name}", s)),
        pl.when(x.is_nan() | x.is_infinite()).then(pl.format(f"non-finite value '{{}}' in numeric field {f.name}", s)),
    ]
    if f.numeric == "bucket" and f.negative == "reject":
        reasons.append(pl.when(x < 0).then(
            pl.format(f"negative value {{}} in field {f.name} (log bucketing needs >= 0)", s)))
    if f.numeric == "bucket" and f.negative == "missing":
        x = pl.when(x < 0).then(None).otherwise(x)
    return pl.when(present).then(x).otherwise(None), reasons


def _delimited_columns(p: Path, schema: DataSchema) -> list[str]:
    sep = schema.separator
    if schema.has_header:
        columns = read_header(p, schema)
    elif schema.columns:
        columns = list(schema.columns)
    else:
        raise SchemaError("a file without header needs `columns:` in its schema")
    missing = [c for c in schema.required_columns() if c not in columns]
    if missing:
        hint = ""
        if schema.has_header and len(columns) == 1 and len(schema.required_columns()) > 1:
            hint = f" (the header has one column: is the separator {sep!r} right?)"
        raise SchemaError(f"schema names column(s) {missing} not found in {p} columns {columns[:50]}{hint}")
    return columns


def validate_delimited(lines: pl.LazyFrame, schema: DataSchema, columns: list[str]) -> pl.LazyFrame:
    """Records (``_line``, ``_raw`` and, where a record was quoted, ``_parts`` / ``_quote_error`` from
    :func:`~linmix.apps.ctr.delimited.iter_record_chunks`) -> validated rows (see module docstring)."""
    sep = schema.separator
    n = len(columns)
    col_ix = {c: i for i, c in enumerate(columns)}
    lf = lines
    names = lf.collect_schema().names()
    if "_parts" not in names:
        lf = lf.with_columns(_parts=pl.col("_raw").str.split(sep), _quote_error=pl.lit(None, dtype=pl.String))
    cnt = pl.col("_parts").list.len()
    sep_name = _SEP_NAMES.get(sep, repr(sep))
    count_reason = (pl.when(pl.col("_raw").str.len_bytes() == 0).then(pl.lit("blank line"))
                    .when(pl.col("_quote_error").is_not_null()).then(pl.col("_quote_error"))
                    .when(cnt != n).then(pl.format(
                        f"wrong column count: expected {n} {sep_name}-separated columns, found {{}}{{}}", cnt,
                        pl.when(cnt == 1).then(pl.lit(" (wrong delimiter?)")).otherwise(pl.lit("")))))

    def get(c: str) -> pl.Expr:
        return pl.col("_parts").list.get(col_ix[c], null_on_oob=True)

    exprs, reasons = _typed_columns(schema, get)
    return lf.select(pl.col("_line").cast(pl.Int64), "_raw", _first_reason([count_reason] + reasons).alias("_reason"),
                     *exprs)


_NO_LINES = pl.LazyFrame(schema={"_line": pl.Int64, "_raw": pl.String})


def _scan_text(path: str | Path, schema: DataSchema) -> pl.LazyFrame:
    """A delimited or libfm text file whole: the chunks of :func:`iter_source_chunks`, concatenated."""
    chunks = list(iter_source_chunks(path, schema, rows=1_000_000))
    if chunks:
        return pl.concat(chunks)
    if schema.format == "libfm":
        return validate_libfm(_NO_LINES, schema)
    return validate_delimited(_NO_LINES, schema, _delimited_columns(check_file(path), schema))


def iter_lines(path: Path, rows: int, encoding: str = "utf-8") -> Iterator[pl.LazyFrame]:
    """The file as frames of at most ``rows`` lines: ``_line`` (1-based, continuing) and ``_raw`` (no newline)."""
    lines = physical_lines(path, encoding)
    while True:
        block = list(islice(lines, rows))
        if not block:
            return
        yield pl.LazyFrame([pl.Series("_line", [b[0] for b in block], dtype=pl.Int64),
                            pl.Series("_raw", [b[1].removesuffix("\n").removesuffix("\r") for b in block],
                                      dtype=pl.String)])


def validate_libfm(lines: pl.LazyFrame, schema: DataSchema) -> pl.LazyFrame:
    """``lines`` (``_line``, ``_raw``) of a libfm file -> validated rows."""
    n = len(schema.fields)
    lf = lines
    lf = lf.with_columns(_parts=pl.col("_raw").str.extract_all(r"\S+"))
    cnt = pl.col("_parts").list.len()
    reasons = [pl.when(cnt == 0).then(pl.lit("blank line"))
               .when(cnt != n + 1).then(pl.format(f"wrong column count: expected label + {n} idx:val pairs, "
                                                  "found {} items", cnt))]
    label = pl.col("_parts").list.get(0, null_on_oob=True)
    lab = _label_expr(label, libfm=True)
    reasons.append(pl.when(lab.is_null() & (cnt > 0)).then(pl.format("label '{}' is not 0/1 (or -1/+1)", label)))
    exprs = [lab.alias(schema.label)]
    for k, f in enumerate(schema.fields):
        pair = pl.col("_parts").list.get(k + 1, null_on_oob=True)
        idx = pair.str.extract(r"^([^:]+):([^:]+)$", 1)
        val_s = pair.str.extract(r"^([^:]+):([^:]+)$", 2)
        val = val_s.cast(pl.Float64, strict=False)
        reasons.append(pl.when(pair.is_not_null() & idx.is_null()).then(
            pl.format(f"field {f.name}: malformed pair '{{}}' (expected idx:val)", pair)))
        reasons.append(pl.when(val_s.is_not_null() & (val.is_null() | val.is_nan() | val.is_infinite())).then(
            pl.format(f"field {f.name}: value '{{}}' is not a finite number", val_s)))
        exprs += [idx.alias(f.name), val.alias(f"{f.name}__val")]
    return lf.select(pl.col("_line").cast(pl.Int64), "_raw", _first_reason(reasons).alias("_reason"), *exprs)


def scan_parquet(path: str | Path, schema: DataSchema, chunk: Optional[tuple[int, int]] = None) -> pl.LazyFrame:
    """A Parquet file described by a schema; values are validated like text (row number + 1 = ``_line``).
    ``chunk=(offset, rows)`` restricts it to those rows."""
    p = check_file(path)
    lf = pl.scan_parquet(p)
    types = lf.collect_schema()
    names = types.names()
    missing = [c for c in schema.required_columns() if c not in names]
    if missing:
        raise SchemaError(f"schema names column(s) {missing} not found in {p} columns {names[:50]}")
    cols = schema.required_columns()
    nested = [f"{c} ({types[c]})" for c in cols if types[c].is_nested()]
    if nested:
        raise SchemaError(f"{p}: column(s) {nested} hold lists or structs; linmix-ctr reads one scalar per column "
                          "(a sequence field is one string with its tokens joined by the field's `splitter`)")
    lf = lf.select([pl.col(c).cast(pl.String) for c in cols]).with_row_index("_line", offset=1)
    if chunk is not None:
        lf = lf.slice(*chunk)
    exprs, reasons = _typed_columns(schema, pl.col, boolean_label=types[schema.label] == pl.Boolean)
    raw = pl.concat_str([pl.col(c).fill_null("") for c in cols], separator=",")
    return lf.select(pl.col("_line").cast(pl.Int64), raw.alias("_raw"), _first_reason(reasons).alias("_reason"),
                     *exprs)


def scan_source(path: str | Path, schema: DataSchema) -> pl.LazyFrame:
    """Dispatch on ``schema.format``: the whole file as one lazy frame of validated rows."""
    if schema.format == "parquet":
        return scan_parquet(path, schema)
    return _scan_text(path, schema)


def iter_source_chunks(path: str | Path, schema: DataSchema, rows: int = 50_000) -> Iterator[pl.LazyFrame]:
    """Validated rows of ``path`` in chunks of at most ``rows`` input lines (memory bounded by the chunk)."""
    p = check_file(path)
    if schema.format == "parquet":
        total = pl.scan_parquet(p).select(pl.len()).collect().item()
        scan_parquet(p, schema)  # schema check even for an empty file
        for off in range(0, total, rows):
            yield scan_parquet(p, schema, (off, rows))
        return
    if schema.format == "libfm":
        for lines in iter_lines(p, rows, schema.encoding):
            yield validate_libfm(lines, schema)
        return
    columns = _delimited_columns(p, schema)
    chunks = iter_record_chunks(p, schema.separator, schema.quote, schema.encoding, rows, schema.has_header)
    for records in chunks:
        yield validate_delimited(records, schema, columns)

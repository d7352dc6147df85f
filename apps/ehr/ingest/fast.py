"""Block decoder for bulk NDJSON: the vectorised fast path of ingestion (msgspec typed decoding + polars columns).

A block (whole lines, about :data:`BLOCK_BYTES`) of a bulk NDJSON file is decoded in pieces of about
:data:`PIECE_BYTES` (whole lines), each with ``msgspec.json.Decoder(<Type>Fast).decode_lines(piece)``, into typed
Structs that hold only the fields ingestion needs (unknown fields are skipped without building Python objects).
Each piece's Structs become polars Series at once (while they are in the CPU cache) and are freed; the block's
Series make one polars frame, and the checks msgspec cannot express (reference shapes, non-empty code, display,
time and unit) run vectorised on it, in one pass. The rows are exactly those :class:`linmix.apps.ehr.ingest.fhir.Flattener` gives
for the same lines (tested).

A block takes the fast path only as a whole: every line non-blank, of the block's resource type, of the common
bulk-export shape (``Patient/<id>`` subject and ``Encounter/<id>`` encounter references; exactly one coding, of the
type's preferred system, with a plain code (:func:`linmix.apps.ehr.ingest.checks.is_plain`) and a display; a string
time; for Observations a ``valueQuantity`` with a numeric value within float32, a unit and at most a valid
comparator; no ``contained`` resources) and with the right JSON types. Otherwise the block is retried
as sub-blocks of :data:`SUB_LINES` lines and the sub-blocks that still fail go line by line through the general
path (orjson + Flattener), which gives the precise quarantine reason (malformed JSON, missing reference, ...).
So bad lines cost at most one extra decode of their block plus a sub-block on the general path, and nothing
is lost or reordered: rows stay in input order.

Frames per block: ``(kind, frame)`` with kind ``"p"``, ``"e"`` or ``"v"`` and the columns of ``P_SCHEMA``,
``E_SCHEMA`` or ``V_SCHEMA`` (:mod:`linmix.apps.ehr.ingest.read`). Ref: msgspec typed decoding
(https://jcristharif.com/msgspec/structs.html); FHIR R4 bulk data export (one resource type per file).
"""

from __future__ import annotations

from functools import partial
from operator import attrgetter, itemgetter
from typing import Literal

import msgspec
import polars as pl

from linmix.apps.ehr.ingest.checks import COMPARATORS, F32_MAX, plain_expr
from linmix.apps.ehr.ingest.fhir import _PREFERRED, VOCAB

#: bytes per block read from an NDJSON file (a block is cut at the last newline)
BLOCK_BYTES = 8 << 20
#: lines per sub-block when a block fails the fast path
SUB_LINES = 256
#: bytes of lines decoded at once within a block: their Structs and strings stay in the CPU cache while they are
#: read into polars Series (on the 1M cohort, A/B paired per block against 256 KiB pieces with the Series built
#: once per block: 256-512 KiB pieces 15-17 % less CPU, 1 MiB and 64 KiB none)
PIECE_BYTES = 384 << 10

_S = {"gc": False, "kw_only": True}  # no cycles: untracked by the GC (cheaper to create and to free)
#: ``contained`` resources are counted by the general path: typed ``None``, a ``contained`` list fails the block here
_CONTAINED = ("contained", None, None)


class _Ref(msgspec.Struct, **_S):
    reference: str


class _Period(msgspec.Struct, **_S):
    start: str | None = None
    end: str | None = None


class _EncPeriod(msgspec.Struct, **_S):
    start: str
    end: str | None = None


class _Quantity(msgspec.Struct, **_S):
    value: float  # int or float in JSON; bool, string and null fail
    unit: str
    comparator: str | None = None


class _Class(msgspec.Struct, **_S):
    code: str
    display: str | None = None


class _Head(msgspec.Struct, **_S):
    resourceType: str | None = None  # noqa: N815


def _cc(rtype: str) -> type:
    """CodeableConcept of exactly one coding of the type's preferred system, with a code and a display (the system
    is a Literal: checked by msgspec without building a string)."""
    coding = msgspec.defstruct(f"_{rtype}Coding", [("system", Literal[_PREFERRED[rtype]]), ("code", str),
                                                    ("display", str)], **_S)
    return msgspec.defstruct(f"_{rtype}CC", [("coding", tuple[coding])], **_S)


def _event(rtype: str, code_field: str, extra: list) -> type:
    fields = [("resourceType", Literal[rtype]), ("id", str), ("subject", _Ref), ("encounter", _Ref),
              (code_field, _cc(rtype))]
    return msgspec.defstruct(f"{rtype}Fast", fields + extra + [_CONTAINED], **_S)


class PatientFast(msgspec.Struct, **_S):
    resourceType: Literal["Patient"]  # noqa: N815
    id: str
    gender: str | None = None
    birthDate: str | None = None  # noqa: N815
    deceasedDateTime: str | None = None  # noqa: N815
    deceasedBoolean: bool | None = None  # noqa: N815
    contained: None = None


class EncounterFast(msgspec.Struct, **_S):
    resourceType: Literal["Encounter"]  # noqa: N815
    id: str
    subject: _Ref
    cls: _Class = msgspec.field(name="class")
    period: _EncPeriod
    contained: None = None


#: Field order of the event Structs: required fields first (defstruct needs defaults last).
STRUCTS: dict[str, type] = {
    "Patient": PatientFast,
    "Encounter": EncounterFast,
    "Observation": _event("Observation", "code", [("effectiveDateTime", str), ("valueQuantity", _Quantity)]),
    "Condition": _event("Condition", "code", [("onsetDateTime", str | None, None),
                                              ("onsetPeriod", _Period | None, None),
                                              ("recordedDate", str | None, None)]),
    "Procedure": _event("Procedure", "code", [("performedDateTime", str | None, None),
                                              ("performedPeriod", _Period | None, None)]),
    "MedicationRequest": _event("MedicationRequest", "medicationCodeableConcept", [("authoredOn", str)]),
}
_HEAD = msgspec.json.Decoder(_Head)
DECODERS = {t: msgspec.json.Decoder(c) for t, c in STRUCTS.items()}
_first = itemgetter(0)


def block_type(block) -> str | None:
    """Resource type of the first line of ``block`` (bytes-like) when it has a fast decoder, else None."""
    head = bytes(block[:4096])
    nl = head.find(b"\n")
    try:
        t = _HEAD.decode(head if nl < 0 else head[:nl]).resourceType
    except msgspec.MsgspecError:
        try:  # a first line longer than 4 KiB
            t = _HEAD.decode(bytes(block).split(b"\n", 1)[0]).resourceType
        except msgspec.MsgspecError:
            return None
    return t if t in DECODERS else None


def _get(recs: list, path: str) -> list:
    return list(map(attrgetter(path), recs))


def _nonempty(*cols: str) -> list[pl.Expr]:
    """Checks that string columns hold no ``""`` (a polars length test, not a Python scan of each list)."""
    return [pl.col(c).str.len_bytes() > 0 for c in cols]


def _loc(src: int, first_line: int, n: int) -> list[pl.Expr]:
    return [pl.lit(src, pl.Int32).alias("src"),
            pl.int_range(first_line, first_line + n, dtype=pl.Int64).alias("line"),
            pl.lit(-1, pl.Int32).alias("entry")]


def _ref_ok(ref: str, rest: str, prefix: str) -> pl.Expr:
    """``ref`` matches ``^<prefix>[^/?]+$``, where ``rest`` is ``ref`` without its first ``len(prefix)`` characters:
    a literal prefix test and a literal two-byte search instead of a regex (a third of the cost)."""
    return (pl.col(ref).str.starts_with(prefix) & (pl.col(rest).str.len_bytes() > 0)
            & ~pl.col(rest).str.contains_any(["/", "?"]))


def _all(df: pl.DataFrame, checks: list[pl.Expr]) -> bool:
    """Every check holds on every row (one polars pass; the checks see no nulls, or test them explicitly)."""
    return bool(df.select(pl.all_horizontal(checks).all(ignore_nulls=False)).item())


def _event_cols(rtype: str, recs: list) -> dict[str, list | None] | None:
    """Python columns of event Structs (None: a record needs the general path)."""
    code_field = "medicationCodeableConcept" if rtype == "MedicationRequest" else "code"
    c0 = list(map(_first, map(attrgetter(code_field + ".coding"), recs)))
    num = unit = text = None
    if rtype == "Observation":
        time = _get(recs, "effectiveDateTime")
        q = _get(recs, "valueQuantity")
        num, unit, text = _get(q, "value"), _get(q, "unit"), _get(q, "comparator")
        if text.count(None) == len(text):  # no comparator (C-speed identity scan): a null column
            text = None
    elif rtype == "MedicationRequest":
        time = _get(recs, "authoredOn")
    elif rtype == "Procedure":
        pdt, per = _get(recs, "performedDateTime"), _get(recs, "performedPeriod")
        time = [t if t is not None else (None if p is None else p.start) for t, p in zip(pdt, per, strict=True)]
    else:  # Condition: onsetDateTime or recordedDate (may stay null: resolve takes the encounter's start)
        if any(p is not None for p in _get(recs, "onsetPeriod")):
            return None  # onsetPeriod -> the general path
        onset, rec = _get(recs, "onsetDateTime"), _get(recs, "recordedDate")
        time = [a or b for a, b in zip(onset, rec, strict=True)]
    return {"rid": _get(recs, "id"), "sref": _get(recs, "subject.reference"),
            "eref": _get(recs, "encounter.reference"), "time": time, "code": _get(c0, "code"),
            "desc": _get(c0, "display"), "num": num, "text": text, "unit": unit}


_EVENT_SCHEMA = {"rid": pl.String, "sref": pl.String, "eref": pl.String, "time": pl.String, "code": pl.String,
                 "desc": pl.String, "num": pl.Float64, "text": pl.String, "unit": pl.String}


def _events(rtype: str, df: pl.DataFrame, src: int, first_line: int) -> pl.DataFrame | None:
    df = df.with_columns(subject=pl.col("sref").str.slice(8), enc=pl.col("eref").str.slice(10))
    checks = [*_nonempty("code", "desc"), plain_expr("code"), _ref_ok("sref", "subject", "Patient/"),
              _ref_ok("eref", "enc", "Encounter/")]
    if rtype != "Condition":  # Condition: null time allowed
        checks += [pl.col("time").is_not_null(), *_nonempty("time")]
    if rtype == "Observation":  # unit "" -> the general path (``unit or code``)
        checks += [*_nonempty("unit"), pl.col("num").abs() <= F32_MAX]
        if df["text"].null_count() < df.height:  # comparators
            checks.append(pl.col("text").is_null() | pl.col("text").is_in(COMPARATORS))
    if not _all(df, checks):
        return None
    return df.select(*_loc(src, first_line, df.height), pl.lit(rtype).alias("rtype"), "rid", "subject", "enc",
                     "time", (pl.lit(f"{VOCAB[_PREFERRED[rtype]]}//") + pl.col("code")).alias("code"), "desc",
                     "num", "text", "unit")


def _patient_cols(recs: list) -> dict[str, list]:
    return {"rid": _get(recs, "id"), "gender": _get(recs, "gender"), "birth": _get(recs, "birthDate"),
            "death": _get(recs, "deceasedDateTime"), "flag": _get(recs, "deceasedBoolean")}


_PATIENT_SCHEMA = {"rid": pl.String, "gender": pl.String, "birth": pl.String, "death": pl.String,
                   "flag": pl.Boolean}


def _patients(df: pl.DataFrame, src: int, first_line: int) -> pl.DataFrame | None:
    if not _all(df, [*_nonempty("rid"), plain_expr("gender")]):
        return None
    return df.select(*_loc(src, first_line, df.height), "rid",
                     pl.when(pl.col("gender") != "").then(pl.col("gender")).alias("gender"), "birth", "death",
                     pl.col("flag").fill_null(False).alias("deceased_flag"))


def _encounter_cols(recs: list) -> dict[str, list]:
    return {"rid": _get(recs, "id"), "sref": _get(recs, "subject.reference"), "cls": _get(recs, "cls.code"),
            "cls_display": _get(recs, "cls.display"), "start": _get(recs, "period.start"),
            "end": _get(recs, "period.end")}


_ENCOUNTER_SCHEMA = dict.fromkeys(("rid", "sref", "cls", "cls_display", "start", "end"), pl.String)


def _encounters(df: pl.DataFrame, src: int, first_line: int) -> pl.DataFrame | None:
    df = df.with_columns(subject=pl.col("sref").str.slice(8))
    if not _all(df, [*_nonempty("rid", "cls"), plain_expr("cls"), _ref_ok("sref", "subject", "Patient/")]):
        return None
    return df.select(*_loc(src, first_line, df.height), "rid", "subject", "cls", "cls_display", "start", "end")


def _pieces(block) -> list[memoryview]:
    """``block`` cut into views of whole lines of about :data:`PIECE_BYTES` (a line longer than the search window
    stays whole, in the last piece)."""
    mv = memoryview(block)
    out, pos, n = [], 0, len(mv)
    while n - pos > PIECE_BYTES:
        end = pos + PIECE_BYTES
        lo = max(pos, end - (64 << 10))
        j = bytes(mv[lo:end]).rfind(b"\n")
        if j < 0:
            break
        out.append(mv[pos:lo + j + 1])
        pos = lo + j + 1
    out.append(mv[pos:])
    return out


def decode_block(block: bytes, rtype: str, src: int, first_line: int, n_lines: int) -> tuple[str, pl.DataFrame] | None:
    """Fast path for a block of ``n_lines`` whole lines starting at line ``first_line``: ``(kind, frame)`` or None
    when any line does not fit (the caller then takes the general path for it).

    The block is decoded piece by piece (:func:`_pieces`): each piece's Structs are read into Python lists and
    those into polars Series right away, while the objects are still in the CPU cache (over a whole 8 MiB block
    the attribute reads and the Series building ran from main memory and cost more than the decoding); the
    checks run once on the block's frame."""
    if rtype == "Patient":
        extract, schema = _patient_cols, _PATIENT_SCHEMA
    elif rtype == "Encounter":
        extract, schema = _encounter_cols, _ENCOUNTER_SCHEMA
    else:
        extract, schema = partial(_event_cols, rtype), _EVENT_SCHEMA
    series: dict[str, list[pl.Series]] = {k: [] for k in schema}
    total = 0
    try:
        for piece in _pieces(block):
            recs = DECODERS[rtype].decode_lines(piece)
            total += len(recs)
            got = extract(recs)
            del recs
            if got is None:
                return None
            for k, v in got.items():
                if v is not None:
                    series[k].append(pl.Series(k, v, dtype=schema[k]))
                elif series[k]:  # a column missing in this piece but not in an earlier one (comparators)
                    series[k].append(pl.repeat(None, len(got["rid"]), dtype=schema[k], eager=True).alias(k))
    except msgspec.MsgspecError:  # DecodeError (malformed), ValidationError (shape or type)
        return None
    if total != n_lines or not total:  # blank lines (skipped by decode_lines) keep the general path
        return None
    for k, v in series.items():  # a column missing in the first pieces but not in a later one
        got = sum(x.len() for x in v)
        if v and got < total:
            v.insert(0, pl.repeat(None, total - got, dtype=schema[k], eager=True).alias(k))
    df = pl.DataFrame([pl.concat(v, rechunk=True) if len(v) > 1 else v[0] if v else
                       pl.repeat(None, total, dtype=schema[k], eager=True).alias(k) for k, v in series.items()])
    if rtype == "Patient":
        df = _patients(df, src, first_line)
        return None if df is None else ("p", df)
    if rtype == "Encounter":
        df = _encounters(df, src, first_line)
        return None if df is None else ("e", df)
    df = _events(rtype, df, src, first_line)
    return None if df is None else ("v", df)

"""What ingestion keeps, refuses or flags in single values: code parts, numeric values, comparators, malformed-JSON
hints, and the "accepted but suspicious" counts of the report.

Both read paths use these: the general path (:mod:`linmix.apps.ehr.ingest.fhir`) calls the Python functions per
value; the vectorised fast path (:mod:`linmix.apps.ehr.ingest.fast`) runs the polars expressions on whole blocks and
hands every block where one would change or refuse a value to the general path, so both give the same rows.

* **Code parts** (``Coding.code``, ``Encounter.class.code``, ``Patient.gender``): trimmed of JSON whitespace;
  ``%`` and ``/`` are percent-encoded (``%25``, ``%2F``), so ``//`` in a MEDS code (``SYSTEM//code``,
  ``ENCOUNTER//class//START``) only ever separates parts and ``urllib.parse.unquote`` gives the FHIR code back. The
  system part is the vocabulary name (letters and digits only, :func:`linmix.apps.ehr.ingest.fhir.vocab_of`).
* **Numeric values** must fit MEDS ``numeric_value`` (float32): ``|v| <= 3.4028235e38``; larger values reject
  (``value out of range``) instead of becoming ``inf``. JSON has no NaN / Infinity: such lines are malformed JSON,
  with a hint.
* **Comparators** (``valueQuantity.comparator`` ``<``, ``<=``, ``>=``, ``>``) are kept: ``numeric_value`` holds the
  bound and ``text_value`` the comparator. Other comparator strings reject (``unsupported comparator``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
import polars as pl

#: JSON whitespace, trimmed from code parts (the same set on both paths; Python's ``str.strip()`` and polars'
#: ``strip_chars()`` disagree on some control characters)
WS = " \t\n\r"
#: the largest float32: MEDS ``numeric_value`` is float32
F32_MAX = float(np.finfo(np.float32).max)
COMPARATORS = ("<", "<=", ">=", ">")
#: a code part that needs trimming or escaping (the fast path sends its block to the general path)
_UNPLAIN_RE = r"^[ \t\n\r]|[ \t\n\r]$|[/%]"


def code_part(x: object) -> str:
    """A FHIR code (any JSON scalar) -> one MEDS code part: trimmed, ``%`` -> ``%25``, ``/`` -> ``%2F``."""
    s = (x if x.__class__ is str else str(x)).strip(WS)
    if "%" in s:
        s = s.replace("%", "%25")
    if "/" in s:
        s = s.replace("/", "%2F")
    return s


def is_plain(s: str) -> bool:
    """``code_part(s) == s`` for a string (no trimming, no escaping needed)."""
    return s == s.strip(WS) and "/" not in s and "%" not in s


def plain_expr(col: str) -> pl.Expr:
    """Vectorised :func:`is_plain` of a string column (true for null)."""
    return ~pl.col(col).str.contains(_UNPLAIN_RE).fill_null(False)


def value_ok(v: float) -> bool:
    """The value fits float32 (false for NaN and infinities)."""
    return -F32_MAX <= v <= F32_MAX


#: quarantine reasons of values (raised as :class:`linmix.apps.ehr.ingest.fhir.Reject` by the general path)
OUT_OF_RANGE = "value out of range: {} does not fit MEDS numeric_value (float32, |v| <= 3.4e38)"
BAD_COMPARATOR = "unsupported comparator: valueQuantity.comparator must be <, <=, >= or >"


_NONFINITE = re.compile(rb"[:,\[]\s*-?(?:NaN|Infinity|inf|nan)\b")


def malformed_reason(err: Exception, raw: bytes, ndjson: bool) -> str:
    """Quarantine reason of a line (or file) that is not JSON, with a hint for two common causes."""
    reason = f"malformed JSON: {err}"
    if _NONFINITE.search(raw):
        reason += " (hint: NaN and Infinity are not JSON numbers)"
    if ndjson:
        s = raw.strip()
        if s[:1] in (b'"', b"}", b"]") or s[-1:] in (b"{", b"[", b","):
            reason += (" (hint: this looks like pretty-printed JSON: an .ndjson file holds one resource per line; "
                       "save a Bundle or a single resource as .json)")
    return reason


#: keys of ``report.json``'s ``suspicious`` counts (accepted resources, rows kept), always all present
SUSPICIOUS = ("patient_without_birth_date", "patient_born_after_events", "event_before_birth", "time_before_1900",
              "time_after_next_year", "time_without_timezone")


def _sum(df: pl.DataFrame, expr: pl.Expr) -> int:
    return int(df.select(expr.fill_null(False).sum()).item()) if df.height else 0


def suspicious(P: pl.DataFrame, E: pl.DataFrame, V: pl.DataFrame, now: datetime | None = None) -> dict[str, int]:
    """Counts of accepted-but-suspicious values (see :data:`SUSPICIOUS`) from the accepted frames of
    :func:`linmix.apps.ehr.ingest.resolve.resolve`: ``P`` (``birth_t``, ``death_t``, ``_nv_birth``, ``_nv_death``),
    ``E`` (``subject``, ``start_t``, ``end_t``, ``birth_t``, ``_nv_start``, ``_nv_end``) and ``V`` (one row per
    value; ``_start`` marks a resource's first row; ``subject``, ``t``, ``birth_t``, ``_nv_time``).

    Times are counted per value (a Patient's birth and death, an Encounter's start and end, an event's time);
    ``time_after_next_year`` is a year after ``now``'s (UTC) next one: the count changes with the calendar year
    only, so reruns within a year give the same report."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    lo, hi = datetime(1900, 1, 1), datetime(now.year + 2, 1, 1)
    first = pl.col("_start")
    e_before = E.filter(pl.col("start_t") < pl.col("birth_t")).select("subject") if E.height else E.select("subject")
    v_before = (V.filter(first & (pl.col("t") < pl.col("birth_t"))).select("subject") if V.height
                else V.select("subject"))
    out = {
        "patient_without_birth_date": _sum(P, pl.col("birth_t").is_null()),
        "patient_born_after_events": pl.concat([e_before, v_before])["subject"].n_unique(),
        "event_before_birth": e_before.height + v_before.height,
        "time_before_1900": 0, "time_after_next_year": 0,
        "time_without_timezone": (_sum(P, pl.col("_nv_birth")) + _sum(P, pl.col("_nv_death"))
                                  + _sum(E, pl.col("_nv_start")) + _sum(E, pl.col("_nv_end"))
                                  + _sum(V, first & pl.col("_nv_time"))),
    }
    for df, cols, mask in ((P, ("birth_t", "death_t"), None), (E, ("start_t", "end_t"), None), (V, ("t",), first)):
        for c in cols:
            m = pl.lit(True) if mask is None else mask
            out["time_before_1900"] += _sum(df, m & (pl.col(c) < lo))
            out["time_after_next_year"] += _sum(df, m & (pl.col(c) >= hi))
    return out

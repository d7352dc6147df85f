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
    """Vectorised :func:`is_plain` of a string column (true for null), stricter: no blank anywhere either (one
    Aho-Corasick pass, 3x cheaper than a regex; a code with inner blanks takes the general path, same rows)."""
    return ~pl.col(col).str.contains_any(["/", "%", *WS]).fill_null(False)


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


def _sums(df: pl.DataFrame, exprs: dict[str, pl.Expr]) -> dict[str, int]:
    """Sums of Boolean expressions over ``df`` in one pass (null counts as false)."""
    if not df.height:
        return dict.fromkeys(exprs, 0)
    row = df.select(**{k: e.fill_null(False).sum() for k, e in exprs.items()}).row(0, named=True)
    return {k: int(v) for k, v in row.items()}


def suspicious(P: pl.DataFrame, E: pl.DataFrame, V: pl.DataFrame, now: datetime | None = None) -> dict[str, int]:
    """Counts of accepted-but-suspicious values (see :data:`SUSPICIOUS`) from the accepted frames of
    :func:`linmix.apps.ehr.ingest.resolve.resolve`: ``P`` (``birth_t``, ``death_t``, ``_nv_birth``, ``_nv_death``),
    ``E`` (``subject``, ``start_t``, ``end_t``, ``birth_t``, ``_nv_start``, ``_nv_end``) and ``V`` (one row per
    value; ``_start`` marks a resource's first row; ``subject``, ``t``, ``birth_t``, ``_nv_time``); one pass each.

    Times are counted per value (a Patient's birth and death, an Encounter's start and end, an event's time);
    ``time_after_next_year`` is a year after ``now``'s (UTC) next one: the count changes with the calendar year
    only, so reruns within a year give the same report."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    lo, hi = datetime(1900, 1, 1), datetime(now.year + 2, 1, 1)
    c, first = pl.col, pl.col("_start")

    def times(*cols: str, mask: pl.Expr = pl.lit(True)) -> dict[str, pl.Expr]:
        return {"old": pl.sum_horizontal([mask & (c(x) < lo) for x in cols]),
                "new": pl.sum_horizontal([mask & (c(x) >= hi) for x in cols])}

    p = _sums(P, {"nobirth": c("birth_t").is_null(), "naive": c("_nv_birth").cast(pl.Int32) + c("_nv_death"),
                  **times("birth_t", "death_t")})
    e_before = c("start_t") < c("birth_t")
    v_before = first & (c("t") < c("birth_t"))
    e = _sums(E, {"before": e_before, "naive": c("_nv_start").cast(pl.Int32) + c("_nv_end"),
                  **times("start_t", "end_t")})
    v = _sums(V, {"before": v_before, "naive": first & c("_nv_time"), **times("t", mask=first)})
    born_after = 0
    if e["before"] + v["before"]:
        born_after = pl.concat([E.filter(e_before).select("subject"), V.filter(v_before).select("subject")])[
            "subject"].n_unique()
    return {"patient_without_birth_date": p["nobirth"], "patient_born_after_events": born_after,
            "event_before_birth": e["before"] + v["before"], "time_before_1900": p["old"] + e["old"] + v["old"],
            "time_after_next_year": p["new"] + e["new"] + v["new"],
            "time_without_timezone": p["naive"] + e["naive"] + v["naive"]}

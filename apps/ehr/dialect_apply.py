"""Apply a :class:`~linmix.apps.ehr.dialect.CodeDialect` to a MEDS frame: every row gets a ``kind``, a ``token``,
a lab key, a condition group and a visit key, in one vectorised polars pass; counts say what became of each row.

Added columns (the sequence builder and the labels read only these, never the raw codes):

- ``kind`` (Int8): -1 visit start, -2 visit end, -3 birth, -4 death, a token type id >= 0
  (:data:`TYPE_ID`), or null (not a token: dropped, a label-only condition, no rule).
- ``token``: the token string (code upper-cased; a visit start's class token; null for derived visit rows).
- ``labkey``: labs only, the raw code plus ``//<unit>`` when the unit is in a column (bins are per lab key).
- ``condition_group``: the phenotype group of a condition row used as a label (``E11``, ``SCT<id>``), else null.
- ``encounter_id``: the visit key joining a visit's start, end and events (from the dialect's id column, paired in
  order, or derived from gaps).
"""

from __future__ import annotations

from typing import Optional

import polars as pl

from linmix.apps.ehr.dialect import PRESETS, SNOMED_GROUPS, CodeDialect, pattern_regex

#: token type name -> token type id of the sequences (``sequences.TYPE_*``)
TYPE_ID = {"lab": 5, "medication": 6, "procedure": 7, "condition": 11, "demographic": 12, "other": 13}
START, END, BIRTH, DEATH = -1, -2, -3, -4
_SNOMED_KEYS = pl.Series(list(SNOMED_GROUPS), dtype=pl.String)
_SNOMED_VALS = pl.Series([g for g, _ in SNOMED_GROUPS.values()], dtype=pl.String)


def ensure_annotated(frame: pl.DataFrame, dialect: Optional[CodeDialect] = None) -> pl.DataFrame:
    """``frame`` itself when it already has the dialect columns, else :func:`annotate` with ``dialect`` (own)."""
    return frame if "kind" in frame.columns else annotate(frame, dialect)[0]


def _col_matches(frame: pl.DataFrame, column: str, pattern: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.contains(pattern_regex(pattern)).fill_null(False)


def annotate(frame: pl.DataFrame, dialect: Optional[CodeDialect] = None) -> tuple[pl.DataFrame, dict]:
    """Add ``kind, token, labkey, condition_group, encounter_id`` (module docstring); returns the frame and the
    row counts: ``by_rule`` (rows per outcome: a token type, drop, unknown, condition, visit start / end, birth,
    death), ``typed_rows`` (timed rows per token type: the candidates for tokens; the sequence builder counts those
    outside every visit), ``not_tokens`` (rows that are no input token, by reason) and ``missing_columns`` (columns
    a rule or the visit rule names that the data lacks; such a rule never matches)."""
    d = dialect or PRESETS["own"]
    v = d.visits
    code = pl.col("code")
    cols = set(frame.columns)
    missing: list[str] = []
    what = pl.when(code == d.birth).then(pl.lit("birth")).when(code == d.death).then(pl.lit("death"))
    if v.start:
        what = what.when(code.str.contains(pattern_regex(v.start))).then(pl.lit("visit start"))
    if v.mode == "codes" and v.end:
        what = what.when(code.str.contains(pattern_regex(v.end))).then(pl.lit("visit end"))
    grouping = pl.when(pl.lit(False)).then(pl.lit(None, dtype=pl.String))
    for r in d.rules:
        cond = code.str.contains(pattern_regex(r.match))
        if r.column is not None:
            if r.column not in cols:
                missing.append(r.column)
                continue
            cond = cond & _col_matches(frame, r.column, r.value)
        what = what.when(cond).then(pl.lit(r.type))
        grouping = grouping.when(cond).then(pl.lit(r.grouping))
    frame = frame.with_columns(what.otherwise(pl.lit("unknown")).alias("_what"),
                               grouping.otherwise(None).alias("_grouping"))
    what = pl.col("_what")

    # visit key
    id_col = v.id_column if v.mode == "codes" else None
    has_ids = id_col is not None and id_col in cols and frame[id_col].null_count() < frame.height
    if id_col is not None and id_col not in cols:
        missing.append(id_col)
    if has_ids:
        frame = frame.with_columns(pl.col(id_col).cast(pl.String).alias("encounter_id"))
    elif "encounter_id" not in cols or v.mode == "gaps" or id_col != "encounter_id":
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("encounter_id"))

    # kind and token
    is_token_type = what.is_in(["procedure", "medication", "lab", "demographic", "other"])
    kind = (pl.when(what == "visit start").then(pl.lit(START)).when(what == "visit end").then(pl.lit(END))
            .when(what == "birth").then(pl.lit(BIRTH)).when(what == "death").then(pl.lit(DEATH)))
    kind = kind.when(is_token_type).then(what.replace_strict(TYPE_ID, default=None, return_dtype=pl.Int8))
    if d.conditions != "labels":
        kind = kind.when(what == "condition").then(pl.lit(TYPE_ID["condition"]))
    if d.unknown == "other":
        kind = kind.when(what == "unknown").then(pl.lit(TYPE_ID["other"]))
    upper = code.str.to_uppercase()
    start_token = (upper.str.strip_suffix(v.class_suffix.upper()) if v.class_token else pl.lit(None, pl.String))
    unit_col = d.unit_column
    if unit_col is not None and unit_col not in cols:
        missing.append(unit_col)
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(unit_col))
    labkey = code if unit_col is None else code + "//" + pl.col(unit_col).cast(pl.String).fill_null("")
    last = code.str.extract(r"([^/]*)$", 1)
    icd3 = last.str.replace_all(".", "", literal=True).str.slice(0, 3).str.to_uppercase()
    sct = last.replace_strict(_SNOMED_KEYS, _SNOMED_VALS, default=pl.lit("SCT") + last, return_dtype=pl.String)
    group = (pl.when(pl.col("_grouping") == "icd10").then(icd3).when(pl.col("_grouping") == "snomed").then(sct)
             .otherwise(None))
    frame = frame.with_columns(
        kind.otherwise(None).cast(pl.Int8).alias("kind"),
        pl.when(what == "visit start").then(start_token).otherwise(upper).alias("token"),
        pl.when(what == "lab").then(labkey).otherwise(None).alias("labkey"),
        (pl.when(what == "condition").then(group) if d.conditions != "inputs" else pl.lit(None, pl.String))
        .alias("condition_group"))
    # visit rows with no usable key
    if has_ids:
        no_key = pl.col("kind").is_in([START, END]) & pl.col("encounter_id").is_null()
        frame = frame.with_columns(pl.when(no_key).then(None).otherwise(pl.col("kind")).alias("kind"),
                                   pl.when(no_key).then(pl.lit("_nokey")).otherwise(what).alias("_what"))
    elif v.mode == "codes":
        frame = _pair_in_order(frame)
    if v.mode == "codes" and v.end_column is not None:
        frame = _end_rows(frame, v.end_column, missing)
    if v.mode == "gaps":
        frame = _gap_visits(frame, v.gap_hours)
    counts = _counts(frame, d, missing)
    return frame.drop("_what", "_grouping"), counts


def _pair_in_order(frame: pl.DataFrame) -> pl.DataFrame:
    """No visit ids: the n-th start row of a subject (by time) opens visit n; an end row closes the latest start
    at or before it."""
    frame = frame.with_row_index("_i")
    vis = frame.filter(pl.col("kind").is_in([START, END]) & pl.col("time").is_not_null()).sort(
        "subject_id", "time", pl.col("kind") == END, "_i")  # at one time a start before an end
    vis = vis.with_columns((pl.col("kind") == START).cast(pl.Int32).cum_sum().over("subject_id").alias("_n"))
    vis = vis.select("_i", pl.when(pl.col("_n") > 0).then(pl.lit("~v") + pl.col("_n").cast(pl.String))
                     .alias("_key"))
    frame = frame.join(vis, on="_i", how="left", maintain_order="left")
    return frame.with_columns(pl.coalesce("_key", "encounter_id").alias("encounter_id")).drop("_i", "_key")


def _end_rows(frame: pl.DataFrame, end_column: str, missing: list[str]) -> pl.DataFrame:
    """A visit end per start row from its ``end_column`` (meds-etl's ``end``); without it a visit ends at its
    start."""
    starts = frame.filter(pl.col("kind") == START)
    if end_column not in frame.columns:
        missing.append(end_column)
        end = pl.col("time")
    else:
        end = pl.coalesce(pl.col(end_column).cast(pl.Datetime("us")), pl.col("time").cast(pl.Datetime("us")))
    ends = starts.with_columns(end.cast(frame.schema["time"]).alias("time"), pl.lit(END, pl.Int8).alias("kind"),
                               pl.lit(None, pl.String).alias("token"), pl.lit("_derived").alias("_what"))
    return pl.concat([frame, ends.select(frame.columns)])


def _gap_visits(frame: pl.DataFrame, gap_hours: float) -> pl.DataFrame:
    """Derived visits: a subject's timed token rows (and start-code rows) in time order; a new visit after a gap of
    more than ``gap_hours`` or at a start code. Adds one start and one end row per visit."""
    frame = frame.with_row_index("_i")
    gap_us = int(gap_hours * 3_600_000_000)
    ev = frame.filter(((pl.col("kind") >= 0) | (pl.col("kind") == START)) & pl.col("time").is_not_null())
    ev = ev.select("_i", "subject_id", pl.col("time").cast(pl.Datetime("us")).cast(pl.Int64).alias("_t"), "kind")
    prev = pl.col("_t").shift(1).over("subject_id")
    ev = ev.sort("subject_id", "_t", "_i").with_columns(
        (prev.is_null() | (pl.col("_t") - prev > gap_us) | ((pl.col("kind") == START) & (pl.col("_t") != prev)))
        .alias("_new"))
    ev = ev.with_columns(pl.col("_new").cast(pl.Int32).cum_sum().over("subject_id").alias("_n"))
    ev = ev.with_columns((pl.lit("~g") + pl.col("_n").cast(pl.String)).alias("_key"))
    frame = frame.join(ev.select("_i", "_key"), on="_i", how="left", maintain_order="left")
    frame = frame.with_columns(pl.coalesce("_key", "encounter_id").alias("encounter_id")).drop("_i", "_key")
    bounds = ev.group_by("subject_id", "_key").agg(pl.col("_t").min().alias("s"), pl.col("_t").max().alias("e"))
    tdt = frame.schema["time"]
    rows = []
    for col, k in (("s", START), ("e", END)):
        rows.append(bounds.select("subject_id", pl.col(col).cast(pl.Datetime("us")).cast(tdt).alias("time"),
                                  pl.col("_key").alias("encounter_id"), pl.lit(k, pl.Int8).alias("kind"),
                                  pl.lit("_derived").alias("_what")))
    return pl.concat([frame, *rows], how="diagonal_relaxed")


def _counts(frame: pl.DataFrame, d: CodeDialect, missing: list[str]) -> dict:
    """Rows per outcome; rows that are no input token, by reason."""
    by = {k: int(n) for k, n in frame.group_by("_what").len().sort("_what").iter_rows()}
    by.pop("_derived", None)
    notok: dict[str, int] = {}

    def add(reason: str, n: int) -> None:
        if n:
            notok[reason] = notok.get(reason, 0) + n

    add("dropped by a dialect rule (type drop)", by.get("drop", 0))
    if d.unknown == "drop":
        add("no rule matched (the dialect drops unknown codes)", by.get("unknown", 0))
    if d.conditions == "labels":
        cond = frame.filter(pl.col("_what") == "condition")
        grouped = int(cond["condition_group"].is_not_null().sum())
        add("condition: a label source, not an input (conditions: labels)", grouped)
        add("condition without a group (grouping none): neither label nor input", cond.height - grouped)
    add("death: the mortality label, never a token", by.get("death", 0))
    add(f"visit row without {d.visits.id_column}", by.get("_nokey", 0))
    static = frame.filter(pl.col("time").is_null() & (pl.col("kind") >= 0)).height
    add("no time (a static row)", static)
    tokens = {name: frame.filter((pl.col("kind") == tid) & pl.col("time").is_not_null()).height
              for name, tid in TYPE_ID.items()}
    return {"dialect": d.name, "rows": sum(by.values()), "by_rule": by, "typed_rows": tokens,
            "not_tokens": notok, "missing_columns": sorted(set(missing))}

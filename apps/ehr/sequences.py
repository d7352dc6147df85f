"""MEDS events -> Odyssey/EHRMamba token sequences with side arrays and a vocabulary (cached on disk by
:mod:`linmix.apps.ehr.sequence_cache`).

Layout per patient (EHRMamba, arXiv 2405.14567; Odyssey ``seq/generator.py`` logic, with its bugs fixed)::

    [CLS] [VS] e e e [VE] [REG] [W_2] [VS] e e [VE] [REG] [M_1] [VS] e ...

- Codes are read through a code dialect (:mod:`linmix.apps.ehr.dialect`, ``SequenceSettings.dialect``; default the
  ``own`` preset, this project's ingest output), which gives every row its token type, token, lab key and visit key.
- Visits are encounters (own: ``ENCOUNTER//<class>//START|END`` rows sharing an ``encounter_id``; other dialects:
  admission/discharge codes, visit rows with an end column, or visits derived from time gaps); overlapping or
  touching encounters are merged into one visit.
- Each encounter's class is a token (own: ``ENCOUNTER//<class>``, type CLASS) leading the events at its start, as
  Odyssey's 2026 MEDS pipeline emits ``ADMISSION//HOSPITAL|ED|ICU``: the admission type is known at admission and
  drives stay length and risk.
- Events are procedures (own: ``SNOMED//``, type PROC), medications (``RXNORM//``, MED) and labs (``LOINC//``, LAB);
  other dialects add condition, demographic and other tokens. Conditions (own: ``ICD10CM//``, ``CONDITION//``) are
  labels only by default, never tokens. An event joins the visit of its ``encounter_id``, else the visit whose
  [start, end] holds its time, else it is dropped (counted in ``SequenceStats``); its time is clamped into the visit.
- Interval tokens from the real day gap ``g = floor((start_next - end_prev) / 1 day) >= 0``, buckets without holes:
  ``[W_{g//7}]`` for g < 28, ``[M_{clip(g//30, 1, 12)}]`` for 28 <= g <= 365 (so 28-29 d is ``[M_1]``, not Odyssey's
  ``[M_0]``), ``[LT]`` beyond. ``[M_0]`` stays in the vocabulary (Odyssey ids) but is never emitted.
- Labs: per-(code, unit) quantile bins fitted on the train split (edges at the 20/40/60/80 % quantiles; a value equal
  to an edge goes up); the bin index is always in 0..4, so the maximum value is ``_Q5``, inside the vocabulary
  (Odyssey's ``np.digitize`` gives it an out-of-vocabulary bin 5).
- Side arrays per token: ``token_type`` (``TYPE_*``), ``age`` (years at the token time, float), ``time`` (days since the
  patient's first visit start, float; the model embeds its deltas), ``visit_order`` (1.. per visit, the previous visit's
  number on interval tokens, 0 on [CLS]/task/PAD), ``visit_segment`` (1/2 alternating per visit, 0 on [CLS]/intervals),
  and ``abs_time`` (int64 microseconds since the epoch, for cutting at a prediction time). Times never decrease along
  a sequence (interval tokens carry the next visit's start), so a cut at ``prediction_time`` keeps a prefix.

Vocabulary ids (:mod:`linmix.apps.ehr.vocab`): ``[PAD] [UNK] [MASK] [VS] [VE] [CLS] [REG]`` (0-6), 18 time tokens (7-24), task
tokens ``[MOR_1M] [LOS_1W] [REA_1M] [C0..C{k-1}]``, then concept tokens by train frequency up to ``vocab_size``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
import polars as pl

from linmix.apps.ehr.dialect import PRESETS, CodeDialect, dialect_key, resolve_dialect
from linmix.apps.ehr.dialect_apply import TYPE_ID, annotate, ensure_annotated
from linmix.apps.ehr.meds import MedsError, load_meds  # noqa: F401  (re-exported: part of this module's interface)
from linmix.apps.ehr.vocab import (  # noqa: F401  (re-exported: the vocabulary is part of this module's interface)
    BASE_TASK_TOKENS,
    SPECIALS,
    TIME_TOKENS,
    Vocabulary,
    build_vocabulary,
    fixed_tokens,
    task_tokens,
)

log = logging.getLogger(__name__)
PAD, UNK, MASK, VS, VE, CLS, REG = range(7)
# Token types (Odyssey TokenConfig ids, plus TASK for the prompt token and CLASS for the encounter class).
# Then the token types only other dialects emit: COND (conditions as inputs), DEMO (timed demographics), OTHER (codes
# no dialect rule names; linmix.apps.ehr.dialect).
(TYPE_PAD, TYPE_CLS, TYPE_VS, TYPE_VE, TYPE_TIME, TYPE_LAB, TYPE_MED, TYPE_PROC, TYPE_REG, TYPE_TASK,
 TYPE_CLASS, TYPE_COND, TYPE_DEMO, TYPE_OTHER) = range(14)
N_TOKEN_TYPES = 14
assert {"lab": TYPE_LAB, "medication": TYPE_MED, "procedure": TYPE_PROC, "condition": TYPE_COND,
        "demographic": TYPE_DEMO, "other": TYPE_OTHER} == TYPE_ID
N_LAB_BINS = 5
US_PER_DAY = 86_400_000_000
DAYS_PER_YEAR = 365.25
ARRAYS = ("tokens", "token_type", "age", "time", "visit_order", "visit_segment", "abs_time")


def interval_token(days: int) -> str:
    """Interval token for a gap of ``days`` >= 0 whole days between visits (buckets without holes)."""
    if days < 0:
        raise ValueError(f"negative gap {days} d: overlapping visits must be merged first")
    if days < 28:
        return f"[W_{days // 7}]"
    if days <= 365:
        return f"[M_{min(12, max(1, days // 30))}]"
    return "[LT]"


@dataclass
class SequenceSettings:
    """Settings that change the sequences (part of the cache key)."""

    vocab_size: int = 2048
    n_conditions: int = 5
    n_lab_bins: int = N_LAB_BINS
    user_tasks: tuple[str, ...] = ()  # tasks from --data.labels_dir: their prompt tokens take the last vocabulary ids
    dialect: Optional[CodeDialect] = None  # None = the ``own`` preset

    @property
    def code_dialect(self) -> CodeDialect:
        return self.dialect if self.dialect is not None else PRESETS["own"]


@dataclass
class SequenceStats:
    """Counts from one build: every event row is either tokenised or counted as dropped with a reason."""

    subjects: int = 0
    subjects_without_visits: int = 0
    event_rows: int = 0
    events_tokenised: int = 0
    events_outside_visits: int = 0
    events_without_time: int = 0
    unknown_tokens: int = 0
    #: events filed under an encounter that had ended before them: kept at their own time (in the visit that holds
    #: that time, whose end is extended to it), never moved back to the encounter's end (a prediction time between
    #: the two would see an event from its future)
    events_after_encounter_end: int = 0
    #: what the dialect made of every row (``dialect_apply.annotate``) and subjects left out, by reason
    dialect_rows: dict = field(default_factory=dict)
    subjects_left_out: dict = field(default_factory=dict)


def fit_lab_edges(frame: pl.DataFrame, n_bins: int = N_LAB_BINS,
                  dialect: Optional[CodeDialect] = None) -> dict[str, list[float]]:
    """Per lab key (``code//unit``, or the code when the unit is its last part) quantile edges (``n_bins - 1``
    inner edges) from the train split's numeric lab values."""
    frame = ensure_annotated(frame, dialect)
    qs = [(i + 1) / n_bins for i in range(n_bins - 1)]
    labs = frame.filter(
        (pl.col("split") == "train") & (pl.col("kind") == TYPE_LAB) & pl.col("numeric_value").is_not_null()
        & pl.col("numeric_value").is_finite())
    grouped = labs.group_by(pl.col("labkey").alias("key")).agg(
        [pl.col("numeric_value").cast(pl.Float64).quantile(q, "linear").alias(f"q{i}") for i, q in enumerate(qs)])
    return {row[0]: [float(v) for v in row[1:]] for row in grouped.sort("key").iter_rows()}


def _event_tokens(frame: pl.DataFrame, edges: dict[str, list[float]], n_bins: int) -> pl.DataFrame:
    """Annotated frame (``dialect_apply.annotate``) -> ``token`` with lab values binned (``<labkey>//Q<n>``)."""
    edge_frame = pl.DataFrame({"labkey": list(edges), **{f"_e{i}": [e[i] for e in edges.values()]
                                                        for i in range(n_bins - 1)}},
                              schema={"labkey": pl.String, **{f"_e{i}": pl.Float64 for i in range(n_bins - 1)}})
    frame = frame.join(edge_frame, on="labkey", how="left", maintain_order="left")
    value = pl.col("numeric_value").cast(pl.Float64)
    bin_ = pl.sum_horizontal([(value >= pl.col(f"_e{i}")).cast(pl.Int32) for i in range(n_bins - 1)])
    is_binned = (pl.col("kind") == TYPE_LAB) & value.is_not_null() & pl.col("_e0").is_not_null() & value.is_finite()
    token = (pl.when(is_binned).then(pl.col("labkey") + "//Q" + (bin_ + 1).cast(pl.String))
             .when(pl.col("kind") == TYPE_LAB).then(pl.col("labkey"))
             .otherwise(pl.col("token")))
    return frame.with_columns(token.alias("token")).drop([f"_e{i}" for i in range(n_bins - 1)])


def merge_visits(encounters: list[tuple[int, int, str]]) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Merge overlapping/touching encounters ``(start_us, end_us, encounter_id)`` into visits.

    Returns the visits ``(start_us, end_us)`` sorted by start and a map encounter_id -> visit index.
    """
    visits: list[list[int]] = []
    owner: dict[str, int] = {}
    for start, end, enc in sorted(encounters):
        end = max(end, start)
        if visits and start <= visits[-1][1]:
            visits[-1][1] = max(visits[-1][1], end)
        else:
            visits.append([start, end])
        owner[enc] = len(visits) - 1
    return [(s, e) for s, e in visits], owner


def patient_sequence(rows: dict[str, list], vocab: Vocabulary, stats: SequenceStats) -> dict[str, np.ndarray] | None:
    """Token and side arrays (full length, untruncated) for one patient's rows (columns of ``_event_tokens``)."""
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    birth = None
    events = []
    for t, kind, token, enc in zip(rows["t"], rows["kind"], rows["token"], rows["encounter_id"], strict=True):
        if kind == -1 and enc is not None and t is not None:
            starts[enc] = min(starts.get(enc, t), t)
            if token is not None:  # derived visits have no class token
                events.append((t, TYPE_CLASS, token, enc))
        elif kind == -2 and enc is not None and t is not None:
            ends[enc] = max(ends.get(enc, t), t)
        elif kind == -3 and t is not None:
            birth = t if birth is None else min(birth, t)
        elif kind is not None and kind >= 0:
            stats.event_rows += 1
            if t is None:
                stats.events_without_time += 1
            else:
                events.append((t, kind, token, enc))
    encounters = [(s, ends.get(e, s), e) for e, s in starts.items()]
    if not encounters:
        stats.subjects_without_visits += 1
        stats.events_outside_visits += len(events)
        return None
    visits, owner = merge_visits(encounters)
    visits = [list(v) for v in visits]
    per_visit: list[list[tuple[int, str, int]]] = [[] for _ in visits]
    v_starts = np.array([s for s, _ in visits], dtype=np.int64)
    for t, kind, token, enc in events:
        v = owner.get(enc) if enc is not None else None
        if v is None:  # no (known) encounter: the visit whose [start, end] holds t
            i = int(np.searchsorted(v_starts, t, side="right")) - 1
            v = i if i >= 0 and t <= visits[i][1] else None
        if v is None:
            stats.events_outside_visits += 1
            continue
        s, e = visits[v]
        if t > e:  # after its encounter's end: at its own time, in the last visit starting at or before it
            stats.events_after_encounter_end += 1
            v = int(np.searchsorted(v_starts, t, side="right")) - 1
            visits[v][1] = max(visits[v][1], t)  # the next visit starts after t: times stay non-decreasing
            s, e = visits[v]
        per_visit[v].append((max(t, s), token, kind))
    first = visits[0][0]
    birth = first if birth is None else birth
    out: dict[str, list] = {k: [] for k in ARRAYS}

    def add(token_id: int, type_id: int, t: int, visit: int, segment: int) -> None:
        out["tokens"].append(token_id)
        out["token_type"].append(type_id)
        out["age"].append((t - birth) / US_PER_DAY / DAYS_PER_YEAR)
        out["time"].append((t - first) / US_PER_DAY)
        out["visit_order"].append(visit)
        out["visit_segment"].append(segment)
        out["abs_time"].append(t)

    add(CLS, TYPE_CLS, first, 0, 0)
    for v, ((s, e), evs) in enumerate(zip(visits, per_visit, strict=True)):
        n, seg = v + 1, 1 + v % 2
        if v > 0:
            gap_days = (s - visits[v - 1][1]) // US_PER_DAY
            add(vocab.id(interval_token(int(gap_days))), TYPE_TIME, s, v, 0)
        add(VS, TYPE_VS, s, n, seg)
        # time order; at one time the visit class first (a dialect's class code need not sort first), then by name
        for t, token, kind in sorted(evs, key=lambda e: (e[0], e[2] != TYPE_CLASS, e[1], e[2])):
            tid = vocab.id(token)
            stats.unknown_tokens += tid == UNK
            stats.events_tokenised += kind != TYPE_CLASS
            add(tid, kind, t, n, seg)
        add(VE, TYPE_VE, e, n, seg)
        add(REG, TYPE_REG, e, n, seg)
    dtypes = {"tokens": np.int32, "token_type": np.int8, "age": np.float32, "time": np.float32,
              "visit_order": np.int32, "visit_segment": np.int8, "abs_time": np.int64}
    return {k: np.asarray(v, dtype=dtypes[k]) for k, v in out.items()}


def cut_at(seq: dict[str, np.ndarray], prediction_time_us: int) -> dict[str, np.ndarray]:
    """Keep the tokens with ``abs_time <= prediction_time`` (a prefix, since times never decrease)."""
    n = int(np.searchsorted(seq["abs_time"], prediction_time_us, side="right"))
    return {k: v[:n] for k, v in seq.items()}


def truncate(seq: dict[str, np.ndarray], max_len: int) -> dict[str, np.ndarray]:
    """Keep the most recent ``max_len`` tokens, restoring a leading ``[CLS] [VS]`` (Odyssey ``_truncate_or_pad``).

    A cut inside a visit's trailer skips the partial ``[VE] [REG] [interval]``; visit numbers restart at 1 and the
    segments are recomputed from them.
    """
    n = len(seq["tokens"])
    if n <= max_len:
        return seq
    if max_len < 3:
        raise ValueError(f"max_len {max_len} < 3 cannot hold [CLS] [VS] and one token")
    start = n - max_len + 2
    types = seq["token_type"]
    while start < n - 1 and types[start] in (TYPE_VE, TYPE_REG, TYPE_TIME):
        start += 1
    tail = {k: v[start:] for k, v in seq.items()}
    lead_vs = len(tail["tokens"]) > 0 and tail["token_type"][0] == TYPE_VS
    head_n = 1 if lead_vs else 2
    ref = {k: (v[0] if len(v) else seq[k][-1]) for k, v in tail.items()}
    first_visit = int(ref["visit_order"]) if int(ref["visit_order"]) > 0 else 1
    head = {k: np.full(head_n, ref[k], dtype=seq[k].dtype) for k in ARRAYS}
    head["tokens"][:] = [CLS, VS][:head_n]
    head["token_type"][:] = [TYPE_CLS, TYPE_VS][:head_n]
    head["visit_order"][:] = [0, first_visit][:head_n]
    out = {k: np.concatenate([head[k], tail[k]]) for k in ARRAYS}
    vo = out["visit_order"].astype(np.int64)
    renum = np.where(vo > 0, vo - first_visit + 1, 0)
    renum[out["token_type"] == TYPE_TIME] = np.maximum(renum[out["token_type"] == TYPE_TIME], 1)
    out["visit_order"] = renum.astype(seq["visit_order"].dtype)
    in_visit = (renum > 0) & (out["token_type"] != TYPE_TIME)
    out["visit_segment"] = np.where(in_visit, 1 + (renum - 1) % 2, 0).astype(seq["visit_segment"].dtype)
    return out


def build_sequences(frame: pl.DataFrame, settings: SequenceSettings, progress: bool = False,
                    vocab: Vocabulary | None = None) -> tuple[pl.DataFrame, Vocabulary, SequenceStats]:
    """MEDS frame (from ``load_meds``) -> one row per patient with visits: subject_id, split and the ``ARRAYS`` lists.

    The vocabulary and lab bins are fitted on the frame's train split, unless ``vocab`` (e.g. the training run's) is
    given, as when scoring new data. The codes are read with ``settings.dialect`` (unless ``frame`` is already
    annotated); a frame where no subject has a visit raises :class:`MedsError` naming the dialect's visit rule.
    """
    if settings.dialect is None and vocab is not None and vocab.dialect is not None:  # read as in training
        settings = replace(settings, dialect=resolve_dialect(vocab.dialect))
    dialect = settings.code_dialect
    stats = SequenceStats()
    if "kind" in frame.columns:
        stats.dialect_rows = {"dialect": dialect.name, "note": "frame annotated by the caller"}
    else:
        frame, stats.dialect_rows = annotate(frame, dialect)
    edges = fit_lab_edges(frame, settings.n_lab_bins) if vocab is None else vocab.lab_edges
    tok = _event_tokens(frame, edges, settings.n_lab_bins).with_columns(
        pl.col("time").cast(pl.Datetime("us")).cast(pl.Int64).alias("t"))
    if vocab is None:  # rows that can become tokens: a token string and a time
        vocab = build_vocabulary(tok.filter(pl.col("token").is_not_null() & pl.col("t").is_not_null()), settings,
                                 edges)
        vocab.dialect = dialect_key(dialect)
    tok = tok.filter(pl.col("kind").is_not_null() & (pl.col("kind") != -4)).select(
        "subject_id", "split", "t", "kind", "token", "encounter_id")
    subjects = frame.select("subject_id", "split").unique("subject_id", keep="first").sort("subject_id")
    stats.subjects = subjects.height
    groups = tok.partition_by("subject_id", as_dict=True, maintain_order=True)
    records: dict[str, list] = {"subject_id": [], "split": [], **{k: [] for k in ARRAYS}}
    iterator = subjects.iter_rows()
    if progress:
        from rich.progress import track
        iterator = track(list(iterator), description="sequences")
    for sid, split in iterator:
        g = groups.get((sid,))
        seq = None
        if g is None:
            stats.subjects_without_visits += 1
        else:
            seq = patient_sequence(g.select("t", "kind", "token", "encounter_id").to_dict(as_series=False), vocab, stats)
        if seq is None:
            continue
        records["subject_id"].append(sid)
        records["split"].append(split)
        for k in ARRAYS:
            records[k].append(seq[k])
    schema = {"subject_id": pl.Int64, "split": pl.String, "tokens": pl.List(pl.Int32), "token_type": pl.List(pl.Int8),
              "age": pl.List(pl.Float32), "time": pl.List(pl.Float32), "visit_order": pl.List(pl.Int32),
              "visit_segment": pl.List(pl.Int8), "abs_time": pl.List(pl.Int64)}
    out = pl.DataFrame({k: ([list(a) for a in v] if k in ARRAYS else v) for k, v in records.items()}, schema=schema)
    _report_left_out(frame, stats, dialect, out.height)
    return out, vocab, stats


def _report_left_out(frame: pl.DataFrame, stats: SequenceStats, dialect: CodeDialect, kept: int) -> None:
    """Count subjects without a sequence by reason, log them, and refuse a cohort where none is left."""
    if stats.subjects_without_visits == 0:
        return
    has_visit_row = frame.filter(pl.col("kind") == -1)["subject_id"].unique()
    no_row = stats.subjects - has_visit_row.len()
    reasons = {}
    rule = dialect.describe_visits()
    if no_row:
        reasons[f"no row matched the dialect's visit rule {rule}"] = no_row
    other = stats.subjects_without_visits - no_row
    if other > 0:
        reasons["visit rows but no visit (a start without a usable time or key)"] = other
    stats.subjects_left_out = reasons
    for reason, n in reasons.items():
        log.warning("%d of %d subjects left out: %s (dialect %r)", n, stats.subjects, reason, dialect.name)
    if kept == 0 and stats.subjects:
        matched = frame.filter(pl.col("kind") == -1).height
        why = (f"no code matched the dialect's visit rule {rule}" if matched == 0 else
               f"{matched} rows matched the visit rule {rule} but none gave a visit (missing times or "
               f"{dialect.visits.id_column})")
        raise MedsError(f"0 of {stats.subjects} subjects have a visit: {why}; see --data.dialect (now "
                        f"{dialect.name!r}; presets: {sorted(PRESETS)})")


def row_arrays(row: dict) -> dict[str, np.ndarray]:
    """One row of the sequences frame (``frame.row(i, named=True)``) -> numpy side arrays."""
    dtypes = {"tokens": np.int64, "token_type": np.int64, "age": np.float32, "time": np.float32,
              "visit_order": np.int64, "visit_segment": np.int64, "abs_time": np.int64}
    return {k: np.asarray(row[k], dtype=dtypes[k]) for k in ARRAYS}

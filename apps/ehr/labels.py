"""Task labels in the MEDS label schema (subject_id, prediction_time, boolean_value), from timestamps.

Definitions (the EHR contract between the ingest and model sides). They differ from Odyssey's token-position labels
(VectorInstitute/odyssey), whose length of stay counts tokens of the last visit instead of hours and whose
readmission label marks 28-29 day gaps negative while 30-59 days are positive:

- ``mortality``: prediction_time = end of the last encounter (latest start); label = MEDS_DEATH at or before
  prediction_time + 30 days.
- ``los``: last encounter, if still open at its start + 24 h (a shorter stay is visibly over at the cut, so it is no
  prediction); prediction_time = its start + 24 h; label = (end - start) >= 7 days.
- ``readmission``: patients with >= 2 encounters; prediction_time = end of the second-to-last encounter (by start);
  label = the last encounter starts at most 30 days after it.
- ``cond_<group>``: the top-k condition groups by number of train patients (3-character ICD-10-CM, or SNOMED CT
  concepts grouped by ``dialect.SNOMED_GROUPS``); prediction_time = end of the last encounter; label = any condition
  code of the group, at any time (phenotyping: by default conditions are never input tokens).

Visits, deaths and condition groups come from the frame's code dialect (``linmix.apps.ehr.dialect``; a raw frame is
read with the ``own`` preset).

``prediction_time`` is the inclusive end of the usable input: the data side cuts every sequence at it
(``sequences.cut_at``), so nothing after it (the discharge of a long stay, the next admission, a death) is in the input.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from linmix.apps.ehr.dialect_apply import DEATH, END, START, ensure_annotated
from linmix.apps.ehr.meds import atomic_write
from linmix.apps.ehr.vocab import user_task_token

BASE_TASKS = ("mortality", "los", "readmission")
TASK_TOKEN = {"mortality": "[MOR_1M]", "los": "[LOS_1W]", "readmission": "[REA_1M]"}
LABEL_SCHEMA = {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean}


def encounters(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per encounter (the visit rows of the frame's code dialect): subject_id, encounter_id, start, end
    (end defaults to start), ``rank`` 0 = latest."""
    frame = ensure_annotated(frame)
    kind = pl.col("kind")
    enc = frame.filter(kind.is_in([START, END]) & pl.col("encounter_id").is_not_null()
                       & pl.col("time").is_not_null())
    enc = enc.group_by("subject_id", "encounter_id").agg(
        pl.col("time").filter(kind == START).min().alias("start"),
        pl.col("time").filter(kind == END).max().alias("end"))
    enc = enc.filter(pl.col("start").is_not_null()).with_columns(
        pl.max_horizontal("start", pl.col("end").fill_null(pl.col("start"))).alias("end"))
    return enc.sort("subject_id", "start", "end", "encounter_id").with_columns(
        (pl.len().over("subject_id") - 1 - pl.int_range(pl.len()).over("subject_id")).alias("rank"))


def top_condition_groups(frame: pl.DataFrame, k: int) -> list[str]:
    """The ``k`` most common condition groups (3-character ICD-10-CM, or the dialect's SNOMED CT grouping) by train
    patients (ties by name)."""
    cond = _condition_groups(frame, train_only=True)
    groups = cond.unique()
    counts = groups.group_by("group").len().sort(["len", "group"], descending=[True, False])
    return counts["group"].head(k).to_list()


def _condition_groups(frame: pl.DataFrame, train_only: bool = False) -> pl.DataFrame:
    """subject_id, group of every condition row used as a label (``linmix.apps.ehr.dialect``: groups come from the
    dialect's condition rules)."""
    frame = ensure_annotated(frame)
    if train_only and "split" in frame.columns:
        frame = frame.filter(pl.col("split") == "train")
    return frame.filter(pl.col("condition_group").is_not_null()).select("subject_id",
                                                                        pl.col("condition_group").alias("group"))


def _cast(df: pl.DataFrame) -> pl.DataFrame:
    return df.select([pl.col(c).cast(t) for c, t in LABEL_SCHEMA.items()]).sort("subject_id", "prediction_time")


def make_labels(frame: pl.DataFrame, condition_groups: list[str] | None = None,
                n_conditions: int = 5) -> dict[str, pl.DataFrame]:
    """MEDS frame -> {task name: label frame in LABEL_SCHEMA}; condition tasks are named ``cond_<group>``."""
    frame = ensure_annotated(frame)
    enc = encounters(frame)
    last = enc.filter(pl.col("rank") == 0)
    prev = enc.filter(pl.col("rank") == 1).select("subject_id", pl.col("end").alias("prev_end"))
    death = (frame.filter((pl.col("kind") == DEATH) & pl.col("time").is_not_null())
             .group_by("subject_id").agg(pl.col("time").min().alias("death")))
    day = pl.duration(days=1)
    out: dict[str, pl.DataFrame] = {}
    mort = last.join(death, on="subject_id", how="left")
    out["mortality"] = _cast(mort.select(
        "subject_id", pl.col("end").alias("prediction_time"),
        (pl.col("death").is_not_null() & (pl.col("death") <= pl.col("end") + 30 * day)).alias("boolean_value")))
    out["los"] = _cast(last.filter(pl.col("end") > pl.col("start") + pl.duration(hours=24)).select(
        "subject_id", (pl.col("start") + pl.duration(hours=24)).alias("prediction_time"),
        ((pl.col("end") - pl.col("start")) >= 7 * day).alias("boolean_value")))
    rea = last.join(prev, on="subject_id", how="inner")
    out["readmission"] = _cast(rea.select(
        "subject_id", pl.col("prev_end").alias("prediction_time"),
        ((pl.col("start") - pl.col("prev_end")) <= 30 * day).alias("boolean_value")))
    groups = condition_groups if condition_groups is not None else top_condition_groups(frame, n_conditions)
    has = _condition_groups(frame).unique()
    for g in groups:
        pos = has.filter(pl.col("group") == g).select("subject_id").with_columns(pl.lit(True).alias("hit"))
        out[f"cond_{g}"] = _cast(last.join(pos, on="subject_id", how="left").select(
            "subject_id", pl.col("end").alias("prediction_time"), pl.col("hit").fill_null(False).alias("boolean_value")))
    return out


def task_token_of(task: str, condition_groups: list[str], user_tasks: tuple[str, ...] | list[str] = ()) -> str:
    """Prompt token of a task: ``[TASK//<name>]`` for a task from ``--data.labels_dir`` (``user_tasks``), else
    ``[MOR_1M]``/``[LOS_1W]``/``[REA_1M]``, ``[C<i>]`` for the i-th condition group."""
    if task in user_tasks:
        return user_task_token(task)
    if task in TASK_TOKEN:
        return TASK_TOKEN[task]
    if task.startswith("cond_") and task[5:] in condition_groups:
        return f"[C{condition_groups.index(task[5:])}]"
    raise KeyError(f"unknown task {task!r}; known: {list(TASK_TOKEN)} + cond_<group> for {condition_groups}")


def write_labels(labels: dict[str, pl.DataFrame], root: str | Path) -> list[Path]:
    """Write ``<root>/<task>/0.parquet`` per task (MEDS ``$TASK_ROOT/$TASK_NAME/*.parquet``), atomically."""
    paths = []
    for task, df in labels.items():
        paths.append(atomic_write(Path(root) / task / "0.parquet", _cast(df).write_parquet))
    return paths

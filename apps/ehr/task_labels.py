"""Task labels a user brings (ACES, MEDS-DEV or edited built-in labels): read, check and reconcile them.

A labels folder (``--data.labels_dir``) holds one task per entry, as ACES and MEDS-DEV write them: a folder
``<task>/`` with parquet files (searched recursively, ``$TASK_ROOT/$TASK_NAME/**/*.parquet``) or a file
``<task>.parquet`` (entries whose name starts with ``.`` or ``_``, and files of other kinds, are not tasks). Each file
follows the MEDS label schema (``meds.LabelSchema``, closed): ``subject_id`` int64,
``prediction_time`` timestamp[us] (UTC-naive, the inclusive end of the usable input), ``boolean_value`` bool; the other
MEDS value columns (``integer_value``, ``float_value``, ``categorical_value``) may be present only when all null (ACES
writes them so). Anything else is refused with the file and the column named (:class:`LabelsError`).

:func:`reconcile` then matches a task's labels with the patient sequences. Every row is either used or counted under
one reason, never silently dropped or used (``rows = used + duplicate_rows + conflicting_rows + unknown_subject +
before_record + after_record``):

- ``duplicate_rows``: a second copy of a (subject, prediction_time, label) row; one copy is used;
- ``conflicting_rows``: rows of one (subject, prediction_time) with different labels; none of them is used;
- ``unknown_subject``: a subject absent from the data (or without any visit, so without a sequence);
- ``before_record`` / ``after_record``: a prediction time before the subject's first token (nothing to read yet) or
  after its last one (the data ends before the prediction time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linmix.apps.ehr.labels import LABEL_SCHEMA
from linmix.shared.errors import UserError

log = logging.getLogger("linmix.apps.ehr.tasks")
REQUIRED = tuple(LABEL_SCHEMA)  # subject_id, prediction_time, boolean_value
OTHER_VALUES = ("integer_value", "float_value", "categorical_value")
REASONS = ("duplicate_rows", "conflicting_rows", "unknown_subject", "before_record", "after_record")


class LabelsError(UserError, ValueError):
    """A labels folder or file that is not in the MEDS label schema (the message names the file and the columns)."""


@dataclass
class LabelCounts:
    """What happened to one task's label rows (see the module docstring)."""

    task: str
    rows: int = 0
    used: int = 0
    positives: int = 0
    duplicate_rows: int = 0
    conflicting_rows: int = 0
    unknown_subject: int = 0
    before_record: int = 0
    after_record: int = 0

    def dropped(self) -> dict[str, int]:
        return {r: getattr(self, r) for r in REASONS if getattr(self, r)}


def find_tasks(labels_dir: str | Path) -> dict[str, list[Path]]:
    """``{task name: its parquet files}`` of a labels folder (sorted by name); refuses an empty or ambiguous one."""
    root = Path(labels_dir)
    if not root.is_dir():
        raise LabelsError(f"--data.labels_dir {root}: no such folder")
    tasks: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            files = sorted(entry.rglob("*.parquet"))
            if not files:
                raise LabelsError(f"task folder {entry} holds no .parquet files (expected <task>/*.parquet in the "
                                  "MEDS label schema)")
            name = entry.name
        elif entry.suffix == ".parquet":
            files, name = [entry], entry.stem
        else:
            continue
        if name in tasks:
            raise LabelsError(f"{root}: task {name!r} is given twice (a folder {name}/ and a file {name}.parquet)")
        tasks[name] = files
    if not tasks:
        raise LabelsError(f"--data.labels_dir {root} holds no task labels: expected one folder per task with "
                          "parquet files in the MEDS label schema (subject_id, prediction_time, boolean_value), as "
                          "ACES and MEDS-DEV write them")
    return tasks


def _check_schema(path: Path, schema: pl.Schema) -> None:
    missing = [c for c in REQUIRED if c not in schema]
    extra = [c for c in schema if c not in REQUIRED and c not in OTHER_VALUES]
    problems = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"column(s) {extra} outside the MEDS label schema")
    if "subject_id" in schema and not schema["subject_id"].is_integer():
        problems.append(f"subject_id is {schema['subject_id']}, not an integer (int64)")
    pt = schema.get("prediction_time")
    if pt is not None and not (isinstance(pt, pl.Datetime) and pt.time_zone is None):
        problems.append(f"prediction_time is {pt}, not a UTC-naive timestamp (datetime[us])")
    if "boolean_value" in schema and schema["boolean_value"] != pl.Boolean:
        problems.append(f"boolean_value is {schema['boolean_value']}, not bool (only binary tasks are supported)")
    if problems:
        raise LabelsError(f"labels file {path} is not in the MEDS label schema (subject_id int64, prediction_time "
                          f"datetime[us], boolean_value bool): {'; '.join(problems)}; it has {dict(schema)}")


def read_task(name: str, files: list[Path], allow_empty: bool = False) -> pl.DataFrame:
    """One task's label files -> a frame in ``LABEL_SCHEMA`` (rows in file order); no rows is an error unless
    ``allow_empty`` (a built-in task a small cohort has no patient for)."""
    parts = []
    for f in files:
        try:
            schema = pl.read_parquet_schema(f)
        except Exception as e:  # not parquet, truncated, ...
            raise LabelsError(f"labels file {f} cannot be read as parquet: {e}") from e
        _check_schema(f, schema)
        df = pl.read_parquet(f)
        non_binary = [c for c in OTHER_VALUES if c in df.columns and df[c].null_count() < df.height]
        if non_binary:
            raise LabelsError(f"labels file {f} has values in {non_binary}: only binary tasks (boolean_value) are "
                              "supported")
        nulls = {c: df[c].null_count() for c in REQUIRED if df[c].null_count()}
        if nulls:
            raise LabelsError(f"labels file {f} has nulls (rows per column: {nulls}); the MEDS label schema allows "
                              "none in subject_id, prediction_time, boolean_value")
        try:
            parts.append(df.select([pl.col(c).cast(t, strict=True) for c, t in LABEL_SCHEMA.items()]))
        except pl.exceptions.InvalidOperationError as e:
            raise LabelsError(f"labels file {f}: subject_id does not fit int64 ({e})") from e
    out = pl.concat(parts) if parts else pl.DataFrame(schema=LABEL_SCHEMA)
    if out.height == 0 and not allow_empty:
        raise LabelsError(f"task {name!r} has no label rows ({[str(f) for f in files]})")
    return out


def read_labels_dir(labels_dir: str | Path) -> dict[str, pl.DataFrame]:
    """``{task: labels in LABEL_SCHEMA}`` for every task of a labels folder."""
    return {name: read_task(name, files) for name, files in find_tasks(labels_dir).items()}


def reconcile(task: str, labels: pl.DataFrame, seqs: pl.DataFrame) -> tuple[pl.DataFrame, LabelCounts]:
    """Keep the label rows that can be predicted from ``seqs`` (subject_id, abs_time lists); count the others.

    Returns the usable rows (``LABEL_SCHEMA``, sorted by subject and time) and their :class:`LabelCounts`.
    """
    counts = LabelCounts(task=task, rows=labels.height)
    keys = ["subject_id", "prediction_time"]
    uniq = labels.unique(maintain_order=True)
    counts.duplicate_rows = labels.height - uniq.height
    clash = pl.len().over(keys) > 1
    counts.conflicting_rows = int(uniq.select(clash.sum()).item())
    rows = uniq.filter(~clash)
    record = seqs.select("subject_id", pl.col("abs_time").list.first().alias("_first"),
                         pl.col("abs_time").list.last().alias("_last"))
    rows = rows.join(record, on="subject_id", how="left", maintain_order="left")
    t = pl.col("prediction_time").cast(pl.Int64)
    known = pl.col("_first").is_not_null()
    counts.unknown_subject = int(rows.select((~known).sum()).item())
    counts.before_record = int(rows.select((known & (t < pl.col("_first"))).sum()).item())
    counts.after_record = int(rows.select((known & (t > pl.col("_last"))).sum()).item())
    used = rows.filter(known & t.is_between(pl.col("_first"), pl.col("_last"))).select(list(LABEL_SCHEMA))
    used = used.sort(keys, maintain_order=True)
    counts.used, counts.positives = used.height, int(used["boolean_value"].sum())
    assert counts.rows == counts.used + sum(getattr(counts, r) for r in REASONS), counts
    return used, counts


def report(counts: list[LabelCounts]) -> None:
    """One log line per task whose rows were not all used; a task with rows but none usable is a user error."""
    for c in counts:
        if c.dropped():
            log.warning("task %s: %d of %d label rows used; not used: %s", c.task, c.used, c.rows,
                        ", ".join(f"{k} {v}" for k, v in c.dropped().items()))
        if c.rows and not c.used:
            raise LabelsError(f"task {c.task!r}: none of its {c.rows} label rows can be used ({c.dropped()}): "
                              "unknown_subject = subject_id not in the MEDS data (or without visits), "
                              "before/after_record = prediction_time outside the subject's record")

"""One LightningDataModule for EHRMamba pretraining (next token) and multitask prompted finetuning (MPF).

Input: a MEDS folder (``meds_dir``) or, by default, a synthetic cohort made in ``prepare_data`` with
``linmix.apps.ehr.synth.synthesize`` + ``linmix.apps.ehr.ingest.ingest`` under ``cache_dir``. Sequences, the vocabulary and the labels are
cached under ``<cache_dir>/<hash of the MEDS files + settings>/``. Splits by subject from
``metadata/subject_splits.parquet``: train -> fit, tuning -> validate, held_out -> test/predict.

Batches (dict of tensors, right-padded with PAD=0 to the longest sequence, B x L): ``tokens``, ``token_type``, ``age``
(years), ``time`` (days), ``visit_order``, ``visit_segment``, ``lengths`` (B,), ``subject_id`` (B,); finetuning adds
``task`` (B,), ``label`` (B,) float, ``task_token`` (B,) and ``prediction_time`` (B,) int64 microseconds. Finetuning datapoints of all tasks are shuffled together, so batches mix
tasks; each input is cut at the task's ``prediction_time`` and keeps the most recent ``max_len - 1`` tokens; the model
adds the task token in slot 0 and after the last token (``model.prompt``).

Tasks: the built-in ones (``labels``; their labels are written to ``<cache folder>/labels/<task>/0.parquet`` in the
MEDS label schema) and/or the tasks of a MEDS labels folder (``labels_dir``, as ACES / MEDS-DEV write it; read and
checked by :mod:`linmix.apps.ehr.task_labels`), each with its own prompt token. Every task's rows are reconciled with
the sequences (unknown subjects, duplicates, prediction times outside the record are counted, logged and written to
``<cache folder>/label_stats.json``, never used).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import polars as pl
import pytorch_lightning as pl_
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from linmix.apps.ehr import labels as L
from linmix.apps.ehr import sequences as S
from linmix.apps.ehr import task_labels as TL
from linmix.apps.ehr.batching import collate, rank_sampler
from linmix.apps.ehr.dialect import PRESETS, resolve_dialect
from linmix.apps.ehr.dialect_apply import annotate
from linmix.apps.ehr.meds import MedsError, atomic_write
from linmix.apps.ehr.sequence_cache import cached_sequences
from linmix.shared.sharding import shard_of

log = logging.getLogger(__name__)
SPLIT_OF_STAGE = {"fit": "train", "validate": "tuning", "test": "held_out", "predict": "held_out"}


class PretrainDataset(Dataset):
    """Whole patient sequences (most recent ``max_len`` tokens) for next-token prediction."""

    def __init__(self, seqs: pl.DataFrame, max_len: int) -> None:
        self.seqs, self.max_len = seqs, max_len

    def __len__(self) -> int:
        return self.seqs.height

    def lengths(self) -> np.ndarray:
        return np.minimum(self.seqs["tokens"].list.len().to_numpy(), self.max_len)

    def __getitem__(self, i: int) -> dict:
        row = self.seqs.row(i, named=True)
        return {**S.truncate(S.row_arrays(row), self.max_len), "subject_id": int(row["subject_id"])}


class FinetuneDataset(Dataset):
    """(patient, task, prediction_time, label) datapoints; input cut at prediction_time, then the most recent
    ``max_len - 1`` tokens (the model's :func:`~linmix.apps.ehr.model.prompt` adds the task token in slot 0 and at the end)."""

    def __init__(self, seqs: pl.DataFrame, points: pl.DataFrame, task_ids: list[int], max_len: int) -> None:
        self.seqs, self.max_len, self.task_ids = seqs, max_len, task_ids
        row_of = {sid: i for i, sid in enumerate(seqs["subject_id"].to_list())}
        points = points.filter(pl.col("subject_id").is_in(pl.Series(list(row_of), dtype=pl.Int64).implode()))
        self.points = points
        self.rows = np.array([row_of[s] for s in points["subject_id"].to_list()], dtype=np.int64)
        self.task = points["task"].to_numpy().astype(np.int64)
        self.subject = points["subject_id"].to_numpy().astype(np.int64)
        self.pred_us = points["prediction_time"].cast(pl.Int64).to_numpy()
        self.label = points["boolean_value"].to_numpy().astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        """Input length of every datapoint (after the cut, before the prompt), for length bucketing."""
        times = self.seqs["abs_time"].to_list()
        n = [int(np.searchsorted(times[r], p, side="right")) for r, p in zip(self.rows, self.pred_us, strict=True)]
        return np.minimum(np.asarray(n, dtype=np.int64), self.max_len - 1)

    def cut(self, i: int) -> dict[str, np.ndarray]:
        """The patient's sequence cut at the datapoint's prediction_time (untruncated, ``[CLS]`` in slot 0)."""
        return S.cut_at(S.row_arrays(self.seqs.row(int(self.rows[i]), named=True)), int(self.pred_us[i]))

    def __getitem__(self, i: int) -> dict:
        item = dict(S.truncate(self.cut(i), self.max_len - 1))
        item["task"] = int(self.task[i])
        item["task_token"] = self.task_ids[item["task"]]
        item["label"] = float(self.label[i])
        item["subject_id"] = int(self.subject[i])
        item["prediction_time"] = int(self.pred_us[i])
        return item


class EHRDataModule(pl_.LightningDataModule):
    """EHR sequences for pretraining (``objective="pretrain"``) or MPF finetuning (``"finetune"``).

    Args:
        meds_dir: MEDS folder (``data/<split>/*.parquet``); None = synthetic cohort of ``synth_patients``.
        objective: "pretrain" (next token on whole sequences) or "finetune" (task datapoints).
        cache_dir: where sequences/vocab/labels (and the synthetic cohort) are cached.
        vocab_size: embedding table size; concept tokens beyond it map to [UNK] (linked to the model).
        n_conditions: k condition-group tasks (the top-k condition groups of the train split: 3-character ICD-10-CM,
            or SNOMED CT concepts grouped as ``dialect.SNOMED_GROUPS`` says).
        tasks: task names to finetune on (None = all: mortality, los, readmission, cond_<group>... and the tasks of
            ``labels_dir``).
        labels_dir: MEDS labels folder, one ``<task>/`` folder (or ``<task>.parquet``) per task with ``subject_id,
            prediction_time, boolean_value`` (ACES / MEDS-DEV output, or built-in labels a user edited).
        builtin_tasks: also offer the built-in tasks (false: only ``labels_dir``'s).
        task_heads: one linear readout per task (linked to ``model.net.n_tasks``); false: one shared task logit.
        max_len: most recent tokens kept per input (2048 in the paper).
        dialect: how to read the MEDS codes (:mod:`linmix.apps.ehr.dialect`): a preset name (``own``: this
            project's ingest, ``mimic``: MIMIC-IV MEDS, ``omop``: meds-etl OMOP) or a mapping (``preset`` + overrides).
    """

    def __init__(self, meds_dir: Optional[str] = None, objective: Literal["pretrain", "finetune"] = "finetune",
                 cache_dir: str = "runs/ehr/cache", synth_patients: int = 400, synth_seed: int = 0,
                 vocab_size: int = 2048, n_conditions: int = 5, tasks: Optional[list[str]] = None,
                 labels_dir: Optional[str] = None, builtin_tasks: bool = True, task_heads: bool = False,
                 max_len: int = 2048, batch_size: int = 32, num_workers: int = 0,
                 dialect: Union[dict[str, Any], str] = "own") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.meds_dir, self.objective, self.cache_dir = meds_dir, objective, Path(cache_dir)
        self.dialect = resolve_dialect(dialect)
        self.labels_dir, self.builtin_tasks = labels_dir, builtin_tasks
        self.user_tasks = tuple(TL.find_tasks(labels_dir)) if labels_dir else ()
        if not builtin_tasks and not self.user_tasks:
            raise TL.LabelsError("--data.builtin_tasks false needs task labels from --data.labels_dir")
        clash = [t for t in self.user_tasks if builtin_tasks and (t in L.BASE_TASKS or t.startswith("cond_"))]
        if clash:
            raise TL.LabelsError(f"--data.labels_dir task(s) {clash} have the name of built-in tasks: rename the "
                                 "folders, or set --data.builtin_tasks false to use only the labels folder")
        n_planned = len(tasks) if tasks is not None else \
            (len(L.BASE_TASKS) + n_conditions if builtin_tasks else 0) + len(self.user_tasks)
        self.n_task_readouts = n_planned if task_heads else 0  # linked to model.net.n_tasks
        self.settings = S.SequenceSettings(vocab_size=vocab_size, n_conditions=n_conditions,
                                           user_tasks=self.user_tasks,
                                           dialect=None if self.dialect == PRESETS["own"] else self.dialect)
        self.vocab_size, self.n_conditions, self.max_len = vocab_size, n_conditions, max_len
        self.batch_size, self.num_workers, self.tasks = batch_size, num_workers, tasks
        self.task_names: list[str] = []
        self.datasets: dict[str, Dataset] = {}

    # ---- preparation (may generate data; never in __init__) ----
    def meds_root(self) -> Path:
        if self.meds_dir is not None:
            return Path(self.meds_dir)
        return self.cache_dir / f"synth_{self.hparams.synth_patients}_{self.hparams.synth_seed}" / "meds"

    def prepare_data(self) -> None:
        root = self.meds_root()
        if self.meds_dir is None and not (root / "metadata" / "subject_splits.parquet").exists():
            from linmix.apps.ehr.ingest import ingest
            from linmix.apps.ehr.synth import synthesize
            fhir = synthesize(self.hparams.synth_patients, root.parent / "fhir", fmt="ndjson",
                              seed=self.hparams.synth_seed)
            ingest([fhir], root, overwrite=True)
        _, _, folder = cached_sequences(root, self.cache_dir, self.settings, progress=True)
        if not (folder / "tasks.json").exists():
            frame = annotate(S.load_meds(root), self.dialect)[0]
            groups = L.top_condition_groups(frame, self.n_conditions)
            if len(groups) < self.n_conditions:
                log.warning("%d of n_conditions=%d condition tasks: only %d condition groups among the train "
                            "patients under dialect %r (its condition rules; conditions: %s)", len(groups),
                            self.n_conditions, len(groups), self.dialect.name, self.dialect.conditions)
            labels = L.make_labels(frame, condition_groups=groups)
            L.write_labels(labels, folder / "labels")
            atomic_write(folder / "tasks.json",
                         lambda p: p.write_text(json.dumps({"tasks": list(labels), "condition_groups": groups})))
        if self.builtin_tasks:
            rank_zero_info(f"built-in task labels (MEDS label schema): {folder / 'labels'}")

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        seqs, self.vocab, folder = cached_sequences(self.meds_root(), self.cache_dir, self.settings)
        meta = json.loads((folder / "tasks.json").read_text())
        self.condition_groups = meta["condition_groups"]
        all_tasks = (meta["tasks"] if self.builtin_tasks else []) + list(self.user_tasks)
        self.task_names = list(self.tasks) if self.tasks is not None else all_tasks
        unknown = set(self.task_names) - set(all_tasks)
        if unknown and not self.condition_groups and any(t.startswith("cond_") for t in unknown):
            raise MedsError(f"no condition task in this cohort: no row matched the condition rules of dialect "
                            f"{self.dialect.name!r} (or its conditions are inputs only); see --data.dialect")
        if unknown or not self.task_names:
            raise MedsError(f"unknown tasks {sorted(unknown)}; this cohort has {all_tasks}")
        self.task_token_ids = [self.vocab.task_id(L.task_token_of(t, self.condition_groups, self.user_tasks))
                               for t in self.task_names]
        points = pl.concat([lab.with_columns(pl.lit(i).alias("task"))
                            for i, lab in enumerate(self._task_labels(seqs, folder))])
        for split in ("train", "tuning", "held_out"):
            part = seqs.filter(pl.col("split") == split)
            if self.objective == "pretrain":
                self.datasets[split] = PretrainDataset(part, self.max_len)
            else:
                self.datasets[split] = FinetuneDataset(part, points, self.task_token_ids, self.max_len)

    def _task_labels(self, seqs: pl.DataFrame, folder: Path) -> list[pl.DataFrame]:
        """Each task's usable labels (``task_labels.reconcile``); the counts go to the log and ``label_stats.json``."""
        user = TL.find_tasks(self.labels_dir) if self.user_tasks else {}
        frames, self.label_counts = [], []
        for task in self.task_names:
            files = user[task] if task in user else sorted((folder / "labels" / task).glob("*.parquet"))
            used, counts = TL.reconcile(task, TL.read_task(task, files, allow_empty=task not in user), seqs)
            frames.append(used)
            self.label_counts.append(counts)
        atomic_write(folder / "label_stats.json",
                     lambda p: p.write_text(json.dumps([asdict(c) for c in self.label_counts], indent=1)))
        TL.report(self.label_counts)
        return frames

    # ---- loaders ----
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.datasets[split]
        if len(ds) == 0:
            if isinstance(ds, FinetuneDataset) and ds.seqs.height and self.user_tasks:
                raise MedsError(f"split {split!r} has {ds.seqs.height} patients but no label of the tasks "
                                f"{self.task_names} (see the label counts in the log and label_stats.json)")
            raise MedsError(f"split {split!r} is empty: {self._empty_reason(split)}")
        # training: length-bucketed shuffled batches; evaluation: fixed length-sorted batches (both: less padding);
        # each rank its own part (linmix.shared.sharding)
        sampler, bs = rank_sampler(ds.lengths(), self.batch_size, train=shuffle, shard=shard_of(self), split=split)
        return DataLoader(ds, batch_size=bs, sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _empty_reason(self, split: str) -> str:
        """Which rule emptied a split: no subject of it has a visit, or no datapoint of the chosen tasks."""
        seqs = self.datasets[split].seqs
        if seqs.height == 0:
            return (f"0 subjects of split {split!r} have a visit under the dialect's visit rule "
                    f"{self.dialect.describe_visits()} (dialect {self.dialect.name!r}), or the cohort is too small "
                    "for an 80/10/10 split; see --data.dialect and stats.json in the cache folder")
        rules = {"mortality": "a visit", "los": "a last visit still open 24 h after its start (visits with end == "
                 "start, as OMOP outpatient visits often are, give none)", "readmission": "two visits or more"}
        why = "; ".join(f"{t} needs " + rules.get(t, "condition rows matched by the dialect's condition rules")
                        for t in self.task_names)
        return (f"{seqs.height} subjects with a visit but no datapoint of tasks {self.task_names} ({why}); see "
                f"--data.dialect (now {self.dialect.name!r}) and --data.tasks")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("tuning", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("held_out", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("held_out", shuffle=False)

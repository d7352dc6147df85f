"""Tasks a user brings (``--data.labels_dir``, MEDS label schema) and the MEDS tools that read our outputs.

Built-in labels round-trip through a labels folder; bad label rows are counted, never used; a folder in the wrong schema
names the file and the columns; a user task's input is cut at its prediction time like a built-in task's; meds-reader
converts and reads the ingest output.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr import task_labels as TL
from linmix.apps.ehr.data import EHRDataModule, FinetuneDataset
from linmix.apps.ehr.sequence_cache import cached_sequences
from linmix.shared.errors import UserError


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"ehr_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _load("test_ehr_seq_fixture")
LB = _load("test_ehr_labels")
FHIR = Path(__file__).with_name("fixtures") / "fhir"


def datamodule(tmp_path: Path, meds: Path, **kw) -> EHRDataModule:
    dm = EHRDataModule(meds_dir=str(meds), cache_dir=str(tmp_path / "cache"), vocab_size=128, max_len=32,
                       batch_size=64, objective="finetune", **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def points(dm: EHRDataModule) -> dict[str, pl.DataFrame]:
    """Every split's datapoints per task name (subject_id, prediction_time, boolean_value), sorted."""
    frames = [ds.points for ds in dm.datasets.values()]
    allp = pl.concat(frames).with_columns(pl.col("task").replace_strict(range(len(dm.task_names)), dm.task_names))
    return {t: allp.filter(pl.col("task") == t).select("subject_id", "prediction_time", "boolean_value")
            .sort("subject_id", "prediction_time") for t in dm.task_names}


def test_builtin_labels_round_trip_through_labels_dir(tmp_path):
    import pyarrow.parquet as pq
    from meds import LabelSchema

    meds = FX.write_meds(tmp_path / "meds", 40)
    base = datamodule(tmp_path, meds)
    labels_dir = next((tmp_path / "cache").glob("*/labels"))  # the built-in labels sit in the cache folder
    files = sorted(labels_dir.glob("*/*.parquet"))
    assert {f.parent.name for f in files} == set(base.task_names)
    for f in files:  # the community's schema, checked by its own package
        LabelSchema.validate(pq.read_table(f))
    user = datamodule(tmp_path, meds, labels_dir=str(labels_dir), builtin_tasks=False, task_heads=True)
    assert sorted(user.task_names) == sorted(base.task_names) and user.user_tasks == tuple(sorted(base.task_names))
    got, want = points(user), points(base)
    for task in base.task_names:
        assert got[task].equals(want[task]), task
    assert all(c.used == c.rows and not c.dropped() for c in user.label_counts)
    # user tasks take the last vocabulary ids; every other id is the built-in run's
    n = len(user.task_names)
    k = min(len(base.vocab.tokens), 128 - n)
    assert user.vocab.tokens[:k] == base.vocab.tokens[:k] and len(user.vocab.tokens) == 128
    assert all(t.startswith("[UNUSED_") for t in user.vocab.tokens[k:128 - n])  # this small cohort leaves room
    assert sorted(user.task_token_ids) == list(range(128 - n, 128))
    assert user.n_task_readouts == n and base.n_task_readouts == 0


def test_bad_label_rows_are_counted_and_never_used(tmp_path, caplog):
    meds = FX.write_meds(tmp_path / "meds", 40)
    base = datamodule(tmp_path, meds)
    seqs, _, _ = cached_sequences(meds, tmp_path / "cache", base.settings)
    first = seqs.select("subject_id", pl.col("abs_time").list.first().cast(pl.Datetime("us")).alias("t0"),
                        pl.col("abs_time").list.last().cast(pl.Datetime("us")).alias("t1")).sort("subject_id")
    (a, a0, a1), (b, b0, _), (c, c0, c1) = first.rows()[:3]
    H = timedelta(hours=1)
    rows = [(a, a0, True), (a, a0, True), (a, a0, True),  # kept once, 2 duplicates
            (b, b0, True), (b, b0, False),  # conflicting: neither used
            (c, c0 - H, True), (c, c1 + H, False), (c, c1, False),  # before / after the record, and one good row
            (a, a1, False), (123456789, a0, True)]  # good; unknown subject
    task = tmp_path / "labels" / "my_task"
    task.mkdir(parents=True)
    pl.DataFrame(rows, schema=["subject_id", "prediction_time", "boolean_value"], orient="row").with_columns(
        pl.col("prediction_time").cast(pl.Datetime("us"))).write_parquet(task / "part-0.parquet")
    with caplog.at_level(logging.WARNING, logger="linmix.apps.ehr.tasks"):
        dm = datamodule(tmp_path, meds, labels_dir=str(tmp_path / "labels"))
    counts = {c.task: c for c in dm.label_counts}["my_task"]
    assert (counts.rows, counts.used, counts.positives) == (10, 3, 1)
    assert counts.dropped() == {"duplicate_rows": 2, "conflicting_rows": 2, "unknown_subject": 1, "before_record": 1,
                                "after_record": 1}
    assert "my_task: 3 of 10 label rows used" in caplog.text and "unknown_subject 1" in caplog.text
    stats = json.loads(next((tmp_path / "cache").glob("*/label_stats.json")).read_text())
    assert {s["task"]: s["unknown_subject"] for s in stats}["my_task"] == 1
    used = points(dm)["my_task"]
    assert sorted(used.select("subject_id", "boolean_value").rows()) == sorted([(a, True), (c, False), (a, False)])
    # a task none of whose rows can be used is an error that says why
    only = tmp_path / "only_unknown" / "ghosts"
    only.mkdir(parents=True)
    pl.DataFrame({"subject_id": [5, 6], "prediction_time": [a0, a0], "boolean_value": [True, False]}).with_columns(
        pl.col("prediction_time").cast(pl.Datetime("us"))).write_parquet(only / "0.parquet")
    with pytest.raises(UserError, match=r"task 'ghosts': none of its 2 label rows.*unknown_subject"):
        datamodule(tmp_path, meds, labels_dir=str(tmp_path / "only_unknown"))
    # labels for train patients only: the held-out split says so instead of "the cohort is too small"
    train = seqs.filter(pl.col("split") == "train").select("subject_id", pl.col("abs_time").list.first())
    one = tmp_path / "train_only" / "t"
    one.mkdir(parents=True)
    pl.DataFrame({"subject_id": train["subject_id"], "prediction_time": train["abs_time"], "boolean_value": True}
                 ).with_columns(pl.col("prediction_time").cast(pl.Datetime("us"))).write_parquet(one / "0.parquet")
    dm = datamodule(tmp_path, meds, labels_dir=str(one.parent), builtin_tasks=False)
    with pytest.raises(UserError, match=r"split 'held_out' has \d+ patients but no label of the tasks \['t'\]"):
        dm.test_dataloader()


def _write(path: Path, **cols) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(cols).write_parquet(path)
    return path


T = [datetime(2021, 1, 1), datetime(2021, 2, 1)]


@pytest.mark.parametrize("cols, message", [
    ({"subject_id": [1, 2], "prediction_time": T, "label": [True, False]}, r"missing column\(s\) \['boolean_value'\]"),
    ({"subject_id": [1, 2], "prediction_time": ["2021-01-01", "x"], "boolean_value": [True, False]},
     "prediction_time is String"),
    ({"subject_id": [1, 2], "prediction_time": T, "boolean_value": [1, 0]}, "boolean_value is Int64, not bool"),
    ({"subject_id": ["a", "b"], "prediction_time": T, "boolean_value": [True, False]}, "subject_id is String"),
    ({"subject_id": [1, 2], "prediction_time": T, "boolean_value": [True, False], "note": ["x", "y"]},
     r"column\(s\) \['note'\] outside the MEDS label schema"),
    ({"subject_id": [1, 2], "prediction_time": T, "boolean_value": [True, False], "integer_value": [1, 3]},
     "only binary tasks"),
    ({"subject_id": [1, None], "prediction_time": T, "boolean_value": [True, False]}, "has nulls"),
])
def test_labels_in_the_wrong_schema_name_the_file_and_columns(tmp_path, cols, message):
    f = _write(tmp_path / "labels" / "bad_task" / "0.parquet", **cols)
    with pytest.raises(UserError, match=message) as err:
        TL.read_labels_dir(tmp_path / "labels")
    assert str(f) in str(err.value)


def test_labels_folder_layouts(tmp_path):
    """ACES / MEDS-DEV layouts: nested shards, a file per task, all-null extra value columns; empty folders refused."""
    root = tmp_path / "labels"
    _write(root / "a" / "shard" / "0.parquet", subject_id=[1], prediction_time=T[:1], boolean_value=[True])
    _write(root / "a" / "shard" / "1.parquet", subject_id=[2], prediction_time=T[1:], boolean_value=[False])
    pl.DataFrame({"subject_id": [3], "prediction_time": T[:1], "boolean_value": [True],
                  "integer_value": pl.Series([None], dtype=pl.Int64), "float_value": pl.Series([None], dtype=pl.Float32),
                  "categorical_value": pl.Series([None], dtype=pl.String)}).write_parquet(root / "b.parquet")
    (root / "README.md").write_text("not a task")
    got = TL.read_labels_dir(root)
    assert list(got) == ["a", "b"] and got["a"]["subject_id"].to_list() == [1, 2]
    assert all(df.schema == pl.Schema({"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"),
                                       "boolean_value": pl.Boolean}) for df in got.values())
    (root / "c").mkdir()
    with pytest.raises(UserError, match="holds no .parquet files"):
        TL.find_tasks(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no task labels"):
        TL.find_tasks(tmp_path / "empty")
    with pytest.raises(UserError, match="no such folder"):
        EHRDataModule(labels_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="needs task labels"):
        EHRDataModule(builtin_tasks=False)
    _write(tmp_path / "clash" / "mortality" / "0.parquet", subject_id=[1], prediction_time=T[:1], boolean_value=[True])
    with pytest.raises(UserError, match="name of built-in tasks"):
        EHRDataModule(labels_dir=str(tmp_path / "clash"))


def test_user_task_input_is_cut_at_its_prediction_time():
    """A label inside a stay: the events up to prediction_time are in, none after it (whatever comes later)."""
    pred = LB.T0 + 40 * LB.D + 4 * LB.H  # visit b: SNOMED at +3 h is in, the lab at +5 h is not
    settings = S.SequenceSettings(vocab_size=64, n_conditions=1, user_tasks=("mine",))
    _, vocab, _ = S.build_sequences(LB.patient(), settings)
    label = pl.DataFrame({"subject_id": [7], "prediction_time": [pred], "boolean_value": [True]}).with_columns(
        pl.col("prediction_time").cast(pl.Datetime("us")))
    inputs = []
    for frame in (LB.patient(), LB.patient(second_len=2 * LB.D, death=None), LB.patient(second_len=20 * LB.D)):
        seqs, _, _ = S.build_sequences(frame, settings, vocab=vocab)
        used, counts = TL.reconcile("mine", label, seqs)
        assert counts.used == 1
        item = FinetuneDataset(seqs, used.with_columns(pl.lit(0).alias("task")), [vocab.task_id("[TASK//mine]")],
                               max_len=64)[0]
        pred_us = int(label["prediction_time"].cast(pl.Int64)[0])
        assert item["abs_time"].max() <= pred_us and item["task_token"] == vocab.id("[TASK//mine]")
        events = frame.filter(pl.col("code").str.contains("^(SNOMED|RXNORM|LOINC)//") & (pl.col("time") <= pred))
        is_event = np.isin(item["token_type"], [S.TYPE_LAB, S.TYPE_MED, S.TYPE_PROC])
        assert is_event.sum() == events.height == 3  # the lab and drug of visit a, the procedure of visit b
        inputs.append(item)
    for other in inputs[1:]:
        for k in S.ARRAYS:
            np.testing.assert_array_equal(inputs[0][k], other[k], err_msg=k)


def test_meds_reader_converts_and_reads_the_ingest_output(tmp_path):
    import meds_reader

    from linmix.apps.ehr.ingest import ingest

    ingest([FHIR], tmp_path / "meds")
    run = "import sys, meds_reader; sys.argv = ['meds_reader_{0}', *sys.argv[1:]]; sys.exit(meds_reader.meds_reader_{0}())"
    for tool in ("convert", "verify"):
        done = subprocess.run([sys.executable, "-c", run.format(tool), str(tmp_path / "meds"), str(tmp_path / "db")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    data = pl.read_parquet(tmp_path / "meds" / "data" / "**" / "*.parquet")
    db = meds_reader.SubjectDatabase(str(tmp_path / "db"))
    assert sorted(int(s) for s in db) == sorted(data["subject_id"].unique().to_list())
    events = [e for s in db for e in db[s].events]
    assert len(events) == data.height and {e.code for e in events} == set(data["code"])
    assert {e.encounter_id for e in events if e.encounter_id} == set(data["encounter_id"].drop_nulls())


def test_checkpoint_tasks_map_to_the_data_and_refuse_the_rest():
    """A data module asking for some of a checkpoint's tasks gets the checkpoint's readouts for them (one per task
    here, so the head is rebuilt at the checkpoint's size); another vocabulary or an unknown task is refused."""
    import torch

    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.model import EHRMambaConfig

    cfg = dict(vocab_size=40, d_model=16, n_layers=1, d_state=8, d_time=4, max_visits=8, dropout=0.0)
    vocab = S.Vocabulary([f"t{i}" for i in range(40)], 2).to_json()
    trained = EHRLitModule(net=EHRMambaConfig(**cfg, n_tasks=3))
    trained.task_names, trained.task_token_ids, trained.vocab_json = ["a", "b", "c"], [10, 11, 12], vocab
    ckpt = {"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}
    trained.on_save_checkpoint(ckpt)
    fresh = EHRLitModule(net=EHRMambaConfig(**cfg, n_tasks=1))  # the data asks for one task: "c"
    fresh.data_task_names, fresh.vocab_json = ["c"], vocab
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    pooled = torch.randn(4, 16)
    data_task = torch.zeros(4, dtype=torch.long)
    assert fresh.readout_index(data_task).tolist() == [2, 2, 2, 2] and fresh.task_names == ["a", "b", "c"]
    torch.testing.assert_close(fresh.net.head_logit(pooled, fresh.readout_index(data_task)),
                               trained.net.head_logit(pooled, torch.full((4,), 2)))
    other = EHRLitModule(net=EHRMambaConfig(**cfg))
    other.data_task_names, other.vocab_json = ["d"], vocab
    with pytest.raises(UserError, match=r"not finetuned on task\(s\) \['d'\]; its tasks are \['a', 'b', 'c'\]"):
        other.on_load_checkpoint(ckpt)
    other.data_task_names = ["a"]
    other.vocab_json = S.Vocabulary([f"t{i}" for i in range(39)] + ["[TASK//x]"], 2).to_json()
    with pytest.raises(UserError, match="vocabulary differs from the checkpoint's .1 of 40 ids differ, first id 39"):
        other.on_load_checkpoint(ckpt)

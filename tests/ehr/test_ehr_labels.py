"""MEDS labels from timestamps, and the proof that no label leaks into its (cut) input."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from linmix.apps.ehr import labels as L
from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.data import FinetuneDataset

_spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__).with_name("test_ehr_seq_fixture.py"))
FX = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FX)

T0 = datetime(2021, 3, 1, 9)
D, H = timedelta(days=1), timedelta(hours=1)


def patient(second_start: timedelta = 40 * D, second_len: timedelta = 10 * D, death: timedelta | None = 55 * D,
            icd: bool = True) -> pl.DataFrame:
    """Two encounters (a: T0..T0+2d, b: T0+second_start..+second_len) with events, optional death and condition."""
    b0 = T0 + second_start
    rows = [(None, "GENDER//male", None, None, None), (datetime(1950, 5, 5), "MEDS_BIRTH", None, None, None),
            (T0, "ENCOUNTER//IMP//START", None, "a", None), (T0 + H, "LOINC//1", 3.0, "a", "mg"),
            (T0 + 2 * H, "RXNORM//5", None, "a", None), (T0 + 2 * D, "ENCOUNTER//IMP//END", None, "a", None),
            (b0, "ENCOUNTER//IMP//START", None, "b", None), (b0 + 3 * H, "SNOMED//7", None, "b", None),
            (b0 + 5 * H, "LOINC//1", 9.0, "b", "mg"), (b0 + second_len, "ENCOUNTER//IMP//END", None, "b", None)]
    if second_len > 2 * D:  # a late event during a long stay (after the LOS cutoff)
        rows.append((b0 + 2 * D, "LOINC//1", 20.0, "b", "mg"))
    if death is not None:
        rows.append((T0 + death, "MEDS_DEATH", None, None, None))
    if icd:
        rows.append((b0 + H, "ICD10CM//E11.65", None, "b", None))
    df = pl.DataFrame([{"subject_id": 7, "time": r[0], "code": r[1], "numeric_value": r[2], "text_value": None,
                        "encounter_id": r[3], "unit": r[4]} for r in rows], schema=FX.SCHEMA)
    return df.sort("time", nulls_last=False).with_columns(pl.lit("train").alias("split"))


def labels_and_inputs(frame: pl.DataFrame, vocab: S.Vocabulary | None = None) -> dict[str, tuple[bool, dict]]:
    """{task: (label, model input arrays, prediction_time)} for the single patient of ``frame``.

    ``vocab``: a fixed vocabulary (with its lab bins), as a trained model has; by default fitted on ``frame``.
    """
    seqs, vocab, _ = S.build_sequences(frame, S.SequenceSettings(vocab_size=64, n_conditions=1), vocab=vocab)
    labels = L.make_labels(frame, condition_groups=["E11"])
    out = {}
    for i, (task, df) in enumerate(labels.items()):
        ds = FinetuneDataset(seqs, df.with_columns(pl.lit(i).alias("task")), [25 + i for i in range(len(labels))],
                             max_len=64)
        if len(ds):
            item = ds[0]
            out[task] = (bool(item["label"]), {k: item[k] for k in S.ARRAYS}, df["prediction_time"][0])
    return out


def test_label_definitions_from_timestamps():
    got = labels_and_inputs(patient())
    assert got["mortality"][0] is True  # death 5 d after the last discharge (T0+50d)
    assert got["los"][0] is True  # 10-day stay
    assert got["readmission"][0] is False  # 38-day gap
    assert got["cond_E11"][0] is True
    assert got["mortality"][2] == T0 + 50 * D and got["los"][2] == T0 + 40 * D + 24 * H
    assert got["readmission"][2] == T0 + 2 * D
    single = patient().filter(pl.col("encounter_id").fill_null("") != "b")
    assert "readmission" not in labels_and_inputs(single)  # needs >= 2 encounters
    assert labels_and_inputs(patient(death=81 * D))["mortality"][0] is False  # 31 d after discharge
    assert labels_and_inputs(patient(second_len=7 * D - H))["los"][0] is False
    assert labels_and_inputs(patient(second_start=32 * D))["readmission"][0] is True  # exactly 30 d


@pytest.mark.parametrize("task, variant", [
    ("mortality", {"death": 90 * D}),
    ("los", {"second_len": 2 * D}),
    ("readmission", {"second_start": 20 * D}),
    ("cond_E11", {"icd": False}),
])
def test_no_label_leaks_into_its_input(task, variant):
    """Two histories that differ only after the prediction time: the labels differ, the inputs are identical."""
    _, vocab, _ = S.build_sequences(patient(), S.SequenceSettings(vocab_size=64, n_conditions=1))
    base, other = labels_and_inputs(patient(), vocab), labels_and_inputs(patient(**variant), vocab)
    assert base[task][0] != other[task][0]
    assert base[task][2] == other[task][2]
    for k in S.ARRAYS:
        np.testing.assert_array_equal(base[task][1][k], other[task][1][k], err_msg=f"{task}: {k} differs")
    pred_us = int(pl.Series([base[task][2]]).cast(pl.Datetime("us")).cast(pl.Int64)[0])
    assert base[task][1]["abs_time"].max() <= pred_us


def test_task_token_leads_and_input_cut(tmp_path):
    frame = S.load_meds(FX.write_meds(tmp_path / "meds", 30))
    seqs, vocab, _ = S.build_sequences(frame, S.SequenceSettings(vocab_size=128, n_conditions=2))
    groups = L.top_condition_groups(frame, 2)
    labels = L.make_labels(frame, condition_groups=groups)
    assert sorted(groups) == ["E11", "I10"] and set(labels) == {"mortality", "los", "readmission", "cond_E11",
                                                                 "cond_I10"}
    for df in labels.values():
        assert df.schema == pl.Schema(L.LABEL_SCHEMA)
    names = list(labels)
    ids = [vocab.task_id(L.task_token_of(t, groups)) for t in names]
    points = pl.concat([df.with_columns(pl.lit(i).alias("task")) for i, df in enumerate(labels.values())])
    ds = FinetuneDataset(seqs, points, ids, max_len=16)
    for i in range(len(ds)):
        item = ds[i]
        assert item["task_token"] == ids[item["task"]] and item["tokens"][0] == S.CLS  # model.prompt swaps it in
        assert len(item["tokens"]) <= 15 and item["abs_time"].max() <= ds.pred_us[i]
    written = L.write_labels(labels, tmp_path / "labels")
    assert pl.read_parquet(written[0]).equals(labels["mortality"])
    with pytest.raises(KeyError):
        L.task_token_of("cond_Z99", groups)


def test_labels_match_the_generator_oracle(tmp_path):
    """synth -> ingest -> labels: every task's cohort and labels equal the generator's (oracle.parquet), including
    the LOS cohort of stays still open at the 24 h cut."""
    from linmix.apps.ehr.ingest import ingest
    from linmix.apps.ehr.synth import synthesize
    from linmix.apps.ehr.synth.catalog import GROUPS

    fhir = synthesize(300, tmp_path / "fhir", seed=3)
    ingest([fhir], tmp_path / "meds")
    labels = L.make_labels(S.load_meds(tmp_path / "meds"), condition_groups=list(GROUPS))
    smap = pl.read_parquet(tmp_path / "meds" / "metadata" / "subject_map.parquet")
    oracle = pl.read_parquet(fhir / "oracle.parquet").join(smap, on="patient_id", how="left")
    assert oracle["subject_id"].null_count() == 0
    for task, df in labels.items():
        ref = oracle.filter(pl.col("task") == task).select("subject_id", "label").sort("subject_id")
        ours = df.select("subject_id", pl.col("boolean_value").alias("label")).sort("subject_id")
        assert ours.equals(ref), task
    assert 0 < labels["los"].height < 300  # short stays are over at the cut: not in the LOS cohort

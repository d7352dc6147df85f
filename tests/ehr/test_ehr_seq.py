"""MEDS -> Odyssey token sequences: layout, visits, intervals, lab bins, side arrays, truncation, cache."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.sequence_cache import cached_sequences
from linmix.apps.ehr.sequences import MedsError

FX = None


def fx():
    global FX
    if FX is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__).with_name(
            "test_ehr_seq_fixture.py"))
        FX = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(FX)
    return FX


def frame_of(rows: list[tuple]) -> pl.DataFrame:
    """rows: (subject_id, time, code, numeric_value, encounter_id, unit) for one train subject."""
    df = pl.DataFrame([{"subject_id": r[0], "time": r[1], "code": r[2], "numeric_value": r[3], "text_value": None,
                        "encounter_id": r[4], "unit": r[5]} for r in rows], schema=fx().SCHEMA)
    return df.with_columns(pl.lit("train").alias("split"))


def names(seq, vocab):
    return [vocab.tokens[i] for i in seq["tokens"]]


def test_interval_buckets_have_no_holes():
    got = [S.interval_token(d) for d in range(0, 400)]
    assert got[0] == got[6] == "[W_0]" and got[7] == "[W_1]" and got[27] == "[W_3]"
    assert got[28] == got[29] == got[59] == "[M_1]"  # Odyssey gave 28-29 d [M_0] (a hole between W_3 and M_1)
    assert got[60] == "[M_2]" and got[365] == "[M_12]" and got[366] == "[LT]"
    assert "[M_0]" not in got
    order = [t for i, t in enumerate(got) if i == 0 or got[i - 1] != t]
    assert len(order) == len(set(order)), "each bucket must be one contiguous range of days"
    with pytest.raises(ValueError):
        S.interval_token(-1)


def test_layout_visits_merge_and_gap_tokens():
    t0 = datetime(2020, 1, 1, 8)
    rows = [(1, None, "GENDER//female", None, None, None), (1, datetime(1960, 1, 1), "MEDS_BIRTH", None, None, None),
            (1, t0, "ENCOUNTER//IMP//START", None, "a", None),
            (1, t0 + timedelta(hours=2), "SNOMED//1", None, "a", None),
            (1, t0 + timedelta(hours=5), "ENCOUNTER//EMER//START", None, "b", None),  # overlaps a -> merged
            (1, t0 + timedelta(hours=6), "RXNORM//2", None, "b", None),
            (1, t0 + timedelta(hours=7), "ICD10CM//E11.9", None, "b", None),  # a label, never a token
            (1, t0 + timedelta(hours=9), "ENCOUNTER//EMER//END", None, "b", None),
            (1, t0 + timedelta(days=1), "ENCOUNTER//IMP//END", None, "a", None),
            (1, t0 + timedelta(days=31), "ENCOUNTER//AMB//START", None, "c", None),
            (1, t0 + timedelta(days=31, hours=1), "LOINC//9", 4.0, "c", "mg"),
            (1, t0 + timedelta(days=31, hours=2), "ENCOUNTER//AMB//END", None, "c", None)]
    seqs, vocab, stats = S.build_sequences(frame_of(rows), S.SequenceSettings(vocab_size=64, n_conditions=2))
    seq = S.row_arrays(seqs.row(0, named=True))
    assert names(seq, vocab) == ["[CLS]", "[VS]", "ENCOUNTER//IMP", "SNOMED//1", "ENCOUNTER//EMER", "RXNORM//2", "[VE]",
                                 "[REG]", "[M_1]", "[VS]", "ENCOUNTER//AMB", "LOINC//9//mg//Q5", "[VE]", "[REG]"]  # ties up
    assert list(seq["token_type"]) == [S.TYPE_CLS, S.TYPE_VS, S.TYPE_CLASS, S.TYPE_PROC, S.TYPE_CLASS, S.TYPE_MED,
                                       S.TYPE_VE, S.TYPE_REG, S.TYPE_TIME, S.TYPE_VS, S.TYPE_CLASS, S.TYPE_LAB,
                                       S.TYPE_VE, S.TYPE_REG]
    assert list(seq["visit_order"]) == [0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert list(seq["visit_segment"]) == [0, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2]
    assert np.all(np.diff(seq["abs_time"]) >= 0) and np.all(np.diff(seq["time"]) >= 0)
    assert seq["time"][0] == 0 and abs(seq["time"][-1] - 31 - 2 / 24) < 1e-3  # days since the first visit
    assert abs(seq["age"][1] - 60.0) < 0.01  # years at the token time
    assert stats.events_tokenised == 3 and stats.events_outside_visits == 0
    assert vocab.tokens[:7] == list(S.SPECIALS) and vocab.tokens[25:30] == ["[MOR_1M]", "[LOS_1W]", "[REA_1M]",
                                                                          "[C0]", "[C1]"]


def test_lab_bins_cover_every_value_including_the_maximum():
    t0 = datetime(2020, 1, 1)
    values = np.arange(1.0, 101.0)
    rows = [(1, t0, "ENCOUNTER//IMP//START", None, "a", None), (1, t0 + timedelta(days=2), "ENCOUNTER//IMP//END",
                                                                  None, "a", None)]
    rows += [(1, t0 + timedelta(minutes=int(i)), "LOINC//X", float(v), "a", "u") for i, v in enumerate(values)]
    rows += [(1, t0 + timedelta(hours=30), "LOINC//X", 1e9, "a", "u"),  # beyond the train maximum -> top bin
             (1, t0 + timedelta(hours=31), "LOINC//X", 7.0, "a", "other-unit")]  # own (code, unit) bins
    seqs, vocab, stats = S.build_sequences(frame_of(rows), S.SequenceSettings(vocab_size=64, n_conditions=0))
    toks = names(S.row_arrays(seqs.row(0, named=True)), vocab)
    labs = [t for t in toks if t.startswith("LOINC//X//u//")]
    counts = {q: labs.count(f"LOINC//X//u//Q{q}") for q in range(1, 6)}
    assert sorted(counts) == [1, 2, 3, 4, 5] and all(19 <= c <= 22 for c in counts.values()), counts
    assert toks[toks.index("[VE]") - 2] == "LOINC//X//u//Q5"  # 1e9 and the maximum 100 are inside the vocabulary
    assert "LOINC//X//other-unit//Q5" in toks and stats.unknown_tokens == 0
    assert set(vocab.lab_edges) == {"LOINC//X//u", "LOINC//X//other-unit"}


def test_events_outside_visits_and_patients_without_visits_are_counted(tmp_path):
    frame = S.load_meds(fx().write_meds(tmp_path / "meds", 30))
    seqs, vocab, stats = S.build_sequences(frame, S.SequenceSettings(vocab_size=128))
    assert stats.subjects == 31 and stats.subjects_without_visits == 1 and seqs.height == 30
    assert stats.event_rows == stats.events_tokenised + stats.events_outside_visits + stats.events_without_time
    assert stats.events_outside_visits >= 1  # patient 0's event 400 days before any visit
    seq0 = names(S.row_arrays(seqs.filter(pl.col("subject_id") == 0).row(0, named=True)), vocab)
    assert "SNOMED//999999" in seq0 or "[UNK]" in seq0  # no encounter_id, inside a visit -> kept
    assert not any(t.startswith("ICD10CM") for t in vocab.tokens)


def test_truncate_keeps_most_recent_and_restores_cls_vs():
    t0 = datetime(2020, 1, 1)
    rows = []
    for v in range(6):
        s = t0 + timedelta(days=10 * v)
        rows += [(1, s, "ENCOUNTER//IMP//START", None, f"e{v}", None)]
        rows += [(1, s + timedelta(hours=h + 1), f"SNOMED//{v}{h}", None, f"e{v}", None) for h in range(3)]
        rows += [(1, s + timedelta(hours=5), "ENCOUNTER//IMP//END", None, f"e{v}", None)]
    seqs, vocab, _ = S.build_sequences(frame_of(rows), S.SequenceSettings(vocab_size=64, n_conditions=0))
    full = S.row_arrays(seqs.row(0, named=True))
    assert len(full["tokens"]) == 1 + 6 * 7 + 5  # [VS] class e e e [VE] [REG] per visit, 5 intervals
    for max_len in (7, 8, 9, 12, 20, 41):
        cut = S.truncate(full, max_len)
        toks = names(cut, vocab)
        assert len(toks) <= max_len and toks[0] == "[CLS]" and toks[1] == "[VS]"
        assert toks[-1] == "[REG]" and toks[-2] == "[VE]"
        body = [t for t in toks[2:] if t.startswith("SNOMED")]
        assert body == [t for t in names(full, vocab) if t.startswith("SNOMED")][len(
            [t for t in names(full, vocab) if t.startswith("SNOMED")]) - len(body):]  # a suffix of the events
        assert cut["visit_order"][1] == 1 and cut["visit_segment"][1] == 1 and cut["visit_order"][0] == 0
        assert set(cut["visit_segment"][cut["token_type"] == S.TYPE_TIME]) <= {0}
    tiny = S.truncate(full, 3)
    assert names(tiny, vocab)[:2] == ["[CLS]", "[VS]"] and len(tiny["tokens"]) <= 3
    assert S.truncate(full, 100) is full


def test_cache_is_reused_and_keyed_by_input(tmp_path):
    root = fx().write_meds(tmp_path / "meds", 20)
    settings = S.SequenceSettings(vocab_size=128)
    seqs1, _, folder1 = cached_sequences(root, tmp_path / "cache", settings)
    mtime = (folder1 / "sequences.parquet").stat().st_mtime_ns
    seqs2, _, folder2 = cached_sequences(root, tmp_path / "cache", settings)
    assert folder1 == folder2 and (folder1 / "sequences.parquet").stat().st_mtime_ns == mtime
    assert seqs1.equals(seqs2)
    _, _, folder3 = cached_sequences(root, tmp_path / "cache", S.SequenceSettings(vocab_size=100))
    assert folder3 != folder1
    fx().write_meds(root, 21)  # different input -> different key
    _, _, folder4 = cached_sequences(root, tmp_path / "cache", settings)
    assert folder4 != folder1


def test_bad_meds_input_gets_a_clear_error(tmp_path):
    with pytest.raises(MedsError, match="no MEDS shards"):
        S.load_meds(tmp_path)
    (tmp_path / "data" / "train").mkdir(parents=True)
    pl.DataFrame({"subject_id": [1], "code": ["X"]}).write_parquet(tmp_path / "data" / "train" / "0.parquet")
    with pytest.raises(ValueError, match=r"required column\(s\) \['time'\]"):
        S.load_meds(tmp_path)


def test_events_without_time_are_counted_not_lost():
    t0 = datetime(2020, 1, 1)
    rows = [(1, t0, "ENCOUNTER//IMP//START", None, "a", None), (1, None, "SNOMED//5", None, "a", None),
            (1, t0 + timedelta(hours=1), "SNOMED//6", None, "a", None),
            (1, t0 + timedelta(hours=2), "ENCOUNTER//IMP//END", None, "a", None)]
    _, _, stats = S.build_sequences(frame_of(rows), S.SequenceSettings(vocab_size=64, n_conditions=0))
    assert stats.event_rows == 2 and stats.events_without_time == 1 and stats.events_tokenised == 1


def test_event_after_its_encounter_end_stays_at_its_own_time():
    # a lab filed under encounter "a" but resulted 3 days after "a" ended, before visit "c": it must not move back to
    # a's end, or a prediction time between the two would see it
    t0 = datetime(2020, 1, 1, 8)
    late = t0 + timedelta(days=4)
    rows = [(1, t0, "ENCOUNTER//IMP//START", None, "a", None),
            (1, t0 + timedelta(hours=1), "SNOMED//1", None, "a", None),
            (1, t0 + timedelta(days=1), "ENCOUNTER//IMP//END", None, "a", None),
            (1, late, "SNOMED//2", None, "a", None),
            (1, t0 + timedelta(days=30), "ENCOUNTER//AMB//START", None, "c", None),
            (1, t0 + timedelta(days=30, hours=1), "SNOMED//3", None, "c", None),
            (1, t0 + timedelta(days=30, hours=2), "ENCOUNTER//AMB//END", None, "c", None)]
    seqs, vocab, stats = S.build_sequences(frame_of(rows), S.SequenceSettings(vocab_size=64, n_conditions=0))
    seq = S.row_arrays(seqs.row(0, named=True))
    toks = names(seq, vocab)
    assert stats.events_after_encounter_end == 1 and stats.events_tokenised == 3
    us = (late - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    assert seq["abs_time"][toks.index("SNOMED//2")] == us  # at its own time, inside the first visit (extended)
    assert np.all(np.diff(seq["abs_time"]) >= 0)
    cut = names(S.cut_at(seq, us - 1), vocab)
    assert "SNOMED//1" in cut and "SNOMED//2" not in cut
    assert toks.index("SNOMED//2") < toks.index("[VE]") < toks.index("SNOMED//3")

"""SNOMED CT conditions: the ingest keeps them as conditions (not procedures) on a real Synthea bundle, and the
synthetic generator's SNOMED-coded variant gives the same condition tasks and labels as its ICD-10-CM coding."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from linmix.apps.ehr import labels as L
from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.dialect import SNOMED_GROUPS
from linmix.apps.ehr.dialect_apply import annotate
from linmix.apps.ehr.ingest import ingest
from linmix.apps.ehr.synth import synthesize
from linmix.apps.ehr.synth.catalog import CONDITION_SNOMED, CONDITIONS, NOISE_CONDITIONS

FIXTURE = Path(__file__).parent / "fixtures" / "fhir" / "synthea_r4_randolph_trimmed.json"


def test_synthea_snomed_conditions_are_conditions_not_procedures(tmp_path):
    ingest([FIXTURE], tmp_path / "m")
    frame = S.load_meds(tmp_path / "m")
    cond = frame.filter(pl.col("code").str.starts_with("CONDITION//"))["code"].unique().sort().to_list()
    assert cond == ["CONDITION//SNOMED//410429000", "CONDITION//SNOMED//429007001"]
    ann = annotate(frame)[0]
    c = ann.filter(pl.col("code").str.starts_with("CONDITION//"))
    assert c["kind"].is_null().all() and set(c["condition_group"]) == {"SCT410429000", "SCT429007001"}
    assert (ann.filter(pl.col("code").str.starts_with("SNOMED//"))["kind"] == S.TYPE_PROC).all()
    labels = L.make_labels(ann, condition_groups=["SCT410429000"])
    assert labels["cond_SCT410429000"]["boolean_value"].to_list() == [True]


def test_snomed_table_covers_the_generator_and_its_groups():
    for g, codes in CONDITIONS.items():
        for icd, _ in codes:
            assert SNOMED_GROUPS[CONDITION_SNOMED[icd][0]][0] == g
    for icd, _ in NOISE_CONDITIONS:
        assert SNOMED_GROUPS[CONDITION_SNOMED[icd][0]][0] == icd.replace(".", "")[:3]


def test_synth_snomed_variant_has_the_same_condition_tasks(tmp_path):
    out = {}
    for coding in ("icd10", "snomed"):
        fhir = synthesize(40, tmp_path / coding, seed=2, condition_coding=coding)
        ingest([fhir], tmp_path / f"meds_{coding}")
        frame = S.load_meds(tmp_path / f"meds_{coding}")
        groups = L.top_condition_groups(frame, 5)
        out[coding] = (frame, groups, L.make_labels(frame, condition_groups=groups))
    assert out["snomed"][0]["code"].str.starts_with("CONDITION//SNOMED//").any()
    assert not out["snomed"][0]["code"].str.starts_with("ICD10CM//").any()
    assert out["snomed"][1] == out["icd10"][1] and len(out["icd10"][1]) == 5
    for task, df in out["icd10"][2].items():
        assert df.equals(out["snomed"][2][task]), task


def test_synth_condition_coding_flag(tmp_path, capsys):
    from linmix.apps.ehr.synth import synth_main

    assert synth_main(["--patients", "6", "--out", str(tmp_path), "--condition-coding", "snomed"]) == 0
    systems = {c["system"] for line in (tmp_path / "Condition.ndjson").read_text().splitlines()
               for c in json.loads(line)["code"]["coding"]}
    assert systems == {"http://snomed.info/sct"}

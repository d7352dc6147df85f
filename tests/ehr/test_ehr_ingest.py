"""FHIR -> MEDS ingestion end to end on the synthetic cohort and on a real Synthea R4 Bundle fixture."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl
import pytest

from linmix.apps.ehr.ingest import ingest, ingest_main
from linmix.apps.ehr.meds import DATA_SCHEMA, SPLITS, check_meds, subject_id_of
from linmix.apps.ehr.synth import synthesize

FIXTURES = Path(__file__).parent / "fixtures" / "fhir"


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _meds(root: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(root / "data" / s / "0.parquet") for s in SPLITS])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    base = tmp_path_factory.mktemp("ehr")
    nd = synthesize(120, base / "ndjson", fmt="ndjson", seed=5, gzip=True)
    bu = synthesize(120, base / "bundle", fmt="bundle", seed=5)
    meds = base / "meds"
    report = ingest([nd], meds)
    return {"base": base, "ndjson": nd, "bundle": bu, "meds": meds, "report": report}


def test_meds_schema_and_codes(cohort):
    root = cohort["meds"]
    counts = check_meds(root)
    assert set(counts) == set(SPLITS) and all(counts[s] > 0 for s in SPLITS)
    df = _meds(root)
    assert dict(df.schema) == DATA_SCHEMA
    codes = set(df["code"].unique())
    for c in ("MEDS_BIRTH", "ENCOUNTER//AMB//START", "ENCOUNTER//IMP//END", "LOINC//2160-0", "RXNORM//860975",
              "SNOMED//302497006", "ICD10CM//E11.9"):
        assert c in codes, c
    assert {"GENDER//female", "GENDER//male"} <= codes
    assert df.filter(pl.col("time").is_null())["code"].str.starts_with("GENDER//").all()
    enc_events = df.filter(~pl.col("code").str.starts_with("MEDS_") & ~pl.col("code").str.starts_with("GENDER"))
    assert enc_events["encounter_id"].null_count() == 0
    labs = df.filter(pl.col("code").str.starts_with("LOINC//"))
    assert labs["numeric_value"].null_count() == 0 and labs["unit"].null_count() == 0
    meta = pl.read_parquet(root / "metadata" / "codes.parquet")
    assert meta.filter(pl.col("code") == "LOINC//2160-0")["description"].item().startswith("Creatinine")
    smap = pl.read_parquet(root / "metadata" / "subject_map.parquet")
    assert smap.height == 120
    assert all(subject_id_of(p) == s for s, p in smap.iter_rows())
    assert orjson.loads((root / "metadata" / "dataset.json").read_bytes())["meds_version"]


def test_output_validates_with_the_official_meds_schemas(cohort):
    """The ``meds`` package (0.4) schemas accept every table (skipped where ``meds`` is not installed)."""
    meds = pytest.importorskip("meds")
    import pyarrow.parquet as pq

    root = cohort["meds"]
    for split in SPLITS:
        meds.DataSchema.validate(pq.read_table(root / "data" / split / "0.parquet"))
    meds.CodeMetadataSchema.validate(pq.read_table(root / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(root / "metadata" / "subject_splits.parquet"))
    meds.DatasetMetadataSchema.validate(orjson.loads((root / "metadata" / "dataset.json").read_bytes()))


def test_times_are_utc(cohort):
    """An Observation written with a local offset lands at the UTC instant in MEDS."""
    import gzip

    with gzip.open(cohort["ndjson"] / "Observation.ndjson.gz") as fh:
        obs = orjson.loads(fh.readline())
    local = datetime.fromisoformat(obs["effectiveDateTime"])
    utc = (local - local.utcoffset()).replace(tzinfo=None)
    df = _meds(cohort["meds"])
    sid = subject_id_of(obs["subject"]["reference"].split("/")[1])
    row = df.filter((pl.col("subject_id") == sid) & (pl.col("code") == "LOINC//" + obs["code"]["coding"][0]["code"])
                    & (pl.col("numeric_value") == pl.lit(obs["valueQuantity"]["value"], pl.Float32)))
    assert utc in row["time"].to_list()


@pytest.mark.parametrize("gz", [False, True])
def test_bundle_and_ndjson_layouts_give_identical_meds(cohort, tmp_path, gz):
    src = synthesize(120, tmp_path / "bz", fmt="bundle", seed=5, gzip=True) if gz else cohort["bundle"]
    ingest([src], tmp_path / "m")
    for split in SPLITS:
        a = (cohort["meds"] / "data" / split / "0.parquet").read_bytes()
        b = (tmp_path / "m" / "data" / split / "0.parquet").read_bytes()
        assert a == b, split


def test_labels_from_meds_match_the_oracle(cohort):
    """The contract's task definitions, applied to the MEDS output, reproduce the generator's labels exactly."""
    df = _meds(cohort["meds"]).join(pl.read_parquet(cohort["meds"] / "metadata" / "subject_map.parquet"),
                                    on="subject_id")
    enc = df.filter(pl.col("code").str.starts_with("ENCOUNTER//"))
    st = enc.filter(pl.col("code").str.ends_with("//START")).select("patient_id", "encounter_id", start="time")
    en = enc.filter(pl.col("code").str.ends_with("//END")).select("encounter_id", end="time")
    e = st.join(en, on="encounter_id").sort("patient_id", "start")
    last = e.group_by("patient_id").agg(pl.all().sort_by("start").last())
    death = df.filter(pl.col("code") == "MEDS_DEATH").select("patient_id", death="time")
    labels = {
        "mortality": last.join(death, on="patient_id", how="left").select(
            "patient_id", y=((pl.col("death") - pl.col("end")) <= pl.duration(days=30)).fill_null(False)),
        "los": last.filter((pl.col("end") - pl.col("start")) > pl.duration(hours=24)).select(  # open at 24 h
            "patient_id", y=(pl.col("end") - pl.col("start")) >= pl.duration(days=7)),
        "readmission": e.group_by("patient_id").agg("start", "end").filter(pl.col("start").list.len() >= 2).select(
            "patient_id", y=(pl.col("start").list.get(-1) - pl.col("end").list.get(-2)) <= pl.duration(days=30)),
    }
    cond = df.filter(pl.col("code").str.starts_with("ICD10CM//")).select(
        "patient_id", g=pl.col("code").str.slice(9, 3)).unique()
    oracle = pl.read_parquet(cohort["ndjson"] / "oracle.parquet")
    for g in ("E11", "I10", "N18", "J44", "E78"):
        has = cond.filter(pl.col("g") == g)["patient_id"].implode()
        labels[f"cond_{g}"] = oracle.filter(pl.col("task") == f"cond_{g}").select(
            "patient_id", y=pl.col("patient_id").is_in(has))
    for task, lab in labels.items():
        j = oracle.filter(pl.col("task") == task).join(lab, on="patient_id", how="full")
        assert j.height > 0
        assert j.filter(pl.col("label").is_null() | pl.col("y").is_null()).height == 0, task
        assert (j["label"] == j["y"]).all(), task
        assert j["label"].any() or task == "mortality"


def test_rerun_is_byte_identical_and_workers_agree(cohort, tmp_path):
    before = _tree(cohort["meds"])
    ingest([cohort["ndjson"]], cohort["meds"], overwrite=True)
    assert _tree(cohort["meds"]) == before
    ingest([cohort["ndjson"]], tmp_path / "par", workers=2)
    assert _tree(tmp_path / "par") == before
    assert not [p for p in cohort["base"].iterdir() if p.name.startswith(".meds")]  # no temp folders left


def test_report_reconciles(cohort, capsys):
    rep = cohort["report"]
    rep.reconcile()
    on_disk = orjson.loads((cohort["meds"] / "report.json").read_bytes())
    tot = on_disk["total"]
    assert tot["read"] == tot["accepted"] + tot["rejected"] + tot["ignored"] > 0
    for c in on_disk["counts"].values():
        assert c["read"] == c["accepted"] + c["rejected"] + c["ignored"]
    assert on_disk["counts"]["Patient"]["accepted"] == 120
    assert sum(on_disk["rows_written"].values()) == _meds(cohort["meds"]).height
    rep.print()
    printed = capsys.readouterr().out
    assert "accepted" in printed and "Observation" in printed


def test_validate_mode_quarantines_invalid_resources(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    lines = [{"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"},
             {"resourceType": "Observation", "id": "o1", "status": "final", "colour": "red", "code": {"coding": [
                 {"system": "http://loinc.org", "code": "2160-0"}]}, "subject": {"reference": "Patient/p1"},
              "effectiveDateTime": "2020-01-01T00:00:00Z", "valueQuantity": {"value": 1.0, "unit": "mg/dL"}}]
    (d / "x.ndjson").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    fast = ingest([d], tmp_path / "fast")
    assert fast.counts["Observation"]["accepted"] == 1
    slow = ingest([d], tmp_path / "slow", validate=True)
    assert slow.counts["Observation"] == {"read": 1, "accepted": 0, "rejected": 1, "ignored": 0}
    q = orjson.loads((tmp_path / "slow" / "quarantine" / "Observation.ndjson").read_bytes())
    assert q["reason"].startswith("R4B validation failed") and "colour" in q["reason"] and q["line"] == 2


def test_synthea_r4_fixture_ingests(tmp_path, capsys):
    rc = ingest_main([str(FIXTURES), "--out", str(tmp_path / "m")])
    assert rc == 0
    check_meds(tmp_path / "m")
    rep = orjson.loads((tmp_path / "m" / "report.json").read_bytes())
    assert rep["counts"]["Patient"]["accepted"] == 1
    assert rep["counts"]["Claim"] == {"read": 2, "accepted": 0, "rejected": 0, "ignored": 2}
    assert rep["counts"]["Encounter"]["accepted"] == 9
    assert rep["reasons"] == {"event after death": 1, "rejected encounter": 1}  # Synthea's post-mortem encounter
    df = _meds(tmp_path / "m")
    assert {"MEDS_BIRTH", "MEDS_DEATH", "GENDER//male"} <= set(df["code"])
    assert df.filter(pl.col("code") == "MEDS_DEATH")["time"].item() == datetime(2006, 5, 8, 7, 21, 10)
    assert df.filter(pl.col("code").str.starts_with("ENCOUNTER//")).height >= 17
    assert "total" in capsys.readouterr().out


def _flat(d: dict, urls):
    from linmix.apps.ehr.ingest.fhir import Flattener, Reject

    f = Flattener()
    try:
        f.add(d, d["resourceType"], 0, 1, -1, urls)
    except Reject as err:
        return "reject: " + str(err)
    return f.p + f.e + f.v


def test_fast_path_equals_general_path(cohort):
    """Flattener's fast path (NDJSON, common shape) gives exactly the general path's rows, also on mutated
    resources (where it must fall back). ``urls={}`` forces the general path."""
    import copy
    import gzip
    import random

    rng = random.Random(0)
    mutations = [
        lambda d: d.pop("encounter", None), lambda d: d.pop("id", None), lambda d: d.update(id=7),
        lambda d: d.update(subject={"reference": "Patient/a/b"}), lambda d: d.update(subject="Patient/x"),
        lambda d: d.update(encounter={"reference": "Encounter?x=1"}), lambda d: d.update(effectiveDateTime=""),
        lambda d: d.update(valueQuantity={"value": True}), lambda d: d.update(valueQuantity={"value": "1"}),
        lambda d: d.update(valueQuantity={"value": 2, "code": "mg"}), lambda d: d.pop("performedDateTime", None),
        lambda d: d.update(performedPeriod={"end": "2020"}), lambda d: d.update(authoredOn=None),
        lambda d: d.update(code={"coding": [{"system": "http://other", "code": "1"}, {"code": "2"}]}),
        lambda d: d.update(code={"coding": []}), lambda d: d.update(medicationCodeableConcept={"text": "x"}),
        lambda d: d.update(onsetDateTime=None), lambda d: d.update(subject={"reference": "Group/g"}),
    ]
    n = 0
    for name in ("Observation", "Procedure", "MedicationRequest", "Condition"):
        with gzip.open(cohort["ndjson"] / f"{name}.ndjson.gz") as fh:
            for line in list(fh)[:150]:
                d = orjson.loads(line)
                assert _flat(d, None) == _flat(d, {})
                m = copy.deepcopy(d)
                rng.choice(mutations)(m)
                assert _flat(m, None) == _flat(m, {}), m
                n += 1
    assert n == 600


def test_parallel_byte_ranges_match_serial(tmp_path, monkeypatch):
    """With workers > 1, big plain NDJSON files are read as line-aligned byte ranges in parallel; the output
    (incl. quarantine line numbers) equals the serial run."""
    import linmix.apps.ehr.ingest.pipeline as ingest_mod
    from linmix.apps.ehr.ingest.read import split_ranges

    src = synthesize(60, tmp_path / "fhir", fmt="ndjson", seed=9)
    obs = src / "Observation.ndjson"
    lines = obs.read_bytes().splitlines(keepends=True)
    bad_at = len(lines) // 2
    lines.insert(bad_at, b'{"resourceType": "Observation", "id": \n')  # malformed, mid-file
    obs.write_bytes(b"".join(lines))
    assert len(split_ranges(obs, 4)) == 4
    ingest([src], tmp_path / "serial")
    monkeypatch.setattr(ingest_mod, "RANGE_BYTES", 20_000)
    ingest([src], tmp_path / "par", workers=2)
    assert _tree(tmp_path / "par") == _tree(tmp_path / "serial")
    q = orjson.loads((tmp_path / "par" / "quarantine" / "_malformed.ndjson").read_bytes())
    assert q["line"] == bad_at + 1


@pytest.mark.parametrize("frac", [False, True])
def test_sort_rows_equals_the_full_sort(frac):
    """meds.sort_rows (one int64 key + runs of equal subject and time) orders rows exactly as the 7-key sort, with
    null times, times before 1970, many ties and null/NaN values; fractional seconds take the plain sort."""
    import random

    from linmix.apps.ehr.meds import SORT_KEYS, sort_rows

    rng = random.Random(3)
    n = 4000
    secs = [rng.choice([None, -86400 * 365 * 60, 0, 1_600_000_000, 1_600_000_060]) if rng.random() < 0.5
            else rng.randint(-2_000_000_000, 2_000_000_000) for _ in range(n)]
    us = [None if s is None else s * 1_000_000 + (rng.randint(1, 999_999) if frac and rng.random() < 0.1 else 0)
          for s in secs]
    df = pl.DataFrame({
        "subject_id": [rng.choice([5, 2**62 - 7, 123456789, 0, 77]) for _ in range(n)],
        "time": pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us")),
        "code": [rng.choice(["A", "B", "LOINC//1", "ENCOUNTER//AMB//START"]) for _ in range(n)],
        "numeric_value": pl.Series([rng.choice([None, 1.5, -2.0, float("nan"), 3.0]) for _ in range(n)],
                                   dtype=pl.Float32),
        "text_value": [rng.choice([None, "x", "y"]) for _ in range(n)],
        "encounter_id": [rng.choice([None, "e1", "e2", "e3"]) for _ in range(n)],
        "unit": [rng.choice([None, "mg", "g"]) for _ in range(n)],
    }, schema=DATA_SCHEMA)
    want = df.sort(list(SORT_KEYS), nulls_last=False)
    assert sort_rows(df).equals(want)
    assert sort_rows(df.head(0)).equals(want.head(0))
    assert sort_rows(df.filter(pl.col("time").is_null())).equals(want.filter(pl.col("time").is_null()))


def test_narrow_large_string_without_pyarrow_compute():
    import pyarrow as pa

    from linmix.apps.ehr.meds import _narrow

    vals = [["x", None, "abcdefghijklmnopq", ""], ["é€", None], []]
    col = pa.chunked_array([pa.array(v, type=pa.large_string()) for v in vals], type=pa.large_string())
    got = _narrow(col)
    assert got.type == pa.string() and got.num_chunks == 3 and got.to_pylist() == sum(vals, [])
    for ch in got.chunks:
        ch.validate(full=True)
    assert _narrow(pa.chunked_array([pa.array(["a", "b", "c"], type=pa.large_string()).slice(1)])) is None

"""Hostile FHIR values: ingestion keeps what FHIR says and counts what it sets aside (comparators, values beyond
float32, codes, accepted-but-suspicious times, contained resources, dependents of rejected resources).

Every case runs twice, with the vectorised fast paths (msgspec blocks, the Flattener's common-shape path) and with
the general per-line path only, and both outputs must be byte-identical; every case checks that nothing is lost
(read = accepted + rejected + ignored per type, one quarantine record per rejected resource, every skipped file
listed, every bucket present in report.json). Files, ``--out`` and random hostile mutations:
``test_ehr_ingest_hostile_files.py``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import unquote

import orjson
import polars as pl
import pytest
from hostile_fhir import LOINC, bulk, enc, lines, make_both, meds, obs, pat, quarantine

import linmix.apps.ehr.ingest.fast as fast_mod
from linmix.apps.ehr.ingest import ingest_main


@pytest.fixture
def both(tmp_path, monkeypatch):
    return make_both(tmp_path, monkeypatch)


# ---- comparators


@pytest.mark.parametrize("cmp", ["<", "<=", ">=", ">"])
def test_comparator_is_kept_as_text_value(tmp_path, both, cmp):
    src = bulk(tmp_path / "in", pat(), enc(), obs("a", valueQuantity={"value": 5, "unit": "mg/dL", "comparator": cmp}),
               obs("b", valueQuantity={"value": 1.5, "unit": "mg/dL"}))
    rep, out, fast = both([src])
    assert fast["Observation"] == 2  # decoded on the fast path
    labs = meds(out).filter(pl.col("code") == "LOINC//2160-0").sort("numeric_value")
    assert labs["numeric_value"].to_list() == [1.5, 5.0] and labs["text_value"].to_list() == [None, cmp]
    assert rep["stats"]["values_with_comparator"] == 1
    assert rep["counts"]["Observation"] == {"read": 2, "accepted": 2, "rejected": 0, "ignored": 0}


def test_comparator_in_later_pieces_and_components(tmp_path, both, monkeypatch):
    monkeypatch.setattr(fast_mod, "PIECE_BYTES", 600)  # one or two lines per piece: comparators only in some
    plain = [obs(f"o{i}", valueQuantity={"value": float(i), "unit": "mg/dL"}) for i in range(6)]
    cens = obs("c", valueQuantity={"value": 60, "unit": "mL/min", "comparator": ">"})
    comp = obs("bp", valueQuantity=None) | {"component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 200, "unit": "mm[Hg]", "comparator": ">="}}]}
    src = bulk(tmp_path / "in", pat(), enc(), *plain, cens, *plain[:2])
    (src / "More.ndjson").write_bytes(lines(comp))
    rep, out, fast = both([src])
    assert fast["Observation"] == 9
    df = meds(out)
    assert df.filter(pl.col("text_value").is_not_null()).sort("numeric_value").select(
        "code", "numeric_value", "text_value").rows() == [("LOINC//2160-0", 60.0, ">"), ("LOINC//8480-6", 200.0, ">=")]
    assert rep["stats"]["values_with_comparator"] == 2
    assert rep["counts"]["Observation"] == {"read": 10, "accepted": 8, "rejected": 2, "ignored": 0}  # o0, o1 twice
    assert rep["reasons"] == {"duplicate id": 2}


@pytest.mark.parametrize("cmp", ["ad", "~", 5])
def test_unknown_comparator_is_rejected(tmp_path, both, cmp):
    src = bulk(tmp_path / "in", pat(), enc(), obs("a", valueQuantity={"value": 5, "unit": "mg", "comparator": cmp}),
               obs("b"))
    rep, out, _ = both([src])
    q = quarantine(out, "Observation")
    assert len(q) == 1 and q[0]["record"]["id"] == "a" and q[0]["reason"].startswith("unsupported comparator")
    assert rep["counts"]["Observation"] == {"read": 2, "accepted": 1, "rejected": 1, "ignored": 0}


# ---- values beyond float32


@pytest.mark.parametrize("value", [1e39, -3.5e38, 1.7e308])
def test_values_beyond_float32_are_quarantined(tmp_path, both, value):
    src = bulk(tmp_path / "in", pat(), enc(), obs("big", valueQuantity={"value": value, "unit": "mg"}),
               obs("max", valueQuantity={"value": 3.4e38, "unit": "mg"}), obs("int", valueInteger=2**40),
               obs("o1"))
    rep, out, _ = both([src])
    q = quarantine(out, "Observation")
    assert [x["record"]["id"] for x in q] == ["big"] and q[0]["reason"].startswith("value out of range")
    vals = meds(out).filter(pl.col("code") == "LOINC//2160-0")["numeric_value"]
    assert vals.is_finite().all() and vals.len() == 3
    assert rep["counts"]["Observation"] == {"read": 4, "accepted": 3, "rejected": 1, "ignored": 0}


def test_nan_and_infinity_literals_are_malformed_with_a_hint(tmp_path, both):
    src = bulk(tmp_path / "in", pat(), enc(), obs("o1"))
    good = (src / "Observation.ndjson").read_bytes()
    bad = [lines(obs(f"x{i}")).replace(b'"value":1.1', lit) for i, lit in
           enumerate([b'"value":NaN', b'"value":Infinity', b'"value":-Infinity', b'"value":1e400'])]
    assert all(b"1.1" not in b for b in bad)
    (src / "Observation.ndjson").write_bytes(good + b"".join(bad))
    rep, out, _ = both([src])
    q = quarantine(out, "(malformed)")
    assert [x["line"] for x in q] == [2, 3, 4, 5]
    assert all("NaN and Infinity are not JSON numbers" in x["reason"] for x in q[:3])
    assert "infinity" in q[3]["reason"]
    assert rep["counts"]["(malformed)"]["rejected"] == 4 and rep["counts"]["Observation"]["accepted"] == 1
    assert meds(out)["numeric_value"].drop_nulls().is_finite().all()


# ---- codes


def test_codes_are_trimmed(tmp_path, both):
    src = bulk(tmp_path / "in", pat(gender=" male\t"), enc(cls=" AMB "),
               obs("a", code=" 2160-0 "), obs("b", system=f" {LOINC} ", code="2345-7\n"), obs("c", code="  "))
    rep, out, _ = both([src])
    codes = set(meds(out)["code"])
    assert {"GENDER//male", "ENCOUNTER//AMB//START", "LOINC//2160-0", "LOINC//2345-7"} <= codes
    assert not any(c != c.strip() or " " in c for c in codes)
    q = quarantine(out, "Observation")
    assert [x["record"]["id"] for x in q] == ["c"] and q[0]["reason"].startswith("no code")
    assert rep["counts"]["Observation"] == {"read": 3, "accepted": 2, "rejected": 1, "ignored": 0}


def test_double_slash_cannot_forge_code_parts(tmp_path, both):
    src = bulk(tmp_path / "in", pat(gender="female//x"), enc(cls="IMP//END"), obs("a", code="2160-0//START"),
               obs("b", code="100%/"), obs("c", system="http://evil.org//ENCOUNTER//", code="1"))
    rep, out, _ = both([src])
    codes = set(meds(out)["code"])
    want = {"GENDER//female%2F%2Fx", "ENCOUNTER//IMP%2F%2FEND//START", "ENCOUNTER//IMP%2F%2FEND//END",
            "LOINC//2160-0%2F%2FSTART", "LOINC//100%25%2F", "LOCALENCOUNTER//1"}
    assert want <= codes, codes - want
    parts = {c: c.split("//") for c in codes}
    assert all(len(p) == (3 if c.startswith("ENCOUNTER//IMP") else 2) for c, p in parts.items() if c != "MEDS_BIRTH")
    assert unquote("2160-0%2F%2FSTART") == "2160-0//START" and unquote("100%25%2F") == "100%/"
    meta = pl.read_parquet(out / "metadata" / "codes.parquet")
    assert set(meta["code"]) == codes
    assert rep["counts"]["Observation"]["accepted"] == 3


# ---- accepted but suspicious


def test_patient_without_birth_date_is_counted(tmp_path, both, caplog):
    nobirth = pat("p2")
    del nobirth["birthDate"]
    src = bulk(tmp_path / "in", pat(), nobirth, enc(), enc("e2", "p2"), obs(), obs("o2", "p2", "e2"))
    with caplog.at_level(logging.WARNING):
        rep, out, _ = both([src])
    assert rep["suspicious"]["patient_without_birth_date"] == 1
    assert rep["counts"]["Patient"]["accepted"] == 2 and rep["counts"]["Observation"]["accepted"] == 2
    assert "patient without birth date 1" in caplog.text
    assert meds(out).filter(pl.col("code") == "MEDS_BIRTH").height == 1


def test_events_before_birth_are_counted(tmp_path, both):
    src = bulk(tmp_path / "in", pat(birth="2020-06-01"), pat("p2"), enc(), enc("e2", "p2"), obs(),
               obs("late", t="2020-07-01T00:00:00Z"), obs("o2", "p2", "e2"))
    rep, out, _ = both([src])
    s = rep["suspicious"]
    assert s["patient_born_after_events"] == 1 and s["event_before_birth"] == 2  # e1 and o1 (not "late")
    assert rep["counts"]["Observation"] == {"read": 3, "accepted": 3, "rejected": 0, "ignored": 0}
    assert meds(out).filter(pl.col("code") == "LOINC//2160-0").height == 3  # rows kept


def test_implausible_times_are_counted(tmp_path, both):
    src = bulk(tmp_path / "in", pat(birth="1850-01-01"), enc(end="2999-01-01T00:00:00Z"),
               obs("old", t="1899-12-31T23:00:00Z"), obs("future", t="2999-01-01T00:00:00+01:00"), obs("ok"))
    rep, out, _ = both([src])
    s = rep["suspicious"]
    assert s["time_before_1900"] == 2 and s["time_after_next_year"] == 2  # birth + old; enc end + future
    assert rep["counts"]["Observation"]["accepted"] == 3
    assert datetime(1850, 1, 1) in meds(out)["time"].to_list()


def test_datetimes_without_timezone_are_counted_as_utc(tmp_path, both, capsys):
    src = bulk(tmp_path / "in", pat(deceasedDateTime="2021-01-01T10:00:00"), enc(start="2020-01-01T08:00:00"),
               obs("a", t="2020-01-01T09:00:00"), obs("b", t="2020-01-01T09:30:00.250"),
               obs("c", t="2020-01-01"), obs("d", t="2020-01-01T10:00:00-05:00"))
    rep, out, _ = both([src])
    assert rep["suspicious"]["time_without_timezone"] == 4  # death, encounter start, a, b (not the plain date)
    times = meds(out).filter(pl.col("code") == "LOINC//2160-0")["time"].sort().to_list()
    assert times == [datetime(2020, 1, 1), datetime(2020, 1, 1, 9), datetime(2020, 1, 1, 9, 30, 0, 250000),
                     datetime(2020, 1, 1, 15)]
    rc = ingest_main([str(src), "--out", str(tmp_path / "o3")])
    assert rc == 0 and "4 time without timezone" in capsys.readouterr().out


# ---- contained resources


def test_contained_resources_are_counted_as_ignored(tmp_path, both):
    med = {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"code": "1"}]}}
    src = bulk(tmp_path / "in", pat(contained=[{"resourceType": "Organization", "id": "org"}]), enc(),
               obs("a", contained=[med, {"resourceType": "Practitioner"}, {"no": "type"}]), obs("b"))
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": obs("c", contained=[med])}]}
    (src / "b.json").write_bytes(orjson.dumps(bundle))
    rep, out, _ = both([src])
    c = rep["counts"]
    assert c["(contained) Medication"] == {"read": 2, "accepted": 0, "rejected": 0, "ignored": 2}
    assert c["(contained) Organization"]["ignored"] == 1 and c["(contained) Practitioner"]["ignored"] == 1
    assert c["(contained) (not FHIR)"]["ignored"] == 1
    assert c["Observation"]["accepted"] == 3 and c["Patient"]["accepted"] == 1


# ---- dependents of rejected Patients and Encounters


@pytest.mark.parametrize("bad,why", [({"birthDate": "19xx-01-01"}, "unparseable dateTime: birthDate"),
                                     ({"birthDate": 1960}, "unparseable dateTime: not a string"),
                                     ({"gender": "male", "deceasedDateTime": "1950-01-01"},
                                      "inconsistent dates: deceasedDateTime before birthDate")])
def test_dependents_of_a_rejected_patient_name_its_reason(tmp_path, both, bad, why):
    src = bulk(tmp_path / "in", pat() | bad, pat("p2"), enc(), enc("e2", "p2"), obs(), obs("o2", "p2", "e2"),
               obs("ghost", "p9", "e2"))
    rep, out, _ = both([src])
    assert quarantine(out, "Patient")[0]["reason"] == why
    assert quarantine(out, "Encounter")[0]["reason"] == f"rejected subject: its Patient was rejected ({why})"
    reasons = {x["record"]["id"]: x["reason"] for x in quarantine(out, "Observation")}
    assert reasons["o1"] == f"rejected subject: its Patient was rejected ({why})"
    assert reasons["ghost"].startswith("dangling subject reference: no Patient with this id")
    assert rep["reasons"] == {"dangling subject reference": 1, "rejected subject": 2,
                              why.split(":")[0]: 1}


def test_dependents_of_a_rejected_encounter_name_its_reason(tmp_path, both):
    src = bulk(tmp_path / "in", pat(), enc("e1", start=None), enc("e2", end="2019-01-01T00:00:00Z"),
               obs("a", eid="e1"), obs("b", eid="e2"), obs("c", eid="e9"))
    rep, out, _ = both([src])
    reasons = {x["record"]["id"]: x["reason"] for x in quarantine(out, "Observation")}
    assert reasons["a"].startswith("rejected encounter: its Encounter was rejected (no time")
    assert reasons["b"] == ("rejected encounter: its Encounter was rejected (inconsistent dates: period.end before "
                            "period.start)")
    assert reasons["c"].startswith("dangling encounter reference")
    assert rep["counts"]["Observation"]["rejected"] == 3


def test_clean_input_has_nothing_set_aside(tmp_path, both):
    src = bulk(tmp_path / "in", pat(), enc(), obs(), obs("o2", t="2020-01-01T10:00:00Z"))
    rep, out, fast = both([src])
    assert fast == {"Patient": 1, "Encounter": 1, "Observation": 2}
    assert rep["skipped_files"] == {} and set(rep["suspicious"].values()) == {0} and rep["reasons"] == {}
    assert rep["stats"]["values_with_comparator"] == 0 and meds(out)["text_value"].null_count() == meds(out).height

"""Hostile FHIR input: ingestion keeps what FHIR says and counts what it sets aside.

Every case runs twice, with the vectorised fast paths (msgspec blocks, the Flattener's common-shape path) and with
the general per-line path only, and both outputs must be byte-identical; every case checks that nothing is lost
(read = accepted + rejected + ignored per type, one quarantine record per rejected resource, every skipped file
listed, every bucket present in report.json).
"""

from __future__ import annotations

import gzip
import logging
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import linmix.apps.ehr.ingest.fast as fast_mod
import linmix.apps.ehr.ingest.fhir as fhir_mod
import linmix.apps.ehr.ingest.read as read_mod
import orjson
import polars as pl
import pytest
from linmix.apps.ehr.ingest import IngestError, ingest, ingest_main
from linmix.apps.ehr.ingest.checks import SUSPICIOUS
from linmix.apps.ehr.meds import SPLITS, check_meds
from linmix.shared.errors import UserError

LOINC = "http://loinc.org"
QNAME = {"(malformed)": "_malformed", "(not FHIR)": "_not_fhir"}


def pat(pid="p1", birth="1960-02-03", **kw) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": birth, **kw}


def enc(eid="e1", pid="p1", start="2020-01-01T08:00:00+00:00", end="2020-01-02T08:00:00+00:00", cls="IMP") -> dict:
    return {"resourceType": "Encounter", "id": eid, "status": "finished", "class": {"code": cls, "display": "x"},
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": start, "end": end}}


def obs(oid="o1", pid="p1", eid="e1", t="2020-01-01T09:00:00+00:00", code="2160-0", system=LOINC, **kw) -> dict:
    """An Observation of 1.1 mg/dL; ``kw`` adds fields (a ``value[x]`` replaces the valueQuantity; None drops)."""
    d = {"resourceType": "Observation", "id": oid, "status": "final",
         "code": {"coding": [{"system": system, "code": code, "display": "Creatinine"}]},
         "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{eid}"},
         "effectiveDateTime": t, "valueQuantity": {"value": 1.1, "unit": "mg/dL"}}
    if any(k.startswith("value") for k in kw):
        del d["valueQuantity"]
    return {k: v for k, v in (d | kw).items() if v is not None}


def lines(*records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def bulk(folder: Path, *records) -> Path:
    """One NDJSON file per resource type (the bulk-export shape the fast path decodes)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list] = {}
    for r in records:
        by_type.setdefault(r["resourceType"], []).append(r)
    for t, rs in by_type.items():
        (folder / f"{t}.ndjson").write_bytes(lines(*rs))
    return folder


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def quarantine(out: Path, name: str) -> list[dict]:
    f = out / "quarantine" / f"{QNAME.get(name, name)}.ndjson"
    return [orjson.loads(x) for x in f.read_bytes().splitlines()] if f.exists() else []


def meds(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(out / "data" / s / "0.parquet") for s in SPLITS])


def accounted(out: Path) -> dict:
    """report.json of ``out``, after checking that nothing is lost and every bucket is there."""
    rep = orjson.loads((out / "report.json").read_bytes())
    check_meds(out)
    assert set(rep["suspicious"]) == set(SUSPICIOUS) and "skipped_files" in rep and "stats" in rep
    for t, c in rep["counts"].items():
        assert c["read"] == c["accepted"] + c["rejected"] + c["ignored"], t
        assert len(quarantine(out, t)) == c["rejected"], t
    tot = rep["total"]
    assert tot["read"] == tot["accepted"] + tot["rejected"] + tot["ignored"]
    assert len(quarantine(out, "_skipped_files")) == sum(rep["skipped_files"].values())
    assert sum(rep["rows_written"].values()) == meds(out).height
    return rep


@pytest.fixture
def both(tmp_path, monkeypatch):
    """``run(inputs) -> (report.json, out, fast)``: ingest with the fast paths and with the general path only, assert
    byte-identical outputs; ``fast`` counts the rows per type the block decoder gave."""

    def run(inputs: list[Path], **kw):
        fast: Counter = Counter()
        real = read_mod.decode_block

        def spy(block, rtype, *a):
            got = real(block, rtype, *a)
            if got is not None:
                fast[rtype] += got[1].height
            return got

        out, general = tmp_path / "out", tmp_path / "out_general"
        with monkeypatch.context() as m:
            m.setattr(read_mod, "decode_block", spy)
            ingest(inputs, out, **kw)
        with monkeypatch.context() as m:
            m.setattr(read_mod, "decode_block", lambda *a, **k: None)
            m.setattr(fhir_mod.Flattener, "_fast", lambda *a, **k: False)
            ingest(inputs, general, **kw)
        assert tree(out) == tree(general)
        return accounted(out), out, fast

    return run


# ---- 1. comparators


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


# ---- 2. values beyond float32


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


# ---- 3. codes


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


# ---- 4. accepted but suspicious


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


# ---- 5. contained resources


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


# ---- 6. files


@pytest.mark.parametrize("name", ["obs.jsonl", "OBS.NDJSON", "obs.Ndjson.GZ", "obs.JSONL.gz"])
def test_jsonl_and_upper_case_names_are_read(tmp_path, both, name):
    src = bulk(tmp_path / "in", pat(), enc())
    data = lines(obs("a"), obs("b"))
    (src / name).write_bytes(gzip.compress(data, mtime=0) if name.lower().endswith(".gz") else data)
    rep, _, _ = both([src])
    assert rep["counts"]["Observation"]["accepted"] == 2 and rep["files"] == 3 and rep["skipped_files"] == {}


def test_other_files_are_skipped_and_listed(tmp_path, both, caplog):
    src = bulk(tmp_path / "in", pat(), enc(), obs())
    (src / "notes.txt").write_text("hello")
    (src / "Zebediah_Quuxworth.csv").write_text("a,b")
    (src / "README").write_text("x")
    (src / "sub").mkdir()
    (src / "sub" / "obs.xml").write_text("<x/>")
    with caplog.at_level(logging.WARNING):
        rep, out, _ = both([src])
    assert rep["skipped_files"] == {"not a FHIR file name: (none)": 1, "not a FHIR file name: .csv": 1,
                                    "not a FHIR file name: .txt": 1, "not a FHIR file name: .xml": 1}
    listed = quarantine(out, "_skipped_files")
    assert sorted(Path(x["file"]).name for x in listed) == ["README", "Zebediah_Quuxworth.csv", "notes.txt", "obs.xml"]
    assert "4 files skipped" in caplog.text and "Quuxworth" not in caplog.text
    assert "Quuxworth" not in (out / "report.json").read_text()
    assert rep["files"] == 3


@pytest.mark.parametrize("name,gz", [("Observation.ndjson", True), ("b.json", True), ("Observation.ndjson.gz", False),
                                     ("b.json.gz", False)])
def test_compression_is_recognised_by_magic_bytes(tmp_path, both, name, gz):
    src = bulk(tmp_path / "in", pat(), enc())
    data = (lines(obs("a"), obs("b", valueQuantity={"value": 1e39, "unit": "mg"})) if "ndjson" in name else
            orjson.dumps({"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": obs("a")}, {"resource": obs("b", valueQuantity={"value": 1e39})}]}))
    (src / name).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    rep, out, _ = both([src])
    assert rep["counts"]["Observation"] == {"read": 2, "accepted": 1, "rejected": 1, "ignored": 0}
    q = quarantine(out, "Observation")  # the record is fetched again from the file for the quarantine
    assert q[0]["record"]["id"] == "b" and q[0]["reason"].startswith("value out of range")
    assert rep["file_errors"] == []


def test_pretty_printed_json_in_ndjson_gets_a_hint(tmp_path, both):
    src = bulk(tmp_path / "in", pat(), enc())
    (src / "Observation.ndjson").write_bytes(orjson.dumps(obs(), option=orjson.OPT_INDENT_2) + b"\n")
    rep, out, _ = both([src])
    q = quarantine(out, "(malformed)")
    n = len((src / "Observation.ndjson").read_bytes().splitlines())
    assert len(q) == n and rep["counts"]["(malformed)"]["rejected"] == n
    assert q[0]["reason"].startswith("malformed JSON") and all("pretty-printed JSON" in x["reason"] for x in q)


# ---- 7. dependents of rejected Patients and Encounters


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
    for r in [enc("e1", start=None)]:
        del r["period"]["start"]
    rep, out, _ = both([src])
    reasons = {x["record"]["id"]: x["reason"] for x in quarantine(out, "Observation")}
    assert reasons["a"].startswith("rejected encounter: its Encounter was rejected (no time")
    assert reasons["b"] == ("rejected encounter: its Encounter was rejected (inconsistent dates: period.end before "
                            "period.start)")
    assert reasons["c"].startswith("dangling encounter reference")
    assert rep["counts"]["Observation"]["rejected"] == 3


# ---- 8. --out


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    src = bulk(tmp_path / "in", pat())
    f = tmp_path / "meds.parquet"
    f.write_bytes(b"precious")
    with pytest.raises(UserError, match="is a file"):
        ingest([src], f, overwrite=True)
    assert ingest_main([str(src), "--out", str(f), "--overwrite"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and f.read_bytes() == b"precious"


@pytest.mark.parametrize("where", ["inside", "same", "holds input"])
def test_out_overlapping_the_input_is_refused(tmp_path, capsys, where):
    src = bulk(tmp_path / "in", pat(), enc(), obs())
    out, inputs = {"inside": (src / "meds", [src]), "same": (src, [src]),
                   "holds input": (tmp_path, [src / "Patient.ndjson"])}[where]
    before = tree(tmp_path)
    with pytest.raises(IngestError, match="inside"):
        ingest(inputs, out, overwrite=True)
    assert ingest_main([*map(str, inputs), "--out", str(out), "--overwrite", "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err
    assert tree(tmp_path) == before  # nothing written, nothing replaced


def test_meds_output_inside_the_input_is_never_read_as_fhir(tmp_path, both):
    src = bulk(tmp_path / "in", pat(), enc(), obs(), obs("bad", valueQuantity={"value": 1e39, "unit": "mg"}))
    rep0, out, _ = both([src])
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    shutil.copytree(out, src / "old_meds")  # an earlier output, moved into the input tree
    shutil.rmtree(out)
    shutil.rmtree(tmp_path / "out_general")
    rep, out, _ = both([src])
    assert rep["counts"] == rep0["counts"] and rep["skipped_files"] == {"inside a MEDS dataset folder": n_files}
    assert all("old_meds" in x["file"] for x in quarantine(out, "_skipped_files"))


def test_clean_input_has_nothing_set_aside(tmp_path, both):
    src = bulk(tmp_path / "in", pat(), enc(), obs(), obs("o2", t="2020-01-01T10:00:00Z"))
    rep, out, fast = both([src])
    assert fast == {"Patient": 1, "Encounter": 1, "Observation": 2}
    assert rep["skipped_files"] == {} and set(rep["suspicious"].values()) == {0} and rep["reasons"] == {}
    assert rep["stats"]["values_with_comparator"] == 0 and meds(out)["text_value"].null_count() == meds(out).height


# ---- both read paths on a cohort with hostile mutations

HOSTILE = [
    lambda d: d.get("valueQuantity", {}).update(comparator="<"),
    lambda d: d.get("valueQuantity", {}).update(comparator=">="),
    lambda d: d.get("valueQuantity", {}).update(comparator="about"),
    lambda d: d.get("valueQuantity", {}).update(value=1e39),
    lambda d: d.get("valueQuantity", {}).update(value=-3.4e38),
    lambda d: d.update(contained=[{"resourceType": "Medication", "id": "m"}]),
    lambda d: d.update(gender=" male "), lambda d: d.update(gender="a//b"),
    lambda d: d.update({"class": {"code": "IMP//END"}}), lambda d: d.update({"class": {"code": " EMER"}}),
    lambda d: [c.update(code=f" {c.get('code')} ") for c in d.get("code", {}).get("coding", [])],
    lambda d: [c.update(code=f"{c.get('code')}//x%") for c in d.get("code", {}).get("coding", [])],
    lambda d: [c.update(code="\t") for c in d.get("medicationCodeableConcept", {}).get("coding", [])],
    lambda d: [c.update(system=f"{c.get('system')} ") for c in d.get("code", {}).get("coding", [])],
    lambda d: d.update(effectiveDateTime="2020-01-01T10:00:00"), lambda d: d.update(birthDate="1850"),
    lambda d: d.update(period={"start": "2999-01-01T00:00:00", "end": "2999-01-02T00:00:00Z"}),
]


@pytest.mark.parametrize("block,sub", [(None, 16), (4000, 3)])
def test_fast_blocks_equal_general_path_on_hostile_mutations(tmp_path_factory, tmp_path, monkeypatch, block, sub):
    """Blocks and sub-blocks with hostile records go to the general path, the others stay fast: same frames."""
    import random

    from linmix.apps.ehr.ingest.read import E_SCHEMA, P_SCHEMA, V_SCHEMA, read_file
    from linmix.apps.ehr.synth import synthesize

    cohort = synthesize(25, tmp_path_factory.mktemp("hostile") / "nd", fmt="ndjson", seed=3)
    if block:
        monkeypatch.setattr(read_mod, "BLOCK_BYTES", block)
    monkeypatch.setattr(read_mod, "SUB_LINES", sub)

    def frames(res):
        cat = [pl.concat(fs) if fs else pl.DataFrame(schema=sc) for fs, sc in ((res.p, P_SCHEMA), (res.e, E_SCHEMA),
                                                                              (res.v, V_SCHEMA))]
        return cat, dict(res.read), dict(res.ignored), [(j["line"], j["rtype"], j["reason"]) for j in res.rejects]

    rng = random.Random(2)
    n_mut, fast_rows, real = 0, Counter(), read_mod.decode_block

    def spy(block, rtype, *a):
        got = real(block, rtype, *a)
        fast_rows[rtype] += 0 if got is None else got[1].height
        return got

    monkeypatch.setattr(read_mod, "decode_block", spy)
    for f in sorted(cohort.glob("*.ndjson")):
        out = []
        for raw in f.read_bytes().splitlines()[:200]:
            if rng.random() < 0.05:
                d = orjson.loads(raw)
                rng.choice(HOSTILE)(d)
                raw, n_mut = orjson.dumps(d), n_mut + 1
            out.append(raw)
        g = tmp_path / f.name
        g.write_bytes(b"\n".join(out) + b"\n")
        fast = frames(read_file(0, g))
        with monkeypatch.context() as m:
            m.setattr(read_mod, "decode_block", lambda *a, **k: None)
            m.setattr(fhir_mod.Flattener, "_fast", lambda *a, **k: False)
            general = frames(read_file(0, g))
        for x, y in zip(fast[0], general[0], strict=True):
            assert x.equals(y), (f.name, x, y)
        assert fast[1:] == general[1:]
    assert n_mut > 20 and len(fast_rows) == 6 and all(fast_rows.values()), fast_rows

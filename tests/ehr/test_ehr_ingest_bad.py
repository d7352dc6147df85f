"""Bad FHIR input: every case is rejected/ignored/flagged with a clear reason, nothing is lost."""

from __future__ import annotations

import gzip
import logging
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl
import pytest

from linmix.apps.ehr.ingest import IngestError, ingest, ingest_main
from linmix.apps.ehr.meds import SPLITS, check_meds

LOINC = "http://loinc.org"


def pat(pid="p1", birth="1960-02-03", **kw) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": birth, **kw}


def enc(eid="e1", pid="p1", start="2020-01-01T08:00:00+00:00", end="2020-01-02T08:00:00+00:00") -> dict:
    return {"resourceType": "Encounter", "id": eid, "status": "finished", "class": {"code": "IMP"},
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": start, "end": end}}


def obs(oid="o1", pid="p1", eid="e1", t="2020-01-01T09:00:00+00:00", code="2160-0", **value) -> dict:
    d = {"resourceType": "Observation", "id": oid, "status": "final",
         "code": {"coding": [{"system": LOINC, "code": code, "display": "Creatinine"}]},
         "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": t}
    if eid:
        d["encounter"] = {"reference": f"Encounter/{eid}"}
    d.update(value or {"valueQuantity": {"value": 1.1, "unit": "mg/dL"}})
    return d


def write(path: Path, *records, raw_lines: tuple[bytes, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(r) + b"\n" for r in records) + b"".join(raw_lines)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def run(tmp_path: Path, *records, raw_lines=(), **kw):
    write(tmp_path / "in" / "x.ndjson", *records, raw_lines=raw_lines)
    rep = ingest([tmp_path / "in"], tmp_path / "out", **kw)
    rep.reconcile()
    check_meds(tmp_path / "out")
    return rep


def quarantine(tmp_path: Path, name: str) -> list[dict]:
    f = tmp_path / "out" / "quarantine" / f"{name}.ndjson"
    return [orjson.loads(x) for x in f.read_bytes().splitlines()] if f.exists() else []


def meds(tmp_path: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(tmp_path / "out" / "data" / s / "0.parquet") for s in SPLITS])


def test_malformed_json_line(tmp_path):
    rep = run(tmp_path, pat(), enc(), raw_lines=(b'{"resourceType": "Observation", "id": \n',))
    q = quarantine(tmp_path, "_malformed")
    assert len(q) == 1 and q[0]["line"] == 3 and q[0]["reason"].startswith("malformed JSON")
    assert q[0]["file"].endswith("x.ndjson") and q[0]["record"].startswith('{"resourceType"')
    assert rep.counts["(malformed)"] == {"read": 1, "accepted": 0, "rejected": 1, "ignored": 0}
    assert rep.counts["Encounter"]["accepted"] == 1


def test_truncated_gzip(tmp_path, capsys):
    good = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in [pat(), enc()] + [obs(f"o{i}") for i in range(300)]),
                         mtime=0)
    f = tmp_path / "in" / "Zebediah_Quuxworth_1234.ndjson.gz"  # Synthea-style file name with a patient name
    f.parent.mkdir()
    f.write_bytes(good[: len(good) * 2 // 3])
    rc = ingest_main([str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert rc == 1  # written, but a file error is reported
    rep = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    assert len(rep["file_errors"]) == 1 and rep["file_errors"][0]["reason"].startswith("truncated gzip")
    assert rep["counts"]["Patient"]["accepted"] == 1 and 0 < rep["counts"]["Observation"]["accepted"] < 300
    q = quarantine(tmp_path, "_files")
    assert q[0]["reason"].startswith("truncated gzip") and q[0]["file"] == str(f)
    printed = capsys.readouterr()
    assert "truncated gzip" in printed.out and "Quuxworth" not in printed.out + printed.err
    assert "Quuxworth" not in (tmp_path / "out" / "report.json").read_text()


def test_json_that_is_not_fhir(tmp_path):
    rep = run(tmp_path, pat(), {"hello": "world"}, [1, 2, 3])
    q = quarantine(tmp_path, "_not_fhir")
    assert [x["line"] for x in q] == [2, 3] and all("without a resourceType" in x["reason"] for x in q)
    assert rep.counts["(not FHIR)"]["rejected"] == 2


def test_unknown_resource_type_is_ignored_and_counted(tmp_path):
    rep = run(tmp_path, pat(), {"resourceType": "Claim", "id": "c1"}, {"resourceType": "Frobnicator", "id": "f"})
    assert rep.counts["Claim"] == {"read": 1, "accepted": 0, "rejected": 0, "ignored": 1}
    assert rep.counts["Frobnicator"]["ignored"] == 1
    assert not (tmp_path / "out" / "quarantine" / "Claim.ndjson").exists()


@pytest.mark.parametrize("mutate,reason", [
    (lambda o: o.pop("subject"), "missing subject reference"),
    (lambda o: o.update(subject={"reference": "Patient/nobody"}), "dangling subject reference"),
    (lambda o: o.update(subject={"reference": "Patient?identifier=x|1"}), "unresolvable subject reference"),
    (lambda o: o.update(encounter={"reference": "Encounter/nowhere"}), "dangling encounter reference"),
    (lambda o: o.update(encounter={"reference": "Encounter/e2"}), "inconsistent reference"),
])
def test_missing_or_dangling_references(tmp_path, mutate, reason):
    bad = obs("bad")
    mutate(bad)
    rep = run(tmp_path, pat(), pat("p2"), enc(), enc("e2", "p2"), obs("good"), bad)
    q = quarantine(tmp_path, "Observation")
    assert len(q) == 1 and q[0]["reason"].startswith(reason) and q[0]["record"]["id"] == "bad"
    assert q[0]["line"] == 6
    assert rep.counts["Observation"] == {"read": 2, "accepted": 1, "rejected": 1, "ignored": 0}


def test_dangling_encounter_subject(tmp_path):
    rep = run(tmp_path, pat(), enc("e9", "ghost"))
    assert quarantine(tmp_path, "Encounter")[0]["reason"].startswith("dangling subject reference")
    assert rep.counts["Encounter"]["rejected"] == 1


def test_partial_and_unparseable_datetimes(tmp_path):
    rep = run(tmp_path, pat(birth="1960-05"), pat("p2", birth="1971"), enc(),
              obs("tz", t="2020-01-01T23:30:00-05:00"), obs("z", t="2020-01-01T10:00:00Z"),
              obs("day", t="2020-01-01"), obs("garbage", t="next tuesday"), obs("month13", t="2020-13-01"))
    df = meds(tmp_path)
    births = sorted(df.filter(pl.col("code") == "MEDS_BIRTH")["time"].to_list())
    assert births == [datetime(1960, 5, 1), datetime(1971, 1, 1)]  # partial dates -> start of the period
    lab_times = set(df.filter(pl.col("code") == "LOINC//2160-0")["time"].to_list())
    assert lab_times == {datetime(2020, 1, 2, 4, 30), datetime(2020, 1, 1, 10, 0), datetime(2020, 1, 1)}
    q = quarantine(tmp_path, "Observation")
    assert sorted(x["record"]["id"] for x in q) == ["garbage", "month13"]
    assert all(x["reason"].startswith("unparseable dateTime") for x in q)
    assert rep.stats["partial_dates"] == 2


def test_observation_values(tmp_path):
    rep = run(tmp_path, pat(), enc(),
              obs("none", status="final"),  # no value[x]
              obs("cc", valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "260385009",
                                                          "display": "Negative"}]}),
              obs("str", valueString="trace"),
              obs("noval", valueQuantity={"unit": "mg/dL"}),
              obs("ratio", valueRatio={"numerator": {"value": 1}, "denominator": {"value": 2}}))
    reasons = {x["record"]["id"]: x["reason"] for x in quarantine(tmp_path, "Observation")}
    assert reasons["none"].startswith("no value") and reasons["noval"].startswith("non-numeric value")
    assert reasons["ratio"].startswith("unsupported value type: valueRatio")
    texts = meds(tmp_path).filter(pl.col("text_value").is_not_null())
    assert sorted(texts["text_value"].to_list()) == ["Negative", "trace"]
    assert texts["numeric_value"].null_count() == 2
    assert rep.counts["Observation"] == {"read": 5, "accepted": 2, "rejected": 3, "ignored": 0}


def test_one_lab_code_in_several_units(tmp_path):
    rep = run(tmp_path, pat(), enc(), obs("a", valueQuantity={"value": 1.0, "unit": "mg/dL"}),
              obs("b", valueQuantity={"value": 88.4, "unit": "umol/L"}))
    labs = meds(tmp_path).filter(pl.col("code") == "LOINC//2160-0")
    assert sorted(labs["unit"].to_list()) == ["mg/dL", "umol/L"]  # both kept, unit column tells them apart
    assert rep.stats["multi_unit_codes"] == {"LOINC//2160-0": ["mg/dL", "umol/L"]}
    assert "LOINC//2160-0" in (tmp_path / "out" / "report.json").read_text()


def test_duplicate_resource_ids(tmp_path):
    rep = run(tmp_path, pat(), enc(), obs("o1", valueQuantity={"value": 1.0, "unit": "mg/dL"}),
              obs("o1", valueQuantity={"value": 9.0, "unit": "mg/dL"}), pat(), enc())
    assert meds(tmp_path).filter(pl.col("code") == "LOINC//2160-0")["numeric_value"].to_list() == [1.0]
    for name, line in (("Observation", 4), ("Patient", 5), ("Encounter", 6)):
        q = quarantine(tmp_path, name)
        assert len(q) == 1 and q[0]["line"] == line and q[0]["reason"].startswith("duplicate id"), name
        assert rep.counts[name] == {"read": 2, "accepted": 1, "rejected": 1, "ignored": 0}


def test_patient_without_encounters_is_kept(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        rep = run(tmp_path, pat(), pat("p2"), enc())
    assert rep.counts["Patient"]["accepted"] == 2
    assert rep.stats["patients_without_encounters"] == 1
    assert meds(tmp_path)["subject_id"].n_unique() == 2
    assert "1 patients have no encounters" in caplog.text


def test_events_after_death(tmp_path):
    rep = run(tmp_path, pat(deceasedDateTime="2020-01-01T20:00:00+00:00"),
              enc(),  # ends after death: kept, flagged
              enc("e2", start="2020-01-03T00:00:00+00:00", end="2020-01-03T01:00:00+00:00"),  # starts after death
              obs("before", t="2020-01-01T10:00:00+00:00"), obs("after", t="2020-01-01T21:00:00+00:00"),
              obs("in_e2", eid="e2", t="2020-01-03T00:10:00+00:00"))
    assert quarantine(tmp_path, "Encounter")[0]["reason"].startswith("event after death")
    reasons = {x["record"]["id"]: x["reason"] for x in quarantine(tmp_path, "Observation")}
    assert reasons["after"].startswith("event after death")
    assert reasons["in_e2"].startswith("rejected encounter")
    assert rep.stats["encounter_end_after_death"] == 1
    assert rep.counts["Observation"]["accepted"] == 1


@pytest.mark.parametrize("content", [None, b"", b"\n\n"])
def test_empty_input(tmp_path, content, capsys):
    (tmp_path / "in").mkdir()
    if content is not None:
        (tmp_path / "in" / "Patient.ndjson").write_bytes(content)
    with pytest.raises(IngestError, match="empty input"):
        ingest([tmp_path / "in"], tmp_path / "out")
    assert ingest_main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert "empty input" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_folder_not_empty(tmp_path, capsys):
    write(tmp_path / "in" / "x.ndjson", pat())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(IngestError, match="not empty"):
        ingest([tmp_path / "in"], tmp_path / "out")
    assert ingest_main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"
    assert ingest_main([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--overwrite", "--quiet"]) == 0
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "report.json").exists()
    (tmp_path / "empty").mkdir()
    ingest([tmp_path / "in"], tmp_path / "empty")  # an existing empty folder is fine


def test_logs_never_print_names_identifiers_or_birth_dates(tmp_path, capsys, caplog):
    secret = pat("pid-secret-77", birth="1961-07-19", name=[{"family": "Quuxworth", "given": ["Zebediah"]}],
                 identifier=[{"system": "urn:mrn", "value": "MRN-4242"}])
    bad = pat("pid-secret-88", birth="19xx-07-19", name=[{"family": "Vexholm"}],
              identifier=[{"system": "urn:mrn", "value": "MRN-9999"}])
    write(tmp_path / "in" / "x.ndjson", secret, bad, enc("e1", "pid-secret-77"), obs("o1", "pid-secret-88"),
          raw_lines=(b'{"resourceType":"Patient","name":"Zebediah Quuxworth"\n',))
    with caplog.at_level(logging.DEBUG):
        assert ingest_main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    seen = capsys.readouterr()
    text = seen.out + seen.err + caplog.text + (tmp_path / "out" / "report.json").read_text()
    assert "rejected" in text  # something was reported
    for s in ("Quuxworth", "Zebediah", "Vexholm", "MRN-4242", "MRN-9999", "1961-07-19", "19xx", "pid-secret"):
        assert s not in text, s
    # ... while the quarantine keeps the rejected records themselves
    assert "Vexholm" in (tmp_path / "out" / "quarantine" / "Patient.ndjson").read_text()


def test_event_without_encounter_reference_is_kept(tmp_path):
    rep = run(tmp_path, pat(), enc(), obs("free", eid=None), progress=True)
    labs = meds(tmp_path).filter(pl.col("code") == "LOINC//2160-0")
    assert labs.height == 1 and labs["encounter_id"].item() is None
    assert rep.counts["Observation"]["accepted"] == 1


def test_malformed_bundle_file_and_bundle_without_resource(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "broken.json").write_bytes(b'{"resourceType": "Bundle", "entry": [')
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:aaa", "resource": pat("aaa")},
        {"request": {"method": "DELETE", "url": "Patient/zzz"}},
        {"fullUrl": "urn:uuid:bbb", "resource": obs("o1", pid="x", eid=None) | {
            "subject": {"reference": "urn:uuid:aaa"}}},
    ]}
    (d / "ok.json").write_bytes(orjson.dumps(bundle))
    rep = ingest([d], tmp_path / "out")
    rep.reconcile()
    mal = quarantine(tmp_path, "_malformed")
    assert len(mal) == 1 and mal[0]["file"].endswith("broken.json") and mal[0]["reason"].startswith("malformed")
    nf = quarantine(tmp_path, "_not_fhir")
    assert len(nf) == 1 and nf[0]["entry"] == 1 and "without a resource" in nf[0]["reason"]
    assert rep.counts["Observation"]["accepted"] == 1  # urn:uuid reference resolved through fullUrl

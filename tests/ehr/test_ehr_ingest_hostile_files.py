"""Hostile FHIR files and output folders: names, compression, pretty-printed NDJSON, MEDS folders in the input,
``--out`` overlapping the input; and random hostile mutations of a synthetic cohort read by both paths.

Each ingest runs with the fast paths and with the general path only (byte-identical outputs) and checks that nothing
is lost (``hostile_fhir.accounted``)."""

from __future__ import annotations

import gzip
import logging
import random
import shutil
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pytest
from hostile_fhir import bulk, enc, lines, make_both, obs, pat, quarantine, tree

import linmix.apps.ehr.ingest.fhir as fhir_mod
import linmix.apps.ehr.ingest.read as read_mod
from linmix.apps.ehr.ingest import IngestError, ingest, ingest_main


@pytest.fixture
def both(tmp_path, monkeypatch):
    return make_both(tmp_path, monkeypatch)


# ---- files


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


def test_input_of_skipped_files_only_is_refused_naming_them(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for name in ("a.txt", "b.txt", "c.xml"):
        (tmp_path / "in" / name).write_text("x")
    with pytest.raises(IngestError, match=r"empty input.*not a FHIR file name: \.txt: 2, not a FHIR file name: \.xml: 1"):
        ingest([tmp_path / "in"], tmp_path / "out")
    assert ingest_main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert ".txt: 2" in capsys.readouterr().err and not (tmp_path / "out").exists()


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


# ---- --out


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    src = bulk(tmp_path / "in", pat())
    f = tmp_path / "meds.parquet"
    f.write_bytes(b"precious")
    with pytest.raises(IngestError, match="is a file"):
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


def test_worker_processes_agree_on_hostile_input(tmp_path):
    """Reading in worker processes gives the same output, also for what is counted while reading (contained
    resources, a Patient rejected while reading and named by its dependents, skipped files)."""
    src = bulk(tmp_path / "in", pat(birthDate=1960), pat("p2", contained=[{"resourceType": "Organization"}]), enc(),
               enc("e2", "p2", start="2020-01-01T08:00:00"),
               obs("o1", valueQuantity={"value": 5, "unit": "mg", "comparator": "<"}), obs("o2", "p2", "e2"),
               obs("o3", "p2", "e2", valueQuantity={"value": 1e39, "unit": "mg"}))
    (src / "x.txt").write_text("x")
    (src / "more.jsonl").write_bytes(gzip.compress(lines(obs("o4", "p2", "e2", code=" 1//2 ")), mtime=0))
    ingest([src], tmp_path / "serial")
    ingest([src], tmp_path / "par", workers=2)
    assert tree(tmp_path / "par") == tree(tmp_path / "serial")
    rep = orjson.loads((tmp_path / "par" / "report.json").read_bytes())
    assert rep["reasons"] == {"rejected subject": 2, "unparseable dateTime": 1, "value out of range": 1}
    assert rep["suspicious"]["time_without_timezone"] == 1 and rep["stats"]["values_with_comparator"] == 0
    assert rep["counts"]["(contained) Organization"]["ignored"] == 1 and rep["skipped_files"]
    codes = set(pl.concat([pl.read_parquet(f) for f in (tmp_path / "par" / "data").rglob("*.parquet")])["code"])
    assert "LOINC//1%2F%2F2" in codes


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

"""Builders and checks for the hostile-input ingestion tests (``test_ehr_ingest_hostile*.py``): small synthetic FHIR
resources, bulk NDJSON folders, and ``make_both`` which ingests with the fast paths and with the general path only,
asserts byte-identical outputs and that nothing is lost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import polars as pl

import linmix.apps.ehr.ingest.fhir as fhir_mod
import linmix.apps.ehr.ingest.read as read_mod
from linmix.apps.ehr.ingest import ingest
from linmix.apps.ehr.ingest.checks import SUSPICIOUS
from linmix.apps.ehr.meds import SPLITS, check_meds

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


def make_both(tmp_path: Path, monkeypatch):
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

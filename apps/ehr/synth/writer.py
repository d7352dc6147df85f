"""FHIR R4 resource dicts for a sampled patient, and the two file layouts (transaction Bundles, bulk NDJSON).

Resources are plain dicts (valid ``fhir.resources.R4B``; tested) serialised with orjson. Times are written in the
patient's local UTC offset (``2016-03-04T10:15:00-05:00``) so that ingestion has to normalise them to UTC.
Gzip output uses ``mtime=0`` and no file name, so files are byte-identical for a given seed.
"""

from __future__ import annotations

import gzip as gz
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from linmix.apps.ehr.synth.catalog import (
    ACT_CODE,
    COND_CLINICAL,
    COND_VERIFICATION,
    CONDITION_SNOMED,
    DRUGS,
    ENCOUNTER_CLASSES,
    ICD10CM,
    LABS,
    LOINC,
    OBS_CATEGORY,
    PROCEDURES,
    RXNORM,
    SNOMED,
    UCUM,
)
from linmix.apps.ehr.synth.records import PatientRecord

RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "Procedure", "MedicationRequest", "Observation")


def _fmt(t: datetime, offset_min: int) -> str:
    """UTC naive datetime -> local ISO-8601 string with the patient's offset."""
    local = t + timedelta(minutes=offset_min)
    sign = "+" if offset_min >= 0 else "-"
    hh, mm = divmod(abs(offset_min), 60)
    return f"{local.strftime('%Y-%m-%dT%H:%M:%S')}{sign}{hh:02d}:{mm:02d}"


def _cc(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def patient_resources(rec: PatientRecord, ref: Callable[[str, str], str],
                      condition_coding: str = "icd10") -> Iterator[dict]:
    """Yield the patient's resources (Patient first); ``ref(type, id)`` renders a reference string. Conditions are
    coded in ICD-10-CM (``condition_coding="icd10"``) or SNOMED CT (``"snomed"``, as Synthea writes them)."""
    off = rec.offset_min
    pat = {"resourceType": "Patient", "id": rec.pid,
           "identifier": [{"system": "https://linmix.example/fhir/mrn", "value": rec.mrn}],
           "name": [{"use": "official", "family": rec.family, "given": [rec.given]}],
           "gender": rec.gender, "birthDate": rec.birth.isoformat()}
    if rec.death is not None:
        pat["deceasedDateTime"] = _fmt(rec.death, off)
    yield pat
    subj = {"reference": ref("Patient", rec.pid)}
    encs = rec.encounters
    for e in encs:
        yield {"resourceType": "Encounter", "id": e.eid, "status": "finished",
               "class": {"system": ACT_CODE, "code": e.cls, "display": ENCOUNTER_CLASSES[e.cls]},
               "subject": subj, "period": {"start": _fmt(e.start, off), "end": _fmt(e.end, off)}}
    for code, disp, t, j, style, cid in rec.conditions:
        c = {"resourceType": "Condition", "id": cid,
             "clinicalStatus": {"coding": [{"system": COND_CLINICAL, "code": "active"}]},
             "verificationStatus": {"coding": [{"system": COND_VERIFICATION, "code": "confirmed"}]},
             "code": (_cc(ICD10CM, code, disp) if condition_coding == "icd10"
                      else _cc(SNOMED, *CONDITION_SNOMED[code])), "subject": subj,
             "encounter": {"reference": ref("Encounter", encs[j].eid)}}
        if style == "onset":
            c["onsetDateTime"] = _fmt(t, off)
            c["recordedDate"] = _fmt(t, off)
        elif style == "recorded":
            c["recordedDate"] = _fmt(t, off)
        yield c  # style "encounter": no time; ingestion falls back to the encounter start
    for ev in rec.events:
        enc = {"reference": ref("Encounter", encs[ev.enc].eid)}
        ts = _fmt(ev.time, off)
        if ev.kind == "lab":
            lab = LABS[ev.item]
            yield {"resourceType": "Observation", "id": ev.rid, "status": "final",
                   "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory",
                                             "display": "Laboratory"}]}],
                   "code": _cc(LOINC, lab.code, lab.display), "subject": subj, "encounter": enc,
                   "effectiveDateTime": ts, "issued": ts,
                   "valueQuantity": {"value": ev.value, "unit": lab.unit, "system": UCUM, "code": lab.unit}}
        elif ev.kind == "drug":
            d = DRUGS[ev.item]
            yield {"resourceType": "MedicationRequest", "id": ev.rid, "status": "completed", "intent": "order",
                   "medicationCodeableConcept": _cc(RXNORM, d.code, d.display), "subject": subj,
                   "encounter": enc, "authoredOn": ts}
        else:
            p = PROCEDURES[ev.item]
            r = {"resourceType": "Procedure", "id": ev.rid, "status": "completed",
                 "code": _cc(SNOMED, p.code, p.display), "subject": subj, "encounter": enc}
            if int(ev.rid[:2], 16) % 2:  # half as performedPeriod (Synthea style), half as performedDateTime
                r["performedPeriod"] = {"start": ts, "end": _fmt(ev.time + timedelta(minutes=30), off)}
            else:
                r["performedDateTime"] = ts
            yield r


def _open(path: Path, gzip: bool):
    if gzip:
        return gz.GzipFile(filename="", mode="wb", fileobj=open(path, "wb"), mtime=0, compresslevel=5)
    return open(path, "wb", buffering=1 << 20)


class NdjsonWriter:
    """Bulk-export layout: ``<out>/<Type>.ndjson[.gz]``, references ``Type/<id>``."""

    def __init__(self, out: Path, gzip: bool = False, condition_coding: str = "icd10") -> None:
        self.condition_coding = condition_coding
        ext = ".ndjson.gz" if gzip else ".ndjson"
        self.paths = {t: Path(out) / f"{t}{ext}" for t in RESOURCE_TYPES}
        self.gzip = gzip
        self.files: dict = {}

    def __enter__(self) -> NdjsonWriter:
        self.files = {t: _open(p, self.gzip) for t, p in self.paths.items()}
        return self

    def write(self, i: int, rec: PatientRecord) -> None:
        for r in patient_resources(rec, lambda t, x: f"{t}/{x}", self.condition_coding):
            self.files[r["resourceType"]].write(orjson.dumps(r) + b"\n")

    def __exit__(self, *exc) -> None:
        for f in self.files.values():
            fileobj = getattr(f, "fileobj", None)
            f.close()
            if fileobj is not None:
                fileobj.close()


class BundleWriter:
    """One transaction Bundle per patient: ``<out>/bundle-<i:06d>.json[.gz]``, ``urn:uuid:`` references."""

    def __init__(self, out: Path, gzip: bool = False, condition_coding: str = "icd10") -> None:
        self.condition_coding = condition_coding
        self.out = Path(out)
        self.gzip = gzip

    def __enter__(self) -> BundleWriter:
        return self

    def write(self, i: int, rec: PatientRecord) -> None:
        entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                    "request": {"method": "POST", "url": r["resourceType"]}}
                   for r in patient_resources(rec, lambda t, x: f"urn:uuid:{x}", self.condition_coding)]
        data = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        path = self.out / f"bundle-{i:06d}.json{'.gz' if self.gzip else ''}"
        if self.gzip:
            data = gz.compress(data, compresslevel=5, mtime=0)
        path.write_bytes(data)

    def __exit__(self, *exc) -> None:
        return None

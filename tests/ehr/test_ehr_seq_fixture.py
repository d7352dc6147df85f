"""Hand-built MEDS fixture for the EHR model-side tests (no synthesis/ingestion needed).

``write_meds(root, n_patients, seed)`` writes ``data/{train,tuning,held_out}/0.parquet`` and
``metadata/subject_splits.parquet`` following the ingest contract (subject_id Int64, time Datetime(us), code, numeric_value
Float32, text_value, encounter_id, unit). Risks are planted so tiny models can learn something: a high creatinine raises
death and long-stay risk, insulin marks diabetes. Other test files load this module by path (``load_fixture()``).
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

SCHEMA = {"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String, "numeric_value": pl.Float32,
          "text_value": pl.String, "encounter_id": pl.String, "unit": pl.String}
LABS = (("LOINC//2160-0", "mg/dL", 1.0, 0.4), ("LOINC//2345-7", "mg/dL", 110.0, 30.0), ("LOINC//718-7", "g/dL", 13.0, 2.0))
PROCS = ("SNOMED//71388002", "SNOMED//387713003", "SNOMED//73761001")
MEDS = ("RXNORM//860975", "RXNORM//197361", "RXNORM//311041")


def patient_rows(sid: int, rng: np.random.Generator) -> list[dict]:
    """Rows of one synthetic patient (static rows first, then by time)."""
    rows: list[dict] = []

    def add(time, code, value=None, enc=None, unit=None):
        rows.append({"subject_id": sid, "time": time, "code": code, "numeric_value": value, "text_value": None,
                     "encounter_id": enc, "unit": unit})

    birth = datetime(1940, 1, 1) + timedelta(days=int(rng.integers(0, 20000)))
    add(None, f"GENDER//{'male' if rng.random() < 0.5 else 'female'}")
    add(birth, "MEDS_BIRTH")
    t = datetime(2018, 1, 1) + timedelta(days=int(rng.integers(0, 300)), hours=int(rng.integers(0, 24)))
    n_enc = int(rng.integers(1, 5))
    sick = rng.random()
    diabetic = rng.random() < 0.4
    end = t
    for e in range(n_enc):
        enc = f"enc-{sid}-{e}"
        stay = timedelta(hours=float(rng.gamma(2.0, 40.0 + 80.0 * sick)))
        end = t + stay
        add(t, "ENCOUNTER//IMP//START", enc=enc)
        for _ in range(int(rng.integers(1, 6))):
            dt = t + timedelta(seconds=float(rng.random()) * stay.total_seconds())
            code, unit, mu, sd = LABS[int(rng.integers(0, len(LABS)))]
            value = mu + sd * (rng.standard_normal() + 2.5 * sick * (code == "LOINC//2160-0"))
            add(dt, code, float(value), enc, unit)
        for _ in range(int(rng.integers(0, 3))):
            add(t + timedelta(hours=1), PROCS[int(rng.integers(0, len(PROCS)))], enc=enc)
        if diabetic:
            add(t + timedelta(hours=2), "RXNORM//311041", enc=enc)
        add(t + timedelta(hours=3), MEDS[int(rng.integers(0, 2))], enc=enc)
        add(end, "ENCOUNTER//IMP//END", enc=enc)
        t = end + timedelta(days=float(rng.exponential(20.0 + 60.0 * (1 - sick))))
    if diabetic:
        add(end - timedelta(hours=1), "ICD10CM//E11.9", enc=f"enc-{sid}-{n_enc - 1}")
    if rng.random() < 0.5:
        add(end - timedelta(hours=1), "ICD10CM//I10", enc=f"enc-{sid}-{n_enc - 1}")
    if rng.random() < 0.8 * sick ** 2:
        add(end + timedelta(days=float(rng.uniform(0.5, 40))), "MEDS_DEATH")
    return rows


def build_frame(n_patients: int = 40, seed: int = 0) -> pl.DataFrame:
    """All patients' rows plus edge cases: an overlapping encounter, events without or outside any encounter, a lab in
    a second unit, and a patient without encounters (subject_id = n_patients)."""
    rng = np.random.default_rng(seed)
    rows = [r for sid in range(n_patients) for r in patient_rows(sid, rng)]
    # patient 0: an encounter overlapping its first, an event with no encounter_id inside a visit, one outside all visits
    first = min(r["time"] for r in rows if r["subject_id"] == 0 and r["code"] == "ENCOUNTER//IMP//START")
    rows += [
        {"subject_id": 0, "time": first + timedelta(hours=1), "code": "ENCOUNTER//EMER//START", "numeric_value": None,
         "text_value": None, "encounter_id": "enc-0-x", "unit": None},
        {"subject_id": 0, "time": first + timedelta(hours=2), "code": "ENCOUNTER//EMER//END", "numeric_value": None,
         "text_value": None, "encounter_id": "enc-0-x", "unit": None},
        {"subject_id": 0, "time": first + timedelta(minutes=30), "code": "SNOMED//999999", "numeric_value": None,
         "text_value": None, "encounter_id": None, "unit": None},
        {"subject_id": 0, "time": first - timedelta(days=400), "code": "RXNORM//123", "numeric_value": None,
         "text_value": None, "encounter_id": None, "unit": None},
        {"subject_id": 1, "time": datetime(2019, 6, 1), "code": "LOINC//2160-0", "numeric_value": 90.0,
         "text_value": None, "encounter_id": None, "unit": "umol/L"},
        {"subject_id": n_patients, "time": None, "code": "GENDER//female", "numeric_value": None, "text_value": None,
         "encounter_id": None, "unit": None},
        {"subject_id": n_patients, "time": datetime(1970, 1, 1), "code": "MEDS_BIRTH", "numeric_value": None,
         "text_value": None, "encounter_id": None, "unit": None},
    ]
    frame = pl.DataFrame(rows, schema=SCHEMA)
    return frame.sort("subject_id", "time", nulls_last=False, maintain_order=True)


def write_meds(root: Path, n_patients: int = 40, seed: int = 0) -> Path:
    """Write the fixture as a MEDS folder with 80/10/10 splits by subject_id; returns ``root``."""
    frame = build_frame(n_patients, seed)
    ids = frame["subject_id"].unique().sort().to_list()
    split = {s: ("train" if i % 10 < 8 else "tuning" if i % 10 == 8 else "held_out") for i, s in enumerate(ids)}
    splits = pl.DataFrame({"subject_id": ids, "split": [split[s] for s in ids]},
                          schema={"subject_id": pl.Int64, "split": pl.String})
    for name in ("train", "tuning", "held_out"):
        (root / "data" / name).mkdir(parents=True, exist_ok=True)
        keep = splits.filter(pl.col("split") == name)["subject_id"]
        frame.filter(pl.col("subject_id").is_in(keep.implode())).write_parquet(root / "data" / name / "0.parquet")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    splits.write_parquet(root / "metadata" / "subject_splits.parquet")
    return root


def load_fixture():
    """This module, loaded by path (test folders have no ``__init__.py``)."""
    spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Synthetic FHIR R4 cohort with planted, learnable outcome risks: ``linmix-ehr synth``.

Every patient is sampled independently from ``random.Random(f"linmix-ehr:{seed}:{i}")`` (deterministic by seed). The
history (encounters, labs, drugs, procedures) depends on a latent severity and condition-group factors that drift
linearly from visit to visit (a disease course: improving or worsening); the outcomes depend only on *observed* history
features, through logistic models whose probabilities are saved in ``oracle.parquet`` (``patient_id, task,
probability, label``). The lab features are recency-weighted means (each earlier visit's labs weigh ``RECENCY`` = 0.5
times the next one's), so the order of the visits matters, not only the bag of codes, as does the latest visit gap for
readmission. Task definitions (timestamps, UTC):

* ``mortality``: death within 30 days after the end of the last encounter (sampled in (2 h, 28 d]; negatives die
  never, or > 45 d later);
* ``los``: last encounter lasts >= 7 days (positives 7.5-21 d, negatives < 6.5 d); risk uses history before the last
  encounter, its class, plus the events of its first 4 hours (all inside the 24 h input window). The cohort is the
  stays still open at the 24 h cut (a shorter stay is visibly over), and the saved probability is conditional on that:
  ``los_oracle`` = P(>= 7 d | > 24 h, history) from the duration distributions below (rows only for open stays);
* ``readmission`` (>= 2 encounters): last encounter starts within 30 days of the end of the second-to-last one
  (positives 1-29 d, negatives >= 31 d); risk uses history up to that discharge (visit gaps, ED visits, drugs, labs);
* ``cond_<ICD3>`` for the groups in :data:`linmix.apps.ehr.synth.catalog.GROUPS`: the patient has a Condition in the group.

Resources are plain dicts dumped with orjson (see :mod:`linmix.apps.ehr.synth.writer`); no fhir.resources objects are built.
"""

from __future__ import annotations

import argparse
import math
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from linmix.apps.ehr.synth.catalog import (
    CONDITION_CODINGS,
    CONDITIONS,
    DRUGS,
    FAMILY_NAMES,
    GIVEN_NAMES,
    GROUPS,
    LABS,
    NOISE_CONDITIONS,
    PROCEDURES,
    TZ_OFFSETS_MIN,
)
from linmix.apps.ehr.synth.records import Encounter, Event, PatientRecord
from linmix.shared.argtypes import at_least

TASKS: tuple[str, ...] = ("mortality", "los", "readmission") + tuple(f"cond_{g}" for g in GROUPS)
_H = timedelta(hours=1)
_D = timedelta(days=1)
_EPOCH = datetime(2012, 1, 1)
_LAB_IDX = {lab.code: i for i, lab in enumerate(LABS)}
_SEV_LABS = [i for i, lab in enumerate(LABS) if lab.driver == "sev"]
_GROUP_LABS = {g: [i for i, lab in enumerate(LABS) if lab.driver == g] for g in GROUPS}
_GROUP_DRUG = {g: next(i for i, d in enumerate(DRUGS) if d.driver == g) for g in GROUPS}
_GROUP_PROC = {g: [i for i, p in enumerate(PROCEDURES) if p.driver == g] for g in GROUPS}
_INTUB, _ECHO, _DIALYSIS = 0, 1, 2
RECENCY = 0.5  # weight of a lab in the risk features per later visit (the latest visit's labs weigh 1, the one before 0.5)
_INSULIN, _FUROSEMIDE = 5, 2


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class _History:
    """Running features of the observed history (what a sequence model can see)."""

    def __init__(self) -> None:
        self.lab_sum = {g: 0.0 for g in (*GROUPS, "sev")}
        self.lab_n = {g: 0.0 for g in (*GROUPS, "sev")}
        self.drugs: set[int] = set()
        self.procs: set[int] = set()
        self.n_emer = 0
        self.n_imp = 0
        self.gaps_days: list[float] = []

    def add(self, ev: Event) -> None:
        if ev.kind == "lab":
            drv = LABS[ev.item].driver
            if drv is not None:
                self.lab_sum[drv] += ev.std
                self.lab_n[drv] += 1
        elif ev.kind == "drug":
            self.drugs.add(ev.item)
        else:
            self.procs.add(ev.item)

    def new_encounter(self) -> None:
        """Halve the weight of every earlier lab: the lab features are recency-weighted means (RECENCY per visit)."""
        for g in self.lab_sum:
            self.lab_sum[g] *= RECENCY
            self.lab_n[g] *= RECENCY

    def lab_mean(self, g: str) -> float:
        """Recency-weighted mean standardized value of driver ``g``'s labs (0 when none was measured)."""
        return self.lab_sum[g] / self.lab_n[g] if self.lab_n[g] else 0.0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _events_for(rng: random.Random, rec: PatientRecord, j: int, lo: datetime, hi: datetime, sev: float,
                z: dict[str, float], n_labs: int, rx: bool) -> list[Event]:
    """Labs (n_labs), drugs and procedures of encounter j at times uniform in [lo, hi)."""
    span = (hi - lo).total_seconds()

    def t() -> datetime:
        return lo + timedelta(seconds=int(rng.random() * span))

    out = []
    for _ in range(n_labs):
        k = rng.randrange(len(LABS))
        lab = LABS[k]
        drv = 0.0 if lab.driver is None else (sev if lab.driver == "sev" else z[lab.driver])
        std = 0.85 * drv + 0.55 * rng.gauss(0.0, 1.0)
        value = round(max(lab.mean + lab.sd * lab.sign * std, 0.1 * lab.sd), lab.digits)
        std = (value - lab.mean) / lab.sd * lab.sign
        out.append(Event("lab", k, t(), j, _uuid(rng), float(value), std))
    if rx:
        for g in GROUPS:
            if rng.random() < _sigmoid(-2.4 + 1.5 * z[g]):
                out.append(Event("drug", _GROUP_DRUG[g], t(), j, _uuid(rng)))
            for p in _GROUP_PROC[g]:
                if rng.random() < _sigmoid(-3.6 + 1.5 * z[g]):
                    out.append(Event("proc", p, t(), j, _uuid(rng)))
        if rng.random() < _sigmoid(-3.2 + z["E11"] + 0.6 * sev):
            out.append(Event("drug", _INSULIN, t(), j, _uuid(rng)))
        if rec.encounters[j].cls == "IMP" and rng.random() < _sigmoid(-2.6 + 1.2 * sev):
            out.append(Event("proc", _INTUB, t(), j, _uuid(rng)))
        if rng.random() < _sigmoid(-2.8 + 0.9 * sev):
            out.append(Event("proc", _ECHO, t(), j, _uuid(rng)))
        if rng.random() < 0.3:
            out.append(Event("drug", rng.choice((6, 7)), t(), j, _uuid(rng)))
        if rng.random() < 0.2:
            out.append(Event("proc", rng.choice((5, 6)), t(), j, _uuid(rng)))
    return out


def los_oracle(p_long: float, cls: str) -> float:
    """P(stay >= 7 d | stay > 24 h, history, class): the LOS oracle given what the 24 h cut reveals.

    A long stay (prob. ``p_long``) always lasts > 24 h; a short one lasts AMB 0.25-1.5 h, EMER 4-12 h (never open at
    24 h) or IMP 1-6.5 d (always > 24 h, as 1 + 5.5 u days with u > 0 a.s.). Bayes: p / (p + (1 - p) P(short > 24 h)).
    """
    p_short_open = 1.0 if cls == "IMP" else 0.0
    return p_long / (p_long + (1.0 - p_long) * p_short_open)


def _bern(rng: random.Random, rec: PatientRecord, task: str, logit: float) -> bool:
    p = _sigmoid(logit)
    y = rng.random() < p
    rec.oracle.append((task, p, y))
    return y


def sample_patient(seed: int, i: int) -> PatientRecord:
    """Sample patient ``i`` of cohort ``seed`` (independent of every other patient)."""
    rng = random.Random(f"linmix-ehr:{seed}:{i}")
    sev = rng.gauss(0.0, 1.0)
    z = {g: 0.35 * sev + 0.94 * rng.gauss(0.0, 1.0) for g in GROUPS}
    first = _EPOCH + timedelta(seconds=int(rng.random() * 6 * 365 * 86400))
    age0 = 18.0 + rng.random() * 67.0
    birth = (first - timedelta(days=age0 * 365.25)).date()
    rec = PatientRecord(pid=_uuid(rng), gender=rng.choice(("female", "male")), birth=birth,
                        offset_min=rng.choice(TZ_OFFSETS_MIN), given=rng.choice(GIVEN_NAMES),
                        family=rng.choice(FAMILY_NAMES), mrn=f"MRN{rng.randrange(10**8):08d}")
    n_enc = 1 + min(8, int(rng.expovariate(1.0 / 2.2)))
    mean_gap = math.exp(rng.gauss(math.log(120.0), 0.7) - 0.35 * sev)
    sev_slope = rng.gauss(0.0, 0.35)  # disease course: severity and each group's activity drift from visit to visit
    z_slope = {g: rng.gauss(0.0, 0.25) for g in GROUPS}
    sev0, z0 = sev, dict(z)
    hist = _History()
    t = first
    for j in range(n_enc):
        last = j == n_enc - 1
        sev = sev0 + sev_slope * j
        z = {g: z0[g] + z_slope[g] * j for g in GROUPS}
        hist.new_encounter()
        u = rng.random()
        p_imp, p_emer = _sigmoid(-1.7 + 0.7 * sev), 0.22
        cls = "IMP" if u < p_imp else ("EMER" if u < p_imp + p_emer else "AMB")
        if j > 0:
            if last:  # readmission: history up to the end of the second-to-last encounter
                short = sum(g < 30 for g in hist.gaps_days) / len(hist.gaps_days) if hist.gaps_days else 0.0
                recent = float(bool(hist.gaps_days) and hist.gaps_days[-1] < 30)  # the latest gap counts extra
                logit = (-1.9 + 1.0 * short + 0.8 * recent + 0.45 * min(hist.n_emer, 3) + 0.5 * min(hist.n_imp, 2)
                         + 0.8 * (_INSULIN in hist.drugs or _FUROSEMIDE in hist.drugs) + 0.6 * hist.lab_mean("sev"))
                gap = (1.0 + 28.0 * rng.random()) if _bern(rng, rec, "readmission", logit) else \
                    31.0 + rng.expovariate(1.0 / mean_gap)
            else:
                gap = 1.0 + rng.expovariate(1.0 / mean_gap)
            hist.gaps_days.append(gap)
            t = rec.encounters[-1].end + timedelta(days=gap)
        enc = Encounter(_uuid(rng), cls, t, t)
        rec.encounters.append(enc)
        adm = (10 / 60 if cls == "AMB" else 4.0) * _H  # admission window: inside every possible stay and < 24 h
        evs = _events_for(rng, rec, j, t, t + adm, sev, z, rng.randint(1, 3) if cls == "AMB" else rng.randint(2, 5),
                          rx=True)
        for ev in evs:
            hist.add(ev)
        if not last:
            dur = {"AMB": (0.25 + 1.25 * rng.random()) * _H, "EMER": (4 + 8 * rng.random()) * _H,
                   "IMP": (1 + 5 * rng.random()) * _D}[cls]
        else:
            logit = ({"AMB": -3.0, "EMER": -1.5, "IMP": 0.0}[cls] + 1.0 * hist.lab_mean("sev")
                     + 0.6 * min(hist.n_imp, 2) + 0.8 * (_INTUB in hist.procs) + 0.6 * (_DIALYSIS in hist.procs))
            p_long = _sigmoid(logit)
            if rng.random() < p_long:
                dur = (7.5 + 13.5 * rng.random()) * _D
            else:
                dur = {"AMB": (0.25 + 1.25 * rng.random()) * _H, "EMER": (4 + 8 * rng.random()) * _H,
                       "IMP": (1 + 5.5 * rng.random()) * _D}[cls]
            if dur > 24 * _H:  # the LOS cohort: stays still open at the 24 h cut (see los_oracle)
                rec.oracle.append(("los", los_oracle(p_long, cls), dur >= 7 * _D))
        enc.end = t + dur
        if dur > 30 * _H:  # daily labs and drugs during longer stays, after the first day
            later = _events_for(rng, rec, j, t + 26 * _H, enc.end, sev, z, n_labs=min(int(dur / _D), 8),
                                rx=rng.random() < 0.5)
            for ev in later:
                hist.add(ev)
            evs += later
        rec.events.extend(evs)
        hist.n_emer += cls == "EMER"
        hist.n_imp += cls == "IMP"
    age = (rec.encounters[-1].end.date() - birth).days / 365.25
    last_enc = rec.encounters[-1]
    logit = (-4.6 + 0.045 * (age - 60.0) + 1.0 * hist.lab_mean("sev") + 1.2 * (_INTUB in hist.procs)
             + 0.9 * (last_enc.cls == "IMP") + 0.7 * (last_enc.end - last_enc.start >= 7 * _D)
             + 0.6 * (_DIALYSIS in hist.procs))
    if _bern(rng, rec, "mortality", logit):
        rec.death = last_enc.end + timedelta(seconds=int((2 + rng.random() * 670) * 3600))
    elif rng.random() < 0.03:
        rec.death = last_enc.end + timedelta(days=45 + 300 * rng.random())
    for g in GROUPS:
        logit = (-1.7 + 1.7 * hist.lab_mean(g) + 1.3 * (_GROUP_DRUG[g] in hist.drugs)
                 + 0.9 * any(p in hist.procs for p in _GROUP_PROC[g]))
        if _bern(rng, rec, f"cond_{g}", logit):
            code, disp = rng.choice(CONDITIONS[g])
            rec.conditions.append(_condition(rng, rec, code, disp))
    if rng.random() < 0.4:
        code, disp = rng.choice(NOISE_CONDITIONS)
        rec.conditions.append(_condition(rng, rec, code, disp))
    return rec


def _condition(rng: random.Random, rec: PatientRecord, code: str, disp: str) -> tuple:
    j = rng.randrange(len(rec.encounters))
    enc = rec.encounters[j]
    t = enc.start + (enc.end - enc.start) * rng.random() * 0.5
    u = rng.random()
    style = "onset" if u < 0.85 else ("recorded" if u < 0.95 else "encounter")
    return (code, disp, t.replace(microsecond=0), j, style, _uuid(rng))


def synthesize(n_patients: int, out: Path, fmt: str = "ndjson", seed: int = 0, gzip: bool = False,
               condition_coding: str = "icd10") -> Path:
    """Write ``n_patients`` synthetic patients under ``out`` and ``out/oracle.parquet``; return ``out``.

    ``fmt="ndjson"``: bulk export, one ``<Type>.ndjson[.gz]`` per resource type, ``Patient/<id>`` references;
    ``fmt="bundle"``: one transaction Bundle per patient (``bundle-000000.json[.gz]``), ``urn:uuid:`` references.
    ``condition_coding="snomed"`` codes Conditions in SNOMED CT (``catalog.CONDITION_SNOMED``) instead of ICD-10-CM;
    the patients, events and oracle are the same.
    """
    from linmix.apps.ehr.synth.writer import BundleWriter, NdjsonWriter

    if fmt not in ("ndjson", "bundle"):
        raise ValueError(f"fmt must be 'ndjson' or 'bundle', got {fmt!r}")
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    if condition_coding not in CONDITION_CODINGS:
        raise ValueError(f"condition_coding must be one of {CONDITION_CODINGS}, got {condition_coding!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = (NdjsonWriter if fmt == "ndjson" else BundleWriter)(out, gzip=gzip, condition_coding=condition_coding)
    rows: dict[str, list] = {"patient_id": [], "task": [], "probability": [], "label": []}
    from rich.progress import Progress

    with writer, Progress(transient=True) as bar:
        job = bar.add_task(f"synth {fmt}", total=n_patients)
        for i in range(n_patients):
            rec = sample_patient(seed, i)
            writer.write(i, rec)
            for task, p, y in rec.oracle:
                rows["patient_id"].append(rec.pid)
                rows["task"].append(task)
                rows["probability"].append(p)
                rows["label"].append(y)
            if i % 500 == 0 or i == n_patients - 1:
                bar.update(job, completed=i + 1)
    oracle = pl.DataFrame(rows, schema={"patient_id": pl.String, "task": pl.String, "probability": pl.Float64,
                                        "label": pl.Boolean})
    oracle.write_parquet(out / "oracle.parquet")
    return out


def oracle_auroc(oracle: pl.DataFrame) -> dict[str, float]:
    """AUROC of the saved probability vs the sampled label, per task (Mann-Whitney rank statistic, ties averaged)."""
    res = {}
    for task in sorted(oracle["task"].unique().to_list()):
        d = oracle.filter(pl.col("task") == task).with_columns(r=pl.col("probability").rank("average"))
        n_pos = int(d["label"].sum())
        n_neg = d.height - n_pos
        if n_pos and n_neg:
            s = float(d.filter(pl.col("label"))["r"].sum())
            res[task] = (s - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return res


def synth_main(argv: list[str] | None = None) -> int:
    """``linmix-ehr synth --patients N --format {bundle,ndjson} --out DIR --seed S [--gzip]
    [--condition-coding {icd10,snomed}]``."""
    ap = argparse.ArgumentParser(prog="linmix-ehr synth", description=(
        "Write a synthetic FHIR R4 cohort (Patient, Encounter, Condition, Procedure, MedicationRequest, lab "
        "Observation) with planted outcome risks, plus oracle.parquet (true label probabilities)."))
    ap.add_argument("--patients", type=at_least(1), default=1000, help="number of patients (default 1000)")
    ap.add_argument("--format", choices=("bundle", "ndjson"), default="ndjson",
                    help="bundle: one transaction Bundle per patient; ndjson: bulk export, one file per type")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=at_least(0), default=0, help="random seed (output is deterministic by seed)")
    ap.add_argument("--gzip", action="store_true", help="gzip the files (.ndjson.gz / .json.gz)")
    ap.add_argument("--condition-coding", choices=CONDITION_CODINGS, default="icd10",
                    help="code Conditions in ICD-10-CM (default) or SNOMED CT (as Synthea does)")
    a = ap.parse_args(argv)
    out = synthesize(a.patients, a.out, fmt=a.format, seed=a.seed, gzip=a.gzip, condition_coding=a.condition_coding)
    oracle = pl.read_parquet(out / "oracle.parquet")
    prev = oracle.group_by("task").agg(pl.col("label").mean()).sort("task")
    auc = oracle_auroc(oracle)
    print(f"wrote {a.patients} patients ({a.format}) to {out}")
    for task, rate in prev.iter_rows():
        print(f"  {task:12s} prevalence {rate:.3f}  oracle AUROC {auc.get(task, float('nan')):.3f}")
    return 0

"""Records of one sampled synthetic patient, shared by the generator (:mod:`linmix.apps.ehr.synth.cohort`) and the
FHIR writer (:mod:`linmix.apps.ehr.synth.writer`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass
class Encounter:
    eid: str
    cls: str  # AMB, EMER, IMP
    start: datetime  # UTC, naive
    end: datetime


@dataclass
class Event:
    kind: str  # "lab", "drug", "proc"
    item: int  # index into LABS / DRUGS / PROCEDURES
    time: datetime
    enc: int
    rid: str
    value: float | None = None  # lab value (std units of the catalogue)
    std: float = 0.0  # standardized, sign-corrected lab value (driver direction positive)


@dataclass
class PatientRecord:
    """One sampled patient: demographics, encounters, events, conditions (times in UTC) and outcome oracle."""

    pid: str
    gender: str
    birth: date
    offset_min: int
    given: str
    family: str
    mrn: str
    encounters: list[Encounter] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    conditions: list[tuple[str, str, datetime, int, str, str]] = field(default_factory=list)  # code, display, t, enc, style, id
    death: datetime | None = None
    oracle: list[tuple[str, float, bool]] = field(default_factory=list)

"""Code dialect: how to read the codes and columns of any MEDS dataset (``--data.dialect``).

MEDS fixes the columns (``subject_id, time, code, numeric_value``) but not the codes: this project's FHIR ingest
writes ``ENCOUNTER//<class>//START|END`` rows with an ``encounter_id`` and ``SNOMED//``, ``RXNORM//``, ``LOINC//``
codes; MIMIC-IV MEDS writes ``HOSPITAL_ADMISSION//...``, ``LAB//<itemid>//<unit>``, ``DIAGNOSIS//ICD//10//<code>``;
meds-etl's OMOP output writes ``Visit/OP`` (with ``visit_id`` and ``end`` columns), ``LOINC/...``, ``SNOMED/...``
(a ``table`` column says whether a SNOMED code is a condition or a procedure). A :class:`CodeDialect` says:

- **visits** (:class:`VisitRule`): ``mode="codes"``: rows whose code matches ``start`` open a visit, rows matching
  ``end`` (or the ``end_column`` of the start row) close it; ``id_column`` joins a visit's rows and events (events
  without it join the visit whose [start, end] holds their time). Without an id column (absent or all null), an end
  row closes the latest open start. ``mode="gaps"``: MEDS needs no encounters, so visits are derived: a subject's
  timed event rows form one visit until a gap longer than ``gap_hours`` or a row matching ``start`` (an admission
  code) begins the next.
- **token types** (:class:`CodeRule`, first match wins): ``procedure``, ``medication``, ``lab``, ``condition``,
  ``demographic``, ``other``, or ``drop``; a pattern is a glob (``*`` = any characters, the whole code must match)
  or ``re:<regex>``; a rule may also require a column to match (``column``, ``value``: a glob). Codes no rule matches
  are ``other`` tokens, or dropped when ``unknown="drop"``.
- **lab units**: ``unit="column:<name>"`` (a column) or ``unit="code"`` (the last code part, as ``LAB//51237//mg/dL``);
  lab values are binned per (code, unit).
- **conditions**: ``conditions="labels"`` (phenotype-task labels only, never input tokens, as EHRMamba), ``"inputs"``
  (tokens of type condition, no condition tasks) or ``"both"`` (the model then sees conditions recorded before the
  cut). A condition rule's ``grouping`` gives its phenotype group: ``icd10`` (the code's last part, dots removed, first
  3 characters: ``E11.9`` -> ``E11``), ``snomed`` (the concept id -> :data:`SNOMED_GROUPS`, a small documented table
  of SNOMED CT concepts and the 3-character ICD-10-CM group the app's tasks use; an unmapped concept is its own group
  ``SCT<id>``, so it can still become a ``cond_SCT<id>`` task) or ``none`` (an input token, never a label).
- ``birth`` / ``death``: MEDS_BIRTH (ages) and MEDS_DEATH (the mortality label; never a token).

Presets (:data:`PRESETS`): ``own`` (default; this project's ingest output; unknown codes dropped), ``mimic`` (MIMIC-IV MEDS / MEDS-Extract conventions), ``omop`` (meds-etl's OMOP output). A YAML
mapping may start from a preset (``preset: omop``) and override fields.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional, Union

from linmix.shared.errors import UserError

TOKEN_TYPES = ("procedure", "medication", "lab", "condition", "demographic", "other")
ACTIONS = TOKEN_TYPES + ("drop",)
GROUPINGS = ("icd10", "snomed", "none")
CONDITION_USES = ("labels", "inputs", "both")

#: SNOMED CT concept -> 3-character ICD-10-CM group (the ``cond_<group>`` task names). The chronic groups of the
#: synthetic generator (E11, I10, N18, J44, E78) with the concepts Synthea and the generator's ``--condition-coding
#: snomed`` variant write for them, plus the generator's acute noise conditions. Concepts absent here group as
#: ``SCT<id>``. Each entry: concept id -> (group, SNOMED CT preferred term).
SNOMED_GROUPS: dict[str, tuple[str, str]] = {
    "44054006": ("E11", "Diabetes mellitus type 2"),
    "59621000": ("I10", "Essential hypertension"),
    "38341003": ("I10", "Hypertensive disorder, systemic arterial"),
    "431855005": ("N18", "Chronic kidney disease stage 1"),
    "431856006": ("N18", "Chronic kidney disease stage 2"),
    "433144002": ("N18", "Chronic kidney disease stage 3"),
    "431857002": ("N18", "Chronic kidney disease stage 4"),
    "709044004": ("N18", "Chronic kidney disease"),
    "13645005": ("J44", "Chronic obstructive lung disease"),
    "185086009": ("J44", "Chronic obstructive bronchitis"),
    "195951007": ("J44", "Acute exacerbation of chronic obstructive airways disease"),
    "55822004": ("E78", "Hyperlipidemia"),
    "13644009": ("E78", "Hypercholesterolemia"),
    "302870006": ("E78", "Hypertriglyceridemia"),
    "54150009": ("J06", "Upper respiratory infection"),
    "279039007": ("M54", "Low back pain"),
    "235595009": ("K21", "Gastroesophageal reflux disease"),
    "44465007": ("S93", "Sprain of ankle"),
    "25064002": ("R51", "Headache"),
}


@dataclass
class CodeRule:
    """Codes matching ``match`` (glob, or ``re:<regex>``) -- and, when ``column`` is set, rows whose ``column``
    matches the glob ``value`` -- are tokens of ``type`` (or ``drop``); conditions take ``grouping``."""

    match: str
    type: str
    grouping: str = "none"
    column: Optional[str] = None
    value: Optional[str] = None


@dataclass
class VisitRule:
    """Where visits come from (see the module docstring)."""

    mode: str = "codes"  # "codes" | "gaps"
    start: Optional[str] = "ENCOUNTER//*//START"
    end: Optional[str] = "ENCOUNTER//*//END"
    end_column: Optional[str] = None
    id_column: Optional[str] = "encounter_id"
    class_token: bool = True  # the start code (minus class_suffix) is a visit-class token
    class_suffix: str = ""
    gap_hours: float = 24.0


@dataclass
class CodeDialect:
    """How to read a MEDS dataset's codes: visits, token types, lab units, conditions (module docstring)."""

    name: str = "custom"
    visits: VisitRule = field(default_factory=VisitRule)
    rules: list[CodeRule] = field(default_factory=list)
    unknown: str = "other"  # "other" | "drop"
    unit: str = "column:unit"  # "column:<name>" | "code"
    conditions: str = "labels"  # "labels" | "inputs" | "both"
    birth: str = "MEDS_BIRTH"
    death: str = "MEDS_DEATH"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first bad value."""
        where = f"dialect {self.name!r}"
        if self.visits.mode not in ("codes", "gaps"):
            raise UserError(f"{where}: visits.mode {self.visits.mode!r} is not 'codes' or 'gaps'")
        if self.visits.mode == "codes" and not self.visits.start:
            raise UserError(f"{where}: visits.mode 'codes' needs visits.start (a code pattern)")
        if self.visits.gap_hours <= 0:
            raise UserError(f"{where}: visits.gap_hours must be > 0, got {self.visits.gap_hours}")
        for name in ("unknown",):
            if getattr(self, name) not in ("other", "drop"):
                raise UserError(f"{where}: {name} {getattr(self, name)!r} is not 'other' or 'drop'")
        if self.conditions not in CONDITION_USES:
            raise UserError(f"{where}: conditions {self.conditions!r} is not one of {list(CONDITION_USES)}")
        if self.unit != "code" and not (self.unit.startswith("column:") and len(self.unit) > 7):
            raise UserError(f"{where}: unit {self.unit!r} is not 'code' or 'column:<name>'")
        for i, r in enumerate(self.rules):
            if r.type not in ACTIONS:
                raise UserError(f"{where}: rules[{i}].type {r.type!r} is not one of {list(ACTIONS)}")
            if r.grouping not in GROUPINGS:
                raise UserError(f"{where}: rules[{i}].grouping {r.grouping!r} is not one of {list(GROUPINGS)}")
            if (r.column is None) != (r.value is None):
                raise UserError(f"{where}: rules[{i}] needs both column and value, or neither")
            for pat in (r.match, r.value, self.visits.start, self.visits.end):
                pattern_regex(pat, where)

    @property
    def unit_column(self) -> Optional[str]:
        return self.unit[7:] if self.unit.startswith("column:") else None

    def describe_visits(self) -> str:
        """The visit rule in words, for messages."""
        v = self.visits
        if v.mode == "gaps":
            return f"visits derived from gaps over {v.gap_hours:g} h" + (f" or codes `{v.start}`" if v.start else "")
        return f"`{v.start}`"

    def to_dict(self) -> dict:
        return asdict(self)


def pattern_regex(pattern: Optional[str], where: str = "dialect") -> Optional[str]:
    """A rule pattern -> an anchored regex: ``re:<regex>`` as given, a glob with ``*`` for any characters."""
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise UserError(f"{where}: a code pattern must be a non-empty string, got {pattern!r}")
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as e:
            raise UserError(f"{where}: bad regex {pattern[3:]!r}: {e}") from None
        return pattern[3:]
    return "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"


def _rules(*rows: tuple) -> list[CodeRule]:
    return [CodeRule(*r) for r in rows]


PRESETS: dict[str, CodeDialect] = {
    "own": CodeDialect(
        name="own",
        visits=VisitRule(start="ENCOUNTER//*//START", end="ENCOUNTER//*//END", id_column="encounter_id",
                         class_suffix="//START"),
        rules=_rules(("SNOMED//*", "procedure"), ("RXNORM//*", "medication"), ("LOINC//*", "lab"),
                     ("ICD10CM//*", "condition", "icd10"), ("CONDITION//SNOMED//*", "condition", "snomed"),
                     ("CONDITION//*", "condition"), ("ICD10//*", "condition"), ("ICD9CM//*", "condition")),
        unknown="drop", unit="column:unit"),
    "mimic": CodeDialect(
        name="mimic",
        visits=VisitRule(start="HOSPITAL_ADMISSION//*", end="HOSPITAL_DISCHARGE//*", id_column="hadm_id"),
        rules=_rules(("LAB//*", "lab"), ("MEDICATION//*", "medication"), ("PROCEDURE//*", "procedure"),
                     ("DIAGNOSIS//ICD//10//*", "condition", "icd10"), ("DIAGNOSIS//*", "condition"),
                     ("GENDER//*", "demographic"), ("RACE//*", "demographic"), ("MARITAL_STATUS//*", "demographic"),
                     ("LANGUAGE//*", "demographic"), ("INSURANCE//*", "demographic")),
        unknown="other", unit="code"),
    "omop": CodeDialect(
        name="omop",
        visits=VisitRule(start="Visit/*", end=None, end_column="end", id_column="visit_id"),
        rules=_rules(("LOINC/*", "lab"), ("RxNorm/*", "medication"), ("RxNorm Extension/*", "medication"),
                     ("SNOMED/*", "condition", "snomed", "table", "condition*"),
                     ("SNOMED/*", "procedure", "none", "table", "procedure*"),
                     ("ICD10CM/*", "condition", "icd10"), ("CPT4/*", "procedure"), ("Gender/*", "demographic"),
                     ("Race/*", "demographic"), ("Ethnicity/*", "demographic")),
        unknown="other", unit="column:unit"),
}


def _from_mapping(d: dict, cls: type, where: str, extra: tuple[str, ...] = ()) -> Any:
    known = {f.name for f in fields(cls)} | set(extra)
    bad = sorted(set(d) - known)
    if bad:
        raise UserError(f"{where}: unknown key(s) {bad}; known: {sorted(known)}")
    return d


def resolve_dialect(spec: Union[str, dict, CodeDialect, None]) -> CodeDialect:
    """``--data.dialect`` value -> :class:`CodeDialect`: a preset name, a mapping (optionally ``preset: <name>``
    plus overrides; ``rules`` replace the preset's unless ``extra_rules`` is used, which are tried first), or a
    dialect. Unknown keys and values raise :class:`UserError` naming them."""
    if spec is None:
        return PRESETS["own"]
    if isinstance(spec, CodeDialect):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise UserError(f"unknown --data.dialect {spec!r}; presets: {sorted(PRESETS)} (or a mapping, see "
                            "apps/ehr/dialect.py)")
        return PRESETS[spec]
    if not isinstance(spec, dict):
        raise UserError(f"--data.dialect must be a preset name or a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    preset = spec.pop("preset", None)
    extra = spec.pop("extra_rules", None)
    _from_mapping(spec, CodeDialect, "--data.dialect", extra=("preset", "extra_rules"))
    base = resolve_dialect(preset) if preset is not None else CodeDialect(name="custom", rules=[])
    kw: dict[str, Any] = {}
    for key, val in spec.items():
        if key == "visits":
            if not isinstance(val, dict):
                raise UserError("--data.dialect: visits must be a mapping")
            _from_mapping(val, VisitRule, "--data.dialect visits")
            kw["visits"] = replace(base.visits, **val)
        elif key == "rules":
            kw["rules"] = _rule_list(val, "rules")
        else:
            kw[key] = val
    if extra is not None:
        kw["rules"] = _rule_list(extra, "extra_rules") + list(kw.get("rules", base.rules))
    kw.setdefault("name", "custom" if preset is None else base.name if not kw else f"{base.name}+overrides")
    return replace(base, **kw)


def _rule_list(val: Any, key: str) -> list[CodeRule]:
    if not isinstance(val, list):
        raise UserError(f"--data.dialect: {key} must be a list of mappings (match, type, ...)")
    out = []
    for i, r in enumerate(val):
        if not isinstance(r, dict):
            raise UserError(f"--data.dialect: {key}[{i}] must be a mapping, got {r!r}")
        _from_mapping(r, CodeRule, f"--data.dialect {key}[{i}]")
        missing = [k for k in ("match", "type") if k not in r]
        if missing:
            raise UserError(f"--data.dialect: {key}[{i}] lacks {missing}")
        out.append(CodeRule(**r))
    return out


def dialect_key(dialect: CodeDialect) -> Optional[dict]:
    """Cache-key part of a dialect: None for the ``own`` preset (its cache key is the one of the settings alone)."""
    return None if dialect == PRESETS["own"] else dialect.to_dict()

"""FHIR R4 resource (dict from orjson) -> flat rows, the hot path of ingestion (no pydantic; see ``--validate``).

A :class:`Flattener` appends one row per resource to column lists (``patients``, ``encounters``) or one row per
emitted event (``events``: Condition, Procedure, MedicationRequest, Observation and its components). Local problems
(missing subject, no code, no value, no time) reject the resource at once; cross-resource checks (dangling
references, duplicates, unparseable times, events after death) happen later in :mod:`linmix.apps.ehr.ingest.resolve`.
Every row carries its location ``(src, line, entry)``: file index, 1-based NDJSON line (0 for Bundle files) and
Bundle entry index (-1 for NDJSON lines).

References: ``Patient/<id>``, absolute ``.../Patient/<id>[/_history/v]`` and ``urn:uuid:<id>`` (resolved through the
Bundle's ``fullUrl`` map). Conditional references (``Patient?identifier=...``) cannot be resolved and reject.
Codes become ``<VOCAB>//<code>`` with VOCAB from the coding system (LOINC, SNOMED, RXNORM, ICD10CM, ...) and the code
trimmed and escaped (:func:`linmix.apps.ehr.ingest.checks.code_part`).
Observation values: ``valueQuantity`` -> numeric_value + unit (a ``comparator`` -> text_value, values beyond float32
reject); ``valueInteger`` -> numeric_value;
``valueCodeableConcept`` / ``valueString`` / ``valueBoolean`` -> text_value (kept: MEDS has a text column);
other ``value[x]`` types and Observations with no value (and no valued component) are rejected.
"""

from __future__ import annotations

from linmix.apps.ehr.ingest.checks import (
    BAD_COMPARATOR,
    COMPARATORS,
    OUT_OF_RANGE,
    WS,
    code_part,
    is_plain,
    value_ok,
)

SUPPORTED = ("Patient", "Encounter", "Condition", "Procedure", "MedicationRequest", "Observation")

#: coding system -> MEDS code prefix
VOCAB = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://hl7.org/fhir/sid/ndc": "NDC",
}
_PREFERRED = {"Condition": "http://hl7.org/fhir/sid/icd-10-cm", "Procedure": "http://snomed.info/sct",
              "MedicationRequest": "http://www.nlm.nih.gov/research/umls/rxnorm", "Observation": "http://loinc.org"}


_FAST_TIME = {"Observation": "effectiveDateTime", "Condition": "onsetDateTime", "Procedure": "performedDateTime",
              "MedicationRequest": "authoredOn"}
_FAST_CODE = {"Observation": "code", "Condition": "code", "Procedure": "code",
              "MedicationRequest": "medicationCodeableConcept"}


class Reject(Exception):
    """A resource that cannot be ingested; the message is the quarantine reason (``category: detail``)."""


#: code prefixes of the rows ingestion makes itself: an unknown system's name never gives one (``LOCAL<name>``)
RESERVED = ("ENCOUNTER", "GENDER")


def vocab_of(system: object) -> str:
    """Coding system -> MEDS vocabulary name: letters and digits only (never ``/``), ``UNKNOWN`` when absent."""
    if not system or not isinstance(system, str):
        return "UNKNOWN"
    v = VOCAB.get(system)
    if v is None:
        tail = system.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        v = "".join(ch for ch in tail.upper() if ch.isalnum()) or "UNKNOWN"
        if v in RESERVED:
            v = "LOCAL" + v
    return v


def code_of(cc: object, preferred: str | None) -> tuple[str, str | None]:
    """CodeableConcept -> (``VOCAB//code``, display); the preferred system's coding wins, else the first with a code."""
    if cc.__class__ is not dict:
        raise Reject("no code: missing CodeableConcept")
    coding = cc.get("coding")
    if coding and coding.__class__ is list:  # fast path: the first coding is of the preferred system, plain code
        c = coding[0]
        if c.__class__ is dict and c.get("system") == preferred:
            code = c.get("code")
            if code and code.__class__ is str and is_plain(code):
                return f"{VOCAB[preferred]}//{code}", c.get("display") or cc.get("text")
    best = None
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and c.get("code"):
            part = code_part(c["code"])
            if not part:
                continue
            system = c.get("system")
            system = system.strip(WS) if isinstance(system, str) else system
            if system == preferred:
                best = (system, part, c)
                break
            if best is None:
                best = (system, part, c)
    if best is None:
        raise Reject("no code: CodeableConcept without a coded coding")
    system, part, c = best
    return f"{vocab_of(system)}//{part}", c.get("display") or cc.get("text")


def ref_id(obj: object, rtype: str, urls: dict[str, tuple[str, str]] | None, what: str) -> str:
    """Reference dict -> target id of type ``rtype``; raises :class:`Reject` when missing or unresolvable."""
    ref = obj.get("reference") if obj.__class__ is dict else None
    if ref.__class__ is not str or not ref:
        raise Reject(f"missing {what} reference")
    n = len(rtype)
    if ref.startswith(rtype) and ref[n:n + 1] == "/":  # fast path: "Patient/<id>"
        rest = ref[n + 1:]
        if rest and "/" not in rest and "?" not in rest:
            return rest
    if ref.startswith("urn:uuid:"):
        if urls is not None and ref in urls:
            t, i = urls[ref]
            if t != rtype:
                raise Reject(f"wrong {what} reference type: {t}, expected {rtype}")
            return i
        return ref[9:]
    if "?" in ref:
        raise Reject(f"unresolvable {what} reference: conditional reference")
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-1]:
        raise Reject(f"unresolvable {what} reference")
    if parts[-2] != rtype:
        raise Reject(f"wrong {what} reference type: {parts[-2]}, expected {rtype}")
    return parts[-1]


def _period_start(p: object) -> str | None:
    return p.get("start") if isinstance(p, dict) else None


class Flattener:
    """Accumulates flat columns for one chunk. ``add(d, src, line, entry, urls)`` returns None or raises Reject."""

    P_COLS = ("src", "line", "entry", "rid", "gender", "birth", "death", "deceased_flag")
    E_COLS = ("src", "line", "entry", "rid", "subject", "cls", "cls_display", "start", "end")
    V_COLS = ("src", "line", "entry", "rtype", "rid", "subject", "enc", "time", "code", "desc", "num", "text",
              "unit")

    def __init__(self) -> None:
        self.p: list[tuple] = []  # rows, columns P_COLS
        self.e: list[tuple] = []
        self.v: list[tuple] = []
        self._refs: dict[tuple[str, str], str] = {}  # (type, "Type/id") -> id, context-free (non-Bundle) refs

    def _ref(self, obj: object, rtype: str, urls: dict | None, what: str) -> str:
        ref = obj.get("reference") if obj.__class__ is dict else None
        if urls is None and ref.__class__ is str:
            key = (rtype, ref)  # per target type: the same string may be checked against two types
            rid = self._refs.get(key)
            if rid is None:
                rid = self._refs[key] = ref_id(obj, rtype, None, what)
            return rid
        return ref_id(obj, rtype, urls, what)

    def __len__(self) -> int:
        return len(self.p) + len(self.e) + len(self.v)

    def add(self, d: dict, rtype: str, src: int, line: int, entry: int, urls: dict | None) -> None:
        if urls is None and rtype in _FAST_TIME and self._fast(d, rtype, src, line, entry):
            return
        rid = d.get("id")
        if rid is not None and not isinstance(rid, str):
            raise Reject("invalid id: not a string")
        if rtype == "Patient":
            self._patient(d, rid, src, line, entry)
            return
        subject = self._ref(d.get("subject"), "Patient", urls, "subject")
        if rtype == "Encounter":
            self._encounter(d, rid, subject, src, line, entry)
            return
        enc = d.get("encounter")
        enc_id = None if enc is None else self._ref(enc, "Encounter", urls, "encounter")
        if rtype == "Observation":
            self._observation(d, rid, subject, enc_id, src, line, entry)
            return
        if rtype == "Condition":
            code, desc = code_of(d.get("code"), _PREFERRED[rtype])
            time = d.get("onsetDateTime") or _period_start(d.get("onsetPeriod")) or d.get("recordedDate")
        elif rtype == "Procedure":
            code, desc = code_of(d.get("code"), _PREFERRED[rtype])
            time = d.get("performedDateTime") or _period_start(d.get("performedPeriod"))
            if time is None:
                raise Reject("no time: Procedure without performedDateTime or performedPeriod.start")
        else:  # MedicationRequest
            if "medicationCodeableConcept" not in d:
                raise Reject("unsupported medication: medicationReference (only medicationCodeableConcept is read)")
            code, desc = code_of(d["medicationCodeableConcept"], _PREFERRED[rtype])
            time = d.get("authoredOn")
            if time is None:
                raise Reject("no time: MedicationRequest without authoredOn")
        self._event(src, line, entry, rtype, rid, subject, enc_id, time, code, desc, None, None, None)

    def _fast(self, d: dict, rtype: str, src: int, line: int, entry: int) -> bool:
        """Common shape of an event resource (``Type/id`` references, preferred coding first, a string time, a
        numeric valueQuantity for Observations) in one pass; False sends the resource to the general path, which
        gives the same row for every resource accepted here (tested) and the reasons for the others."""
        try:
            rid = d["id"]
            sref = d["subject"]["reference"]
            eref = d["encounter"]["reference"]
            cc = d[_FAST_CODE[rtype]]
            c0 = cc["coding"][0]
            t = d.get(_FAST_TIME[rtype])
            if t is None and rtype == "Procedure":
                t = d["performedPeriod"]["start"]
        except (KeyError, TypeError, IndexError, AttributeError):
            return False
        if (rid.__class__ is not str or sref.__class__ is not str or eref.__class__ is not str
                or t.__class__ is not str or not t or c0.__class__ is not dict
                or c0.get("system") != _PREFERRED[rtype] or not sref.startswith("Patient/")
                or not eref.startswith("Encounter/")):
            return False
        code = c0.get("code")
        subject, enc = sref[8:], eref[10:]
        if not code or code.__class__ is not str or not is_plain(code) or not subject or not enc or "/" in subject or "?" in subject or "/" in enc or "?" in enc:
            return False
        num = unit = None
        if rtype == "Observation":
            q = d.get("valueQuantity")
            if q.__class__ is not dict:
                return False
            num = q.get("value")
            if num.__class__ is not float and num.__class__ is not int or "comparator" in q:
                return False
            num = float(num)
            if not value_ok(num):
                return False
            unit = q.get("unit") or q.get("code")
        self.v.append((src, line, entry, rtype, rid, subject, enc, t, f"{VOCAB[_PREFERRED[rtype]]}//{code}",
                       c0.get("display") or cc.get("text"), num, None, unit))
        return True

    def _event(self, src, line, entry, rtype, rid, subject, enc, time, code, desc, num, text, unit) -> None:
        if time is not None and time.__class__ is not str:
            raise Reject("unparseable dateTime: not a string")
        self.v.append((src, line, entry, rtype, rid, subject, enc, time, code, desc, num, text, unit))

    def _patient(self, d: dict, rid, src, line, entry) -> None:
        if not rid:
            raise Reject("missing id: Patient without id")
        birth, death = d.get("birthDate"), d.get("deceasedDateTime")
        if (birth is not None and not isinstance(birth, str)) or (death is not None and not isinstance(death, str)):
            raise Reject("unparseable dateTime: not a string")
        gender = d.get("gender")
        gender = code_part(gender) if isinstance(gender, str) else None
        self.p.append((src, line, entry, rid, gender or None, birth, death, d.get("deceasedBoolean") is True))

    def _encounter(self, d: dict, rid, subject, src, line, entry) -> None:
        if not rid:
            raise Reject("missing id: Encounter without id")
        period = d.get("period")
        start = _period_start(period)
        if not isinstance(start, str):
            raise Reject("no time: Encounter without period.start")
        end = period.get("end")
        if end is not None and not isinstance(end, str):
            raise Reject("unparseable dateTime: period.end not a string")
        cls = d.get("class")
        if isinstance(cls, list):  # R5 style: list of CodeableConcept
            cls = ((cls[0].get("coding") or [None])[0]) if cls and isinstance(cls[0], dict) else None
        code = cls.get("code") if isinstance(cls, dict) else None
        code = code_part(code) if code else None
        if not code:
            raise Reject("no code: Encounter without class code")
        self.e.append((src, line, entry, rid, subject, code, cls.get("display"), start, end))

    def _observation(self, d: dict, rid, subject, enc, src, line, entry) -> None:
        time = d.get("effectiveDateTime") or _period_start(d.get("effectivePeriod")) or d.get("effectiveInstant")
        if time is None:
            raise Reject("no time: Observation without effectiveDateTime/effectivePeriod.start/effectiveInstant")
        code, desc = code_of(d.get("code"), _PREFERRED["Observation"])
        vals = _obs_value(d)
        if vals is not None:
            self._event(src, line, entry, "Observation", rid, subject, enc, time, code, desc, *vals)
            return
        n = 0
        for comp in d.get("component") or ():
            if isinstance(comp, dict):
                cv = _obs_value(comp)
                if cv is not None:
                    ccode, cdesc = code_of(comp.get("code"), _PREFERRED["Observation"])
                    self._event(src, line, entry, "Observation", rid, subject, enc, time, ccode, cdesc, *cv)
                    n += 1
        if n == 0:
            raise Reject("no value: Observation without value[x] (and no valued component)")


def _obs_value(d: dict) -> tuple[float | None, str | None, str | None] | None:
    """(numeric_value, text_value, unit) of an Observation or component; None when it has no value[x]."""
    q = d.get("valueQuantity")
    if q is not None:
        v = q.get("value") if isinstance(q, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Reject("non-numeric value: valueQuantity without a numeric value")
        if not value_ok(v):
            raise Reject(OUT_OF_RANGE.format("valueQuantity.value"))
        cmp = q.get("comparator")
        if cmp is not None and cmp not in COMPARATORS:
            raise Reject(BAD_COMPARATOR)
        return float(v), cmp, q.get("unit") or q.get("code")
    if "valueCodeableConcept" in d:
        cc = d["valueCodeableConcept"]
        c0 = (cc.get("coding") or [{}])[0] if isinstance(cc, dict) else {}
        text = (c0.get("display") or c0.get("code") or cc.get("text")) if isinstance(c0, dict) else None
        if not text:
            raise Reject("no value: empty valueCodeableConcept")
        return None, str(text), None
    if "valueString" in d:
        return None, str(d["valueString"]), None
    if "valueBoolean" in d:
        return None, "true" if d["valueBoolean"] else "false", None
    if "valueInteger" in d:
        v = d["valueInteger"]
        if isinstance(v, bool) or not isinstance(v, int):
            raise Reject("non-numeric value: valueInteger not an integer")
        if not value_ok(v):
            raise Reject(OUT_OF_RANGE.format("valueInteger"))
        return float(v), None, None
    for k in d:
        if k.startswith("value") and k != "value":
            raise Reject(f"unsupported value type: {k}")
    return None

"""Code catalogue of the synthetic FHIR cohort (LOINC labs, RxNorm drugs, SNOMED CT procedures, ICD-10-CM conditions
or, with ``--condition-coding snomed``, their SNOMED CT concepts).

Each lab, drug and procedure is tied to a *driver*: one of the five chronic condition groups (3-character ICD-10-CM
prefixes) or ``"sev"`` (overall severity). The generator in :mod:`linmix.apps.ehr.synth` uses the drivers to plant a
learnable risk: outcomes depend on what is *observed* in the history (lab values, drugs, procedures, visit gaps).
Codes and display texts follow the public terminologies; the numbers (means, SDs) are made up but plausible.
"""

from __future__ import annotations

from typing import NamedTuple

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

#: Chronic condition groups (3-character ICD-10-CM) that become the ``cond_<ICD3>`` tasks.
GROUPS: tuple[str, ...] = ("E11", "I10", "N18", "J44", "E78")


class Lab(NamedTuple):
    code: str
    display: str
    unit: str  # UCUM
    mean: float
    sd: float
    driver: str | None  # a group in GROUPS, "sev", or None (noise)
    sign: float  # +1: the value rises with the driver; -1: falls
    digits: int


LABS: tuple[Lab, ...] = (
    Lab("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 105.0, 25.0, "E11", 1.0, 0),
    Lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.8, 0.9, "E11", 1.0, 1),
    Lab("8480-6", "Systolic blood pressure", "mm[Hg]", 128.0, 16.0, "I10", 1.0, 0),
    Lab("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 1.0, 0.35, "N18", 1.0, 2),
    Lab("19926-5", "FEV1/FVC", "%", 75.0, 8.0, "J44", -1.0, 0),
    Lab("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 120.0, 30.0,
        "E78", 1.0, 0),
    Lab("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", 1.6, 0.6, "sev", 1.0, 1),
    Lab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 8.0, 2.5, "sev", 1.0, 1),
    Lab("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 13.5, 1.6, "sev", -1.0, 1),
    Lab("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.4, None, 1.0, 1),
    Lab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 140.0, 3.0, None, 1.0, 0),
)


class Item(NamedTuple):
    code: str
    display: str
    driver: str | None


DRUGS: tuple[Item, ...] = (
    Item("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", "E11"),
    Item("314076", "lisinopril 10 MG Oral Tablet", "I10"),
    Item("310429", "furosemide 20 MG Oral Tablet", "N18"),
    Item("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "J44"),
    Item("259255", "atorvastatin 80 MG Oral Tablet", "E78"),
    Item("106892", "insulin isophane, human 70 UNT/ML / insulin, regular, human 30 UNT/ML Injectable Suspension",
         "sev"),
    Item("313782", "acetaminophen 325 MG Oral Tablet", None),
    Item("308182", "amoxicillin 250 MG Oral Capsule", None),
)

PROCEDURES: tuple[Item, ...] = (
    Item("112798008", "Insertion of endotracheal tube", "sev"),
    Item("40701008", "Echocardiography", "sev"),
    Item("302497006", "Hemodialysis", "N18"),
    Item("127783003", "Spirometry", "J44"),
    Item("36228007", "Ophthalmic examination", "E11"),
    Item("430193006", "Medication reconciliation", None),
    Item("73761001", "Colonoscopy", None),
)

#: ICD-10-CM codes per group; the first three characters are the group.
CONDITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "E11": (("E11.9", "Type 2 diabetes mellitus without complications"),
            ("E11.65", "Type 2 diabetes mellitus with hyperglycemia")),
    "I10": (("I10", "Essential (primary) hypertension"),),
    "N18": (("N18.3", "Chronic kidney disease, stage 3 (moderate)"),
            ("N18.4", "Chronic kidney disease, stage 4 (severe)")),
    "J44": (("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
            ("J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation")),
    "E78": (("E78.5", "Hyperlipidemia, unspecified"), ("E78.0", "Pure hypercholesterolemia")),
}
#: Acute, label-free conditions (noise).
NOISE_CONDITIONS: tuple[tuple[str, str], ...] = (
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("M54.5", "Low back pain"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter"),
    ("R51", "Headache"),
)

#: ``--condition-coding snomed``: the SNOMED CT concept written instead of each ICD-10-CM code (as Synthea codes
#: Conditions); ``linmix.apps.ehr.dialect.SNOMED_GROUPS`` maps every one back to the same 3-character group.
CONDITION_SNOMED: dict[str, tuple[str, str]] = {
    "E11.9": ("44054006", "Diabetes mellitus type 2 (disorder)"),
    "E11.65": ("44054006", "Diabetes mellitus type 2 (disorder)"),
    "I10": ("59621000", "Essential hypertension (disorder)"),
    "N18.3": ("433144002", "Chronic kidney disease stage 3 (disorder)"),
    "N18.4": ("431857002", "Chronic kidney disease stage 4 (disorder)"),
    "J44.9": ("13645005", "Chronic obstructive lung disease (disorder)"),
    "J44.1": ("195951007", "Acute exacerbation of chronic obstructive airways disease (disorder)"),
    "E78.5": ("55822004", "Hyperlipidemia (disorder)"),
    "E78.0": ("13644009", "Hypercholesterolemia (disorder)"),
    "J06.9": ("54150009", "Upper respiratory infection (disorder)"),
    "M54.5": ("279039007", "Low back pain (finding)"),
    "K21.9": ("235595009", "Gastroesophageal reflux disease (disorder)"),
    "S93.401A": ("44465007", "Sprain of ankle (disorder)"),
    "R51": ("25064002", "Headache (finding)"),
}
CONDITION_CODINGS = ("icd10", "snomed")

ENCOUNTER_CLASSES: dict[str, str] = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}

GIVEN_NAMES = ("Ada", "Bo", "Cyra", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Mo", "Noor")
FAMILY_NAMES = ("Abara", "Berg", "Castro", "Dahl", "Eze", "Fonseca", "Grimm", "Haddad", "Ito", "Jovic", "Kowal")
#: UTC offsets (minutes) assigned to patients so that ingestion must normalise time zones.
TZ_OFFSETS_MIN = (-300, -240, -480, 0, 60, 330)

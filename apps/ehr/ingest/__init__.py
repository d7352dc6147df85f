"""FHIR R4 -> MEDS ingestion (``linmix-ehr ingest``).

Modules: :mod:`.pipeline` (the tool: discover, read, resolve, write, report), :mod:`.files` (which files are read
or skipped), :mod:`.read` (files -> patient, encounter and event frames), :mod:`.fast` (msgspec block decoding of
common bulk NDJSON), :mod:`.fhir` (resource types and the general-path flattener), :mod:`.checks` (value rules both
paths share and the suspicious counts), :mod:`.resolve` (cross-resource checks -> MEDS rows), :mod:`.report`
(``report.json`` and ``quarantine/``).
"""

from linmix.apps.ehr.ingest.pipeline import IngestError, ingest, ingest_main

__all__ = ["IngestError", "ingest", "ingest_main"]

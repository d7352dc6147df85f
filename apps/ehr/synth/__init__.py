"""Synthetic FHIR R4 cohort with planted outcome risks (``linmix-ehr synth``).

Modules: :mod:`.cohort` (the generator and the tool), :mod:`.records` (one sampled patient), :mod:`.catalog` (the
code catalogue the generator samples from), :mod:`.writer` (FHIR resource dicts, Bundle and NDJSON layouts).
"""

from linmix.apps.ehr.synth.cohort import TASKS, oracle_auroc, synth_main, synthesize

__all__ = ["TASKS", "oracle_auroc", "synth_main", "synthesize"]

"""Incremental scoring equals a full recompute after every appended chunk of events."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.model import EHRMamba, EHRMambaConfig
from linmix.apps.ehr.predict import IncrementalScorer, visit_ends

_spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__).with_name("test_ehr_seq_fixture.py"))
FX = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FX)


@pytest.mark.parametrize("n_tasks", [0, 5])  # one shared readout / one per task
def test_incremental_equals_recompute_at_every_visit_and_token(n_tasks):
    frame = FX.build_frame(12, seed=3).with_columns(split=__import__("polars").lit("train"))
    seqs, vocab, _ = S.build_sequences(frame, S.SequenceSettings(vocab_size=96, n_conditions=2))
    torch.manual_seed(0)
    net = EHRMamba(EHRMambaConfig(vocab_size=96, d_model=32, n_layers=2, d_state=16, d_time=8, max_visits=16,
                                  n_tasks=n_tasks))
    scorer = IncrementalScorer(net, [25, 26, 27, 28, 29])
    checked = 0
    for r in range(2):
        arrays = S.row_arrays(seqs.row(r, named=True))
        ends = visit_ends(arrays)
        cuts = sorted(set(ends + [2, 5, len(arrays["tokens"])]))  # visit ends plus cuts inside visits
        done, task = 0, r % 5
        for end in cuts:
            chunk = {k: a[done:end] for k, a in arrays.items()}
            inc = scorer.start(r, task, chunk) if done == 0 else scorer.append(r, chunk)
            ref = scorer.recompute(task, {k: a[:end] for k, a in arrays.items()})
            assert inc == pytest.approx(ref, abs=1e-5), (r, end)
            done, checked = end, checked + 1
    assert checked >= 6
    with pytest.raises(KeyError):
        scorer.append("nobody", {k: a[:1] for k, a in arrays.items()})

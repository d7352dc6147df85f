"""Incremental scoring: new events for a patient continue the Mamba recurrent state instead of re-reading the history.

A patient's sequence cut at time t is a prefix of the sequence cut at any later time (token times never decrease), so
scoring at t2 after t1 only needs the tokens between them: ``IncrementalScorer.append`` runs
``EHRMamba.forward_state`` on them from the state saved at t1 and reads the task logit at the new last token. This
equals a full recompute (tests/ehr/test_ehr_predict.py) as long as the history is not truncated to ``max_len``: the
recurrent state keeps the whole history, a recompute would keep the most recent ``max_len`` tokens.

``linmix-ehr score`` (:mod:`linmix.apps.ehr.score`) streams the patients of a MEDS split through it visit by visit.
"""

from __future__ import annotations

import numpy as np
import torch

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.model import EHRMamba, prompt

KEYS = ("tokens", "token_type", "age", "time", "visit_order", "visit_segment")


def to_tensors(arrays: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """Side arrays of one sequence (L,) -> the six model inputs as (1, L) tensors."""
    out = []
    for k in KEYS:
        dtype = torch.float32 if k in ("age", "time") else torch.long
        out.append(torch.as_tensor(np.asarray(arrays[k]), dtype=dtype).unsqueeze(0))
    return out


def with_task(arrays: dict[str, np.ndarray], task_token_id: int) -> dict[str, np.ndarray]:
    """Put the task prompt token (type TASK) in slot 0, where ``[CLS]`` is."""
    out = {k: np.array(v, copy=True) for k, v in arrays.items()}
    out["tokens"][0], out["token_type"][0] = task_token_id, S.TYPE_TASK
    return out


class IncrementalScorer:
    """Per-key recurrent states of an EHRMamba; ``start`` a patient with its history, ``append`` new tokens.

    The saved state covers ``[task] history``; each score runs one more step for the trailing task token (where the
    finetuned model reads its logit, see ``model.prompt``) without keeping it, so later tokens continue the history.

    Args:
        net: a finetuned EHRMamba (eval mode is set here).
        task_token_ids: prompt token id per task index.
    """

    def __init__(self, net: EHRMamba, task_token_ids: list[int]) -> None:
        self.net = net.eval()
        self.task_token_ids = task_token_ids
        self.states: dict[object, tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, int]] = {}

    @torch.no_grad()
    def _run(self, key, arrays: dict[str, np.ndarray], state: list[torch.Tensor], prev_time: torch.Tensor,
             task: int) -> float:
        inputs = to_tensors(arrays)
        _, state = self.net.forward_state(*inputs, prev_time, state)
        last_time, last_age = inputs[3][:, -1], inputs[2][:, -1]
        self.states[key] = (state, last_time, last_age, task)
        tail = [torch.tensor([[self.task_token_ids[task]]]), torch.tensor([[S.TYPE_TASK]]), last_age.view(1, 1),
                last_time.view(1, 1), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)]
        x = self.net.embed(*tail, prev_time=last_time)  # (1, 1, D)
        y, _ = self.net.backbone.step(x[:, 0], state)  # one recurrent step, O(1) in the history
        return float(torch.sigmoid(self.net.head_logit(y, torch.tensor([task]))).squeeze())

    def start(self, key, task: int, arrays: dict[str, np.ndarray]) -> float:
        """Score a history (``[CLS]`` in slot 0, replaced by the task token) and keep its state under ``key``."""
        arrays = with_task(arrays, self.task_token_ids[task])
        return self._run(key, arrays, self.net.init_state(1), torch.as_tensor([float(arrays["time"][0])]), task)

    def append(self, key, arrays: dict[str, np.ndarray]) -> float:
        """Continue ``key`` with new tokens (L >= 1, no padding); returns the probability after them."""
        if key not in self.states:
            raise KeyError(f"{key!r} was not started; call start() with its history first")
        if len(arrays["tokens"]) == 0:
            raise ValueError("append() needs at least one new token")
        state, prev_time, _, task = self.states[key]
        return self._run(key, arrays, state, prev_time, task)

    @torch.no_grad()
    def recompute(self, task: int, arrays: dict[str, np.ndarray]) -> float:
        """Full forward over the whole history with the prompt (the reference the incremental path must equal)."""
        *inputs, lengths = prompt(*to_tensors(arrays), torch.tensor([self.task_token_ids[task]]))
        hidden = self.net(*inputs)
        return float(torch.sigmoid(self.net.pool_logit(hidden, lengths, torch.tensor([task]))).squeeze())


def visit_ends(arrays: dict[str, np.ndarray]) -> list[int]:
    """Token counts at the end of each visit (after its ``[REG]``)."""
    return [i + 1 for i, t in enumerate(arrays["token_type"]) if t == S.TYPE_REG]

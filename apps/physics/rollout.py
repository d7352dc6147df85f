"""Autoregressive rollout of a transient :class:`~linmix.apps.physics.operator.FieldOperator` on a batch of graphs.

u_{t+1} = op(u_t, inputs, globals, t); nodes of the problem's imposed types (Dirichlet / obstacle) are overwritten with
the ground truth while it exists, and keep their last value beyond it (Dirichlet data are constant in time).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from linmix.apps.physics.losses import node_mask

log = logging.getLogger("linmix.physics.rollout")


def node_features(state: Tensor | None, inputs: Tensor, globals_nodes: Tensor, t: Tensor | None) -> Tensor:
    """Concatenate the FieldOperator feature layout [state, inputs, globals, t] (N, F)."""
    parts = [p for p in (state, inputs, globals_nodes) if p is not None]
    if t is not None:
        parts.append(t.reshape(-1, 1))
    return torch.cat(parts, dim=1)


@torch.no_grad()
def rollout(op, batch, n_steps: int, imposed_types: tuple, t0: int = 0) -> Tensor:
    """Roll ``op`` out for ``n_steps`` from frame ``t0`` of ``batch.fields`` (T, N, C).
    Returns (n_steps + 1, N, C) with frame 0 = the initial state. Steps past the data run on the model alone."""
    fields = batch.fields
    T = fields.shape[0]
    if t0 + n_steps > T - 1:
        log.warning("rollout: %d steps requested from t0=%d but the data has %d frames: steps %d..%d run on the "
                    "model alone (no ground truth for boundaries or error)", n_steps, t0, T, T - t0, n_steps)
    imposed = node_mask(batch.node_type, imposed_types).unsqueeze(1)
    g_nodes = batch.globals[batch.batch]
    dt = batch.dt[batch.batch]
    state = fields[t0]
    out = [state]
    for k in range(n_steps):
        t = (t0 + k) * dt
        nxt = op(batch.pos, node_features(state, batch.inputs, g_nodes, t), batch.node_type, batch.edge_index,
                 batch.batch)
        known = fields[t0 + k + 1] if t0 + k + 1 < T else state
        state = torch.where(imposed, known, nxt)
        out.append(state)
    return torch.stack(out)

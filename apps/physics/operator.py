"""``FieldOperator``: a network (PhysGTO, MeshGraphNet or TransolverNet) wrapped with its normalisers, so it maps
physical inputs to physical fields. This is the module that is trained, rolled out and exported.

``forward(pos (N, 2), feats (N, F), node_type (N,) int64, edge_index (2, E), batch (N,) int64 | None) -> (N, C)``
with ``feats`` in physical units laid out as [state u_t (C, transient only), inputs (F_in), globals (G, per node),
time t (1, transient only)]. Steady: returns the field; transient: returns u_{t+1}. ``batch=None`` means one graph.
``scale_steps`` (transient MeshGraphNets / Transolver-style nets, whose residual is u_n + Δ): the net's step is
scaled per channel by ``step_scale`` = std(u_{t+1} − u_t) / std(u) of the training data, i.e. the net predicts the
normalised increment, as MeshGraphNets does (heat 0.029; flow 0.05-0.18 per channel; on a nearly steady flow
set with 0.0004-0.0011 an unscaled Δ of order 1 is 30-2000x a real step). PhysGTO keeps its own learned step scale
SiLU(α) (official task2) and ``scale_steps`` False.
Per-channel z-score statistics are buffers (saved in checkpoints and exports); a zero variance is replaced by 1
(a constant feature must not produce NaNs, deepmind-research#655).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.model import feature_layout


def _safe_std(x: Tensor) -> Tensor:
    s = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.ones(x.shape[1:])
    return torch.where(s > 1e-8, s, torch.ones_like(s))


class FieldOperator(nn.Module):
    """Normalise -> net -> de-normalise. ``net`` is built from ``cfg`` (``cfg.n_in``, ``cfg.n_out``, ``cfg.n_globals``,
    ``cfg.transient`` size the normalisers)."""

    def __init__(self, net: nn.Module, *, cfg: PhysicsConfig, scale_steps: bool = False) -> None:
        super().__init__()
        self.net = net
        n_in, n_out, n_globals, transient = cfg.n_in, cfg.n_out, cfg.n_globals, cfg.transient
        self.n_in, self.n_out, self.n_globals, self.transient = n_in, n_out, n_globals, transient
        self.scale_steps = bool(scale_steps and transient)
        n_state, _, _, n_time = feature_layout(n_in, n_out, n_globals, transient)
        self.n_state, self.n_time = n_state, n_time
        self.n_feat = n_state + n_in + n_globals + n_time
        for name, size in (("in", n_in), ("glob", n_globals), ("out", n_out)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        self.register_buffer("t_scale", torch.ones(1))
        self.register_buffer("step_scale", torch.ones(n_out))  # used only when scale_steps
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.jit.unused
    def fit_stats(self, inputs: Tensor, globals_: Tensor, fields: Tensor, t_max: float = 1.0,
                  increments: Optional[Tensor] = None) -> None:
        """Per-channel statistics from training data: inputs (N, F_in), globals (B, G), fields (T·N, C),
        increments ((T-1)·N, C) u_{t+1} − u_t (transient; sets ``step_scale``)."""
        with torch.no_grad():
            if self.n_in:
                self.in_mean.copy_(inputs.mean(0))
                self.in_std.copy_(_safe_std(inputs))
            if self.n_globals:
                self.glob_mean.copy_(globals_.mean(0))
                self.glob_std.copy_(_safe_std(globals_))
            self.out_mean.copy_(fields.mean(0))
            self.out_std.copy_(_safe_std(fields))
            self.t_scale.fill_(max(float(t_max), 1e-8))
            if increments is not None and increments.shape[0] > 1:
                self.step_scale.copy_(_safe_std(increments) / self.out_std)
            self.fitted.fill_(True)

    def normalise(self, feats: Tensor) -> Tensor:
        parts = []
        i = 0
        if self.n_state:
            parts.append((feats[:, : self.n_state] - self.out_mean) / self.out_std)
            i = self.n_state
        parts.append((feats[:, i: i + self.n_in] - self.in_mean) / self.in_std)
        i += self.n_in
        parts.append((feats[:, i: i + self.n_globals] - self.glob_mean) / self.glob_std)
        i += self.n_globals
        if self.n_time:
            parts.append(feats[:, i: i + 1] / self.t_scale)
        return torch.cat(parts, dim=1)

    def forward(self, pos: Tensor, feats: Tensor, node_type: Tensor, edge_index: Tensor,
                batch: Optional[Tensor] = None) -> Tensor:
        if feats.dim() != 2 or feats.shape[1] != self.n_feat:
            raise ValueError(f"FieldOperator: feats must be (N, {self.n_feat}), got {list(feats.shape)}")
        if pos.shape[0] != feats.shape[0] or node_type.shape[0] != feats.shape[0]:
            raise ValueError("FieldOperator: pos, feats and node_type must have the same number of nodes")
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        x = self.normalise(feats)
        y = self.net(pos, x, node_type, edge_index, batch)
        if self.scale_steps:
            u = x[:, : self.n_out]
            y = u + self.step_scale * (y - u)
        return y * self.out_std + self.out_mean

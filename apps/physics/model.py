"""PhysGTO: graph-transformer operator for physical fields on unstructured meshes.

Liu et al., "An Efficient Graph-Transformer Operator for Learning Physical Dynamics with Manifolds Embedding",
arXiv:2512.10227, following the official code (github.com/pengwei07/PhysGTO) with its batching gap fixed: the
projection attention (shared ``ProjectionAttention``) masks padded nodes, so a batch of meshes of different sizes
gives exactly the per-mesh results.

Shapes (flat PyG layout): N nodes of all graphs, E edges, G graphs, C = ``d_model``, F node features.
- ``pos`` (N, 2) coordinates (any units; scaled per graph to [0, 1] internally),
- ``feats`` (N, F) normalised node features laid out as [state (n_out, transient only), inputs (n_in),
  globals (n_globals, broadcast per node), time (1, transient only)],
- ``node_type`` (N,) int64 in 0..3, ``edge_index`` (2, E) int64 (sender, receiver), ``batch`` (N,) int64 sorted.
Output (N, n_out): the normalised field (steady) or the next state u_{t+1} = u_t + SiLU(α)·Δ (transient).

Block: flux-oriented message passing (one message per undirected edge, first half mean-aggregated to senders, second
half to receivers; residual on nodes and edges) -> V + Attn(Norm(V)) -> V + FFN(Norm(V)).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.graph_ops import (
    MLP,
    EdgeMLP,
    dense_index,
    edge_geometry,
    flux_index,
    flux_mean_weights,
    fourier_features,
    normalised_positions,
    num_graphs,
    scatter_dense,
)
from linmix.shared.norms import RMSNorm
from linmix.shared.projection_attention import ProjectionAttention
from linmix.shared.softmax_attention import SoftmaxAttention

N_NODE_TYPES = 4


def feature_layout(n_in: int, n_out: int, n_globals: int, transient: bool) -> Tuple[int, int, int, int]:
    """Column ranges of ``feats``: returns (n_state, n_in, n_globals, n_time)."""
    return (n_out if transient else 0), n_in, n_globals, (1 if transient else 0)


class FluxMessagePassing(nn.Module):
    """One message m_e = f_edge([h_s, h_r, E_e]) per undirected edge; agg_i = [mean_{e: s(e)=i} m_e[:C/2],
    mean_{e: r(e)=i} m_e[C/2:]]; v_i = f_node([h_i, agg_i]). ``flux_idx`` (2E,) from ``flux_index`` and ``inv_deg``
    (N, C) from ``flux_mean_weights``. Returns (ΔV (N, C), ΔE (E, C))."""

    def __init__(self, d_node_in: int, d_model: int, d_hidden: int) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"PhysGTO: d_model must be even (flux halves), got {d_model}")
        self.half = d_model // 2
        self.f_edge = EdgeMLP(d_node_in, d_model, d_hidden, d_model, act="gelu")
        self.f_node = MLP(d_node_in + d_model, d_hidden, d_model, act="gelu")

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor, flux_idx: Tensor,
                inv_deg: Tensor) -> Tuple[Tensor, Tensor]:
        m = self.f_edge(h, e, edge_index)
        n = h.shape[0]
        sums = torch.zeros(2 * n, self.half, dtype=m.dtype, device=m.device)
        sums.index_add_(0, flux_idx, m.reshape(-1, self.half))  # rows 0..n-1: senders' sums, n..2n-1: receivers'
        agg = torch.cat([sums[:n], sums[n:]], dim=1) * inv_deg
        return self.f_node(torch.cat([h, agg], dim=1)), m


class PhysGTOBlock(nn.Module):
    """Message passing -> pre-norm global attention over each graph's nodes -> pre-norm feed-forward."""

    def __init__(self, d_node_in: int, cfg: PhysicsConfig) -> None:
        super().__init__()
        self.mp = FluxMessagePassing(d_node_in, cfg.d_model, cfg.d_hidden)
        self.norm_attn = RMSNorm(cfg.d_model)
        if cfg.attention == "projection":
            self.attn = ProjectionAttention(cfg.d_model, cfg.n_heads, cfg.n_slots, cfg.dropout)
        elif cfg.attention == "softmax":
            self.attn = SoftmaxAttention(cfg.d_model, cfg.n_heads, dropout=cfg.dropout)
        else:
            raise ValueError(f"PhysGTO: attention must be 'projection' or 'softmax', got {cfg.attention!r}")
        self.norm_ffn = RMSNorm(cfg.d_model)
        self.ffn = MLP(cfg.d_model, 2 * cfg.d_model, cfg.d_model, layer_norm=False)

    def forward(self, v: Tensor, e: Tensor, extra: Tensor, edge_index: Tensor, batch: Tensor,
                flux_idx: Tensor, inv_deg: Tensor, slot: Optional[Tensor],
                mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """``slot``/``mask`` from ``dense_index`` for a batch of graphs; None for one graph (no padding)."""
        dv, de = self.mp(torch.cat([v, extra], dim=1), e, edge_index, flux_idx, inv_deg)
        v, e = v + dv, e + de
        if slot is None or mask is None:
            v = v + self.attn(self.norm_attn(v).unsqueeze(0), None)[0]
        else:
            v = v + self.attn(scatter_dense(self.norm_attn(v), batch, slot, mask), mask)[batch, slot]
        v = v + self.ffn(self.norm_ffn(v))
        return v, e


class PhysGTO(nn.Module):
    """PhysGTO operator ``forward(pos, feats, node_type, edge_index, batch) -> (N, n_out)`` (see module docstring).
    All sizes come from ``cfg`` (``cfg.arch`` is not read)."""

    def __init__(self, cfg: PhysicsConfig = PhysicsConfig()) -> None:  # noqa: B008 (read-only default)
        super().__init__()
        self.cfg = cfg
        n_in, n_out, n_globals, transient, n_freq = cfg.n_in, cfg.n_out, cfg.n_globals, cfg.transient, cfg.n_freq
        d_model, d_hidden, n_layers = cfg.d_model, cfg.d_hidden, cfg.n_layers
        self.n_types = N_NODE_TYPES
        self.n_in, self.n_out, self.n_globals, self.transient, self.n_freq = n_in, n_out, n_globals, transient, n_freq
        n_state, _, _, n_time = feature_layout(n_in, n_out, n_globals, transient)
        self.n_state, self.n_node = n_state, n_state + n_in
        self.n_cond = n_globals + n_time
        d_pos = 2 * (1 + 2 * n_freq)
        # unified graph embedding: node state/inputs + position, condition = node type + globals + time
        self.enc_node = MLP(self.n_node + 2, d_hidden, d_model, n_hidden=2)
        self.enc_type = MLP(N_NODE_TYPES, d_hidden, d_model, layer_norm=False)
        self.enc_cond = MLP(max(self.n_cond, 1), d_hidden, d_model, layer_norm=False)
        self.enc_fuse = MLP(2 * d_model, d_hidden, d_model)
        self.enc_edge = MLP(5, d_hidden, d_model)
        d_extra = d_pos + d_model
        self.blocks = nn.ModuleList([PhysGTOBlock(d_model + d_extra, cfg) for _ in range(n_layers)])
        self.dec = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.LayerNorm(d_model), nn.SiLU(),
                                 nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, n_out))
        # residual step scale SiLU(α) of transient problems (PhysGTO task2); a steady net has none (DDP refuses a
        # parameter outside the loss)
        self.alpha = nn.Parameter(torch.tensor(1.0 / 30.0)) if transient else None

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # type: ignore[operator]
        if self.alpha is not None:
            with torch.no_grad():
                self.alpha.fill_(1.0 / 30.0)

    def forward(self, pos: Tensor, feats: Tensor, node_type: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        g = num_graphs(batch)
        x, _ = normalised_positions(pos, batch, g)
        node = feats[:, : self.n_node]
        cond_in = feats[:, self.n_node: self.n_node + self.n_cond]
        if self.n_cond == 0:
            cond_in = torch.zeros(feats.shape[0], 1, dtype=feats.dtype, device=feats.device)
        # the type MLP on the 4 one-hot rows, then looked up per node: the same values as on N one-hot rows
        type_table = self.enc_type(torch.eye(self.n_types, dtype=feats.dtype, device=feats.device))
        cond = type_table.index_select(0, node_type) + self.enc_cond(cond_in)
        v = self.enc_fuse(torch.cat([self.enc_node(torch.cat([node, x], dim=1)), cond], dim=1))
        e = self.enc_edge(edge_geometry(x, edge_index))
        extra = torch.cat([fourier_features(x, self.n_freq), cond], dim=1)
        slot: Optional[Tensor] = None
        mask: Optional[Tensor] = None
        if g > 1:  # the padded layout is the same in every block: build it once
            slot, mask = dense_index(batch, g)
        flux_idx = flux_index(edge_index, v.shape[0])  # graph-only quantities: once per forward, not per block
        inv_deg = flux_mean_weights(flux_idx, v.shape[0], v.shape[1], v.dtype)
        for blk in self.blocks:
            v, e = blk(v, e, extra, edge_index, batch, flux_idx, inv_deg, slot, mask)
        out = self.dec(torch.cat([v, cond], dim=1))
        alpha = self.alpha
        if alpha is not None:  # transient
            return feats[:, : self.n_out] + F.silu(alpha) * out
        return out

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

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.physics.graph_ops import (
    MLP,
    EdgeMLP,
    edge_geometry,
    fourier_features,
    normalised_positions,
    num_graphs,
    scatter_mean,
    to_dense,
)
from shared.norms import RMSNorm
from shared.projection_attention import ProjectionAttention
from shared.softmax_attention import SoftmaxAttention

N_NODE_TYPES = 4


def feature_layout(n_in: int, n_out: int, n_globals: int, transient: bool) -> Tuple[int, int, int, int]:
    """Column ranges of ``feats``: returns (n_state, n_in, n_globals, n_time)."""
    return (n_out if transient else 0), n_in, n_globals, (1 if transient else 0)


@dataclass
class PhysGTOConfig:
    """PhysGTO hyperparameters; official task1 Darcy: d_model 64, 4 blocks, 4 heads, 64 slots, hidden 256."""

    n_in: int = 3
    n_out: int = 1
    n_globals: int = 1
    transient: bool = False
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_slots: int = 32
    d_hidden: int = 128
    n_freq: int = 7
    dropout: float = 0.0
    attention: str = "projection"


class FluxMessagePassing(nn.Module):
    """One message m_e = f_edge([h_s, h_r, E_e]) per undirected edge; agg_i = [mean_{e: s(e)=i} m_e[:C/2],
    mean_{e: r(e)=i} m_e[C/2:]]; v_i = f_node([h_i, agg_i]). Returns (ΔV (N, C), ΔE (E, C))."""

    def __init__(self, d_node_in: int, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.half = d_model // 2
        self.f_edge = EdgeMLP(d_node_in, d_model, d_hidden, d_model, act="gelu")
        self.f_node = MLP(d_node_in + d_model, d_hidden, d_model, act="gelu")

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor) -> Tuple[Tensor, Tensor]:
        s, r = edge_index[0], edge_index[1]
        m = self.f_edge(h, e, edge_index)
        n = h.shape[0]
        agg = torch.cat([scatter_mean(m[:, : self.half], s, n), scatter_mean(m[:, self.half:], r, n)], dim=1)
        return self.f_node(torch.cat([h, agg], dim=1)), m


class PhysGTOBlock(nn.Module):
    """Message passing -> pre-norm global attention over each graph's nodes -> pre-norm feed-forward."""

    def __init__(self, d_node_in: int, cfg: PhysGTOConfig) -> None:
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
                n_graphs: int) -> Tuple[Tensor, Tensor]:
        dv, de = self.mp(torch.cat([v, extra], dim=1), e, edge_index)
        v, e = v + dv, e + de
        dense, mask, slot = to_dense(self.norm_attn(v), batch, n_graphs)
        v = v + self.attn(dense, mask)[batch, slot]
        v = v + self.ffn(self.norm_ffn(v))
        return v, e


class PhysGTO(nn.Module):
    """PhysGTO operator ``forward(pos, feats, node_type, edge_index, batch) -> (N, n_out)`` (see module docstring)."""

    def __init__(self, n_in: int = 3, n_out: int = 1, n_globals: int = 1, transient: bool = False,
                 d_model: int = 64, n_layers: int = 4, n_heads: int = 4, n_slots: int = 32, d_hidden: int = 128,
                 n_freq: int = 7, dropout: float = 0.0, attention: str = "projection") -> None:
        super().__init__()
        cfg = PhysGTOConfig(n_in, n_out, n_globals, transient, d_model, n_layers, n_heads, n_slots, d_hidden,
                            n_freq, dropout, attention)
        self.cfg = cfg
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
        self.alpha = nn.Parameter(torch.tensor(1.0 / 30.0))  # residual step scale, SiLU(α) (PhysGTO task2)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # type: ignore[operator]
        with torch.no_grad():
            self.alpha.fill_(1.0 / 30.0)

    def forward(self, pos: Tensor, feats: Tensor, node_type: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        g = num_graphs(batch)
        x, _ = normalised_positions(pos, batch, g)
        node = feats[:, : self.n_node]
        cond_in = feats[:, self.n_node: self.n_node + self.n_cond]
        if self.n_cond == 0:
            cond_in = torch.zeros(feats.shape[0], 1, dtype=feats.dtype, device=feats.device)
        cond = self.enc_type(F.one_hot(node_type, self.n_types).to(feats.dtype)) + self.enc_cond(cond_in)
        v = self.enc_fuse(torch.cat([self.enc_node(torch.cat([node, x], dim=1)), cond], dim=1))
        e = self.enc_edge(edge_geometry(x, edge_index))
        extra = torch.cat([fourier_features(x, self.n_freq), cond], dim=1)
        for blk in self.blocks:
            v, e = blk(v, e, extra, edge_index, batch, g)
        out = self.dec(torch.cat([v, cond], dim=1))
        if self.transient:
            return feats[:, : self.n_out] + F.silu(self.alpha) * out
        return out

"""Transolver-style baseline (Wu et al., ICML 2024): Physics-Attention over learned slices, no message passing.

Same interface as :class:`linmix.apps.physics.model.PhysGTO`. Per head (C_h = C / H, M slices):
w = softmax_M(Linear(x_mid) / τ) (N, H, M); z_j = Σ_i w_ij fx_i / (Σ_i w_ij + 1e-5) per graph (padded nodes get
w = 0, so mixed-size batches are exact); z' = softmax attention among the M slices; x'_i = Σ_j w_ij z'_j.
Block: x + Attn(LN(x)), x + MLP(LN(x)); input MLP([scaled pos, feats, one-hot type]) plus a learnable placeholder;
output LN + Linear. Transient: u_{t+1} = u_t + Δ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.graph_ops import MLP, normalised_positions, num_graphs, to_dense
from linmix.apps.physics.model import N_NODE_TYPES, feature_layout


class PhysicsAttention(nn.Module):
    """Slice attention ``forward(x (G, L, C), mask (G, L)) -> (G, L, C)``; cost O(L·M·C + M²·C)."""

    def __init__(self, d_model: int, n_heads: int = 4, n_slots: int = 32) -> None:
        super().__init__()
        self.h, self.dh, self.m = n_heads, d_model // n_heads, n_slots
        self.in_x = nn.Linear(d_model, d_model)
        self.in_fx = nn.Linear(d_model, d_model)
        self.slice = nn.Linear(self.dh, n_slots)
        nn.init.orthogonal_(self.slice.weight)
        self.temperature = nn.Parameter(torch.full((1, n_heads, 1, 1), 0.5))
        self.qkv = nn.Linear(self.dh, 3 * self.dh, bias=False)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        g, n, c = x.shape
        xm = self.in_x(x).reshape(g, n, self.h, self.dh).transpose(1, 2)  # (G, H, L, dh)
        fx = self.in_fx(x).reshape(g, n, self.h, self.dh).transpose(1, 2)
        w = torch.softmax(self.slice(xm) / self.temperature.clamp(0.1, 5.0), dim=-1)  # (G, H, L, M)
        w = w * mask[:, None, :, None].to(w.dtype)
        z = torch.einsum("ghlm,ghld->ghmd", w, fx) / (w.sum(2).unsqueeze(-1) + 1e-5)
        q, k, v = self.qkv(z).chunk(3, dim=-1)
        z = F.scaled_dot_product_attention(q, k, v)
        y = torch.einsum("ghlm,ghmd->ghld", w, z).transpose(1, 2).reshape(g, n, c)
        return self.out(y)


class TransolverBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_slots: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = PhysicsAttention(d_model, n_heads, n_slots)
        self.mlp = MLP(d_model, 2 * d_model, d_model, layer_norm=False, act="gelu")

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class TransolverNet(nn.Module):
    """Transolver-style operator; ``cfg.d_model`` width, ``cfg.n_layers`` blocks, ``cfg.n_heads`` heads,
    ``cfg.n_slots`` slices, ``cfg.d_hidden`` input-MLP width."""

    def __init__(self, cfg: PhysicsConfig = PhysicsConfig(arch="transolver")) -> None:  # noqa: B008 (read-only default)
        super().__init__()
        self.cfg = cfg
        n_in, n_out, n_globals, transient = cfg.n_in, cfg.n_out, cfg.n_globals, cfg.transient
        d_model, n_layers, n_heads, n_slots, d_hidden = cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_slots, cfg.d_hidden
        n_state, _, _, n_time = feature_layout(n_in, n_out, n_globals, transient)
        self.n_feat = n_state + n_in + n_globals + n_time
        self.n_out, self.transient = n_out, transient
        self.n_types = N_NODE_TYPES
        self.pre = MLP(2 + self.n_feat + N_NODE_TYPES, d_hidden, d_model, layer_norm=False, act="gelu")
        self.placeholder = nn.Parameter(torch.randn(d_model) / d_model)
        self.blocks = nn.ModuleList([TransolverBlock(d_model, n_heads, n_slots) for _ in range(n_layers)])
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, n_out))

    def forward(self, pos: Tensor, feats: Tensor, node_type: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        g = num_graphs(batch)
        x, _ = normalised_positions(pos, batch, g)
        onehot = F.one_hot(node_type, self.n_types).to(feats.dtype)
        h = self.pre(torch.cat([x, feats[:, : self.n_feat], onehot], dim=1)) + self.placeholder
        dense, mask, slot = to_dense(h, batch, g)
        for blk in self.blocks:
            dense = blk(dense, mask)
        out = self.head(dense)[batch, slot]
        if self.transient:
            return feats[:, : self.n_out] + out
        return out

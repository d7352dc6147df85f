"""MeshGraphNets baseline (Pfaff et al., ICLR 2021): encode-process-decode with message passing only.

Same interface as :class:`linmix.apps.physics.model.PhysGTO`: ``forward(pos (N, 2), feats (N, F), node_type (N,),
edge_index (2, E), batch (N,)) -> (N, n_out)``. Mesh edges are used two-way (the stored undirected edges plus their
reversal); edge features [x_s - x_r, |x_s - x_r|] on per-graph scaled positions; node features [feats, one-hot type];
processor blocks e' = MLP_e([v_s, v_r, e]), v' = MLP_v([v, Σ_{j→i} e']) with residuals on both (sum aggregation);
decoder without LayerNorm. Transient: u_{t+1} = u_t + Δ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.graph_ops import MLP, EdgeMLP, normalised_positions, num_graphs, scatter_sum
from linmix.apps.physics.model import N_NODE_TYPES, feature_layout


class MGNBlock(nn.Module):
    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.f_edge = EdgeMLP(d_model, d_model, d_hidden, d_model, n_hidden=2)
        self.f_node = MLP(2 * d_model, d_hidden, d_model, n_hidden=2)

    def forward(self, v: Tensor, e: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        r = edge_index[1]
        m = self.f_edge(v, e, edge_index)
        dv = self.f_node(torch.cat([v, scatter_sum(m, r, v.shape[0])], dim=1))
        return v + dv, e + m


class MeshGraphNet(nn.Module):
    """MeshGraphNets operator (message passing only); ``cfg.d_model`` latent width, ``cfg.n_layers`` processor blocks,
    ``cfg.d_hidden`` MLP width (the attention fields of ``cfg`` are not read)."""

    def __init__(self, cfg: PhysicsConfig = PhysicsConfig(arch="mgn", n_layers=6)) -> None:  # noqa: B008 (read-only default)
        super().__init__()
        self.cfg = cfg
        n_in, n_out, n_globals, transient = cfg.n_in, cfg.n_out, cfg.n_globals, cfg.transient
        d_model, n_layers, d_hidden = cfg.d_model, cfg.n_layers, cfg.d_hidden
        n_state, _, _, n_time = feature_layout(n_in, n_out, n_globals, transient)
        self.n_feat = n_state + n_in + n_globals + n_time
        self.n_out, self.transient = n_out, transient
        self.n_types = N_NODE_TYPES
        self.enc_node = MLP(self.n_feat + N_NODE_TYPES, d_hidden, d_model, n_hidden=2)
        self.enc_edge = MLP(3, d_hidden, d_model, n_hidden=2)
        self.blocks = nn.ModuleList([MGNBlock(d_model, d_hidden) for _ in range(n_layers)])
        self.dec = MLP(d_model, d_hidden, n_out, n_hidden=2, layer_norm=False)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()

    def forward(self, pos: Tensor, feats: Tensor, node_type: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        x, _ = normalised_positions(pos, batch, num_graphs(batch))
        ei = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        d = x[ei[0]] - x[ei[1]]
        e = self.enc_edge(torch.cat([d, torch.linalg.vector_norm(d, dim=1, keepdim=True)], dim=1))
        onehot = F.one_hot(node_type, self.n_types).to(feats.dtype)
        v = self.enc_node(torch.cat([feats[:, : self.n_feat], onehot], dim=1))
        for blk in self.blocks:
            v, e = blk(v, e, ei)
        out = self.dec(v)
        if self.transient:
            return feats[:, : self.n_out] + out
        return out

"""Relative L2 error per graph and channel, the PhysGTO / Transolver metric, on de-normalised fields.

rel_L2[g, c] = ‖ŷ_gc − y_gc‖₂ / (‖y_gc‖₂ + eps), norms over the nodes of graph g (flat PyG layout, ``batch`` (N,)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from linmix.apps.physics.graph_ops import scatter_sum


def rel_l2(pred: Tensor, target: Tensor, batch: Tensor, n_graphs: int, eps: float = 1e-8) -> Tensor:
    """pred, target (N, C) -> (G, C) relative L2 errors."""
    if pred.shape != target.shape:
        raise ValueError(f"rel_l2: prediction {list(pred.shape)} and target {list(target.shape)} differ")
    num = scatter_sum((pred - target) ** 2, batch, n_graphs).sqrt()
    den = scatter_sum(target ** 2, batch, n_graphs).sqrt()
    return num / (den + eps)


def rel_l2_loss(pred: Tensor, target: Tensor, batch: Tensor, n_graphs: int) -> Tensor:
    """Mean over graphs and channels of :func:`rel_l2` (scalar)."""
    return rel_l2(pred, target, batch, n_graphs).mean()


def node_mask(node_type: Tensor, types: tuple) -> Tensor:
    """(N,) bool: node type in ``types``."""
    m = torch.zeros_like(node_type, dtype=torch.bool)
    for t in types:
        m |= node_type == t
    return m

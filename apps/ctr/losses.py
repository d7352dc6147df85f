"""Tri-BCE (FCN, arXiv:2407.13349), computed as the official code's ``DCNv3.add_loss`` does.

    L   = BCE(sigmoid(z), y)        fused output
    L_E = BCE(sigmoid(z_E), y)      ECN branch
    L_L = BCE(sigmoid(z_L), y)      LCN branch
    w_E = max(0, L_E - L),  w_L = max(0, L_L - L)
    loss = L + w_E * L_E + w_L * L_L

The official weights are *not* detached (they stay in the autograd graph; while both are positive the
gradient is (1 - L_E - L_L) dL + (2 L_E - L) dL_E + (2 L_L - L) dL_L). ``mode="detach"`` stops the gradient
through the weights (what some third-party ports do); ``mode="bce"`` is plain BCE on the fused output.
BCE is ``F.binary_cross_entropy`` on probabilities, as in the official code (it clamps log at -100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

TriBCEMode = Literal["official", "detach", "bce"]


def tri_bce(z: Tensor, z_e: Tensor, z_l: Tensor, y: Tensor, mode: TriBCEMode = "official") -> Tensor:
    """Logits z, z_e, z_l (B,) and labels y (B,) in {0, 1} -> scalar loss."""
    y = y.to(z.dtype)
    loss = F.binary_cross_entropy(torch.sigmoid(z), y)
    if mode == "bce":
        return loss
    if mode not in ("official", "detach"):
        raise ValueError(f"unknown Tri-BCE mode {mode!r} (official|detach|bce)")
    l_e = F.binary_cross_entropy(torch.sigmoid(z_e), y)
    l_l = F.binary_cross_entropy(torch.sigmoid(z_l), y)
    w_e = l_e - loss
    w_l = l_l - loss
    w_e = torch.where(w_e > 0, w_e, torch.zeros_like(w_e))
    w_l = torch.where(w_l > 0, w_l, torch.zeros_like(w_l))
    if mode == "detach":
        w_e, w_l = w_e.detach(), w_l.detach()
    return loss + w_e * l_e + w_l * l_l

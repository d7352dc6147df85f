"""RMS normalisations used by the mixers and blocks."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["RMSNorm", "RMSNormGated", "check_input"]


def check_input(x: Tensor, d_model: int, name: str, mask: Optional[Tensor] = None) -> None:
    """Raise a ValueError naming the expected shape unless ``x`` is a floating (B, L, D=d_model) tensor and
    ``mask``, when given, is (B, L)."""
    if x.dim() != 3 or x.size(-1) != d_model:
        raise ValueError(f"{name}: expected input of shape (B, L, D={d_model}), got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    if mask is not None and list(mask.shape) != [x.size(0), x.size(1)]:
        raise ValueError(f"{name}: mask must be (B, L) = {[x.size(0), x.size(1)]}, got {list(mask.shape)}")


class RMSNorm(nn.Module):
    """Root-mean-square LayerNorm without centring (Zhang & Sennrich 2019). ``(..., D) -> (..., D)``."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


class RMSNormGated(nn.Module):
    """Mamba2's gated RMSNorm, per group: ``rmsnorm_group(y * silu(z)) * weight`` (norm_before_gate=False).

    Normalising per group of ``group_size`` channels (not over all of D) matches mamba-ssm's kernel path, so weights
    transfer (transformers 4.x's torch path normalises over the whole dim and disagrees when n_groups > 1; 5.x normalises
    per group).
    """

    def __init__(self, d_model: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if d_model % group_size != 0:
            raise ValueError(f"RMSNormGated: d_model={d_model} is not a multiple of group_size={group_size}")
        self.eps = eps
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(d_model))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        h = y.float() * torch.nn.functional.silu(z.float())
        shape = h.shape
        h = h.reshape(shape[:-1] + (shape[-1] // self.group_size, self.group_size))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return h.reshape(shape).to(y.dtype) * self.weight

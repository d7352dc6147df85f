"""Softmax multi-head attention via ``scaled_dot_product_attention``: the quadratic O(L^2) baseline."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.norms import check_input

__all__ = ["SoftmaxAttention"]


class SoftmaxAttention(nn.Module):
    """``forward(x (B, L, D), mask (B, L) bool, True = token) -> (B, L, D)``; ``causal`` masks future tokens."""

    def __init__(self, d_model: int, n_heads: int = 4, causal: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"SoftmaxAttention: d_model={d_model} is not a multiple of n_heads={n_heads}")
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.out.reset_parameters()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "SoftmaxAttention", mask)
        b, l, _ = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(b, l, 3, h, self.d_model // h).permute(2, 0, 3, 1, 4).unbind(0)
        if mask is None or bool(mask.all()):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        elif self.causal:
            allowed = mask[:, None, None, :] & self._causal_mask(l, x).unsqueeze(0).unsqueeze(0)
            allowed = allowed | ~mask[:, None, :, None]  # padded queries may see everything (output zeroed below)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:
            # a key-padding mask broadcast as (B, 1, 1, L): no L x L matrix is built
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        y = self.drop(self.out(y.transpose(1, 2).reshape(b, l, self.d_model)))
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)
        return y

    def _causal_mask(self, l: int, x: Tensor) -> Tensor:
        i = torch.arange(l, device=x.device)
        return i[:, None] >= i[None, :]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}"

"""Projection attention: N tokens -> M learned slots -> mixing among slots -> back to the N tokens. Cost O(N * M).

The Transolver (Wu et al., ICML 2024) / PhysGTO (Liu et al., arXiv:2512.10227) / Agent Attention (Han et al.,
arXiv:2312.08874) family, in PhysGTO's form:
1. project: M learned queries per head attend over the N tokens, softmax **over N** (padding masked, so batches of
   meshes of different sizes are exact; PhysGTO's released code leaves its ghost padding nodes in this softmax):
   ``T = softmax_N(Q K^T / sqrt(d)) V`` (H, M, d);
2. mix: softmax self-attention among the M slot tokens;
3. broadcast: every token reads back from the slots, softmax over M: ``out = softmax_M(q K_T^T / sqrt(d)) V_T``.
Permutation-equivariant in the N tokens (no positional information is used).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.norms import check_input

__all__ = ["ProjectionAttention"]


class ProjectionAttention(nn.Module):
    """``forward(x (B, N, D), mask (B, N) bool, True = real token) -> (B, N, D)``.

    Args:
        d_model: channels D.
        n_heads: heads H.
        n_slots: learned slots M per head.
        dropout: dropout on the output projection.
    """

    def __init__(self, d_model: int, n_heads: int = 4, n_slots: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"ProjectionAttention: d_model={d_model} is not a multiple of n_heads={n_heads}")
        self.d_model, self.n_heads, self.n_slots = d_model, n_heads, n_slots
        self.head_dim = d_model // n_heads
        self.slots = nn.Parameter(torch.empty(n_heads, n_slots, self.head_dim))
        self.kv_in = nn.Linear(d_model, 2 * d_model, bias=False)  # keys/values of the tokens for projection
        self.qkv_slot = nn.Linear(self.head_dim, 3 * self.head_dim, bias=False)  # slot self-attention
        self.kv_slot = nn.Linear(self.head_dim, 2 * self.head_dim, bias=False)  # slots as keys/values for broadcast
        self.q_out = nn.Linear(d_model, d_model, bias=False)  # token queries for broadcast
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.slots, std=1.0 / math.sqrt(self.head_dim))
        for m in (self.kv_in, self.qkv_slot, self.kv_slot, self.q_out, self.out):
            m.reset_parameters()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "ProjectionAttention", mask)
        b, n, _ = x.shape
        h, d = self.n_heads, self.head_dim
        k, v = self.kv_in(x).reshape(b, n, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, d)
        logits = torch.einsum("hmd,bhnd->bhmn", self.slots, k) / math.sqrt(d)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        t = torch.softmax(logits, dim=-1) @ v  # (B, H, M, d): each slot a weighted mean of the tokens
        qs, ks, vs = self.qkv_slot(t).chunk(3, dim=-1)
        t = t + F.scaled_dot_product_attention(qs, ks, vs)
        kt, vt = self.kv_slot(t).chunk(2, dim=-1)
        q = self.q_out(x).reshape(b, n, h, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, kt, vt)  # (B, H, N, d), softmax over the M slots
        y = self.drop(self.out(y.transpose(1, 2).reshape(b, n, self.d_model)))
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, n_slots={self.n_slots}"

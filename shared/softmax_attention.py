"""Softmax multi-head attention via ``scaled_dot_product_attention``: the quadratic O(L^2) baseline.

Causal attention also runs incrementally from a key/value cache (``init_state`` / ``forward_state`` / ``step``, the
contract of the Mamba mixers, so :class:`linmix.shared.blocks.MixerStack` and the hybrid carry it as a state). The cache
grows by concatenation: no maximum length to choose, and every update returns new tensors (a saved state stays valid
after a step from it). Per token a step costs O(T) for T cached tokens (the attention itself and the copy of the cache),
and the cache holds ``2 * T * d_model`` numbers per sequence.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.norms import check_input

__all__ = ["SoftmaxAttention"]


class SoftmaxAttention(nn.Module):
    """``forward(x (B, L, D), mask (B, L) bool, True = token) -> (B, L, D)``; ``causal`` masks future tokens.

    Causal attention also runs from a key/value cache ``(k, v)``, each ``(B, H, T, D / H)``: ``init_state`` (empty),
    ``forward_state`` (continue with L tokens), ``step`` (one token)."""

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

    def init_state(self, batch: int) -> Tuple[Tensor, Tensor]:
        """Empty key/value cache ``(k, v)``, each ``(B, H, 0, D / H)``; causal attention only."""
        if not self.causal:
            raise ValueError("SoftmaxAttention: a key/value cache needs causal=True")
        w = self.qkv.weight
        return (w.new_zeros(batch, self.n_heads, 0, self.d_model // self.n_heads),
                w.new_zeros(batch, self.n_heads, 0, self.d_model // self.n_heads))

    def forward_state(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Continue from a cache of T tokens: ``x (B, L, D) -> (y (B, L, D), k, v (B, H, T + L, D / H))``; equals the
        full causal forward over the whole sequence. No padding inside ``x`` (as the Mamba mixers' ``forward_state``)."""
        check_input(x, self.d_model, "SoftmaxAttention")
        if not self.causal:
            raise ValueError("SoftmaxAttention: forward_state needs causal=True")
        b, l, _ = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(b, l, 3, h, self.d_model // h).permute(2, 0, 3, 1, 4).unbind(0)
        k, v = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
        t = k_cache.size(2)
        if t == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif l == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new token sees the whole cache
        else:  # query i sits at position t + i: it sees keys 0 .. t + i (is_causal would align it to key i)
            pos = torch.arange(t + l, device=x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=pos[None, :] <= pos[t:, None])
        return self.drop(self.out(y.transpose(1, 2).reshape(b, l, self.d_model))), k, v

    def step(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One token: ``x (B, D) -> (y (B, D), k, v (B, H, T + 1, D / H))``."""
        if x.dim() != 2 or x.size(-1) != self.d_model:
            raise ValueError(f"SoftmaxAttention.step: expected (B, D={self.d_model}), got {list(x.shape)}")
        y, k, v = self.forward_state(x.unsqueeze(1), k_cache, v_cache)
        return y.squeeze(1), k, v

    def _causal_mask(self, l: int, x: Tensor) -> Tensor:
        i = torch.arange(l, device=x.device)
        return i[:, None] >= i[None, :]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}"

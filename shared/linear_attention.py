"""Linear attention: normalised, with a positive feature map; non-causal or causal-chunked with an optional decay.

Katharopoulos et al., "Transformers are RNNs" (ICML 2020): ``y_i = phi(q_i)^T S / phi(q_i)^T z`` with
``phi = elu + 1``, ``S = sum_j phi(k_j) v_j^T``, ``z = sum_j phi(k_j)``. The causal form is computed chunk-wise as in
Lightning Attention-2 (Qin et al., arXiv:2401.04658): quadratic inside each chunk of Q tokens, a recurrent (dk x dv)
state between chunks, so cost is O(L * Q * D + L * D^2 / H). ``decay=True`` adds a learned per-head decay
``gamma_h in (0, 1)`` (RetNet / Lightning Attention): token j contributes to i >= j with weight ``gamma^(i - j)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.norms import check_input
from linmix.shared.ssd import is_exporting

__all__ = ["LinearAttention", "linear_attention_ref", "feature_map"]


def feature_map(x: Tensor) -> Tensor:
    """Positive feature map ``elu(x) + 1``."""
    return F.elu(x) + 1.0


def linear_attention_ref(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, log_decay: Optional[Tensor] = None, eps: float = 1e-6
) -> Tensor:
    """Explicit O(L^2) form (oracle). ``q, k (B, H, L, dk)`` already feature-mapped, ``v (B, H, L, dv)``,
    ``log_decay (H,)`` (log gamma, <= 0)."""
    scores = q @ k.transpose(-1, -2)  # (B, H, L, L)
    l = q.size(2)
    if causal:
        i = torch.arange(l, device=q.device)
        rel = (i[:, None] - i[None, :]).to(q.dtype)
        w = (rel >= 0).to(q.dtype)
        if log_decay is not None:
            w = w * torch.exp(log_decay[:, None, None] * rel.clamp(min=0))
        scores = scores * w
    return (scores @ v) / (scores.sum(-1, keepdim=True) + eps)


def _pad_rows(t: Tensor, total: int) -> Tensor:
    """(B, H, L, D) -> (B, H, total, D) with zero rows after L, as a gather (no size relation to prove while tracing)."""
    l = t.size(2)
    pos = torch.arange(total, device=t.device)
    src = torch.where(pos < l, pos, torch.full_like(pos, l))
    return torch.cat([t, torch.zeros_like(t.narrow(2, 0, 1))], dim=2).index_select(2, src)


class LinearAttention(nn.Module):
    """Multi-head linear attention. ``forward(x (B, L, D), mask (B, L) bool, True = token) -> (B, L, D)``.

    Args:
        d_model: channels D (split into ``n_heads`` heads).
        n_heads: heads H.
        causal: causal chunked form (else the non-causal global form).
        decay: learned per-head decay gate (causal only).
        chunk_size: chunk length Q of the causal form.
        dropout: dropout on the output projection.
    """

    def __init__(
        self, d_model: int, n_heads: int = 4, causal: bool = False, decay: bool = False, chunk_size: int = 64,
        dropout: float = 0.0, eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"LinearAttention: d_model={d_model} is not a multiple of n_heads={n_heads}")
        if decay and not causal:
            raise ValueError("LinearAttention: decay=True needs causal=True (a decay gate orders the tokens)")
        self.d_model, self.n_heads, self.causal, self.decay = d_model, n_heads, causal, decay
        self.chunk_size, self.eps = chunk_size, eps
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.decay_logit = nn.Parameter(torch.zeros(n_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.out.reset_parameters()
        # RetNet's gamma_h = 1 - 2^(-5 - h * 4 / H): from short (0.97) to long (0.999) memories
        gamma = 1.0 - torch.pow(2.0, -5.0 - torch.arange(self.n_heads, dtype=torch.float32) * 4.0 / self.n_heads)
        with torch.no_grad():
            self.decay_logit.copy_(torch.log(gamma / (1.0 - gamma)))
        self.decay_logit._no_weight_decay = True  # type: ignore[attr-defined]

    def log_decay(self) -> Tensor:
        """``log gamma_h`` per head, (H,)."""
        return F.logsigmoid(self.decay_logit)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "LinearAttention", mask)
        b, l, _ = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(b, l, 3, h, self.d_model // h).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = feature_map(q), feature_map(k)  # (B, H, L, dk)
        m: Optional[Tensor] = None
        if mask is not None:
            m = mask[:, None, :, None].to(x.dtype)
            k = k * m
            v = v * m
        if self.causal:
            y = self._causal(q, k, v)
        else:
            kv = k.transpose(-1, -2) @ v  # (B, H, dk, dv)
            z = k.sum(2)  # (B, H, dk)
            y = (q @ kv) / ((q * z.unsqueeze(2)).sum(-1, keepdim=True) + self.eps)
        y = self.drop(self.out(y.transpose(1, 2).reshape(b, l, self.d_model)))
        if m is not None:
            y = y * m.squeeze(1)
        return y

    def _causal(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, l, dk = q.shape
        dv = v.size(-1)
        qn = self.chunk_size
        exporting = False
        if not torch.jit.is_scripting():
            exporting = is_exporting()
        if exporting:  # no branch on L: one extra chunk always, padded by a gather (see linmix.shared.ssd.ssd_padded)
            c = (l + qn - 1) // qn + 1
            q, k, v = _pad_rows(q, c * qn), _pad_rows(k, c * qn), _pad_rows(v, c * qn)
        else:
            pad = (-l) % qn
            if pad > 0:
                q, k, v = F.pad(q, (0, 0, 0, pad)), F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
            c = (l + pad) // qn
        qc, kc, vc = q.reshape(b, h, c, qn, dk), k.reshape(b, h, c, qn, dk), v.reshape(b, h, c, qn, dv)
        i = torch.arange(qn, device=q.device)
        rel = (i[:, None] - i[None, :]).to(q.dtype)
        w = (rel >= 0).to(q.dtype).expand(h, qn, qn)
        if self.decay:
            lg = self.log_decay().to(q.dtype)  # (H,)
            w = w * torch.exp(lg[:, None, None] * rel.clamp(min=0))
            q_in = torch.exp(lg[:, None] * (i + 1).to(q.dtype))  # decay of the incoming state at position i
            k_out = torch.exp(lg[:, None] * (qn - 1 - i).to(q.dtype))  # decay of token j to the chunk end
            chunk_decay = torch.exp(lg * qn)  # (H,)
        else:
            q_in = torch.ones(h, qn, dtype=q.dtype, device=q.device)
            k_out = q_in
            chunk_decay = torch.ones(h, dtype=q.dtype, device=q.device)
        scores = (qc @ kc.transpose(-1, -2)) * w[None, :, None]  # (B, H, C, Q, Q), all chunks at once
        num = scores @ vc
        den = scores.sum(-1)
        kd = kc * k_out[None, :, None, :, None]
        kv_chunk = kd.transpose(-1, -2) @ vc  # (B, H, C, dk, dv)
        z_chunk = kd.sum(3)  # (B, H, C, dk)
        qd = qc * q_in[None, :, None, :, None]
        if exporting:  # the chunk recurrence loop-free: state entering chunk i = sum_{j < i} decay^(i - 1 - j) kv_j
            ci = torch.arange(c, device=q.device)
            gap = (ci[:, None] - ci[None, :] - 1).to(q.dtype)  # (C, C)
            log_cd = torch.log(chunk_decay)[:, None, None]  # (H, 1, 1)
            dm = torch.where(ci[:, None] > ci[None, :], torch.exp(log_cd * gap.clamp(min=0)), torch.zeros_like(gap))
            s_in = (dm.unsqueeze(0) @ kv_chunk.reshape(b, h, c, dk * dv)).reshape(b, h, c, dk, dv)
            z_in = dm.unsqueeze(0) @ z_chunk  # (B, H, C, dk)
            num = num + qd @ s_in
            den = den + (qd * z_in.unsqueeze(3)).sum(-1)
            y = (num / (den.unsqueeze(-1) + self.eps)).reshape(b, h, c * qn, dv)
            return y.index_select(2, torch.arange(l, device=q.device))
        s = q.new_zeros(b, h, dk, dv)
        zs = q.new_zeros(b, h, dk)
        nums = []
        dens = []
        cd = chunk_decay[None, :, None]
        for ci in range(c):  # recurrent state between chunks: O(C) small steps
            nums.append(qd[:, :, ci] @ s)
            dens.append((qd[:, :, ci] * zs.unsqueeze(2)).sum(-1))
            s = s * cd.unsqueeze(-1) + kv_chunk[:, :, ci]
            zs = zs * cd + z_chunk[:, :, ci]
        num = num + torch.stack(nums, dim=2)
        den = den + torch.stack(dens, dim=2)
        y = num / (den.unsqueeze(-1) + self.eps)
        return y.reshape(b, h, c * qn, dv)[:, :, :l]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}, decay={self.decay}"

"""One Self-Mask cross layer of FCN as a single autograd function, beside its plain-op reference.

Per layer (shapes: N rows = batch x heads, D the width, D/2 the halved projection)::

    h  = x W^T                     (N, D/2)
    m  = ReLU(LN(h))               (N, D/2)   ReLU(h) without the LayerNorm
    h' = [h || h * m] + b          (N, D)
    y  = x * h' + x                ECN;  LCN: y = x0 * h' + x
    y  = dropout(y)

:func:`cross_layer_ref` is that chain in plain autograd ops. :class:`CrossLayerFn` computes the same values with
fewer passes over memory (``addcmul``, writes into place, no concatenation, no Bernoulli sampling) and a
hand-written backward that keeps ``h``, ``m``, ``h'``, the LayerNorm statistics and the dropout multipliers (what
autograd keeps too; under mixed precision also x's bfloat16 copy) but allocates fewer temporaries. The two agree to
rounding in outputs and in every gradient (tests, float64).

Mixed precision (``mm_dtype=torch.bfloat16``, what autocast asks for): the three matmuls (``x W^T`` forward; ``gh^T x``
and ``gh W`` backward) take bfloat16 operands and give bfloat16 results (as autocast's matmuls do), read back as
float32; everything else (LayerNorm, mask, products, gradients, dropout) stays float32. Outputs and gradients agree
with the float32 layer to bfloat16 precision (tests).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CrossLayerFn", "cross_layer_ref", "cross_layer_infer"]


def _hprime(h: Tensor, m: Tensor, b: Tensor) -> Tensor:
    """[h || h * m] + b, written in place into one (N, D) tensor (no concatenation pass)."""
    d2 = h.shape[-1]
    hp = h.new_empty(h.shape[:-1] + (2 * d2,))
    torch.add(h, b[:d2], out=hp[..., :d2])
    torch.addcmul(b[d2:], h, m, out=hp[..., d2:])
    return hp


def cross_layer_ref(x: Tensor, x0: Optional[Tensor], w: Tensor, b: Tensor, ln_w: Optional[Tensor],
                    ln_b: Optional[Tensor], keep: Optional[Tensor], eps: float = 1e-5) -> Tensor:
    """Reference in plain ops. x (N, D), x0 (N, D) for LCN or None for ECN, w (D/2, D), b (D,), ln_w / ln_b
    (D/2,) or None (no LayerNorm), keep (N, D) dropout multipliers (``linmix.shared.dropout.keep_mask``) or None
    (no dropout) -> y (N, D)."""
    h = x @ w.t()
    n = F.layer_norm(h, (h.shape[-1],), ln_w, ln_b, eps) if ln_w is not None else h
    hp = torch.cat([h, h * torch.relu(n)], -1) + b
    y = (x * hp if x0 is None else x0 * hp) + x
    if keep is not None:
        y = y * keep
    return y


def _layer_forward(x: Tensor, x0: Optional[Tensor], w: Tensor, b: Tensor, ln_w: Optional[Tensor],
                   ln_b: Optional[Tensor], eps: float, mm_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, ...]:
    """The layer without dropout -> (y, h, m, h', mean, rstd, x_mm); mean / rstd are None without LayerNorm;
    x_mm is the matmul operand (x itself in float32, else x cast to ``mm_dtype``, which the backward reuses)."""
    if mm_dtype is None:
        x_mm, h = x, x @ w.t()
    else:  # both operands in mm_dtype, the result read back as float32
        x_mm = x.to(mm_dtype)
        h = (x_mm @ w.to(mm_dtype).t()).float()
    if ln_w is not None:
        m, mean, rstd = torch.native_layer_norm(h, [h.shape[-1]], ln_w, ln_b, eps)
    else:
        m, mean, rstd = h.clone(), None, None
    m.clamp_min_(0.0)
    hp = _hprime(h, m, b)
    return torch.addcmul(x, x if x0 is None else x0, hp), h, m, hp, mean, rstd, x_mm


def cross_layer_infer(x: Tensor, x0: Optional[Tensor], w: Tensor, b: Tensor, ln_w: Optional[Tensor],
                      ln_b: Optional[Tensor], eps: float = 1e-5, mm_dtype: Optional[torch.dtype] = None) -> Tensor:
    """The forward without dropout or saved state (eval mode, grad disabled): same arguments as
    :func:`cross_layer_ref`, plus the matmul operand dtype (None = float32)."""
    with torch.autocast(x.device.type, enabled=False):
        return _layer_forward(x, x0, w, b, ln_w, ln_b, eps, mm_dtype)[0]


class CrossLayerFn(torch.autograd.Function):
    """``CrossLayerFn.apply(x, x0, w, b, ln_w, ln_b, keep, eps, mm_dtype)``: :func:`cross_layer_ref` with a
    hand-written backward. ``x0`` is None for ECN; ``ln_w``/``ln_b`` None for no LayerNorm; ``keep`` None for no
    dropout; ``mm_dtype`` None for float32 matmuls, else their operand dtype (mixed precision)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, x0: Optional[Tensor], w: Tensor, b: Tensor, ln_w: Optional[Tensor],
                ln_b: Optional[Tensor], keep: Optional[Tensor], eps: float,
                mm_dtype: Optional[torch.dtype] = None) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are chosen here, op by op
            y, h, m, hp, mean, rstd, x_mm = _layer_forward(x, x0, w, b, ln_w, ln_b, eps, mm_dtype)
            if keep is not None:
                y.mul_(keep)
        ctx.mm_dtype = mm_dtype
        ctx.save_for_backward(x, x0, w, ln_w, ln_b, keep, h, m, hp, mean, rstd, None if mm_dtype is None else x_mm)
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Optional[Tensor], ...]:
        x, x0, w, ln_w, ln_b, keep, h, m, hp, mean, rstd, x_mm = ctx.saved_tensors
        d2 = h.shape[-1]
        g = gy * keep if keep is not None else gy.clone()
        if x0 is None:  # ECN: y = x * (h' + 1)
            ghp = g * x
            gx = torch.addcmul(g, g, hp)
            gx0 = None
        else:  # LCN: y = x0 * h' + x
            ghp = g * x0
            gx0 = g * hp if ctx.needs_input_grad[1] else None
            gx = g
        gb = ghp.sum(0) if ctx.needs_input_grad[3] else None
        g1, g2 = ghp[:, :d2], ghp[:, d2:]
        gh = torch.addcmul(g1, g2, m)
        gn = torch.ops.aten.threshold_backward(g2 * h, m, 0.0)  # ReLU'(n): m > 0
        gln_w = gln_b = None
        if ln_w is not None:
            gh_ln, gln_w, gln_b = torch.ops.aten.native_layer_norm_backward(
                gn, h, [d2], mean, rstd, ln_w, ln_b, [True, ctx.needs_input_grad[4], ctx.needs_input_grad[5]])
            gh.add_(gh_ln)
        else:
            gh.add_(gn)
        mm = ctx.mm_dtype
        if mm is None:
            gw = gh.t() @ x if ctx.needs_input_grad[2] else None
            gx.addmm_(gh, w)
        else:  # one cast of gh serves both matmuls; x's cast is the forward's
            gh_lp = gh.to(mm)
            gw = (gh_lp.t() @ x_mm).float() if ctx.needs_input_grad[2] else None
            gx.add_(gh_lp @ w.to(mm))
        return gx, gx0, gw, gb, gln_w, gln_b, None, None, None

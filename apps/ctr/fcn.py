"""FCN (a.k.a. DCNv3): Linear and Exponential Cross Networks with Self-Mask (arXiv:2407.13349).

Follows the official code (salmon1802/FCN ``src/DCNv3.py``) rather than the paper's notation; per layer i::

    h  = W_i x                      W_i: Linear(D -> D/2, no bias)
    h  = BN_i(h)                    optional, BatchNorm1d over heads
    m  = ReLU(LN_i(h))              Self-Mask (ReLU(h) without layer norm)
    h' = [h || h * m] + b_i         b_i in R^D, init U(0, 1), added after the concatenation
    ECN: x <- x * h' + x            (order doubles per layer: 2^L)
    LCN: x <- x0 * h' + x           (order grows by one per layer: L + 1)
    x  <- dropout(x)

The input x0 (B, H, D), D = F * d, is the field embeddings split into H heads, each field vector split into
two halves, ``[e_1a .. e_Fa || e_1b .. e_Fb]``. Each branch ends in Linear(D, 1) averaged over heads; the fused
logit is the mean of the ECN and LCN logits, and all three are returned for Tri-BCE.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from linmix.apps.ctr.baselines import LogitLinear, autocast_on
from linmix.apps.ctr.cross_layer import CrossLayerFn, cross_layer_infer
from linmix.shared.dropout import FastDropout, keep_mask
from linmix.shared.ssd import is_exporting


class SelfMaskCrossNetwork(nn.Module):
    """A stack of halved cross layers with Self-Mask; ``exponential`` chooses ECN (x * h') or LCN (x0 * h').

    Args:
        dim: D = F * d, the flattened embedding width per head (even).
        n_layers: number of cross layers.
        n_heads: H heads (an extra batch axis; weights shared across heads).
        dropout: dropout after each layer.
        layer_norm: LayerNorm(D/2) inside the mask (else ReLU(h)).
        batch_norm: BatchNorm1d(H) on h before the mask.
        exponential: ECN if True, LCN if False.

    Without BatchNorm, training runs each layer as one :class:`~linmix.apps.ctr.cross_layer.CrossLayerFn` (hand-written
    backward, fewer passes over memory) and eval mode as ``cross_layer_infer``; TorchScript, ``torch.export``,
    BatchNorm and quantised copies use :meth:`forward_ref`, the layer in plain module ops. Under autocast the fast
    path runs the matmuls with autocast's dtype (bfloat16) and the rest in float32; the logit layer is float32.
    Dropout masks come from :func:`linmix.shared.dropout.keep_mask` on every path.
    """

    def __init__(self, dim: int, n_layers: int = 4, n_heads: int = 1, dropout: float = 0.0,
                 layer_norm: bool = True, batch_norm: bool = False, exponential: bool = True) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"cross network width must be even, got {dim}")
        self.exponential = exponential
        self.use_bn = batch_norm
        self.use_ln = layer_norm
        self.w = nn.ModuleList([nn.Linear(dim, dim // 2, bias=False) for _ in range(n_layers)])
        self.bias = nn.Parameter(torch.empty(n_layers, dim))  # per-layer b_i, one row each
        self.ln = nn.ModuleList([nn.LayerNorm(dim // 2) if layer_norm else nn.Identity() for _ in range(n_layers)])
        self.bn = nn.ModuleList([nn.BatchNorm1d(n_heads) if batch_norm else nn.Identity() for _ in range(n_layers)])
        self.drop = nn.ModuleList([FastDropout(dropout) for _ in range(n_layers)])
        self.p = float(dropout)
        self.out = LogitLinear(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.w:
            nn.init.xavier_normal_(lin.weight)
        nn.init.uniform_(self.bias, 0.0, 1.0)
        nn.init.xavier_normal_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x0: Tensor) -> Tensor:
        """x0 (B, H, D) -> branch logit (B,), averaged over heads."""
        if not torch.jit.is_scripting():
            if not (self.use_bn or is_exporting()) and type(self.w[0]) is nn.Linear:  # not a quantised copy
                return self._forward_fast(x0)
        return self.forward_ref(x0)

    @torch.jit.unused
    def _forward_fast(self, x0: Tensor) -> Tensor:
        B, H, D = x0.shape
        mm = torch.get_autocast_dtype(x0.device.type) if autocast_on(x0) else None  # mixed precision: matmuls only
        flat0 = x0.reshape(B * H, D)
        x = flat0
        for i, w in enumerate(self.w):
            ln = self.ln[i]
            ln_w, ln_b, eps = (ln.weight, ln.bias, ln.eps) if self.use_ln else (None, None, 1e-5)
            lcn = None if self.exponential else flat0
            if torch.is_grad_enabled():
                keep = keep_mask([B * H, D], self.p, x.device, x.dtype) if self.training and self.p > 0.0 else None
                x = CrossLayerFn.apply(x, lcn, w.weight, self.bias[i], ln_w, ln_b, keep, eps, mm)
            else:
                x = cross_layer_infer(x, lcn, w.weight, self.bias[i], ln_w, ln_b, eps, mm)
                if self.training:
                    x = self.drop[i](x)
        return self.out(x.view(B, H, D)).mean(-1)

    def forward_ref(self, x0: Tensor) -> Tensor:
        """:meth:`forward` in plain module ops (the reference; also the scripted / exported graph)."""
        x = x0
        for i, (w, ln, bn, drop) in enumerate(zip(self.w, self.ln, self.bn, self.drop)):
            h = bn(w(x))
            m = torch.relu(ln(h))
            hp = torch.cat([h, h * m], -1) + self.bias[i]
            x = (x * hp if self.exponential else x0 * hp) + x
            x = drop(x)
        return self.out(x).mean(-1)


class FCNBody(nn.Module):
    """FCN = ECN + LCN on multi-head, half-split field embeddings; returns (fused, ECN, LCN) logits.

    Args:
        n_fields: F, fields after pooling (scalar + sequence).
        d_model: d, embedding size per field and head (even).
        n_heads: H.
        n_layers: ECN layers ("deep" in the official code).
        n_linear_layers: LCN layers ("shallow").
        dropout: ECN dropout; linear_dropout: LCN dropout.
        layer_norm, batch_norm: as in ``SelfMaskCrossNetwork``.
    """

    def __init__(self, n_fields: int, d_model: int = 16, n_heads: int = 1, n_layers: int = 4,
                 n_linear_layers: int = 4, dropout: float = 0.1, linear_dropout: float = 0.3,
                 layer_norm: bool = True, batch_norm: bool = False) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"FCN needs an even d_model (fields are split in halves), got {d_model}")
        self.n_heads = n_heads
        self.d_model = d_model
        dim = n_fields * d_model
        self.ecn = SelfMaskCrossNetwork(dim, n_layers, n_heads, dropout, layer_norm, batch_norm, True)
        self.lcn = SelfMaskCrossNetwork(dim, n_linear_layers, n_heads, linear_dropout, layer_norm, batch_norm,
                                        False)

    def heads(self, e: Tensor) -> Tensor:
        """e (B, F, H * d) -> x0 (B, H, F * d) as ``[e_1a .. e_Fa || e_1b .. e_Fb]`` per head."""
        B, F = e.shape[0], e.shape[1]
        h = e.view(B, F, self.n_heads, self.d_model).transpose(1, 2)  # (B, H, F, d)
        half = self.d_model // 2
        return torch.cat([h[..., :half].reshape(B, self.n_heads, -1), h[..., half:].reshape(B, self.n_heads, -1)],
                         -1)

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """e (B, F, H * d) -> (fused, ECN, LCN) logits, each (B,)."""
        x0 = self.heads(e)
        z_e = self.ecn(x0)
        z_l = self.lcn(x0)
        return (z_e + z_l) / 2, z_e, z_l

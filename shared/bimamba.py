"""Bidirectional Mamba2 for non-causal sequence mixing.

The forward and the flipped sequence go through one batched SSD scan call (batch 2B), then merge by sum, as in
Hydra (goombalab/hydra) and Bi-Mamba2 (Hprairie/Bi-Mamba2): ``y = SSD_f(x) + flip(SSD_b(flip(x)))``. The input projection (z, xBC) and the output
norm/projection are shared; each direction has its own depthwise conv, dt projection and bias, A and D.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.mamba2 import causal_conv, init_ssm_params, resolve_backend, ssm_dims
from linmix.shared.norms import RMSNormGated, check_input
from linmix.shared.ssd import ssd_scan

__all__ = ["BiMamba2"]


class BiMamba2(nn.Module):
    """Non-causal Mamba2. ``forward(x (B, L, D), mask (B, L) bool, True = token) -> (B, L, D)``.

    Arguments as :class:`linmix.shared.mamba2.Mamba2`. Padding is exact at any position (also left padding), because padded
    positions are zeroed before each direction's convolution and carry dt = 0 through the scan.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        chunk_size: int = 64,
        A_init_range: Tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: str = "auto",
        segment_len: int = 2048,
    ) -> None:
        super().__init__()
        backend = resolve_backend(backend)
        self.d_inner, self.n_heads, self.conv_dim = ssm_dims("BiMamba2", d_model, expand, headdim, ngroups, d_state,
                                                             backend)
        self.d_model, self.d_state, self.d_conv, self.headdim, self.ngroups = d_model, d_state, d_conv, headdim, ngroups
        self.chunk_size, self.segment_len, self.backend = chunk_size, segment_len, backend
        d_inner = self.d_inner
        self._init = (A_init_range, dt_min, dt_max, dt_init_floor)
        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + 2 * self.n_heads, bias=False)
        self.conv_f = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        self.conv_b = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(2, self.n_heads))
        self.A_log = nn.Parameter(torch.empty(2, self.n_heads))
        self.D = nn.Parameter(torch.empty(2, self.n_heads))
        self.norm = RMSNormGated(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.in_proj, self.conv_f, self.conv_b, self.out_proj, self.norm):
            m.reset_parameters()
        init_ssm_params(self.dt_bias, self.A_log, self.D, *self._init)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "BiMamba2", mask)
        b, l, _ = x.shape
        h, p, g, n = self.n_heads, self.headdim, self.ngroups, self.d_state
        z, xbc, dt = torch.split(self.in_proj(x), [self.d_inner, self.conv_dim, 2 * h], dim=-1)
        m: Optional[Tensor] = None
        if mask is not None:
            m = mask.unsqueeze(-1).to(x.dtype)
            xbc = xbc * m
        ctx = xbc.new_zeros(b, self.conv_dim, self.d_conv - 1)
        xf = causal_conv(xbc, self.conv_f.weight, self.conv_f.bias, ctx)[0]
        xb = causal_conv(xbc.flip(1), self.conv_b.weight, self.conv_b.bias, ctx)[0]
        dt_f = F.softplus(dt[..., :h] + self.dt_bias[0])
        dt_b = F.softplus(dt[..., h:].flip(1) + self.dt_bias[1])
        if m is not None:
            dt_f = dt_f * m
            dt_b = dt_b * m.flip(1)
        xs, Bm, Cm = torch.split(F.silu(torch.cat([xf, xb], dim=0)), [self.d_inner, g * n, g * n], dim=-1)
        A = -torch.exp(self.A_log)  # (2, H)
        A2 = torch.cat([A[0].unsqueeze(0).expand(b, h), A[1].unsqueeze(0).expand(b, h)], dim=0)
        xs = xs.reshape(2 * b, l, h, p)
        state = xs.new_zeros(2 * b, h, p, n)
        y, _ = ssd_scan(
            xs, torch.cat([dt_f, dt_b], dim=0), A2, Bm.reshape(2 * b, l, g, n), Cm.reshape(2 * b, l, g, n),
            self.chunk_size, state, self.backend, self.segment_len,
        )
        D2 = torch.cat([self.D[0].unsqueeze(0).expand(b, h), self.D[1].unsqueeze(0).expand(b, h)], dim=0)
        y = y + xs * D2[:, None, :, None]
        y = (y[:b] + y[b:].flip(1)).reshape(b, l, self.d_inner)
        out = self.out_proj(self.norm(y, z))
        if m is not None:
            out = out * m
        return out

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, n_heads={self.n_heads}, headdim={self.headdim}, "
                f"chunk_size={self.chunk_size}, backend={self.backend!r}, merge='add'")

"""Mamba2 mixer (SSD), causal, with a recurrent state for O(1)-per-token inference.

Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality", ICML 2024 (arXiv:2405.21060); module layout and initialisation as ``mamba_ssm/modules/mamba2.py``:
in_proj -> [z, xBC, dt] -> depthwise causal conv over xBC + SiLU -> SSD scan -> gated RMSNorm per group -> out_proj.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.kernels import mamba_chunk_scan
from linmix.shared.norms import RMSNormGated, check_input
from linmix.shared.ssd import is_exporting, ssd_scan

__all__ = ["Mamba2", "causal_conv", "init_ssm_params", "resolve_backend", "ssm_dims"]

BACKENDS = ("auto", "torch", "kernel")


def causal_conv(xbc: Tensor, weight: Tensor, bias: Optional[Tensor], ctx: Tensor) -> Tuple[Tensor, Tensor]:
    """Depthwise causal conv with a left context. ``xbc (B, L, C)``, ``weight (C, 1, K)``, ``ctx (B, C, K - 1)``.

    Returns ``(out (B, L, C), new_ctx (B, C, K - 1))``: ``new_ctx`` holds the last K - 1 inputs, so a sequence can be
    continued exactly from where it stopped.
    """
    k = weight.size(-1)
    xin = torch.cat([ctx, xbc.transpose(1, 2)], dim=-1)  # (B, C, K - 1 + L)
    out = F.conv1d(xin, weight, bias, groups=weight.size(0))
    # a copy, not a view: a view would keep the whole (B, C, K - 1 + L) input alive in every carried state
    new_ctx = xin[:, :, xin.size(-1) - (k - 1):].contiguous()
    return out.transpose(1, 2), new_ctx


def resolve_backend(backend: str) -> str:
    """The backend a Mamba2-style mixer runs. Precedence: the ``LINMIX_BACKEND`` environment variable (``auto``,
    ``torch`` or ``kernel``) when set and not empty, else ``backend`` as configured (YAML ``model.net.mixer_cfg.backend``,
    else the ``MixerStack`` / constructor argument, default ``auto``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    env = os.environ.get("LINMIX_BACKEND", "").strip()
    if env:
        if env not in BACKENDS:
            raise ValueError(f"LINMIX_BACKEND must be one of {BACKENDS}, got {env!r}")
        return env
    return backend


def ssm_dims(
    name: str, d_model: int, expand: int, headdim: int, ngroups: int, d_state: int, backend: str
) -> Tuple[int, int, int]:
    """Validate a Mamba2-style configuration; return ``(d_inner, n_heads, conv_dim)``."""
    if backend not in BACKENDS:
        raise ValueError(f"{name}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "kernel":
        mamba_chunk_scan(required=True)
    d_inner = expand * d_model
    if d_inner % headdim != 0 or (d_inner // headdim) % ngroups != 0:
        raise ValueError(f"{name}: expand * d_model = {d_inner} must split into heads of headdim={headdim} "
                         f"in ngroups={ngroups} groups")
    return d_inner, d_inner // headdim, d_inner + 2 * ngroups * d_state


def init_ssm_params(
    dt_bias: Tensor, A_log: Tensor, D: Tensor, A_init_range: Tuple[float, float], dt_min: float, dt_max: float,
    dt_init_floor: float,
) -> None:
    """Mamba2 initialisation: dt ~ logU(dt_min, dt_max) stored as inverse softplus; A ~ U(A_init_range); D = 1."""
    with torch.no_grad():
        dt = torch.exp(torch.rand_like(dt_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A_log.copy_(torch.log(torch.empty_like(A_log).uniform_(A_init_range[0], A_init_range[1])))
        D.fill_(1.0)
    for p in (dt_bias, A_log, D):
        p._no_weight_decay = True  # type: ignore[attr-defined]


class Mamba2(nn.Module):
    """Causal Mamba2 mixer. ``forward(x (B, L, D), mask (B, L) bool, True = token) -> (B, L, D)``.

    Args:
        d_model: channels D.
        d_state: SSM state size N per group (mamba-ssm default 128; 64 is as good at small widths and cheaper on CPU).
        d_conv: width of the depthwise causal convolution.
        expand: inner width ``d_inner = expand * d_model``.
        headdim: head dim P; ``n_heads = d_inner // headdim``.
        ngroups: groups of heads sharing B and C (G).
        chunk_size: SSD chunk length (64 is fastest on CPU; the CUDA kernel prefers 256).
        A_init_range, dt_min, dt_max, dt_init_floor: initialisation, as mamba-ssm.
        backend: ``"auto"`` (mamba-ssm kernel on CUDA when installed, else PyTorch), ``"torch"``, ``"kernel"``;
            the ``LINMIX_BACKEND`` environment variable, when set, overrides it (:func:`resolve_backend`).
        segment_len: tokens per loop-free segment of the PyTorch scan (recomputed in backward).

    Padding (``mask`` False) is exact in both directions of the sequence: padded inputs are zeroed before the
    convolution and get dt = 0 (identity decay, no input), so they change neither the state nor real outputs.
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
        self.d_inner, self.n_heads, self.conv_dim = ssm_dims("Mamba2", d_model, expand, headdim, ngroups, d_state, backend)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.headdim, self.ngroups, self.chunk_size, self.segment_len = headdim, ngroups, chunk_size, segment_len
        self.backend = backend
        d_inner = self.d_inner
        self._init = (A_init_range, dt_min, dt_max, dt_init_floor)
        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + self.n_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        self.norm = RMSNormGated(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.in_proj.reset_parameters()
        self.conv1d.reset_parameters()
        self.out_proj.reset_parameters()
        self.norm.reset_parameters()
        init_ssm_params(self.dt_bias, self.A_log, self.D, *self._init)

    def init_state(self, batch: int) -> Tuple[Tensor, Tensor]:
        """Zero recurrent state: ``(conv_state (B, C_conv, d_conv - 1), ssm_state (B, H, P, N))``."""
        w = self.in_proj.weight
        conv = torch.zeros(batch, self.conv_dim, self.d_conv - 1, device=w.device, dtype=w.dtype)
        ssm = torch.zeros(batch, self.n_heads, self.headdim, self.d_state, device=w.device, dtype=w.dtype)
        return conv, ssm

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "Mamba2", mask)
        conv, ssm = self.init_state(x.size(0))
        return self._run(x, mask, conv, ssm)[0]

    @torch.jit.export
    def forward_state(self, x: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Continue a sequence from a saved state: ``(y (B, L, D), conv_state, ssm_state)``; equals the full forward."""
        check_input(x, self.d_model, "Mamba2")
        return self._run(x, None, conv_state, ssm_state)

    def _run(
        self, x: Tensor, mask: Optional[Tensor], conv_state: Tensor, ssm_state: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        b, l, _ = x.shape
        m: Optional[Tensor] = None
        if mask is not None:
            m = mask.unsqueeze(-1).to(x.dtype)
        if not torch.jit.is_scripting():
            if is_exporting():  # one segment: a symbolic length cannot drive the loop below (same result)
                return self._segment(x, m, conv_state, ssm_state)
        # The whole mixer runs segment by segment with the conv and SSM states carried over. In training each
        # segment is recomputed in backward, so only the block input is kept: training memory stays O(L * D) plus
        # one segment's working set (mamba-ssm's fused "memory-efficient path" recomputes likewise).
        seg = self.segment_len
        recompute = torch.is_grad_enabled() and (x.requires_grad or self.in_proj.weight.requires_grad) and l > seg
        outs: List[Tensor] = []
        for start in range(0, l, seg):
            part = x[:, start:start + seg]
            mpart = m[:, start:start + seg] if m is not None else None
            if not torch.jit.is_scripting() and recompute:
                y, conv_state, ssm_state = self._segment_recomputed(part, mpart, conv_state, ssm_state)
            else:
                y, conv_state, ssm_state = self._segment(part, mpart, conv_state, ssm_state)
            outs.append(y)
        return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), conv_state, ssm_state

    def _segment(
        self, x: Tensor, m: Optional[Tensor], conv_state: Tensor, ssm_state: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """One segment ``x (B, Ls, D)`` -> ``(y (B, Ls, D), conv_state, ssm_state)``."""
        b, l, _ = x.shape
        h, p, g, n = self.n_heads, self.headdim, self.ngroups, self.d_state
        z, xbc, dt = torch.split(self.in_proj(x), [self.d_inner, self.conv_dim, h], dim=-1)
        if m is not None:
            xbc = xbc * m
        xbc, conv_state = causal_conv(xbc, self.conv1d.weight, self.conv1d.bias, conv_state)
        xs, Bm, Cm = torch.split(F.silu(xbc), [self.d_inner, g * n, g * n], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        if m is not None:
            dt = dt * m
        A = (-torch.exp(self.A_log)).unsqueeze(0).expand(b, h)
        xs = xs.reshape(b, l, h, p)
        y, ssm_state = ssd_scan(
            xs, dt, A, Bm.reshape(b, l, g, n), Cm.reshape(b, l, g, n), self.chunk_size, ssm_state, self.backend,
            self.segment_len,
        )
        y = (y + xs * self.D.unsqueeze(-1)).reshape(b, l, self.d_inner)
        out = self.out_proj(self.norm(y, z))
        if m is not None:
            out = out * m
        return out, conv_state, ssm_state

    @torch.jit.unused
    def _segment_recomputed(
        self, x: Tensor, m: Optional[Tensor], conv_state: Tensor, ssm_state: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self._segment, x, m, conv_state, ssm_state, use_reentrant=False)

    @torch.jit.export
    def step(self, x: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One token, O(1): ``x (B, D) -> (y (B, D), conv_state, ssm_state)``."""
        if x.dim() != 2 or x.size(-1) != self.d_model:
            raise ValueError(f"Mamba2.step: expected (B, D={self.d_model}), got {list(x.shape)}")
        b = x.size(0)
        h, p, g, n = self.n_heads, self.headdim, self.ngroups, self.d_state
        z, xbc, dt = torch.split(self.in_proj(x), [self.d_inner, self.conv_dim, h], dim=-1)
        xin = torch.cat([conv_state, xbc.unsqueeze(-1)], dim=-1)  # (B, C, K)
        xbc = (xin * self.conv1d.weight.squeeze(1)).sum(-1)
        bias = self.conv1d.bias
        if bias is not None:
            xbc = xbc + bias
        conv_state = xin[:, :, 1:]
        xs, Bm, Cm = torch.split(F.silu(xbc), [self.d_inner, g * n, g * n], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (B, H)
        A = -torch.exp(self.A_log)
        xs = xs.reshape(b, h, p)
        Bh = Bm.reshape(b, g, n).repeat_interleave(h // g, dim=1)  # (B, H, N)
        Ch = Cm.reshape(b, g, n).repeat_interleave(h // g, dim=1)
        ssm_state = ssm_state * torch.exp(dt * A)[:, :, None, None] + (dt.unsqueeze(-1) * xs).unsqueeze(-1) * Bh.unsqueeze(2)
        y = torch.einsum("bhpn,bhn->bhp", ssm_state, Ch) + xs * self.D.unsqueeze(-1)
        y = self.out_proj(self.norm(y.reshape(b, self.d_inner), z))
        return y, conv_state, ssm_state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, n_heads={self.n_heads}, headdim={self.headdim}, "
                f"ngroups={self.ngroups}, chunk_size={self.chunk_size}, backend={self.backend!r}")

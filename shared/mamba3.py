"""Mamba-3 mixer (SISO or MIMO), causal, with a recurrent state for O(1)-per-token inference.

Lahoti et al., "Mamba-3: Improved Sequence Modeling using State Space Principles", ICLR 2026 (arXiv:2603.15569).
Parameter names, shapes and the ``in_proj`` split as ``mamba_ssm/modules/mamba3.py`` (mamba-ssm >= 2.3.2), so a
state_dict moves between the two unchanged: in_proj -> ``[z, x, B, C, dd_dt, dd_A, trap, angle]`` (no convolution),
``A = -softplus(dd_A)`` (at most ``-A_floor``), ``dt = softplus(dd_dt + dt_bias)``, RMSNorm over the state of B and
C (``B_norm``, ``C_norm``) plus per-head biases ``B_bias``, ``C_bias``, data-dependent rotary angles on B and C, the
exponential-trapezoidal scan of :mod:`linmix.shared.ssd3`, D skip, ``y * silu(z)`` (or a gated RMSNorm per head,
``is_outproj_norm``), out_proj. MIMO (``is_mimo``, rank R): B and C get R projections per group, x and z are
up-projected per head by ``mimo_x``, ``mimo_z`` (H, R, P) and the R outputs summed with weights ``mimo_o``.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.kernels import mamba3_mimo_kernel, mamba3_siso_kernel
from linmix.shared.mamba2 import BACKENDS, init_ssm_params, resolve_backend
from linmix.shared.norms import RMSNorm, check_input
from linmix.shared.ssd import is_exporting
from linmix.shared.ssd3 import mamba3_scan_head_major, rotate_pairs, wrap_angle

__all__ = ["Mamba3"]


class _OutGate(nn.Module):
    """Output gate. ``norm=True``: mamba-ssm's ``RMSNormGated(norm_before_gate=True)`` per group,
    ``rmsnorm_group(y) * weight * silu(z)`` (parameter ``weight``); ``norm=False``: ``y * silu(z)``, no parameter."""

    def __init__(self, d: int, group_size: int, norm: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps, self.group_size = eps, group_size
        if norm:
            self.weight = nn.Parameter(torch.ones(d))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        w = self.weight
        if w is None:
            return y * F.silu(z)
        shape = y.shape
        h = y.float().reshape(shape[:-1] + (shape[-1] // self.group_size, self.group_size))
        h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).reshape(shape)
        return (h * w * F.silu(z.float())).to(y.dtype)


class _StateNorm(RMSNorm):
    """RMSNorm over the state dim N of B or C (mamba-ssm's ``B_norm`` / ``C_norm``, parameter ``weight``); computed in
    float32, or float64 for float64 inputs. ``(..., N) -> (..., N)``."""

    def forward(self, x: Tensor) -> Tensor:
        h = x if x.dtype == torch.float64 else x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Mamba3(nn.Module):
    """Causal Mamba-3 mixer (SISO or MIMO). ``forward(x (B, L, D), mask (B, L) bool, True = token) -> (B, L, D)``.

    Args:
        d_model: channels D.
        d_state: state size N (mamba-ssm default 128; the paper reports Mamba-2 quality at half Mamba-2's state).
        expand: inner width ``d_inner = expand * d_model``.
        headdim: head dim P; ``n_heads = d_inner // headdim``.
        ngroups: groups of heads sharing the B and C projections (before the per-head biases and rotations).
        rope_fraction: fraction of the state rotated (0.5 or 1.0): ``S = int(d_state * rope_fraction) // 2``
            rotary angles (an odd count is rounded down, as mamba-ssm).
        dt_min, dt_max, dt_init_floor: dt initialisation, as mamba-ssm.
        A_floor: ``A = -softplus(dd_A)`` is clamped at ``-A_floor``.
        is_outproj_norm: gated RMSNorm per head before out_proj instead of ``y * silu(z)``.
        is_mimo, mimo_rank: the MIMO form with rank R (its rotary pairs are ``(i, i + N/2)``, the pairing mamba-ssm
            documents for its MIMO kernels; SISO pairs adjacent entries). On CUDA, ``forward`` runs mamba-ssm's
            TileLang MIMO kernel (``backend="kernel"``, or ``"auto"`` within the sizes the kernel is documented for:
            ``chunk_size >= 8``, ``chunk_size * R <= 64``); ``forward_state`` and ``step`` run the PyTorch path.
        chunk_size: chunk length of the chunked scan (64 on CPU, as mamba-ssm's default; MIMO works on R sub-tokens
            per token, mamba-ssm recommends 64 / R).
        backend: ``"auto"`` (mamba-ssm's Triton SISO / TileLang MIMO kernel on CUDA when it imports, else PyTorch),
            ``"torch"``, ``"kernel"``; ``LINMIX_BACKEND``, when set, overrides it.
        segment_len: tokens per loop-free segment of the PyTorch scan (recomputed in backward in training).

    Recurrent state (mamba-ssm's layout): ``angle (B, H, S)``, ``ssm (B, H, P, N)``, ``k (B, R, H, N)`` (the previous
    token's rotated B; R = 1 for SISO), ``v (B, H, P)`` (the previous token's x). Padding (``mask`` False) gets dt = 0 and x = 0:
    it neither moves the angle nor changes the state, so left and right padding are exact.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        rope_fraction: float = 0.5,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_floor: float = 1e-4,
        is_outproj_norm: bool = False,
        is_mimo: bool = False,
        mimo_rank: int = 4,
        chunk_size: int = 64,
        backend: str = "auto",
        segment_len: int = 2048,
    ) -> None:
        super().__init__()
        backend = resolve_backend(backend)
        if backend not in BACKENDS:
            raise ValueError(f"Mamba3: backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "kernel":
            if is_mimo:
                if chunk_size < 8:
                    raise ValueError(f"Mamba3: the MIMO kernel needs chunk_size >= 8, got {chunk_size}")
                mamba3_mimo_kernel(required=True)
            else:
                mamba3_siso_kernel(required=True)
        if is_mimo and mimo_rank < 1:
            raise ValueError(f"Mamba3: mimo_rank must be >= 1, got {mimo_rank}")
        if rope_fraction not in (0.5, 1.0):
            raise ValueError(f"Mamba3: rope_fraction must be 0.5 or 1.0, got {rope_fraction}")
        d_inner = expand * d_model
        if d_inner % headdim != 0 or (d_inner // headdim) % ngroups != 0:
            raise ValueError(f"Mamba3: expand * d_model = {d_inner} must split into heads of headdim={headdim} "
                             f"in ngroups={ngroups} groups")
        n_angles = int(d_state * rope_fraction) // 2
        if n_angles < 1:
            raise ValueError(f"Mamba3: d_state={d_state} leaves no rotary angle at rope_fraction={rope_fraction}")
        self.d_model, self.d_state, self.expand, self.headdim, self.ngroups = d_model, d_state, expand, headdim, ngroups
        self.d_inner, self.n_heads, self.n_angles = d_inner, d_inner // headdim, n_angles
        self.rope_fraction, self.A_floor, self.is_outproj_norm = rope_fraction, A_floor, is_outproj_norm
        self.chunk_size, self.segment_len, self.backend = chunk_size, segment_len, backend
        self.is_mimo, self.mimo_rank = is_mimo, (mimo_rank if is_mimo else 1)
        self.pairing = "half" if is_mimo else "adjacent"
        self._init = (dt_min, dt_max, dt_init_floor)
        h, r, gn = self.n_heads, self.mimo_rank, ngroups * d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * gn * r + 3 * h + n_angles, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(h))
        self.B_bias = nn.Parameter(torch.ones(h, r, d_state))
        self.C_bias = nn.Parameter(torch.ones(h, r, d_state))
        for name in ("mimo_x", "mimo_z", "mimo_o"):
            if is_mimo:
                self.register_parameter(name, nn.Parameter(torch.ones(h, r, headdim)))
            else:
                self.register_parameter(name, None)
        self.B_norm = _StateNorm(d_state)
        self.C_norm = _StateNorm(d_state)
        self.D = nn.Parameter(torch.ones(h))
        self.norm = _OutGate(d_inner, headdim, is_outproj_norm)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        for m in (self.B_norm, self.C_norm):
            m.reset_parameters()
        self.norm.reset_parameters()
        with torch.no_grad():
            self.B_bias.fill_(1.0)
            self.C_bias.fill_(1.0)
            if self.mimo_x is not None and self.mimo_z is not None and self.mimo_o is not None:
                self.mimo_x.fill_(1.0 / self.mimo_rank)  # mamba-ssm's initialisation
                self.mimo_z.fill_(1.0)
                self.mimo_o.fill_(1.0 / self.mimo_rank)
        # dt_bias and D as Mamba2 (A is data-dependent here; the A_log slot of init_ssm_params is a throwaway)
        init_ssm_params(self.dt_bias, torch.empty_like(self.D), self.D, (1.0, 1.0), *self._init)

    def init_state(self, batch: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Zero state ``(angle (B, H, S), ssm (B, H, P, N), k (B, R, H, N), v (B, H, P))``."""
        w = self.in_proj.weight
        h, p, n = self.n_heads, self.headdim, self.d_state
        return (w.new_zeros(batch, h, self.n_angles), w.new_zeros(batch, h, p, n),
                w.new_zeros(batch, self.mimo_rank, h, n), w.new_zeros(batch, h, p))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "Mamba3", mask)
        if not torch.jit.is_scripting():
            if self.is_mimo and x.is_cuda and not is_exporting() and (self.backend == "kernel" or (
                    self.backend == "auto" and 8 <= self.chunk_size and self.chunk_size * self.mimo_rank <= 64)):
                fn = mamba3_mimo_kernel(required=self.backend == "kernel")
                if fn is not None:
                    return self._mimo_kernel_forward(fn, x, mask)
        a, s, k, v = self.init_state(x.size(0))
        return self._run(x, mask, a, s, k, v)[0]

    @torch.jit.export
    def forward_state(
        self, x: Tensor, angle: Tensor, ssm: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Continue a sequence from a saved state: ``(y (B, L, D), angle, ssm, k, v)``; equals the full forward."""
        check_input(x, self.d_model, "Mamba3")
        return self._run(x, None, angle, ssm, k, v)

    def _run(
        self, x: Tensor, mask: Optional[Tensor], angle: Tensor, ssm: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        m: Optional[Tensor] = None
        if mask is not None:
            m = mask.unsqueeze(-1).to(x.dtype)
        if not torch.jit.is_scripting():
            if is_exporting():  # one segment: a symbolic length cannot drive the loop below (same result)
                return self._segment(x, m, angle, ssm, k, v)
        seg = self.segment_len
        recompute = torch.is_grad_enabled() and (x.requires_grad or self.in_proj.weight.requires_grad) and x.size(1) > seg
        outs: List[Tensor] = []
        for start in range(0, x.size(1), seg):
            part = x[:, start:start + seg]
            mpart = m[:, start:start + seg] if m is not None else None
            if not torch.jit.is_scripting() and recompute:
                y, angle, ssm, k, v = self._segment_recomputed(part, mpart, angle, ssm, k, v)
            else:
                y, angle, ssm, k, v = self._segment(part, mpart, angle, ssm, k, v)
            outs.append(y)
        return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), angle, ssm, k, v

    def _project(self, x: Tensor, m: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                                                Tensor, Tensor]:
        """``x (..., D)`` -> z, x (..., H, P); B, C (..., R, G, N) normed; dt, adt, raw trap (..., H); raw angles
        (..., S) and the rotary rate ``pi * tanh(angle)`` per head (..., H, S)."""
        h, p, g, n, r = self.n_heads, self.headdim, self.ngroups, self.d_state, self.mimo_rank
        lead = x.shape[:-1]
        z, xs, Bm, Cm, dd_dt, dd_A, trap, ang = torch.split(
            self.in_proj(x), [self.d_inner, self.d_inner, r * g * n, r * g * n, h, h, h, self.n_angles], dim=-1)
        A = torch.clamp(-F.softplus(dd_A), max=-self.A_floor)
        dt = F.softplus(dd_dt + self.dt_bias)
        if m is not None:
            dt = dt * m
            xs = xs * m
        Bm = self.B_norm(Bm.reshape(lead + (r, g, n)))
        Cm = self.C_norm(Cm.reshape(lead + (r, g, n)))
        w = (torch.tanh(ang) * math.pi).unsqueeze(-2).expand(lead + (h, self.n_angles))
        return (z.reshape(lead + (h, p)), xs.reshape(lead + (h, p)), Bm, Cm, dt, A * dt, trap, ang, w)

    def _heads(self, Bm: Tensor, bias: Tensor) -> Tensor:
        """Group-shared ``(..., R, G, N)`` -> per head ``(..., H, R, N)`` plus the head's bias ``(H, R, N)``."""
        g, r = self.ngroups, self.mimo_rank
        per_head = Bm.transpose(-3, -2).unsqueeze(-3) + bias.reshape(g, self.n_heads // g, r, self.d_state)
        return per_head.flatten(-4, -3)  # (..., G, H / G, R, N) -> (..., H, R, N)

    def _heads_first(self, Bm: Tensor, bias: Tensor) -> Tensor:
        """``(B, L, R, G, N)`` -> per head, head-major ``(B, H, L, R, N)`` plus the bias, built in that layout."""
        g, r = self.ngroups, self.mimo_rank
        per_head = Bm.permute(0, 3, 1, 2, 4).unsqueeze(2) + bias.reshape(g, self.n_heads // g, 1, r, self.d_state)
        return per_head.flatten(1, 2)  # (B, G, H / G, L, R, N) -> (B, H, L, R, N)

    def _up(self, t: Tensor, proj: Optional[Tensor]) -> Tensor:
        """``(..., H, P)`` -> rank-R copies ``(..., H, R, P)`` (MIMO: times ``proj (H, R, P)``)."""
        return t.unsqueeze(-2) if proj is None else t.unsqueeze(-2) * proj

    def _output(self, y: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        """``y (..., H, R, P)``, ``x, z (..., H, P)`` -> D skip, gate (per rank), MIMO down-projection, out_proj."""
        v = self._up(xs, self.mimo_x)
        return self._gate_out(y + v * self.D[:, None, None], z)

    def _gate_out(self, y: Tensor, z: Tensor) -> Tensor:
        """``y (..., H, R, P)`` with the D skip, ``z (..., H, P)`` -> gate (per rank), MIMO down-projection, out_proj."""
        lead = y.shape[:-3]
        if self.mimo_o is None:
            g = self.norm(y.reshape(lead + (self.d_inner,)), z.reshape(lead + (self.d_inner,)))
        else:
            zr = self._up(z, self.mimo_z).transpose(-3, -2)  # (..., R, H, P)
            yr = y.transpose(-3, -2)
            shape = yr.shape
            g = self.norm(yr.reshape(shape[:-2] + (self.d_inner,)), zr.reshape(shape[:-2] + (self.d_inner,)))
            g = (g.reshape(shape) * self.mimo_o.transpose(0, 1)).sum(-3).reshape(lead + (self.d_inner,))
        return self.out_proj(g)

    def _segment(
        self, x: Tensor, m: Optional[Tensor], angle: Tensor, ssm: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One segment ``x (B, Ls, D)`` -> ``(y (B, Ls, D), angle, ssm, k, v)``."""
        z, xs, Bm, Cm, dt, adt, trap, ang, w = self._project(x, m)
        if not torch.jit.is_scripting() and not self.is_mimo:
            if self.backend == "kernel" or (self.backend == "auto" and x.is_cuda):
                fn = mamba3_siso_kernel(required=self.backend == "kernel")
                if fn is not None and x.is_cuda:
                    return self._kernel_segment(fn, m, z, xs, Bm[..., 0, :, :], Cm[..., 0, :, :], dt, adt, trap, ang,
                                                angle, ssm, k, v)
        qh, kh = self._heads_first(Cm, self.C_bias), self._heads_first(Bm, self.B_bias)
        y, (angle, ssm, kn, _) = mamba3_scan_head_major(
            qh, kh, self._up(xs, self.mimo_x), adt, dt, torch.sigmoid(trap), w,
            (angle, ssm, k.transpose(1, 2), self._up(v, self.mimo_x)), self.chunk_size, self.pairing)
        out = self._output(y, xs, z)
        if m is not None:
            out = out * m
        return out, angle, ssm, kn.transpose(1, 2).contiguous(), xs[:, -1].contiguous()

    @torch.jit.unused
    def _segment_recomputed(
        self, x: Tensor, m: Optional[Tensor], angle: Tensor, ssm: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self._segment, x, m, angle, ssm, k, v, use_reentrant=False)

    @torch.jit.unused
    def _kernel_segment(self, fn, m, z, xs, Bm, Cm, dt, adt, trap, ang, angle, ssm, k, v):
        """mamba-ssm's ``mamba3_siso_combined`` (Triton, CUDA) on the same projections; it applies the sigmoid to
        ``trap``, ``pi * tanh`` to the angles, the D skip and the ``silu(z)`` gate itself."""
        angles = ang.unsqueeze(-2).expand(ang.shape[:-1] + (self.n_heads, self.n_angles)).float()
        y, angle, ssm, kn, v = fn(
            Q=Cm, K=Bm, V=xs, ADT=adt.transpose(1, 2).float(), DT=dt.transpose(1, 2).float(),
            Trap=trap.transpose(1, 2), Q_bias=self.C_bias[:, 0], K_bias=self.B_bias[:, 0], Angles=angles, D=self.D,
            Z=None if self.is_outproj_norm else z, chunk_size=self.chunk_size, Input_States=(angle, ssm, k[:, 0], v),
            return_final_states=True)[:5]
        if self.is_outproj_norm:
            y = self.norm(y.reshape(y.shape[:2] + (self.d_inner,)), z.reshape(z.shape[:2] + (self.d_inner,)))
        else:
            y = y.reshape(y.shape[:2] + (self.d_inner,))
        out = self.out_proj(y.to(xs.dtype))
        if m is not None:
            out = out * m
        return out, angle, ssm, kn.unsqueeze(1), v

    @torch.jit.unused
    def _mimo_kernel_forward(self, fn, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """The full forward from a zero state through mamba-ssm's ``mamba3_mimo`` (TileLang, CUDA), called as
        ``mamba_ssm.modules.mamba3.Mamba3`` calls it: B, C ``(B, L, R, G, N)`` normed, raw trap (it applies the sigmoid)
        and raw angles (it accumulates ``pi * tanh(angle) * dt``), D skip, ``silu(z)`` gate and ``mimo_o`` in the kernel
        unless ``is_outproj_norm`` (then the kernel returns every rank and the gated RMSNorm and ``mimo_o`` run here)."""
        m = mask.unsqueeze(-1).to(x.dtype) if mask is not None else None
        z, xs, Bm, Cm, dt, adt, trap, ang, _ = self._project(x, m)
        angles = ang.unsqueeze(-2).expand(ang.shape[:-1] + (self.n_heads, self.n_angles)).float()
        y = fn(Q=Cm, K=Bm, V=xs, ADT=adt.transpose(1, 2).float(), DT=dt.transpose(1, 2).float(),
               Trap=trap.transpose(1, 2), Q_bias=self.C_bias, K_bias=self.B_bias, MIMO_V=self.mimo_x,
               MIMO_Z=self.mimo_z, MIMO_Out=None if self.is_outproj_norm else self.mimo_o, Angles=angles, D=self.D,
               Z=None if self.is_outproj_norm else z, chunk_size=self.chunk_size,
               rotary_dim_divisor=int(round(2 / self.rope_fraction)), dtype=xs.dtype, return_state=False)
        if self.is_outproj_norm:
            out = self._gate_out(y.transpose(-3, -2).to(xs.dtype), z)  # (B, L, R, H, P) -> (B, L, H, R, P)
        else:
            out = self.out_proj(y.reshape(y.shape[:2] + (self.d_inner,)).to(xs.dtype))
        return out * m if m is not None else out

    @torch.jit.export
    def step(
        self, x: Tensor, angle: Tensor, ssm: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One token, O(1): ``x (B, D) -> (y (B, D), angle, ssm, k, v)`` (the recurrence of :mod:`linmix.shared.ssd3`)."""
        if x.dim() != 2 or x.size(-1) != self.d_model:
            raise ValueError(f"Mamba3.step: expected (B, D={self.d_model}), got {list(x.shape)}")
        z, xs, Bm, Cm, dt, adt, trap, ang, w = self._project(x, None)
        lam = torch.sigmoid(trap)
        angle = wrap_angle(angle + dt.unsqueeze(-1) * w)
        kr = rotate_pairs(self._heads(Bm, self.B_bias), angle.unsqueeze(-2), self.pairing)  # (B, H, R, N)
        qr = rotate_pairs(self._heads(Cm, self.C_bias), angle.unsqueeze(-2), self.pairing)
        v_prev, v_now = self._up(v, self.mimo_x), self._up(xs, self.mimo_x)  # (B, H, R, P)
        prev = torch.einsum("bhrp,bhrn->bhpn", v_prev, k.transpose(1, 2))
        now = torch.einsum("bhrp,bhrn->bhpn", v_now, kr)
        ssm = torch.exp(adt)[:, :, None, None] * (ssm + ((1 - lam) * dt)[:, :, None, None] * prev) \
            + (lam * dt)[:, :, None, None] * now
        y = torch.einsum("bhpn,bhrn->bhrp", ssm, qr)
        return self._output(y, xs, z), angle, ssm, kr.transpose(1, 2).contiguous(), xs

    def extra_repr(self) -> str:
        mimo = f", mimo_rank={self.mimo_rank}" if self.is_mimo else ""
        return (f"d_model={self.d_model}, d_state={self.d_state}, n_heads={self.n_heads}, headdim={self.headdim}, "
                f"ngroups={self.ngroups}, n_angles={self.n_angles}{mimo}, chunk_size={self.chunk_size}, "
                f"backend={self.backend!r}")

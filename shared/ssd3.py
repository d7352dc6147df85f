"""Mamba-3 scan (SISO and MIMO) in pure PyTorch: a sequential oracle and a loop-free chunked form.

Mamba-3 (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao, Gu, "Mamba-3: Improved Sequence Modeling using State Space
Principles", arXiv:2603.15569). Per head, with state ``h_t (P x N)``, rank-R values ``v_{t,r} (P)``, keys ``k_{t,r}
(N)`` (B), queries ``q_{t,r} (N)`` (C) (SISO: R = 1), step ``dt_t > 0``, log-decay ``a_t = A_t * dt_t < 0``, trapezoid
gate ``lam_t in (0, 1)`` and rotary rates ``w_t (S)``::

    theta_t = theta_{t-1} + dt_t * w_t                               (data-dependent rotary angle = complex state)
    k~_{t,r} = R(theta_t) k_{t,r},  q~_{t,r} = R(theta_t) q_{t,r}    (S 2x2 rotations; the rest unrotated)
    h_t = exp(a_t) h_{t-1}
          + (1 - lam_t) dt_t exp(a_t) sum_r v_{t-1,r} k~_{t-1,r}^T    (exponential-trapezoidal rule: previous token ...
          + lam_t dt_t sum_r v_{t,r} k~_{t,r}^T                       ... and current token)
    y_{t,r} = h_t q~_{t,r}

The recurrent state is ``(theta, h, k~_{t-1}, v_{t-1})``: what the two-term rule needs to continue a sequence. The
rotation pairs entries ``(2i, 2i+1)`` (``pairing="adjacent"``, mamba-ssm's SISO kernels) or ``(i, i + N/2)``
(``"half"``, the pairing mamba-ssm's MIMO kernels use).

Chunked form: unrolling the recurrence, token s enters every later output with weight
``exp(a_{s+1} + ... + a_t) * (lam_s dt_s + (1 - lam_{s+1}) dt_{s+1})`` and its own output with ``lam_s dt_s`` only. So
the scan is Mamba2's SSD chunk decomposition (as :func:`linmix.shared.ssd.ssd_segment`) on ``X = v * scale``,
``B = k~``, ``C = q~`` (the rotary phases folded into B and C, so B and C are per head; MIMO: R sub-tokens per token
sharing its decay), with each token's own block of the chunk's ``C B^T`` weighted by ``lam_t dt_t`` alone; the term
the last token owes the next one is carried in the state (added to the incoming state as
``(1 - lam_0) dt_0 sum_r v_prev,r k~_prev,r^T``).

Shapes (at the kernel boundary, i.e. after the B/C norms and biases, per head): ``q, k (B, L, H, R, N)``,
``v (B, L, H, R, P)`` (MIMO: already up-projected), ``adt, dt, trap (B, L, H)`` (``trap`` already through the
sigmoid), ``w (B, L, H, S)`` (already ``pi * tanh``), states ``angle (B, H, S)``, ``ssm (B, H, P, N)``,
``k_prev (B, H, R, N)``, ``v_prev (B, H, R, P)``; output ``y (B, L, H, R, P)``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from linmix.shared.ssd import is_exporting, segsum

__all__ = ["rotate_pairs", "wrap_angle", "phases", "rotate_by", "mamba3_scan_ref", "mamba3_scan_chunked",
           "mamba3_scan_head_major"]

States = Tuple[Tensor, Tensor, Tensor, Tensor]


def wrap_angle(theta: Tensor) -> Tensor:
    """``theta mod 2 pi`` in ``[0, 2 pi)`` (keeps the carried angle small; gradient 1)."""
    two_pi = 2.0 * math.pi
    return theta - two_pi * torch.floor(theta / two_pi).detach()


def phases(theta: Tensor, n: int) -> Tensor:
    """``exp(i theta)`` for ``theta (..., S)``, padded with ones (``exp(0i)``, exactly) to ``(..., n // 2)``."""
    theta = F.pad(theta, (0, n // 2 - theta.size(-1)))
    return torch.polar(torch.ones_like(theta), theta)


def rotate_by(x: Tensor, ph: Tensor, pairing: str = "adjacent") -> Tensor:
    """``x (..., N)`` real with its pairs rotated by the complex phases ``ph (..., N // 2)``: one complex multiply."""
    n = x.size(-1)
    if pairing == "adjacent":
        xc = torch.view_as_complex(x.reshape(x.shape[:-1] + (n // 2, 2)).contiguous())
        return torch.view_as_real(xc * ph).reshape(x.shape)
    xc = torch.complex(x[..., : n // 2], x[..., n // 2:]) * ph
    return torch.cat([xc.real, xc.imag], dim=-1)


def rotate_real(x: Tensor, cos: Tensor, sin: Tensor, pairing: str = "adjacent") -> Tensor:
    """:func:`rotate_by` with the phases as ``cos, sin (..., N // 2)`` of their angles, in real arithmetic only."""
    n = x.size(-1)
    if pairing == "adjacent":
        xp = x.reshape(x.shape[:-1] + (n // 2, 2))
        a, b = xp[..., 0], xp[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(x.shape)
    a, b = x[..., : n // 2], x[..., n // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rotate_pairs(x: Tensor, theta: Tensor, pairing: str = "adjacent") -> Tensor:
    """Rotate the first ``S`` pairs of ``x (..., N)`` by ``theta (..., S)``; the other ``N - 2S`` entries pass."""
    return rotate_by(x, phases(theta, x.size(-1)), pairing)


def mamba3_scan_ref(
    q: Tensor, k: Tensor, v: Tensor, adt: Tensor, dt: Tensor, trap: Tensor, w: Tensor, states: States,
    pairing: str = "adjacent",
) -> Tuple[Tensor, States]:
    """Sequential recurrence, token by token, written from the equations above (the test oracle; use float64).

    Returns ``y (B, L, H, R, P)`` (without the D skip and the gate) and the final ``(angle, ssm, k_prev, v_prev)``.
    """
    angle, h, k_prev, v_prev = states
    ys = []
    for t in range(q.size(1)):
        angle = wrap_angle(angle + dt[:, t, :, None] * w[:, t])
        kr = rotate_pairs(k[:, t], angle.unsqueeze(2), pairing)  # (B, H, R, N)
        qr = rotate_pairs(q[:, t], angle.unsqueeze(2), pairing)
        alpha = torch.exp(adt[:, t])[:, :, None, None]  # (B, H, 1, 1)
        beta = (1 - trap[:, t]) * dt[:, t]
        gamma = trap[:, t] * dt[:, t]
        h = alpha * (h + beta[:, :, None, None] * torch.einsum("bhrp,bhrn->bhpn", v_prev, k_prev)) \
            + gamma[:, :, None, None] * torch.einsum("bhrp,bhrn->bhpn", v[:, t], kr)
        ys.append(torch.einsum("bhpn,bhrn->bhrp", h, qr))
        k_prev, v_prev = kr, v[:, t]
    return torch.stack(ys, dim=1), (angle, h, k_prev, v_prev)


def _segment(X: Tensor, A: Tensor, Kt: Tensor, Qt: Tensor, state: Tensor, q: int) -> Tuple[Tensor, Tensor, Tensor]:
    """One segment, loop-free, head-major: ``X = v * scale (B, H, L, R, P)``, ``A (B, H, L)``, ``Kt, Qt
    (B, H, L, R, N)`` (rotated), ``state (B, H, N, P)``; L a multiple of the chunk ``q``. Returns ``y (B, H, L, R, P)``
    (every sub-token weighted by its ``scale``, without the D skip), the final state ``(B, H, N, P)`` and each token's
    own block of ``C B^T``, ``(B, H, L, R, R)`` (``[t, r, s] = q~_{t,r} . k~_{t,s}``)."""
    b, h, l, r, p = X.shape
    n = Kt.size(-1)
    c = l // q
    Xc = X.reshape(b, h, c, q * r, p)
    Ac = A.reshape(b, h, c, q)
    A_cum = torch.cumsum(Ac, dim=-1)
    Kc, Qc = Kt.reshape(b, h, c, q * r, n), Qt.reshape(b, h, c, q * r, n)
    # 1. intra-chunk: (C B^T . decay) X over the q * r sub-tokens
    CB = Qc @ Kc.transpose(-1, -2)  # (B, H, C, Q R, Q R)
    decay = torch.exp(segsum(Ac))  # (B, H, C, Q, Q)
    if r > 1:
        decay = decay[:, :, :, :, None, :, None].expand(b, h, c, q, r, q, r).reshape(b, h, c, q * r, q * r)
    y = (CB * decay) @ Xc
    own = torch.diagonal(CB.reshape(b, h, c, q, r, q, r), dim1=3, dim2=5)  # (B, H, C, R, R, Q)
    own = own.permute(0, 1, 2, 5, 3, 4).reshape(b, h, l, r, r)
    # 2. state contributed by each chunk at its end; 3. inter-chunk recurrence; 4. output of the entering state
    to_end = torch.exp(A_cum[..., -1:] - A_cum)  # (B, H, C, Q)
    Xd = (Xc.reshape(b, h, c, q, r, p) * to_end[..., None, None]).reshape(b, h, c, q * r, p)
    states = Kc.transpose(-1, -2) @ Xd  # (B, H, C, N, P)
    states = torch.cat([state.unsqueeze(2), states], dim=2)
    decay_chunk = torch.exp(segsum(F.pad(A_cum[..., -1], (1, 0))))  # (B, H, C + 1, C + 1)
    new_states = (decay_chunk @ states.reshape(b, h, c + 1, n * p)).reshape(b, h, c + 1, n, p)
    y_off = (Qc @ new_states[:, :, :-1]).reshape(b, h, c, q, r, p)
    y = y.reshape(b, h, c, q, r, p) + y_off * torch.exp(A_cum)[..., None, None]
    return y.reshape(b, h, l, r, p), new_states[:, :, -1].contiguous(), own


def _pad_rows(t: Tensor, src: Tensor) -> Tensor:
    """``t (B, H, L, ...)`` -> ``(B, H, len(src), ...)``: row ``src[i]`` of ``t`` with a zero row appended at L."""
    zero = torch.zeros_like(t.narrow(2, 0, 1))
    return torch.cat([t, zero], dim=2).index_select(2, src)


def mamba3_scan_chunked(
    q: Tensor, k: Tensor, v: Tensor, adt: Tensor, dt: Tensor, trap: Tensor, w: Tensor, states: States,
    chunk_size: int = 64, pairing: str = "adjacent",
) -> Tuple[Tensor, States]:
    """Loop-free chunked scan (SSD chunk decomposition); same contract as :func:`mamba3_scan_ref`.

    Cost linear in L for a fixed chunk size, with a (L / chunk)^2 chunk-decay matrix: call it on segments of a few
    thousand tokens (the mixer does, carrying the states). L is padded to a multiple of the chunk with dt = 0
    (identity decay, no input), which changes neither the outputs nor the final state.
    """
    return mamba3_scan_head_major(q.transpose(1, 2), k.transpose(1, 2), v, adt, dt, trap, w, states, chunk_size,
                                  pairing)


def mamba3_scan_head_major(
    q: Tensor, k: Tensor, v: Tensor, adt: Tensor, dt: Tensor, trap: Tensor, w: Tensor, states: States,
    chunk_size: int = 64, pairing: str = "adjacent",
) -> Tuple[Tensor, States]:
    """:func:`mamba3_scan_chunked` with ``q, k`` head-major, ``(B, H, L, R, N)`` (the layout the chunk products
    need: a caller that builds them so saves two copies); everything else as there."""
    angle0, h0, k_prev, v_prev = states
    b, l = v.shape[:2]
    dt_h = dt.transpose(1, 2)  # (B, H, L)
    theta = wrap_angle(angle0.unsqueeze(2) + torch.cumsum(dt_h.unsqueeze(-1) * w.transpose(1, 2), dim=2))
    exporting = False
    if not torch.jit.is_scripting():
        exporting = is_exporting()
    if exporting:  # the ONNX exporter takes no complex tensors: the same rotation in cos / sin
        th = F.pad(theta, (0, k.size(-1) // 2 - theta.size(-1))).unsqueeze(3)  # (B, H, L, 1, N / 2)
        cos, sin = torch.cos(th), torch.sin(th)
        kr, qr = rotate_real(k, cos, sin, pairing), rotate_real(q, cos, sin, pairing)
    else:
        ph = phases(theta, k.size(-1)).unsqueeze(3)  # (B, H, L, 1, N / 2)
        kr = rotate_by(k, ph, pairing)
        qr = rotate_by(q, ph, pairing)
    prev_w = (1 - trap) * dt  # (B, L, H): weight of the previous-token term, owed by token t to token t - 1
    nxt = F.pad(prev_w[:, 1:], (0, 0, 0, 1))  # what token t + 1 adds for token t; 0 after the last
    scale = trap * dt + nxt
    # the term the previous call's last token owes the first token: folded into the incoming state
    h_in = h0 + prev_w[:, 0, :, None, None] * torch.einsum("bhrp,bhrn->bhpn", v_prev, k_prev)  # (B, H, P, N)

    X = v.transpose(1, 2) * scale.transpose(1, 2)[..., None, None]  # (B, H, L, R, P)
    A = adt.transpose(1, 2)  # (B, H, L)
    Kt, Qt = kr, qr
    if exporting:  # no branch on L: ceil(L / chunk) + 1 whole chunks, padded and cropped by gathers (as ssd_padded)
        chunk = chunk_size
        total = ((l + chunk - 1) // chunk + 1) * chunk
        pos = torch.arange(total, device=v.device)
        src = torch.where(pos < l, pos, torch.full_like(pos, l))  # step l: an appended zero row (dt = 0, no input)
        X, A, Kt, Qt = _pad_rows(X, src), _pad_rows(A, src), _pad_rows(Kt, src), _pad_rows(Qt, src)
    else:
        chunk = min(chunk_size, max(l, 1))
        pad = (-l) % chunk
        if pad > 0:
            X, A = F.pad(X, (0, 0, 0, 0, 0, pad)), F.pad(A, (0, pad))
            Kt, Qt = F.pad(Kt, (0, 0, 0, 0, 0, pad)), F.pad(Qt, (0, 0, 0, 0, 0, pad))
    y, h, own = _segment(X.contiguous(), A.contiguous(), Kt.contiguous(), Qt.contiguous(),
                         h_in.transpose(-1, -2).contiguous(), chunk)
    if exporting:
        keep = torch.arange(l, device=v.device)
        own, y = own.index_select(2, keep), y.index_select(2, keep)
    else:
        own, y = own[:, :, :l], y[:, :, :l]
    # each token's own block holds lam_t dt_t only, not scale_t: take back the (1 - lam_{t+1}) dt_{t+1} part
    own = own.transpose(1, 2) * nxt[..., None, None]  # (B, L, H, R, R)
    corr = own * v if v.size(3) == 1 else torch.einsum("blhrs,blhsp->blhrp", own, v)
    y = y.transpose(1, 2) - corr  # (B, L, H, R, P)
    return y, (theta[:, :, -1].contiguous(), h.transpose(-1, -2).contiguous(), kr[:, :, -1].contiguous(),
               v[:, -1].contiguous())

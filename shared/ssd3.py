"""Mamba-3 SISO scan in pure PyTorch: a sequential oracle and a loop-free chunked form.

Mamba-3 (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao, Gu, "Mamba-3: Improved Sequence Modeling using State Space
Principles", arXiv:2603.15569). Per head, with state ``h_t (P x N)``, value ``v_t (P)`` (the mixer's x), key ``k_t (N)``
(B), query ``q_t (N)`` (C), step ``dt_t > 0``, log-decay ``a_t = A_t * dt_t < 0``, trapezoid gate ``lam_t in (0, 1)``
and rotary rates ``w_t (S)``::

    theta_t = theta_{t-1} + dt_t * w_t                        (data-dependent rotary angle = complex state)
    k~_t = R(theta_t) k_t,  q~_t = R(theta_t) q_t             (R: S 2x2 rotations of adjacent pairs; rest unrotated)
    h_t = exp(a_t) h_{t-1}
          + (1 - lam_t) dt_t exp(a_t) v_{t-1} k~_{t-1}^T      (exponential-trapezoidal rule: previous token ...
          + lam_t dt_t v_t k~_t^T                             ... and current token)
    y_t = h_t q~_t

The recurrent state is ``(theta, h, k~_{t-1}, v_{t-1})``: what the two-term rule needs to continue a sequence.

Chunked form: unrolling the recurrence, token s enters every later output with weight
``exp(a_{s+1} + ... + a_t) * (lam_s dt_s + (1 - lam_{s+1}) dt_{s+1})`` and its own output with ``lam_s dt_s`` only. So
the scan is Mamba2's SSD (:func:`linmix.shared.ssd.ssd_segment`) on ``X = v * scale``, ``B = k~``, ``C = q~`` (the
rotary phases folded into B and C, one "group" per head), minus a diagonal correction
``(1 - lam_{t+1}) dt_{t+1} (q_t . k_t) v_t``; the term the last token owes the next one is carried in the state
(added to the incoming state as ``(1 - lam_0) dt_0 v_prev k~_prev^T``).

Shapes (at the kernel boundary, i.e. after the B/C norms and biases, per head): ``q, k (B, L, H, N)``,
``v (B, L, H, P)``, ``adt, dt, trap (B, L, H)`` (``trap`` already through the sigmoid), ``w (B, L, H, S)`` (already
``pi * tanh``), states ``angle (B, H, S)``, ``ssm (B, H, P, N)``, ``k_prev (B, H, N)``, ``v_prev (B, H, P)``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from linmix.shared.ssd import ssd_segment

__all__ = ["rotate_pairs", "wrap_angle", "mamba3_scan_ref", "mamba3_scan_chunked"]

States = Tuple[Tensor, Tensor, Tensor, Tensor]


def wrap_angle(theta: Tensor) -> Tensor:
    """``theta mod 2 pi`` in ``[0, 2 pi)`` (keeps the carried angle small; gradient 1)."""
    two_pi = 2.0 * math.pi
    return theta - two_pi * torch.floor(theta / two_pi).detach()


def rotate_pairs(x: Tensor, theta: Tensor) -> Tensor:
    """Rotate the first ``S`` adjacent pairs ``(x[2i], x[2i+1])`` of ``x (..., N)`` by ``theta (..., S)``; the
    remaining ``N - 2S`` entries pass unrotated (``rope_fraction < 1``)."""
    s = theta.size(-1)
    head, tail = x[..., : 2 * s], x[..., 2 * s:]
    pairs = head.reshape(head.shape[:-1] + (s, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).reshape(head.shape)
    return torch.cat([rot, tail], dim=-1)


def mamba3_scan_ref(
    q: Tensor, k: Tensor, v: Tensor, adt: Tensor, dt: Tensor, trap: Tensor, w: Tensor, states: States
) -> Tuple[Tensor, States]:
    """Sequential recurrence, token by token, written from the equations above (the test oracle; use float64).

    Returns ``y (B, L, H, P)`` (without the D skip and the gate) and the final ``(angle, ssm, k_prev, v_prev)``.
    """
    angle, h, k_prev, v_prev = states
    ys = []
    for t in range(q.size(1)):
        angle = wrap_angle(angle + dt[:, t, :, None] * w[:, t])
        kr = rotate_pairs(k[:, t], angle)
        qr = rotate_pairs(q[:, t], angle)
        alpha = torch.exp(adt[:, t])  # (B, H)
        beta = (1 - trap[:, t]) * dt[:, t] * alpha
        gamma = trap[:, t] * dt[:, t]
        h = (alpha[:, :, None, None] * h + beta[:, :, None, None] * v_prev[..., None] * k_prev[:, :, None, :]
             + gamma[:, :, None, None] * v[:, t, ..., None] * kr[:, :, None, :])
        ys.append(torch.einsum("bhpn,bhn->bhp", h, qr))
        k_prev, v_prev = kr, v[:, t]
    return torch.stack(ys, dim=1), (angle, h, k_prev, v_prev)


def mamba3_scan_chunked(
    q: Tensor, k: Tensor, v: Tensor, adt: Tensor, dt: Tensor, trap: Tensor, w: Tensor, states: States,
    chunk_size: int = 64,
) -> Tuple[Tensor, States]:
    """Loop-free chunked scan (SSD chunk decomposition); same contract as :func:`mamba3_scan_ref`.

    Cost linear in L for a fixed chunk size, with a (L / chunk)^2 chunk-decay matrix: call it on segments of a few
    thousand tokens (the mixer does, carrying the states). L is padded to a multiple of the chunk with dt = 0
    (identity decay, no input), which changes neither the outputs nor the final state.
    """
    angle0, h0, k_prev, v_prev = states
    b, l, nh, p = v.shape
    theta = wrap_angle(angle0.unsqueeze(1) + torch.cumsum(dt.unsqueeze(-1) * w, dim=1))  # (B, L, H, S)
    kr = rotate_pairs(k, theta)
    qr = rotate_pairs(q, theta)
    prev_w = (1 - trap) * dt  # weight of the previous-token term, owed by token t to token t - 1
    nxt = F.pad(prev_w[:, 1:], (0, 0, 0, 1))  # (B, L, H): what token t + 1 adds for token t; 0 after the last
    scale = trap * dt + nxt
    # the term the previous call's last token owes the first token: folded into the incoming state
    h_in = h0 + prev_w[:, 0, :, None, None] * v_prev.unsqueeze(-1) * k_prev.unsqueeze(-2)  # (B, H, P, N)

    chunk = min(chunk_size, max(l, 1))
    pad = (-l) % chunk
    X = (v * scale.unsqueeze(-1)).transpose(1, 2)  # (B, H, L, P)
    A = adt.transpose(1, 2)  # (B, H, L)
    Bt, Ct = kr.transpose(1, 2), qr.transpose(1, 2)  # (B, H, L, N): one group per head
    if pad > 0:
        X = F.pad(X, (0, 0, 0, pad))
        A = F.pad(A, (0, pad))
        Bt = F.pad(Bt, (0, 0, 0, pad))
        Ct = F.pad(Ct, (0, 0, 0, pad))
    y, h = ssd_segment(X.contiguous(), A.contiguous(), Bt.contiguous(), Ct.contiguous(),
                       h_in.transpose(-1, -2).contiguous(), chunk)
    y = y[:, :, :l].transpose(1, 2)  # (B, L, H, P)
    y = y - (nxt * (qr * kr).sum(-1)).unsqueeze(-1) * v  # the diagonal holds lam_t dt_t only
    return y, (theta[:, -1].contiguous(), h.transpose(-1, -2).contiguous(), kr[:, -1].contiguous(),
               v[:, -1].contiguous())

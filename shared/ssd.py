"""State-space duality (SSD) scan of Mamba2, in pure PyTorch.

Mamba2 (Dao & Gu, "Transformers are SSMs", arXiv:2405.21060). Per head h with state size N and head dim P::

    h_t = exp(dt_t * A_h) * h_{t-1} + dt_t * x_t B_t^T          (h_t in R^{P x N})
    y_t = h_t C_t + D_h * x_t

Shapes (letters as everywhere in linmix): B batch, L length, H heads, P head dim, G groups of heads sharing B/C,
N state size. ``x (B, L, H, P)``, ``dt (B, L, H)`` (already positive, i.e. after softplus), ``A (B, H)`` (negative;
per batch element so a bidirectional scan can give each direction its own A), ``Bm, Cm (B, L, G, N)``,
``state (B, H, P, N)``.

Three implementations with one contract:

* :func:`ssd_scan_ref` - the sequential recurrence, the test oracle (O(L) steps, slow).
* :func:`ssd_segment` - the loop-free chunked form ("ssd_minimal" of the paper, with the stable masked-cumsum segsum),
  exact for one segment whose length is a multiple of the chunk size.
* :func:`ssd_chunked` - the production CPU path: the sequence is cut into segments of ``segment_len`` tokens, each
  computed loop-free by :func:`ssd_segment`, the state carried across segments (a Python loop over L / segment_len
  steps: cost linear in L). In training, each segment is recomputed in backward (activation checkpointing), so the
  stored activations are O(L * H * P) rather than O(L * chunk * H).

:func:`ssd_scan` dispatches between this and mamba-ssm's fused Triton kernel (CUDA only, probed lazily).

Under ``torch.export`` (and so the ONNX dynamo exporter), :func:`ssd_chunked` runs :func:`ssd_padded` instead: one
segment, the length always padded to whole chunks, no Python branch on the length, so the exported program keeps L
symbolic. It equals the segmented path (tests/core/test_export_formats.py); its inter-chunk matrix is
(L / chunk_size + 1)^2 per head, so an exported program's memory grows quadratically in L / chunk_size.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from linmix.shared.kernels import mamba_chunk_scan

__all__ = ["segsum", "ssd_scan_ref", "ssd_segment", "ssd_chunked", "ssd_scan"]


def segsum(a: Tensor) -> Tensor:
    """Stable segment sum: ``out[..., i, j] = sum_{k=j+1..i} a[..., k]`` for i >= j, ``-inf`` above the diagonal.

    Built by a masked cumulative sum rather than as a difference of two cumsums, which loses precision when the
    decays are strong (fp32, |A·dt| up to ~5 per step: the difference form errs by ~5e-4 at chunk 64 against an fp64
    scan, this form by ~7e-5). ``a (..., T) -> (..., T, T)``.
    """
    t = a.size(-1)
    x = a.unsqueeze(-1).expand(a.shape + (t,))  # x[..., i, j] = a[..., i]
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), diagonal=-1)
    x = x.masked_fill(~strict, 0.0).cumsum(dim=-2)
    lower = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), diagonal=0)
    return x.masked_fill(~lower, float("-inf"))


def _check(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (B, L, H, P), got shape {list(x.shape)}")
    b, l, h, _ = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"ssd: dt must be (B, L, H) = {(b, l, h)}, got {list(dt.shape)}")
    if A.shape != (b, h):
        raise ValueError(f"ssd: A must be (B, H) = {(b, h)}, got {list(A.shape)}")
    if Bm.dim() != 4 or Bm.shape[:2] != (b, l) or Cm.shape != Bm.shape or h % Bm.size(2) != 0:
        raise ValueError(
            f"ssd: B and C must be (B, L, G, N) with H % G == 0; got {list(Bm.shape)} and {list(Cm.shape)} for H={h}"
        )


def ssd_scan_ref(
    x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, initial_state: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Sequential SSD recurrence (oracle). Returns ``y (B, L, H, P)`` (without the D skip) and ``state (B, H, P, N)``."""
    _check(x, dt, A, Bm, Cm)
    b, l, h, p = x.shape
    g, n = Bm.size(2), Bm.size(3)
    r = h // g
    Bh = Bm.repeat_interleave(r, dim=2)  # (B, L, H, N)
    Ch = Cm.repeat_interleave(r, dim=2)
    state = initial_state if initial_state is not None else x.new_zeros(b, h, p, n)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # (B, H)
        state = state * decay[:, :, None, None] + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.stack(ys, dim=1), state


def ssd_segment(
    X: Tensor, Adt: Tensor, Bt: Tensor, Ct: Tensor, state: Tensor, chunk_size: int
) -> Tuple[Tensor, Tensor]:
    """Loop-free chunked SSD over one segment (length a multiple of ``chunk_size``); exact.

    Head-major layout so every contraction is a plain batched matmul: ``X = x * dt (B, H, L, P)``,
    ``Adt = A * dt (B, H, L)``, ``Bt, Ct (B, G, L, N)``, ``state (B, H, N, P)`` (transposed from the public
    (B, H, P, N)). B/C are shared by the H / G heads of a group, so C B^T is computed once per group.
    Returns ``y (B, H, L, P)`` (without the D skip) and the final state ``(B, H, N, P)``.
    """
    b, h, l, p = X.shape
    g, n = Bt.size(1), Bt.size(3)
    r = h // g
    q = chunk_size
    c = l // q
    Xc = X.reshape(b, h, c, q, p)
    Ac = Adt.reshape(b, h, c, q)
    A_cum = torch.cumsum(Ac, dim=-1)
    Bc = Bt.reshape(b, g, 1, c, q, n)
    Cc = Ct.reshape(b, g, 1, c, q, n)

    # 1. intra-chunk (diagonal blocks): Y = (C B^T . L) X with L = exp(segsum(A dt))
    Lm = torch.exp(segsum(Ac)).reshape(b, g, r, c, q, q)
    CB = Cc @ Bc.transpose(-1, -2)  # (B, G, 1, C, Q, Q)
    y = (CB * Lm).reshape(b, h, c, q, q) @ Xc  # (B, H, C, Q, P)

    # 2. state contributed by each chunk, decayed to the chunk end: B^T (decay * X)
    decay_states = torch.exp(A_cum[..., -1:] - A_cum)  # (B, H, C, Q)
    Xd = (Xc * decay_states.unsqueeze(-1)).reshape(b, g, r, c, q, p)
    states = (Bc.transpose(-1, -2) @ Xd).reshape(b, h, c, n, p)

    # 3. inter-chunk recurrence, loop-free over the (C + 1)^2 chunk-decay matrix (C <= segment_len / chunk_size)
    states = torch.cat([state.unsqueeze(2), states], dim=2)  # (B, H, C + 1, N, P)
    decay_chunk = torch.exp(segsum(F.pad(A_cum[..., -1], (1, 0))))  # (B, H, C + 1, C + 1)
    new_states = (decay_chunk @ states.reshape(b, h, c + 1, n * p)).reshape(b, h, c + 1, n, p)
    final = new_states[:, :, -1].contiguous()  # a copy: a view would keep all C + 1 chunk states of the segment alive

    # 4. output contributed by the state entering each chunk
    y_off = (Cc @ new_states[:, :, :-1].reshape(b, g, r, c, n, p)).reshape(b, h, c, q, p)
    y = y + y_off * torch.exp(A_cum).unsqueeze(-1)
    return y.reshape(b, h, l, p), final


@torch.jit.unused
def _segment_checkpointed(
    X: Tensor, Adt: Tensor, Bt: Tensor, Ct: Tensor, state: Tensor, chunk_size: int
) -> Tuple[Tensor, Tensor]:
    from torch.utils.checkpoint import checkpoint

    return checkpoint(ssd_segment, X, Adt, Bt, Ct, state, chunk_size, use_reentrant=False)


def is_exporting() -> bool:
    """True while ``torch.export`` (or the ONNX dynamo exporter) traces; call under ``if not torch.jit.is_scripting()``."""
    return torch.compiler.is_exporting()


def ssd_padded(
    x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, chunk_size: int = 64, initial_state: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Export-friendly SSD: one segment of ``ceil(L / chunk_size) + 1`` whole chunks (dt = 0 past L), no branch on L.

    Same contract and result as :func:`ssd_chunked`; used while exporting (a symbolic L cannot drive the segment loop
    or the short-sequence chunk clamp). Padding and the final crop are gathers (an appended zero row read for every
    padded step), so no size inequality has to be proved for L derived from other sizes (e.g. a frame count); the
    chunk count is never 1. Memory is quadratic in the number of chunks.
    """
    b, l, h, p = x.shape
    n = Bm.size(3)
    q = chunk_size
    total = ((l + q - 1) // q + 1) * q
    pos = torch.arange(total, device=x.device)
    src = torch.where(pos < l, pos, torch.full_like(pos, l))  # step l is the appended zero row

    def pad(t: Tensor) -> Tensor:  # (B, *, L, *) along dim 2 -> (B, *, total, *)
        zero = torch.zeros_like(t.narrow(2, 0, 1))
        return torch.cat([t, zero], dim=2).index_select(2, src).contiguous()

    X = pad((x * dt.unsqueeze(-1)).transpose(1, 2))  # (B, H, total, P)
    Adt = pad((dt * A.unsqueeze(1)).transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # (B, H, total)
    Bt, Ct = pad(Bm.transpose(1, 2)), pad(Cm.transpose(1, 2))  # (B, G, total, N)
    state = initial_state.transpose(-1, -2) if initial_state is not None else x.new_zeros(b, h, n, p)
    y, state = ssd_segment(X, Adt, Bt, Ct, state, q)
    y = y.index_select(2, torch.arange(l, device=x.device))
    return y.transpose(1, 2), state.transpose(-1, -2)


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    Bm: Tensor,
    Cm: Tensor,
    chunk_size: int = 64,
    segment_len: int = 2048,
    initial_state: Optional[Tensor] = None,
    recompute: bool = True,
) -> Tuple[Tensor, Tensor]:
    """Pure-PyTorch SSD, linear in L. Same contract as :func:`ssd_scan_ref`.

    Pads L to a multiple of ``chunk_size`` with dt = 0 (identity decay, no input), so padding changes neither the
    outputs nor the final state. ``recompute`` checkpoints each segment when gradients are needed (eager only).
    """
    _check(x, dt, A, Bm, Cm)
    if not torch.jit.is_scripting():
        if is_exporting():
            return ssd_padded(x, dt, A, Bm, Cm, chunk_size, initial_state)
    b, l, h, p = x.shape
    n = Bm.size(3)
    chunk_size = min(chunk_size, max(l, 1))  # a short sequence is one chunk: no padding work
    seg = max(chunk_size, (segment_len // chunk_size) * chunk_size)
    # one layout change for the whole sequence; segments are then views along L
    X = (x * dt.unsqueeze(-1)).transpose(1, 2)  # (B, H, L, P)
    Adt = (dt * A.unsqueeze(1)).transpose(1, 2)  # (B, H, L)
    Bt, Ct = Bm.transpose(1, 2), Cm.transpose(1, 2)  # (B, G, L, N)
    pad = (-l) % chunk_size
    if pad > 0:
        X = F.pad(X, (0, 0, 0, pad))
        Adt = F.pad(Adt, (0, pad))
        Bt = F.pad(Bt, (0, 0, 0, pad))
        Ct = F.pad(Ct, (0, 0, 0, pad))
    X, Adt, Bt, Ct = X.contiguous(), Adt.contiguous(), Bt.contiguous(), Ct.contiguous()
    state = initial_state.transpose(-1, -2) if initial_state is not None else x.new_zeros(b, h, n, p)
    total = l + pad
    ys = []
    use_ckpt = recompute and torch.is_grad_enabled() and X.requires_grad and total > seg
    for start in range(0, total, seg):
        end = min(start + seg, total)
        xs, As, bs, cs = X[:, :, start:end], Adt[:, :, start:end], Bt[:, :, start:end], Ct[:, :, start:end]
        if not torch.jit.is_scripting() and use_ckpt:
            y, state = _segment_checkpointed(xs, As, bs, cs, state, chunk_size)
        else:
            y, state = ssd_segment(xs, As, bs, cs, state, chunk_size)
        ys.append(y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=2)
    return y[:, :, :l].transpose(1, 2), state.transpose(-1, -2)


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    Bm: Tensor,
    Cm: Tensor,
    chunk_size: int = 64,
    initial_state: Optional[Tensor] = None,
    backend: str = "auto",
    segment_len: int = 2048,
) -> Tuple[Tensor, Tensor]:
    """SSD scan with backend dispatch: ``"torch"`` (pure PyTorch), ``"kernel"`` (mamba-ssm, CUDA), ``"auto"``.

    ``auto`` uses mamba-ssm's ``mamba_chunk_scan_combined`` only when it imports and the tensors are on CUDA.
    """
    if not torch.jit.is_scripting():
        if backend == "kernel" or (backend == "auto" and x.is_cuda):
            fn = mamba_chunk_scan(required=backend == "kernel")
            if fn is not None and x.is_cuda:
                return _kernel_scan(fn, x, dt, A, Bm, Cm, chunk_size, initial_state)
            if backend == "kernel":
                raise RuntimeError("ssd_scan(backend='kernel') needs CUDA tensors; got tensors on " + str(x.device))
    return ssd_chunked(x, dt, A, Bm, Cm, chunk_size, segment_len, initial_state)


@torch.jit.unused
def _kernel_scan(fn, x, dt, A, Bm, Cm, chunk_size: int, initial_state: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    # The kernel takes A per head (H,); a per-batch A (bidirectional scans) is folded into dt, since only A*dt enters
    # the recurrence and dt multiplies the input: x*dt is kept by rescaling x.
    a0 = A[0]
    if bool((A == a0).all()):
        y, state = fn(x, dt, a0, Bm, Cm, chunk_size, initial_states=initial_state, return_final_states=True)
    else:
        scale = A / a0  # (B, H), positive ratio of two negative numbers
        dt_eff = dt * scale.unsqueeze(1)
        y, state = fn(x / scale[:, None, :, None], dt_eff, a0, Bm, Cm, chunk_size,
                      initial_states=initial_state, return_final_states=True)
    return y, state

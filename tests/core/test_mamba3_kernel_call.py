"""The Mamba-3 MIMO kernel call without CUDA: ``Mamba3._mimo_kernel_forward`` hands mamba-ssm's ``mamba3_mimo`` the
arguments its documented interface takes (B, C ``(B, L, R, G, N)``, ``ADT`` / ``DT`` / raw ``Trap`` ``(B, H, L)``, raw
angles ``(B, L, H, S)``, ``MIMO_V`` / ``MIMO_Z`` / ``MIMO_Out`` ``(H, R, P)``, D, Z) and reads its output back. A
stand-in written from that interface with the sequential float64 scan must reproduce the PyTorch forward; the kernel
itself is compared on CUDA in tests/core/test_gpu_parity_mamba3.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from linmix.shared import Mamba3
from linmix.shared.ssd3 import mamba3_scan_ref

D = 32
f64 = torch.float64


def _stand_in(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, MIMO_V, MIMO_Z, MIMO_Out, Angles, D, Z, chunk_size,
              rotary_dim_divisor, dtype, return_state=False, cu_seqlens=None):
    """``mamba3_mimo``'s documented contract from a zero state: sigmoid(Trap), ``pi * tanh(Angles) * DT`` accumulated,
    pairs ``(i, i + N/2)``, D skip on the up-projected V, ``silu(Z * MIMO_Z)`` gate, ``MIMO_Out`` down-projection (or
    every rank ``(B, L, R, H, P)`` when it is None)."""
    assert not return_state and cu_seqlens is None and chunk_size >= 8 and rotary_dim_divisor in (2, 4)
    b, l, r, g, n = Q.shape
    h, p = V.shape[2], V.shape[3]

    def per_head(t, bias):  # (B, L, R, G, N) -> (B, L, H, R, N) + bias (H, R, N)
        return t.transpose(2, 3).repeat_interleave(h // g, dim=2) + bias

    v = V.unsqueeze(-2) * MIMO_V  # (B, L, H, R, P)
    states = (Angles.new_zeros(b, h, Angles.size(-1)), V.new_zeros(b, h, p, n), V.new_zeros(b, h, r, n),
              V.new_zeros(b, h, r, p))
    y, _ = mamba3_scan_ref(per_head(Q, Q_bias), per_head(K, K_bias), v, ADT.transpose(1, 2), DT.transpose(1, 2),
                           torch.sigmoid(Trap).transpose(1, 2), torch.tanh(Angles) * math.pi, states, "half")
    y = y + v * D[:, None, None]
    if Z is not None:
        y = y * F.silu(Z.unsqueeze(-2) * MIMO_Z)
    if MIMO_Out is None:
        return y.transpose(2, 3).to(dtype)
    return (y * MIMO_Out).sum(-2).to(dtype)


@pytest.mark.parametrize("kw", [{}, {"is_outproj_norm": True}, {"ngroups": 2, "rope_fraction": 1.0}])
def test_mimo_kernel_call_reproduces_the_pytorch_forward(kw):
    torch.manual_seed(0)
    m = Mamba3(D, d_state=8, headdim=16, is_mimo=True, mimo_rank=2, chunk_size=8, backend="torch", **kw).double()
    with torch.no_grad():  # move the MIMO projections and biases off their constant initialisation
        for t in (m.mimo_x, m.mimo_z, m.mimo_o, m.B_bias, m.C_bias, m.D):
            t.add_(0.3 * torch.randn_like(t))
    x = torch.randn(2, 13, D, dtype=f64)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, :3] = False
    mask[1, 10:] = False
    for msk in (None, mask):  # (ADT, DT and the angles go to the kernel in float32, as it takes them)
        torch.testing.assert_close(m._mimo_kernel_forward(_stand_in, x, msk), m(x, msk), rtol=1e-5, atol=1e-6)


def test_kernel_backend_without_the_kernel_is_a_clear_error(monkeypatch):
    from linmix.shared.kernels import _probe, mamba3_mimo_kernel

    monkeypatch.delenv("LINMIX_BACKEND", raising=False)
    _probe.cache_clear()
    try:
        with pytest.raises(ValueError, match="chunk_size >= 8"):
            Mamba3(D, is_mimo=True, chunk_size=4, backend="kernel")
        if mamba3_mimo_kernel() is None:
            with pytest.raises(RuntimeError, match="MIMO kernels"):
                Mamba3(D, is_mimo=True, chunk_size=16, backend="kernel")
    finally:
        _probe.cache_clear()

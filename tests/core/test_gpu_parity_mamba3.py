"""Mamba-3 on CUDA: linmix's pure-PyTorch Mamba3 vs mamba-ssm's ``Mamba3`` module (same state_dict, both directions;
SISO and MIMO) and vs linmix's own kernel path (SISO: Triton, with carried state; MIMO: TileLang, ``forward``, also
chosen by ``backend="auto"``). Skipped without CUDA or without mamba-ssm >= 2.3.2 (MIMO: with TileLang). The MIMO case
also checks the rotary pairing linmix assumes for MIMO (``(i, i + N/2)``)."""

import pytest
import torch

from linmix.shared import Mamba3

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def _kernel(monkeypatch):
    monkeypatch.delenv("LINMIX_BACKEND", raising=False)
    from linmix.shared.kernels import _probe, mamba3_siso_kernel

    _probe.cache_clear()
    if mamba3_siso_kernel() is None:
        pytest.skip("mamba-ssm's Mamba-3 kernels not installed (mamba-ssm >= 2.3.2)")


def _pair(**kw):
    from mamba_ssm import Mamba3 as RefMamba3

    torch.manual_seed(0)
    kw = dict({"chunk_size": 64}, **kw)
    try:
        ref = RefMamba3(128, d_state=64, headdim=64, layer_idx=0, **kw).cuda()
    except AssertionError as err:  # mamba-ssm asserts when its MIMO (TileLang) kernels are missing
        pytest.skip(f"mamba-ssm Mamba3{kw}: {err}")
    ours = Mamba3(128, d_state=64, headdim=64, backend="torch", **kw).cuda()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("kw", [{}, {"rope_fraction": 1.0, "ngroups": 2}, {"is_outproj_norm": True},
                                {"is_mimo": True, "mimo_rank": 4, "chunk_size": 16}])
@pytest.mark.parametrize("L", [100, 1000])
def test_matches_mamba_ssm_module(kw, L):
    ref, ours = _pair(**kw)
    x = torch.randn(2, L, 128, device="cuda", requires_grad=True)
    y_ref, y = ref(x), ours(x)
    torch.testing.assert_close(y, y_ref, rtol=3e-3, atol=3e-3)
    g_ref = torch.autograd.grad(y_ref.square().sum(), x)[0]
    g = torch.autograd.grad(y.square().sum(), x)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-2, atol=1e-2)


def test_kernel_backend_matches_torch_and_continues_state():
    torch.manual_seed(0)
    ours = Mamba3(128, d_state=64, headdim=64, backend="torch").cuda()
    ker = Mamba3(128, d_state=64, headdim=64, backend="kernel").cuda()
    ker.load_state_dict(ours.state_dict())
    x = torch.randn(2, 300, 128, device="cuda")
    full = ours(x)
    torch.testing.assert_close(ker(x), full, rtol=3e-3, atol=3e-3)
    a, *state = ker.forward_state(x[:, :170], *ker.init_state(2))
    b, *_ = ker.forward_state(x[:, 170:], *state)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=3e-3, atol=3e-3)


@pytest.mark.parametrize("kw", [{}, {"is_outproj_norm": True}])
def test_mimo_kernel_backend_matches_torch(kw, monkeypatch):
    import linmix.shared.mamba3 as M3

    if M3.mamba3_mimo_kernel() is None:
        pytest.skip("mamba-ssm's Mamba-3 MIMO kernel (TileLang) not installed")
    torch.manual_seed(0)
    size = dict(d_state=64, headdim=64, is_mimo=True, mimo_rank=4, chunk_size=16, **kw)
    ours = Mamba3(128, backend="torch", **size).cuda()
    with torch.no_grad():  # off the constant initialisation, so a swapped axis shows
        for t in (ours.mimo_x, ours.mimo_z, ours.mimo_o, ours.B_bias, ours.C_bias, ours.D):
            t.add_(0.2 * torch.randn_like(t))
    ker, auto = Mamba3(128, backend="kernel", **size).cuda(), Mamba3(128, backend="auto", **size).cuda()
    ker.load_state_dict(ours.state_dict())
    auto.load_state_dict(ours.state_dict())
    calls = []
    real = M3.mamba3_mimo_kernel
    monkeypatch.setattr(M3, "mamba3_mimo_kernel", lambda required=False: calls.append(1) or real(required))
    x = torch.randn(2, 300, 128, device="cuda", requires_grad=True)
    mask = torch.ones(2, 300, dtype=torch.bool, device="cuda")
    mask[0, :37] = False
    mask[1, 250:] = False
    for m in (None, mask):
        full = ours(x, m)
        y = ker(x, m)
        torch.testing.assert_close(y, full, rtol=3e-3, atol=3e-3)
        g_ref = torch.autograd.grad(full.square().sum(), x)[0]
        g = torch.autograd.grad(y.square().sum(), x)[0]
        torch.testing.assert_close(g, g_ref, rtol=1e-2, atol=1e-2)
    n = len(calls)
    torch.testing.assert_close(auto(x), ours(x), rtol=3e-3, atol=3e-3)
    assert len(calls) == n + 1  # "auto" took the kernel path on CUDA

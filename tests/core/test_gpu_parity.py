"""Kernel parity on CUDA: mamba-ssm's fused SSD kernel vs the pure-PyTorch path. Skipped without CUDA + mamba-ssm."""

import pytest
import torch

from linmix.shared import BiMamba2, Mamba2, kernel_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def _kernel(monkeypatch):
    monkeypatch.delenv("LINMIX_BACKEND", raising=False)
    from linmix.shared.kernels import _probe

    _probe.cache_clear()
    if not kernel_available():
        pytest.skip("mamba-ssm kernel not installed (pip install -e .[cuda] --no-build-isolation)")


@pytest.mark.parametrize("cls", [Mamba2, BiMamba2])
@pytest.mark.parametrize("L", [100, 1000])
def test_kernel_matches_torch_path(cls, L):
    torch.manual_seed(0)
    ref = cls(128, d_state=64, headdim=64, backend="torch").cuda()
    ker = cls(128, d_state=64, headdim=64, backend="kernel").cuda()
    ker.load_state_dict(ref.state_dict())
    x = torch.randn(2, L, 128, device="cuda", requires_grad=True)
    y_ref, y_ker = ref(x), ker(x)
    torch.testing.assert_close(y_ker, y_ref, rtol=2e-3, atol=2e-3)
    g_ref = torch.autograd.grad(y_ref.square().sum(), x)[0]
    g_ker = torch.autograd.grad(y_ker.square().sum(), x)[0]
    torch.testing.assert_close(g_ker, g_ref, rtol=5e-3, atol=5e-3)

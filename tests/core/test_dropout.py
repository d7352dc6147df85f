"""FastDropout / keep_mask: the Bernoulli law of ``nn.Dropout`` with a 16-bit threshold."""

from __future__ import annotations

import math

import pytest
import torch

from linmix.shared.dropout import FastDropout, effective_p, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_mask_law(p: float) -> None:
    torch.manual_seed(0)
    n = 400_000
    k = keep_mask([n], p)
    q = effective_p(p)
    assert abs(q - p) <= 0.5 / 65536
    scale = 1.0 / (1.0 - q)
    values = torch.unique(k)
    assert torch.equal(values, torch.tensor([0.0, scale]))
    dropped = int((k == 0).sum())
    sd = math.sqrt(n * q * (1 - q))
    assert abs(dropped - n * q) < 5 * sd  # binomial, 5 sigma
    # neighbours are independent: P(both dropped) ~ q^2 (pairs from the same 64-bit word and across words)
    both = ((k[:-1] == 0) & (k[1:] == 0)).double().mean().item()
    assert abs(both - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / n)
    assert abs(k.double().mean().item() - 1.0) < 0.01  # the expectation is kept


def test_keep_mask_edges_and_seed() -> None:
    assert torch.equal(keep_mask([3, 5], 1.0), torch.zeros(3, 5))
    assert torch.equal(keep_mask([7], 0.0), torch.ones(7))
    torch.manual_seed(3)
    a = keep_mask([17, 9], 0.3, dtype=torch.float64)
    torch.manual_seed(3)
    b = keep_mask([17, 9], 0.3, dtype=torch.float64)
    assert a.dtype == torch.float64 and a.shape == (17, 9) and torch.equal(a, b)
    assert not torch.equal(a, keep_mask([17, 9], 0.3, dtype=torch.float64))


def test_fast_dropout_module() -> None:
    x = torch.randn(64, 33)
    d = FastDropout(0.25)
    d.eval()
    assert d(x) is x
    d.train()
    torch.manual_seed(1)
    y = d(x)
    torch.manual_seed(1)
    k = keep_mask([64, 33], 0.25)
    assert torch.equal(y, x * k)
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.5)
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(33, 4), FastDropout(0.5)).eval())
    assert scripted(x).shape == (64, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fast_dropout_in_a_narrow_dtype_scales_like_nn_dropout(dtype) -> None:
    """A bfloat16 / float16 input (autocast) is dropped with the same 16-bit law, and kept elements are x / (1 - p_q)
    rounded once, as nn.Dropout rounds them, not x times a multiplier already rounded to the dtype."""
    p, n = 0.1, 400_000
    q = effective_p(p)
    x = (torch.rand(n) + 0.5).to(dtype)
    torch.manual_seed(2)
    y = FastDropout(p).train()(x)
    assert y.dtype == dtype
    kept = y != 0
    torch.testing.assert_close(y[kept], (x[kept].float() / (1 - q)).to(dtype), rtol=0, atol=0)
    dropped = int((~kept).sum())
    assert abs(dropped - n * q) < 5 * math.sqrt(n * q * (1 - q))
    torch.manual_seed(2)  # the same elements as the float32 mask of the same seed
    assert torch.equal(~kept, keep_mask([n], p) == 0)
    assert abs(y.double().mean().item() / x.double().mean().item() - 1.0) < 0.01
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))
    assert torch.equal(FastDropout(1e-7).train()(x), x)  # p_q = 0: nothing dropped

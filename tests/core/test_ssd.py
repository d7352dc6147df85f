"""SSD scan: chunked == sequential recurrence (values, final state, gradients), chunk sizes agree, stable segsum."""

import pytest
import torch
import torch.nn.functional as F

from linmix.shared.ssd import segsum, ssd_chunked, ssd_scan, ssd_scan_ref


def _inputs(b=2, l=150, h=4, p=8, g=2, n=16, dtype=torch.float64, strong=False):
    x = torch.randn(b, l, h, p, dtype=dtype)
    dt = F.softplus(torch.randn(b, l, h, dtype=dtype) + (1.5 if strong else 0.0))
    A = -torch.rand(b, h, dtype=dtype) * (3.0 if strong else 1.0) - 0.1
    Bm = torch.randn(b, l, g, n, dtype=dtype)
    Cm = torch.randn(b, l, g, n, dtype=dtype)
    s0 = torch.randn(b, h, p, n, dtype=dtype)
    return x, dt, A, Bm, Cm, s0


@pytest.mark.parametrize("chunk,segment", [(16, 32), (16, 2048), (64, 64), (32, 96)])
def test_chunked_equals_sequential_float64(chunk, segment):
    x, dt, A, Bm, Cm, s0 = _inputs()
    y_ref, s_ref = ssd_scan_ref(x, dt, A, Bm, Cm, s0)
    y, s = ssd_chunked(x, dt, A, Bm, Cm, chunk_size=chunk, segment_len=segment, initial_state=s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_gradients_match_sequential_with_recompute():
    args = [t.requires_grad_() for t in _inputs(l=100)]
    x, dt, A, Bm, Cm, s0 = args
    y_ref, s_ref = ssd_scan_ref(x, dt, A, Bm, Cm, s0)
    g_ref = torch.autograd.grad((y_ref ** 2).sum() + s_ref.sum(), args)
    # segment_len < L so the checkpointed (recomputed) path is taken
    y, s = ssd_chunked(x, dt, A, Bm, Cm, chunk_size=16, segment_len=32, initial_state=s0, recompute=True)
    g = torch.autograd.grad((y ** 2).sum() + s.sum(), args)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_float32_strong_decay_stays_accurate():
    x, dt, A, Bm, Cm, s0 = _inputs(l=256, strong=True)
    y_ref, _ = ssd_scan_ref(x, dt, A, Bm, Cm, s0)
    y, _ = ssd_chunked(*(t.float() for t in (x, dt, A, Bm, Cm)), chunk_size=64, initial_state=s0.float())
    rel = (y.double() - y_ref).norm() / y_ref.norm()
    assert rel < 1e-5, rel


def test_segsum_is_stable_masked_cumsum():
    a = torch.randn(3, 10, dtype=torch.float64)
    out = segsum(a)
    i, j = 7, 2
    assert torch.allclose(out[:, i, j], a[:, j + 1 : i + 1].sum(-1))
    assert torch.isneginf(out[:, 2, 7]).all() and (out.diagonal(dim1=-2, dim2=-1) == 0).all()


def test_padding_to_chunk_does_not_change_state():
    x, dt, A, Bm, Cm, s0 = _inputs(l=70)
    _, s_ref = ssd_scan_ref(x, dt, A, Bm, Cm, s0)
    _, s = ssd_chunked(x, dt, A, Bm, Cm, chunk_size=64, initial_state=s0)  # 70 -> padded to 128
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_bad_shapes_raise_value_error():
    x, dt, A, Bm, Cm, _ = _inputs()
    with pytest.raises(ValueError, match=r"\(B, L, H\)"):
        ssd_chunked(x, dt[:, :-1], A, Bm, Cm)
    with pytest.raises(ValueError, match=r"\(B, L, H, P\)"):
        ssd_chunked(x[0], dt, A, Bm, Cm)


def test_kernel_backend_without_kernel_is_a_clear_error():
    x, dt, A, Bm, Cm, _ = _inputs()
    with pytest.raises(RuntimeError, match="pip install"):
        ssd_scan(x, dt, A, Bm, Cm, backend="kernel")


@pytest.mark.parametrize("l", [1, 5, 64])
def test_sequences_shorter_than_a_chunk(l):
    x, dt, A, Bm, Cm, s0 = _inputs(l=l)
    y_ref, s_ref = ssd_scan_ref(x, dt, A, Bm, Cm, s0)
    y, s = ssd_chunked(x, dt, A, Bm, Cm, chunk_size=64, initial_state=s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)

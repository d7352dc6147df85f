"""Mixers: causality, recurrent == parallel, exact padding masks, linear attention == quadratic form, projection
attention permutation equivariance, clear errors on bad input."""

import pytest
import torch

from linmix.shared import (
    MIXERS,
    BiMamba2,
    LinearAttention,
    Mamba2,
    MixerStack,
    ProjectionAttention,
    build_mixer,
)
from linmix.shared.linear_attention import feature_map, linear_attention_ref

D = 32
CAUSAL = ("mamba2", "mamba3", "hybrid", "linear_causal", "softmax_causal")


def _mixer(kind):
    torch.manual_seed(0)
    return build_mixer(kind, D, n_heads=4, d_state=8, chunk_size=8, backend="torch").double().eval()


@pytest.mark.parametrize("kind", CAUSAL)
def test_causal_prefix_unchanged_by_future(kind):
    m = _mixer(kind)
    x = torch.randn(2, 29, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 17:] = torch.randn_like(x2[:, 17:])
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :17], y2[:, :17])
    assert not torch.allclose(y[:, 17:], y2[:, 17:])


@pytest.mark.parametrize("kind", MIXERS)
def test_right_padding_is_exact(kind):
    m = _mixer(kind)
    x = torch.randn(1, 21, D, dtype=torch.float64)
    padded = torch.cat([x, torch.randn(1, 11, D, dtype=torch.float64)], dim=1)
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[:, :21] = True
    y_pad = m(padded, mask)
    torch.testing.assert_close(y_pad[:, :21], m(x), rtol=1e-9, atol=1e-9)
    assert (y_pad[:, 21:] == 0).all()


@pytest.mark.parametrize("kind", ["bimamba2", "linear", "projection", "softmax"])
def test_left_padding_is_exact_for_noncausal(kind):
    m = _mixer(kind)
    x = torch.randn(1, 19, D, dtype=torch.float64)
    padded = torch.cat([torch.randn(1, 6, D, dtype=torch.float64), x], dim=1)
    mask = torch.ones(1, 25, dtype=torch.bool)
    mask[:, :6] = False
    torch.testing.assert_close(m(padded, mask)[:, 6:], m(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("segment_len", [2048, 16])
def test_mamba2_step_and_forward_state_equal_full_forward(segment_len):
    torch.manual_seed(0)
    m = Mamba2(D, d_state=8, headdim=16, ngroups=2, chunk_size=8, backend="torch", segment_len=segment_len).double().eval()
    x = torch.randn(2, 23, D, dtype=torch.float64)
    full = m(x)
    conv, ssm = m.init_state(2)
    steps = []
    for t in range(23):
        y, conv, ssm = m.step(x[:, t], conv, ssm)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-9, atol=1e-9)
    conv, ssm = m.init_state(2)
    a, conv, ssm = m.forward_state(x[:, :10], conv, ssm)
    b, _, _ = m.forward_state(x[:, 10:], conv, ssm)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-9, atol=1e-9)


def test_stack_recurrent_paths_equal_full_forward():
    torch.manual_seed(0)
    s = MixerStack(D, 2, mixer="mamba2", n_heads=4, d_state=8, chunk_size=8, backend="torch").double().eval()
    x = torch.randn(2, 20, D, dtype=torch.float64)
    full = s(x)
    y1, st = s.forward_state(x[:, :13], s.init_state(2))
    y2, st = s.forward_state(x[:, 13:19], st)
    y3, _ = s.step(x[:, 19], st)
    torch.testing.assert_close(torch.cat([y1, y2, y3[:, None]], 1), full, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="mamba2"):
        MixerStack(D, 1, mixer="softmax").init_state(1)


def test_mamba2_segment_recompute_gives_the_same_gradients():
    torch.manual_seed(0)
    m = Mamba2(D, d_state=8, headdim=16, chunk_size=8, segment_len=16, backend="torch").double()
    x = torch.randn(2, 53, D, dtype=torch.float64, requires_grad=True)
    params = [x] + list(m.parameters())
    g_seg = torch.autograd.grad(m(x).square().sum(), params)  # 4 recomputed segments
    m.segment_len = 4096
    g_one = torch.autograd.grad(m(x).square().sum(), params)
    for a, b in zip(g_seg, g_one):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_carried_states_do_not_pin_their_segment():
    """The states carried between recomputed segments are copies: a view would keep each segment's conv input and
    chunk states alive until backward (measured: 386 -> 332 MB peak at 16k tokens, benchmarks/core/mixers.py)."""
    m = Mamba2(D, d_state=8, headdim=16, chunk_size=8, backend="torch")
    conv, ssm = m.forward_state(torch.randn(1, 40, D), *m.init_state(1))[1:]
    for t in (conv, ssm):
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


@pytest.mark.parametrize("kind", ["mamba2", "bimamba2"])
def test_stack_activation_checkpointing_gives_the_same_outputs_and_gradients(kind):
    torch.manual_seed(0)
    stack = MixerStack(D, 2, mixer=kind, d_state=8, dropout=0.2, chunk_size=8).double().train()
    x = torch.randn(3, 21, D, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 21, dtype=torch.bool)
    mask[1, 15:] = False
    params = [x] + list(stack.parameters())
    runs = []
    for flag in (False, True):
        stack.activation_checkpointing = flag
        torch.manual_seed(1)  # same dropout masks in both runs; checkpointing must replay them when recomputing
        y = stack(x, mask)
        runs.append((y, torch.autograd.grad((y * torch.linspace(-1, 1, D, dtype=y.dtype)).square().sum(), params)))
    (y0, g0), (y1, g1) = runs
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    scripted = torch.jit.script(stack.eval())  # the flag does not get in the way of export
    torch.testing.assert_close(scripted(x.detach(), mask), stack(x.detach(), mask))


def test_bimamba_sees_both_directions():
    m = _mixer("bimamba2")
    x = torch.randn(1, 20, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(m(x)[:, 0], m(x2)[:, 0])  # the first token depends on the last


@pytest.mark.parametrize("causal,decay", [(False, False), (True, False), (True, True)])
def test_linear_attention_equals_quadratic_form(causal, decay):
    torch.manual_seed(0)
    la = LinearAttention(D, n_heads=4, causal=causal, decay=decay, chunk_size=8).double()
    x = torch.randn(2, 27, D, dtype=torch.float64)
    q, k, v = la.qkv(x).reshape(2, 27, 3, 4, D // 4).permute(2, 0, 3, 1, 4).unbind(0)
    ref = linear_attention_ref(feature_map(q), feature_map(k), v, causal, la.log_decay() if decay else None)
    ref = la.out(ref.transpose(1, 2).reshape(2, 27, D))
    torch.testing.assert_close(la(x), ref, rtol=1e-9, atol=1e-9)


def test_projection_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    pa = ProjectionAttention(D, n_heads=4, n_slots=6).double()
    x = torch.randn(2, 40, D, dtype=torch.float64)
    perm = torch.randperm(40)
    torch.testing.assert_close(pa(x)[:, perm], pa(x[:, perm]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", MIXERS)
def test_bad_input_raises_value_error_with_expected_shape(kind):
    m = _mixer(kind)
    with pytest.raises(ValueError, match=r"\(B, L, D=32\)"):
        m(torch.randn(4, D, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, L, D=32\)"):
        m(torch.randn(1, 5, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating"):
        m(torch.ones(1, 5, D, dtype=torch.long))
    with pytest.raises(ValueError, match="mask"):
        m(torch.randn(1, 5, D, dtype=torch.float64), torch.ones(1, 4, dtype=torch.bool))


def test_unknown_mixer_and_backend_are_clear_errors(monkeypatch):
    from linmix.shared.kernels import _probe, kernel_available

    with pytest.raises(ValueError, match="unknown mixer"):
        build_mixer("mamba4", D)
    with pytest.raises(ValueError, match="backend"):
        Mamba2(D, backend="cuda")
    monkeypatch.delenv("LINMIX_BACKEND")  # the tests' LINMIX_BACKEND=torch would override backend="kernel"
    _probe.cache_clear()
    try:
        if not kernel_available():
            with pytest.raises(RuntimeError, match="pip install"):
                BiMamba2(D, backend="kernel")
    finally:
        _probe.cache_clear()


@pytest.mark.parametrize("kind", ["mamba2", "linear_causal", "projection"])
def test_reset_parameters_is_deterministic_and_trains(kind):
    m = build_mixer(kind, D, n_heads=4, d_state=8, chunk_size=8)
    torch.manual_seed(1)
    m.reset_parameters()
    first = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(1)
    m.reset_parameters()
    for k, v in m.state_dict().items():
        assert torch.equal(first[k], v), k
    x = torch.randn(2, 16, D)
    m(x).pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)

"""Mamba-3: chunked scan == sequential recurrence (values, states, gradients; several chunk sizes), the mixer is the
documented composition of mamba-ssm's projections and the scan, step / forward_state == full forward, exact padding,
weights move to and from mamba-ssm's state_dict layout, hybrid stacks."""

import math

import pytest
import torch
import torch.nn.functional as F

from linmix.shared import Mamba3, MixerStack, ParallelHybrid, SoftmaxAttention, build_mixer
from linmix.shared.ssd3 import mamba3_scan_chunked, mamba3_scan_ref

D = 32
f64 = torch.float64


def _scan_inputs(b=2, l=37, h=3, p=4, n=8, s=2, rank=1, requires_grad=False):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, dtype=f64, generator=g)

    dt = F.softplus(r(b, l, h))
    args = [r(b, l, h, rank, n), r(b, l, h, rank, n), r(b, l, h, rank, p), -dt * F.softplus(r(b, l, h)), dt,
            torch.sigmoid(r(b, l, h)), torch.tanh(r(b, l, h, s)) * math.pi]
    states = [torch.rand(b, h, s, dtype=f64, generator=g) * 6, r(b, h, p, n), r(b, h, rank, n), r(b, h, rank, p)]
    if requires_grad:
        for t in args + states:
            t.requires_grad_()
    return args, states


@pytest.mark.parametrize("chunk, rank, pairing", [(1, 1, "adjacent"), (4, 1, "adjacent"), (16, 1, "half"),
                                                  (64, 1, "adjacent"), (4, 3, "half"), (16, 2, "adjacent")])
def test_chunked_scan_equals_sequential_float64(chunk, rank, pairing):
    args, states = _scan_inputs(rank=rank)
    y_ref, s_ref = mamba3_scan_ref(*args, tuple(states), pairing)
    y, s = mamba3_scan_chunked(*args, tuple(states), chunk_size=chunk, pairing=pairing)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(s, s_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rank", [1, 2])
def test_chunked_scan_gradients_equal_sequential(rank):
    args, states = _scan_inputs(l=21, rank=rank, requires_grad=True)
    leaves = args + states
    weights = torch.linspace(-1, 1, 4, dtype=f64)

    def loss(y, s):
        return (y * weights).square().sum() + sum((t * t.detach().sign()).sum() for t in s[1:])

    g_ref = torch.autograd.grad(loss(*mamba3_scan_ref(*args, tuple(states))), leaves)
    g = torch.autograd.grad(loss(*mamba3_scan_chunked(*args, tuple(states), chunk_size=8)), leaves)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_chunked_scan_continues_across_calls():
    args, states = _scan_inputs()
    y_ref, s_ref = mamba3_scan_ref(*args, tuple(states))
    ya, sa = mamba3_scan_chunked(*(t[:, :15] for t in args), tuple(states), chunk_size=4)
    yb, sb = mamba3_scan_chunked(*(t[:, 15:] for t in args), sa, chunk_size=8)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sb[1], s_ref[1], rtol=1e-10, atol=1e-10)


def _mamba3(**kw):
    torch.manual_seed(0)
    cfg = dict(d_state=8, headdim=16, ngroups=2, chunk_size=8, backend="torch")
    cfg.update(kw)
    return Mamba3(D, **cfg).double().eval()


def test_mixer_is_mamba_ssm_projections_then_the_sequential_scan():
    """in_proj -> [z, x, B, C, dd_dt, dd_A, trap, angle] (mamba-ssm's order), the documented transforms, the oracle."""
    m = _mamba3()
    with torch.no_grad():  # non-trivial norm weights and biases
        for prm in (m.B_norm.weight, m.C_norm.weight, m.B_bias, m.C_bias, m.D):
            prm.copy_(torch.randn_like(prm))
    b, l, h, p, g, n, s = 2, 19, m.n_heads, m.headdim, 2, 8, m.n_angles
    x = torch.randn(b, l, D, dtype=f64)
    z, xs, Bm, Cm, dd_dt, dd_A, trap, ang = torch.split(m.in_proj(x), [D * 2, D * 2, g * n, g * n, h, h, h, s], -1)
    dt = F.softplus(dd_dt + m.dt_bias)
    A = (-F.softplus(dd_A)).clamp(max=-1e-4)

    def norm_bias(t, w, bias):
        t = t.reshape(b, l, g, n)
        t = t * torch.rsqrt(t.square().mean(-1, keepdim=True) + 1e-5) * w
        return t.repeat_interleave(h // g, 2) + bias[:, 0]

    y, _ = mamba3_scan_ref(norm_bias(Cm, m.C_norm.weight, m.C_bias).unsqueeze(3),
                           norm_bias(Bm, m.B_norm.weight, m.B_bias).unsqueeze(3), xs.reshape(b, l, h, 1, p), A * dt, dt,
                           torch.sigmoid(trap), (torch.tanh(ang) * math.pi).unsqueeze(2).expand(b, l, h, s),
                           m.init_state(b)[:2] + (torch.zeros(b, h, 1, n, dtype=f64), torch.zeros(b, h, 1, p, dtype=f64)))
    y = (y[:, :, :, 0] + m.D[:, None] * xs.reshape(b, l, h, p)) * F.silu(z.reshape(b, l, h, p))
    torch.testing.assert_close(m(x), m.out_proj(y.reshape(b, l, -1)), rtol=1e-10, atol=1e-10)


def test_mimo_mixer_is_up_projection_scan_gate_and_down_projection():
    """MIMO: B, C rows ``(r g n)``, x and z times ``mimo_x`` / ``mimo_z`` per rank, D on the up-projected x, gate per
    rank, ranks summed with ``mimo_o`` (mamba-ssm's MIMO reference), rotary pairs ``(i, i + N/2)``."""
    m = _mamba3(is_mimo=True, mimo_rank=3, ngroups=1)
    with torch.no_grad():
        for prm in (m.mimo_x, m.mimo_z, m.mimo_o, m.B_bias, m.C_bias):
            prm.copy_(torch.randn_like(prm))
    b, l, h, p, r, n, s = 2, 11, m.n_heads, m.headdim, 3, 8, m.n_angles
    x = torch.randn(b, l, D, dtype=f64)
    z, xs, Bm, Cm, dd_dt, dd_A, trap, ang = torch.split(m.in_proj(x), [D * 2, D * 2, r * n, r * n, h, h, h, s], -1)
    dt = F.softplus(dd_dt + m.dt_bias)

    def norm_bias(t, bias):  # (B, L, R * N) -> (B, L, H, R, N)
        t = t.reshape(b, l, r, 1, n)
        t = t * torch.rsqrt(t.square().mean(-1, keepdim=True) + 1e-5)
        return t.transpose(2, 3) + bias

    v = xs.reshape(b, l, h, 1, p) * m.mimo_x
    zero = [torch.zeros(b, h, s, dtype=f64), torch.zeros(b, h, p, n, dtype=f64), torch.zeros(b, h, r, n, dtype=f64),
            torch.zeros(b, h, r, p, dtype=f64)]
    y, _ = mamba3_scan_ref(norm_bias(Cm, m.C_bias), norm_bias(Bm, m.B_bias), v, (-F.softplus(dd_A)).clamp(max=-1e-4)
                           * dt, dt, torch.sigmoid(trap), (torch.tanh(ang) * math.pi).unsqueeze(2).expand(b, l, h, s),
                           tuple(zero), "half")
    y = (y + m.D[:, None, None] * v) * F.silu(z.reshape(b, l, h, 1, p) * m.mimo_z)
    torch.testing.assert_close(m(x), m.out_proj((y * m.mimo_o).sum(3).reshape(b, l, -1)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kw", [dict(segment_len=2048), dict(segment_len=16, rope_fraction=1.0),
                                dict(is_outproj_norm=True, ngroups=1, chunk_size=4),
                                dict(is_mimo=True, mimo_rank=3, segment_len=16),
                                dict(is_mimo=True, mimo_rank=2, is_outproj_norm=True)])
def test_step_and_forward_state_equal_full_forward(kw):
    m = _mamba3(**kw)
    x = torch.randn(2, 23, D, dtype=f64)
    full = m(x)
    state = m.init_state(2)
    steps = []
    for t in range(23):
        y, *state = m.step(x[:, t], *state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-9, atol=1e-9)
    a, *state = m.forward_state(x[:, :10], *m.init_state(2))
    c, *_ = m.forward_state(x[:, 10:], *state)
    torch.testing.assert_close(torch.cat([a, c], 1), full, rtol=1e-9, atol=1e-9)
    if kw.get("is_mimo"):  # the MIMO step scripts too (export of the SISO stack: tests/core/test_export.py)
        scripted = torch.jit.script(m)
        torch.testing.assert_close(scripted.step(x[:, 0], *m.init_state(2))[0], steps[0])


def test_left_and_right_padding_are_exact():
    m = _mamba3()
    x = torch.randn(1, 19, D, dtype=f64)
    padded = torch.cat([torch.randn(1, 6, D, dtype=f64), x, torch.randn(1, 5, D, dtype=f64)], dim=1)
    mask = torch.zeros(1, 30, dtype=torch.bool)
    mask[:, 6:25] = True
    y = m(padded, mask)
    torch.testing.assert_close(y[:, 6:25], m(x), rtol=1e-10, atol=1e-10)
    assert (y[:, :6] == 0).all() and (y[:, 25:] == 0).all()


def test_segment_recompute_gives_the_same_gradients():
    m = _mamba3(segment_len=16).train()
    x = torch.randn(2, 45, D, dtype=f64, requires_grad=True)
    params = [x] + list(m.parameters())
    g_seg = torch.autograd.grad(m(x).square().sum(), params)
    m.segment_len = 4096
    g_one = torch.autograd.grad(m(x).square().sum(), params)
    for a, b in zip(g_seg, g_one):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("outproj_norm, rank", [(False, 1), (True, 1), (False, 4)])
def test_state_dict_in_mamba_ssm_layout_loads_both_ways(outproj_norm, rank):
    """Keys and shapes of ``mamba_ssm.modules.mamba3.Mamba3`` (in_proj rows ``[z, x, B, C, dd_dt, dd_A, trap, angle]``;
    SISO is rank 1; ``rope_fraction`` 0.5 gives ``d_state // 4`` angles), written out here from its layout, load
    strictly and come back unchanged."""
    d, n, g, hd = 48, 16, 2, 24
    d_inner, h, s = 2 * d, 2 * d // hd, n // 4
    shapes = {"in_proj.weight": (2 * d_inner + 2 * n * g * rank + 3 * h + s, d), "dt_bias": (h,),
              "B_bias": (h, rank, n), "C_bias": (h, rank, n), "B_norm.weight": (n,), "C_norm.weight": (n,), "D": (h,),
              "out_proj.weight": (d, d_inner)}
    if outproj_norm:
        shapes["norm.weight"] = (d_inner,)
    if rank > 1:
        shapes.update({k: (h, rank, hd) for k in ("mimo_x", "mimo_z", "mimo_o")})
    sd = {k: torch.randn(v) for k, v in shapes.items()}
    m = Mamba3(d, d_state=n, headdim=hd, ngroups=g, is_outproj_norm=outproj_norm, is_mimo=rank > 1, mimo_rank=rank,
               backend="torch")
    m.load_state_dict(sd, strict=True)
    back = m.state_dict()
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="rope_fraction"):
        Mamba3(D, rope_fraction=0.25)
    with pytest.raises(ValueError, match="headdim"):
        Mamba3(D, headdim=24)
    with pytest.raises(ValueError, match=r"Mamba3.step: expected \(B, D=32\)"):
        _mamba3().step(torch.randn(1, 1, D, dtype=f64), *_mamba3().init_state(1))


def test_stack_recurrent_paths_equal_full_forward():
    torch.manual_seed(0)
    st = MixerStack(D, 2, mixer="mamba3", n_heads=4, d_state=8, chunk_size=8, backend="torch").double().eval()
    x = torch.randn(2, 20, D, dtype=f64)
    full = st(x)
    y1, state = st.forward_state(x[:, :13], st.init_state(2))
    assert len(state) == 8
    y2, state = st.forward_state(x[:, 13:19], state)
    y3, _ = st.step(x[:, 19], state)
    torch.testing.assert_close(torch.cat([y1, y2, y3[:, None]], 1), full, rtol=1e-9, atol=1e-9)


def test_hybrid_layouts():
    par = MixerStack(D, 2, mixer="hybrid", n_heads=4, d_state=8, backend="torch",
                     mixer_cfg={"ssm": "mamba2", "ssm_cfg": {"d_conv": 3}})
    assert all(isinstance(b.mixer, ParallelHybrid) for b in par.blocks)
    assert par.blocks[0].mixer.ssm.d_conv == 3 and par.blocks[0].mixer.attn.causal
    inter = MixerStack(D, 4, mixer="hybrid", n_heads=4, d_state=8, backend="torch",
                       mixer_cfg={"layout": "interleave", "attn_every": 2})
    assert [type(b.mixer) for b in inter.blocks] == [Mamba3, SoftmaxAttention, Mamba3, SoftmaxAttention]
    assert inter(torch.randn(2, 9, D)).shape == (2, 9, D)
    assert len(inter.init_state(1)) == 4 + 2 + 4 + 2  # recurrent: tests/core/test_hybrid_state.py
    for bad in ({"layout": "stacked"}, {"ssm": "linear"}, {"attn_every": 0}, {"ssm_cfg": {"d_conv": 3}}):
        with pytest.raises(ValueError, match="mixer_cfg"):
            build_mixer("hybrid", D, mixer_cfg=bad)


@pytest.mark.parametrize("pairing", ["adjacent", "half"])
@pytest.mark.parametrize("l", [1, 7, 16, 23])
def test_export_path_of_the_scan_equals_the_eager_path(monkeypatch, pairing, l):
    """While exporting, the scan pads by gathers to ceil(L / chunk) + 1 chunks and rotates in cos / sin (no complex
    tensors for ONNX); run that path eagerly and compare (the traced files themselves: test_export_formats, slow)."""
    import linmix.shared.ssd3 as ssd3

    args, states = _scan_inputs(l=l, rank=2)
    y_ref, s_ref = mamba3_scan_chunked(*args, tuple(states), chunk_size=8, pairing=pairing)
    monkeypatch.setattr(ssd3, "is_exporting", lambda: True)
    y, s = ssd3.mamba3_scan_chunked(*args, tuple(states), chunk_size=8, pairing=pairing)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(s, s_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)

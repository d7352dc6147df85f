"""Recurrent inference of the hybrid and of causal softmax attention: the key/value cache, token-by-token ``step`` and
``forward_state`` (prefill) equal the full forward for both hybrid layouts with Mamba3 and Mamba2, padding as in the
full forward, and EHR incremental scoring and speech streaming with a hybrid backbone equal their full recompute."""

import importlib.util
from pathlib import Path

import pytest
import torch

from linmix.shared import MixerStack, ParallelHybrid, SoftmaxAttention

D = 32
f64 = torch.float64
LAYOUTS = {"parallel": {"layout": "parallel"}, "interleave": {"layout": "interleave", "attn_every": 2}}


def _stack(layout: str, ssm: str, n_layers: int = 4) -> MixerStack:
    torch.manual_seed(0)
    cfg = dict(LAYOUTS[layout], ssm=ssm, chunk_size=8)
    return MixerStack(D, n_layers, mixer="hybrid", n_heads=4, d_state=8, backend="torch", mixer_cfg=cfg).double().eval()


@pytest.mark.parametrize("ssm", ["mamba3", "mamba2"])
@pytest.mark.parametrize("layout", ["parallel", "interleave"])
def test_hybrid_step_and_prefill_equal_the_full_forward(layout, ssm):
    st = _stack(layout, ssm)
    x = torch.randn(2, 19, D, dtype=f64)
    full = st(x)
    state = st.init_state(2)
    steps = []
    for t in range(x.size(1)):
        y, state = st.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-9, atol=1e-9)
    # prefill in two chunks (the second continues a non-empty cache), then single steps
    y1, state = st.forward_state(x[:, :9], st.init_state(2))
    y2, state = st.forward_state(x[:, 9:15], state)
    rest = []
    for t in range(15, 19):
        y, state = st.step(x[:, t], state)
        rest.append(y)
    torch.testing.assert_close(torch.cat([y1, y2, torch.stack(rest, 1)], 1), full, rtol=1e-9, atol=1e-9)
    attn = [t for t in state if t.dim() == 4 and t.size(2) == 19]  # every attention's cache holds all 19 tokens
    assert len(attn) == 2 * (4 if layout == "parallel" else 2)


def test_a_step_leaves_the_state_it_started_from_unchanged():
    """The cache grows into new tensors: EHR scoring runs a step from a saved state and drops the result."""
    st = _stack("parallel", "mamba3", n_layers=2)
    x = torch.randn(1, 6, D, dtype=f64)
    _, state = st.forward_state(x[:, :5], st.init_state(1))
    saved = [t.clone() for t in state]
    a, _ = st.step(x[:, 5], state)
    b, _ = st.step(x[:, 5], state)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    for s, t in zip(saved, state):
        torch.testing.assert_close(s, t, rtol=0, atol=0)


def test_stepping_the_real_tokens_equals_the_padded_full_forward():
    """Left and right padding in the full forward (padded keys masked out, Mamba padding exact) == stepping only the
    real tokens of each sequence from an empty state."""
    st = _stack("parallel", "mamba3", n_layers=2)
    x = torch.randn(2, 12, D, dtype=f64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :3] = False  # left padding
    mask[1, 9:] = False  # right padding
    full = st(x, mask)
    for b in range(2):
        real = mask[b].nonzero().squeeze(1)
        state, out = st.init_state(1), []
        for t in real:
            y, state = st.step(x[b:b + 1, t], state)
            out.append(y[0])
        torch.testing.assert_close(torch.stack(out), full[b, real], rtol=1e-9, atol=1e-9)


def test_softmax_attention_cache_and_its_errors():
    torch.manual_seed(0)
    attn = SoftmaxAttention(D, n_heads=4, causal=True).double()
    x = torch.randn(2, 7, D, dtype=f64)
    k, v = attn.init_state(2)
    assert k.shape == v.shape == (2, 4, 0, D // 4)
    y1, k, v = attn.forward_state(x[:, :4], k, v)
    y2, k, v = attn.forward_state(x[:, 4:], k, v)
    assert k.shape == (2, 4, 7, D // 4)
    torch.testing.assert_close(torch.cat([y1, y2], 1), attn(x), rtol=1e-9, atol=1e-9)
    stack = MixerStack(D, 2, mixer="softmax_causal", n_heads=4).double().eval()
    y, state = stack.forward_state(x, stack.init_state(2))
    torch.testing.assert_close(y, stack(x), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="causal=True"):
        SoftmaxAttention(D, causal=False).init_state(1)
    with pytest.raises(ValueError, match=r"SoftmaxAttention.step: expected \(B, D=32\)"):
        attn.step(x, *attn.init_state(2))
    with pytest.raises(ValueError, match="hybrid"):
        MixerStack(D, 1, mixer="linear_causal").init_state(1)


def test_hybrid_state_layout():
    par = _stack("parallel", "mamba2", n_layers=1)
    mixer = par.blocks[0].mixer
    assert isinstance(mixer, ParallelHybrid) and mixer.n_ssm_state == 2
    conv, ssm, k, v = par.init_state(3)
    assert conv.shape[0] == ssm.shape[0] == 3 and k.shape == v.shape == (3, 4, 0, D // 4)
    assert len(_stack("interleave", "mamba3").init_state(1)) == 4 + 2 + 4 + 2


def test_ehr_incremental_scoring_with_a_hybrid_backbone():
    from linmix.apps.ehr import sequences as S
    from linmix.apps.ehr.model import EHRMamba, EHRMambaConfig
    from linmix.apps.ehr.predict import IncrementalScorer

    spec = importlib.util.spec_from_file_location(
        "ehr_meds_fixture", Path(__file__).parents[1] / "ehr" / "test_ehr_seq_fixture.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    frame = fx.build_frame(4, seed=3).with_columns(split=__import__("polars").lit("train"))
    seqs, _, _ = S.build_sequences(frame, S.SequenceSettings(vocab_size=96, n_conditions=2))
    torch.manual_seed(0)
    net = EHRMamba(EHRMambaConfig(vocab_size=96, d_model=32, n_layers=2, d_state=16, d_time=8, max_visits=16,
                                  mixer="hybrid", mixer_cfg={"chunk_size": 16}))
    scorer = IncrementalScorer(net, [25, 26, 27, 28, 29])
    arrays = S.row_arrays(seqs.row(0, named=True))
    n = len(arrays["tokens"])
    done = 0
    for end in sorted({3, n // 2, n}):
        chunk = {k: a[done:end] for k, a in arrays.items()}
        inc = scorer.start(0, 1, chunk) if done == 0 else scorer.append(0, chunk)
        assert inc == pytest.approx(scorer.recompute(1, {k: a[:end] for k, a in arrays.items()}), abs=1e-5), end
        done = end


def test_speech_streaming_with_a_hybrid_separator():
    from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig
    from linmix.apps.speech.streaming import StreamingSeparator

    torch.manual_seed(0)
    m = ConvTasNet(ConvTasNetConfig(causal=True, separator="mamba", mixer="hybrid", d_model=16, n_layers=2,
                                    d_state=8, n_filters=32, mixer_cfg={"chunk_size": 16})).eval()
    x = torch.randn(1, 403)
    with torch.no_grad():
        ref = m(x)
    st = StreamingSeparator(m, batch=1)
    outs = [st.push(x[:, :7]), st.push(x[:, 7:200]), st.push(x[:, 200:]), st.flush()]
    torch.testing.assert_close(torch.cat(outs, -1), ref, atol=1e-5, rtol=1e-4)

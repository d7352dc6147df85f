"""Conv-TasNet: paper parameter count, shapes, causality, scripting, streaming == offline."""

import pytest
import torch
import torchaudio

from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig
from linmix.apps.speech.streaming import StreamingSeparator

TINY = dict(n_filters=32, bottleneck=8, hidden=16, skip=8, n_blocks=3, n_repeats=2)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_paper_config_parameter_count_matches_torchaudio():
    ours = ConvTasNet(ConvTasNetConfig())  # N=512 L=16 B=128 H=512 Sc=128 P=3 X=8 R=3
    ref = torchaudio.models.ConvTasNet(num_sources=2)  # same sizes, same dropped last residual conv
    assert n_params(ours) == n_params(ref) == 4_984_881
    # The paper's "5.1M" counts the last block's (unused) residual conv too: H*B + B more.
    assert 5.0e6 < n_params(ours) + 512 * 128 + 128 <= 5.1e6
    assert ours.separator.receptive_field == 1531


@pytest.mark.parametrize(("n_src", "mask"), [(1, "sigmoid"), (2, "relu"), (3, "softmax"), (4, "sigmoid")])
def test_shapes_any_sources_and_masks(n_src, mask):
    m = ConvTasNet(ConvTasNetConfig(n_src=n_src, mask=mask, **TINY))
    for t in (17, 200, 801):
        assert m(torch.randn(2, t)).shape == (2, n_src, t)
    assert m(torch.randn(1, 1, 99)).shape == (1, n_src, 99)


def test_softmax_masks_sum_to_one_so_sources_sum_to_decoded_mixture():
    m = ConvTasNet(ConvTasNetConfig(mask="softmax", n_src=3, **TINY))
    x = torch.randn(1, 400)
    est = m(x)
    # Linear decoder: sum of sources = decoder(encoder(x)) regardless of the separator.
    ones = ConvTasNet(ConvTasNetConfig(mask="softmax", n_src=1, **TINY))
    ones.encoder.load_state_dict(m.encoder.state_dict())
    ones.decoder.load_state_dict(m.decoder.state_dict())
    torch.testing.assert_close(est.sum(1), ones(x)[:, 0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("separator", ["tcn", "mamba"])
def test_causal_model_ignores_future_beyond_one_window(separator):
    cfg = ConvTasNetConfig(causal=True, separator=separator, d_model=16, n_layers=2, d_state=8, **TINY)
    m = ConvTasNet(cfg).eval()
    x = torch.randn(1, 600)
    x2 = x.clone()
    x2[:, 400:] = torch.randn(1, 200)
    with torch.no_grad():
        d = (m(x) - m(x2)).abs().amax(dim=(0, 1))
    first = int((d > 1e-6).nonzero()[0])
    assert 400 - cfg.kernel_size <= first <= 400  # latency <= one window (L samples)
    assert d[: 400 - cfg.kernel_size].max() < 1e-6


def test_noncausal_model_uses_the_future():
    m = ConvTasNet(ConvTasNetConfig(**TINY)).eval()
    x = torch.randn(1, 600)
    x2 = x.clone()
    x2[:, 500:] = 0
    with torch.no_grad():
        assert (m(x)[..., :300] - m(x2)[..., :300]).abs().max() > 1e-6


@pytest.mark.parametrize("separator", ["tcn", "mamba"])
def test_streaming_equals_offline_causal(separator):
    torch.manual_seed(0)
    cfg = ConvTasNetConfig(causal=True, separator=separator, d_model=16, n_layers=2, d_state=8, **TINY)
    m = ConvTasNet(cfg).eval()
    x = torch.randn(2, 1003)
    with torch.no_grad():
        ref = m(x)
    st = StreamingSeparator(m, batch=2)
    outs, i = [], 0
    for n in (1, 7, 8, 150, 3, 334, 500):
        outs.append(st.push(x[:, i : i + n]))
        i += n
    outs.append(st.flush())
    y = torch.cat(outs, -1)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)


def test_streaming_rejects_noncausal():
    with pytest.raises(ValueError, match="causal"):
        StreamingSeparator(ConvTasNet(ConvTasNetConfig(**TINY)))


@pytest.mark.parametrize(
    "cfg",
    [
        dict(TINY),
        dict(TINY, causal=True),
        dict(separator="mamba", n_filters=16, d_model=16, n_layers=1, d_state=8),
    ],
)
def test_scripted_model_matches_eager(cfg):
    m = ConvTasNet(ConvTasNetConfig(**cfg)).eval()
    sm = torch.jit.script(m)
    for t in (123, 517):
        x = torch.randn(1, t)
        torch.testing.assert_close(sm(x), m(x))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="even"):
        ConvTasNetConfig(kernel_size=15)
    with pytest.raises(ValueError, match="separator"):
        ConvTasNet(ConvTasNetConfig(separator="rnn", **TINY))

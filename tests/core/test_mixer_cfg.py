"""``mixer_cfg`` (mamba-ssm's ``ssm_cfg``) reaches the mixer from code, from each app's net config and from YAML through
the real CLI parser; a key the mixer does not take is a clear error; ``LINMIX_BACKEND`` overrides the configured
backend."""

from __future__ import annotations

import json

import pytest

from linmix.shared import BiMamba2, Mamba2, MixerStack, build_mixer
from linmix.shared.blocks import mixer_options

D = 32
CFG = {"chunk_size": 32, "expand": 1, "d_conv": 3, "segment_len": 128, "ngroups": 2, "headdim": 8}


def _mamba(module) -> list:
    return [m for m in module.modules() if isinstance(m, (Mamba2, BiMamba2))]


@pytest.mark.parametrize("kind", ["mamba2", "bimamba2"])
def test_build_mixer_passes_mixer_cfg(kind):
    m = build_mixer(kind, D, n_heads=4, d_state=8, chunk_size=64, mixer_cfg=CFG)
    assert (m.chunk_size, m.d_inner, m.d_conv, m.segment_len, m.ngroups, m.headdim) == (32, D, 3, 128, 2, 8)
    conv = m.conv1d if kind == "mamba2" else m.conv_f
    assert m.n_heads == D // 8 and conv.weight.shape[-1] == 3


def test_n_heads_in_mixer_cfg_sets_headdim_and_excludes_headdim():
    m = build_mixer("mamba2", D, n_heads=4, mixer_cfg={"n_heads": 2, "expand": 1})
    assert (m.n_heads, m.headdim) == (2, D // 2)
    with pytest.raises(ValueError, match="headdim or n_heads"):
        build_mixer("mamba2", D, mixer_cfg={"n_heads": 2, "headdim": 16})


def test_mixer_cfg_overrides_stack_arguments_in_every_block():
    s = MixerStack(D, 3, mixer="mamba2", n_heads=4, d_state=8, chunk_size=64, backend="torch",
                   mixer_cfg={"chunk_size": 16, "expand": 1})
    assert [(m.chunk_size, m.d_inner, m.n_heads, m.d_state) for m in _mamba(s)] == [(16, D, 4, 8)] * 3


@pytest.mark.parametrize("kind, key", [("mamba2", "n_slots"), ("mamba2", "chunksize"), ("softmax", "chunk_size"),
                                       ("projection", "d_state"), ("linear_causal", "decay")])
def test_unknown_key_names_the_key_and_the_options(kind, key):
    with pytest.raises(ValueError, match=rf"mixer {kind!r} takes no {key!r}; its options are .*n_heads"):
        build_mixer(kind, D, mixer_cfg={key: 1})
    assert key not in mixer_options(kind)


def test_options_per_kind():
    assert {"headdim", "n_heads", "expand", "d_conv", "chunk_size", "segment_len", "ngroups", "backend"} <= set(
        mixer_options("mamba2"))
    assert set(mixer_options("projection")) == {"n_heads", "n_slots", "dropout"}
    assert set(mixer_options("softmax_causal")) == {"n_heads", "dropout"}


def test_linmix_backend_overrides_the_configured_backend(monkeypatch):
    monkeypatch.setenv("LINMIX_BACKEND", "torch")
    assert build_mixer("mamba2", D, mixer_cfg={"backend": "kernel"}).backend == "torch"  # no kernel needed
    monkeypatch.delenv("LINMIX_BACKEND")
    assert build_mixer("bimamba2", D, backend="auto", mixer_cfg={"backend": "torch"}).backend == "torch"
    assert build_mixer("mamba2", D, backend="torch").backend == "torch"
    monkeypatch.setenv("LINMIX_BACKEND", "cuda")
    with pytest.raises(ValueError, match="LINMIX_BACKEND must be one of"):
        build_mixer("mamba2", D)
    monkeypatch.setenv("LINMIX_BACKEND", "torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        build_mixer("mamba2", D, mixer_cfg={"backend": "gpu"})


# ---- apps: net.mixer_cfg -> MixerStack -> mixer ------------------------------------------------------------------

def test_ehr_net_mixer_cfg_reaches_mamba2():
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.model import EHRMambaConfig

    lit = EHRLitModule(net=EHRMambaConfig(vocab_size=64, d_model=32, n_layers=2, d_state=8, d_time=8, max_visits=8,
                                          mixer_cfg={"chunk_size": 32, "expand": 1}))
    assert [(m.chunk_size, m.d_inner) for m in _mamba(lit.net)] == [(32, 32)] * 2
    assert lit.hparams["net"]["mixer_cfg"] == {"chunk_size": 32, "expand": 1}


@pytest.mark.parametrize("causal, cls", [(False, BiMamba2), (True, Mamba2)])
def test_speech_net_mixer_cfg_reaches_the_separator(causal, cls):
    from linmix.apps.speech.lit_module import SpeechLitModule
    from linmix.apps.speech.model import ConvTasNetConfig

    net = ConvTasNetConfig(separator="mamba", causal=causal, n_filters=16, kernel_size=8, d_model=32, n_layers=1,
                           d_state=8, mixer_cfg={"chunk_size": 32, "expand": 1})
    mixers = _mamba(SpeechLitModule(net=net).net)
    assert len(mixers) == 1 and isinstance(mixers[0], cls) and (mixers[0].chunk_size, mixers[0].d_inner) == (32, 32)


def _lm_cli(tmp_path, monkeypatch, *args):
    from linmix.apps.lm.cli import LMCLI
    from linmix.apps.lm.data import LMDataModule
    from linmix.apps.lm.lit_module import LMLitModule

    monkeypatch.chdir(tmp_path)
    return LMCLI(LMLitModule, LMDataModule, args=list(args), run=False, app="lm")


def test_yaml_mixer_cfg_reaches_the_mixer_through_the_cli(tmp_path, monkeypatch):
    cfg = tmp_path / "lm.yaml"
    cfg.write_text("model:\n  net:\n    d_model: 32\n    n_layers: 2\n"
                   "    mixer_cfg: {chunk_size: 32, expand: 1, backend: torch}\n")
    cli = _lm_cli(tmp_path, monkeypatch, "-c", str(cfg))
    assert [(m.chunk_size, m.d_inner, m.backend) for m in _mamba(cli.model)] == [(32, 32, "torch")] * 2
    assert cli.model.hparams["net"]["mixer_cfg"] == {"chunk_size": 32, "expand": 1, "backend": "torch"}
    cli = _lm_cli(tmp_path, monkeypatch, "--model.net.mixer", "linear_causal",
                  "--model.net.mixer_cfg", json.dumps({"chunk_size": 16}))
    assert {m.mixer.chunk_size for m in cli.model.net.backbone.blocks} == {16}


def test_yaml_mixer_cfg_bad_key_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="mixer 'mamba2' takes no 'chunk'; its options are"):
        _lm_cli(tmp_path, monkeypatch, "--model.net.mixer_cfg", json.dumps({"chunk": 32}))

"""Every app on ``MixerStack`` selects Mamba3 and the hybrid from its net config (the YAML ``model.net.mixer`` /
``model.net.mixer_cfg``), builds and runs a forward."""

from __future__ import annotations

import json

import pytest
import torch

from linmix.shared import Mamba3, ParallelHybrid, SoftmaxAttention

HYBRID = {"layout": "interleave", "attn_every": 2, "chunk_size": 16}


def _kinds(module) -> list:
    return [type(b.mixer) for b in module.blocks]


@pytest.mark.parametrize("mixer, cfg, kinds", [("mamba3", {"chunk_size": 16}, [Mamba3, Mamba3]),
                                                ("hybrid", HYBRID, [Mamba3, SoftmaxAttention])])
def test_ehr_builds_and_runs(mixer, cfg, kinds):
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.model import EHRMambaConfig

    lit = EHRLitModule(net=EHRMambaConfig(vocab_size=64, d_model=32, n_layers=2, d_state=8, d_time=8, max_visits=8,
                                          mixer=mixer, mixer_cfg=cfg))
    assert _kinds(lit.net.backbone) == kinds and lit.hparams["net"]["mixer"] == mixer
    g = torch.Generator().manual_seed(0)
    x = [torch.randint(7, 64, (2, 12), generator=g), torch.randint(1, 9, (2, 12), generator=g),
         50 + 10 * torch.rand(2, 12, generator=g), torch.cumsum(torch.rand(2, 12, generator=g), 1),
         torch.randint(0, 8, (2, 12), generator=g), torch.randint(0, 3, (2, 12), generator=g)]
    h = lit.net.eval()(*x)
    assert h.shape == (2, 12, 32) and torch.isfinite(h).all()
    with pytest.raises(ValueError, match="causal"):
        EHRLitModule(net=EHRMambaConfig(vocab_size=64, d_model=32, n_layers=1, mixer="bimamba2"))


@pytest.mark.parametrize("mixer, causal, kind", [("mamba3", True, Mamba3), ("hybrid", False, ParallelHybrid)])
def test_speech_mamba_separator_builds_and_runs(mixer, causal, kind):
    from linmix.apps.speech.lit_module import SpeechLitModule
    from linmix.apps.speech.model import ConvTasNetConfig

    net = ConvTasNetConfig(separator="mamba", causal=causal, n_filters=16, kernel_size=8, d_model=32, n_layers=1,
                           d_state=8, mixer=mixer, mixer_cfg={"chunk_size": 16})
    model = SpeechLitModule(net=net).net.eval()
    assert _kinds(model.separator.stack) == [kind]
    y = model(torch.randn(2, 200))
    assert y.shape == (2, 2, 200) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="causal mixer"):
        SpeechLitModule(net=ConvTasNetConfig(separator="mamba", causal=True, n_filters=16, kernel_size=8, d_model=32,
                                             n_layers=1, d_state=8, mixer="bimamba2"))


def test_lm_yaml_selects_mamba3_and_the_hybrid(tmp_path, monkeypatch):
    from linmix.apps.lm.cli import LMCLI
    from linmix.apps.lm.data import LMDataModule
    from linmix.apps.lm.lit_module import LMLitModule

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "lm.yaml"
    cfg.write_text("model:\n  net:\n    d_model: 32\n    n_layers: 2\n    mixer: hybrid\n"
                   "    mixer_cfg: {ssm: mamba3, layout: parallel, ssm_cfg: {rope_fraction: 1.0}}\n")
    cli = LMCLI(LMLitModule, LMDataModule, args=["-c", str(cfg)], run=False, app="lm")
    blocks = cli.model.net.backbone.blocks
    assert _kinds(cli.model.net.backbone) == [ParallelHybrid] * 2 and blocks[0].mixer.ssm.rope_fraction == 1.0
    tokens = torch.randint(0, cli.model.net.vocab_size, (2, 10))
    assert cli.model.net(tokens).shape == (2, 10, cli.model.net.vocab_size)
    cli = LMCLI(LMLitModule, LMDataModule, app="lm", run=False,
                args=["--model.net.mixer", "mamba3", "--model.net.mixer_cfg", json.dumps({"chunk_size": 8})])
    assert {b.mixer.chunk_size for b in cli.model.net.backbone.blocks} == {8}
    assert cli.model.net(tokens).shape == (2, 10, cli.model.net.vocab_size)


@pytest.mark.parametrize("name, kind", [("mamba3", Mamba3), ("hybrid", ParallelHybrid)])
def test_lm_shipped_configs_build_and_run(name, kind, tmp_path, monkeypatch):
    from pathlib import Path

    from linmix.apps.lm.cli import LMCLI
    from linmix.apps.lm.data import LMDataModule
    from linmix.apps.lm.lit_module import LMLitModule

    path = Path(__file__).resolve().parents[2] / "configs" / "lm" / f"{name}.yaml"
    monkeypatch.chdir(tmp_path)
    cli = LMCLI(LMLitModule, LMDataModule, args=["-c", str(path)], run=False, app="lm")
    assert _kinds(cli.model.net.backbone) == [kind] * 2
    tokens = torch.randint(0, cli.model.net.vocab_size, (2, 10))
    assert cli.model.net(tokens).shape == (2, 10, cli.model.net.vocab_size)

"""One config convention in every app: ``LitModule(*, net: <App>Config, ...)`` keyword-only, ``net`` saved as a plain
dict, checkpoints loadable with ``torch.load(weights_only=True)`` and no allow-listed class, the dict accepted back."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest
import pytorch_lightning as pl
import torch

from linmix.shared.checkpoint import load_lit
from linmix.shared.config import as_config


def _small(app: str):
    """(LitModule class, its net config class, a small net config) per app."""
    if app == "ehr":
        from linmix.apps.ehr.lit_module import EHRLitModule as Lit
        from linmix.apps.ehr.model import EHRMambaConfig as Cfg

        return Lit, Cfg, Cfg(vocab_size=64, d_model=32, n_layers=1, d_state=8, d_time=8, max_visits=8,
                             mixer_cfg={"chunk_size": 16})
    if app == "ctr":
        from linmix.apps.ctr.lit_module import CTRLitModule as Lit
        from linmix.apps.ctr.model import CTRNetConfig as Cfg

        return Lit, Cfg, Cfg(field_sizes=(5, 7), d_model=4, n_layers=1, n_linear_layers=1, hidden=(8, 8))
    if app == "speech":
        from linmix.apps.speech.lit_module import SpeechLitModule as Lit
        from linmix.apps.speech.model import ConvTasNetConfig as Cfg

        return Lit, Cfg, Cfg(separator="mamba", n_filters=16, kernel_size=8, d_model=32, n_layers=1, d_state=8,
                             mixer_cfg={"expand": 1})
    if app == "physics":
        from linmix.apps.physics.config import PhysicsConfig as Cfg
        from linmix.apps.physics.lit_module import PhysicsLitModule as Lit

        return Lit, Cfg, Cfg(arch="transolver", d_model=16, n_layers=1, n_heads=2, n_slots=4, d_hidden=16)
    from linmix.apps.lm.lit_module import LMLitModule as Lit
    from linmix.apps.lm.model import MixerLMConfig as Cfg

    return Lit, Cfg, Cfg(d_model=32, n_layers=1, d_state=8, mixer_cfg={"chunk_size": 16})


APPS = ("ehr", "ctr", "speech", "physics", "lm")


@pytest.mark.parametrize("app", APPS)
def test_constructor_is_keyword_only_and_net_is_the_app_config(app):
    lit_cls, cfg_cls, _ = _small(app)
    params = list(inspect.signature(lit_cls.__init__).parameters.values())[1:]
    assert params[0].name == "net" and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    assert isinstance(params[0].default, cfg_cls) and dataclasses.is_dataclass(cfg_cls)
    assert tuple(lit_cls.checkpoint_globals) == ()
    with pytest.raises(TypeError):
        lit_cls(cfg_cls())  # by keyword only


@pytest.mark.parametrize("app", APPS)
def test_checkpoint_holds_a_plain_dict_and_loads_back(app, tmp_path):
    lit_cls, cfg_cls, cfg = _small(app)
    torch.manual_seed(0)
    lit = lit_cls(net=cfg)
    assert lit.hparams["net"] == dataclasses.asdict(cfg) and type(lit.hparams["net"]) is dict
    assert lit.hparams_initial["net"] == dataclasses.asdict(cfg)  # what loggers write to hparams.yaml
    path = tmp_path / f"{app}.ckpt"
    ckpt = {"state_dict": lit.state_dict(), "hyper_parameters": dict(lit.hparams),
            "pytorch-lightning_version": pl.__version__, "linmix": {"app": app}}
    lit.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no safe_globals: primitives only
    assert raw["hyper_parameters"]["net"] == dataclasses.asdict(cfg)
    back = load_lit(lit_cls, path, app=app)
    assert as_config(cfg_cls, back.hparams["net"]) == cfg
    for k, v in lit.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    from_dict = lit_cls(net=dataclasses.asdict(cfg))  # a checkpoint's dict is accepted directly
    assert from_dict.hparams["net"] == lit.hparams["net"]


def test_as_config_names_unknown_fields_and_restores_tuples():
    from linmix.apps.ctr.model import CTRNetConfig

    cfg = as_config(CTRNetConfig, {"hidden": [4, 4], "field_sizes": [3]})
    assert cfg.hidden == (4, 4) and cfg.field_sizes == (3,)
    with pytest.raises(ValueError, match=r"CTRNetConfig has no field\(s\) \['d_modle'\]"):
        as_config(CTRNetConfig, {"d_modle": 3})


@pytest.mark.parametrize("app", APPS)
def test_cli_links_target_the_net_config(app):
    """Every derived size linked from the data module lands in ``model.net.<field>`` or a top-level module argument
    that exists."""
    cli_mod = importlib.import_module(f"linmix.apps.{app}.cli")
    links = cli_mod.APP.links  # the app's declaration (its LightningCLI subclass is built from it)
    lit_cls, cfg_cls, _ = _small(app)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    args = set(inspect.signature(lit_cls.__init__).parameters)
    for link in links:
        parts = link[1].split(".")
        assert parts[0] == "model"
        assert (parts[1] == "net" and parts[2] in fields) if len(parts) == 3 else parts[1] in args - {"net"}, link

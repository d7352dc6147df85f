"""Every YAML under configs/ instantiates its app's model and data module through the real CLI (run=False); a
fragment (a file another config names as a value, e.g. ``model: {net: net.yaml}``) is used by some config."""

import importlib
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = {"trainer", "model", "data", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler"}


def _is_fragment(path: pathlib.Path) -> bool:
    return not (set(yaml.safe_load(path.read_text()) or {}) & SECTIONS)


ALL = sorted((ROOT / "configs").rglob("*.yaml"))
CONFIGS = [p for p in ALL if not _is_fragment(p)]
FRAGMENTS = [p for p in ALL if _is_fragment(p)]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_instantiates(path, tmp_path, monkeypatch):
    app = path.parent.name
    spec = importlib.import_module(f"linmix.apps.{app}.cli").APP
    from linmix.shared.cli import load
    from linmix.shared.lightning_cli import LinmixCLI

    cli_cls = spec.cli_class()
    assert issubclass(cli_cls, LinmixCLI) and cli_cls.__name__ == spec.cli_name and cli_cls.app_name == app
    monkeypatch.chdir(ROOT)
    cli = cli_cls(load(spec.model), load(spec.datamodule), args=["-c", str(path)], run=False,
                  subclass_mode_model=spec.subclass_mode_model)
    assert cli.model is not None and cli.datamodule is not None
    assert sum(p.numel() for p in cli.model.parameters()) > 0


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_fragment_is_used(path):
    users = [p for p in CONFIGS if p.parent == path.parent and path.name in p.read_text()]
    assert users, f"{path} is no complete config (no {sorted(SECTIONS)}) and no config in its folder names it"

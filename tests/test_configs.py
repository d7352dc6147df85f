"""Every YAML under configs/ instantiates its app's model and data module through the real CLI (run=False)."""

import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


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

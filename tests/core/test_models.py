"""``--model NAME``: resolves to ``<models>/<app>/NAME.ckpt`` in the three tools that load a trained model, an unknown
name lists the available ones, and ``--model`` with ``--ckpt`` is an argparse error."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from linmix.shared.errors import UserError
from linmix.shared.models import ENV, available_models, models_root, resolve_model

ROOT = Path(__file__).resolve().parents[2]


def _main(app: str):
    return importlib.import_module(f"linmix.apps.{app}.cli").main


def _tool(app: str, tmp_path: Path) -> list[str]:
    """The tool's arguments other than --ckpt / --model (inputs that exist; the model is loaded first)."""
    out = tmp_path / "out"
    if app == "speech":
        wav = tmp_path / "in.wav"
        sf.write(wav, np.zeros(800, dtype=np.float32), 8000)
        return ["separate", str(wav), "--out-dir", str(out)]
    if app == "ehr":
        (tmp_path / "meds").mkdir(exist_ok=True)
        return ["score", "--meds", str(tmp_path / "meds"), "--out", str(out / "scores.parquet")]
    return ["rollout", "--sample", str(tmp_path / "s.npz"), "--out", str(out)]


@pytest.fixture()
def models(tmp_path: Path, monkeypatch) -> Path:
    """A models folder named by LINMIX_MODELS: two files per app that are not checkpoints, one other file."""
    root = tmp_path / "models"
    for app in ("speech", "ehr", "physics"):
        (root / app).mkdir(parents=True)
        for name in ("beta", "alpha"):
            torch.save({"no": "state_dict"}, root / app / f"{name}.ckpt")
        (root / app / "alpha.md").write_text("card")
    monkeypatch.setenv(ENV, str(root))
    return root


def test_resolve_and_list(models: Path):
    assert models_root() == models
    assert available_models("ehr") == ["alpha", "beta"]
    assert resolve_model("ehr", "alpha") == models / "ehr" / "alpha.ckpt"
    assert resolve_model("ehr", "alpha.ckpt") == models / "ehr" / "alpha.ckpt"
    with pytest.raises(UserError, match=r"'gamma'.*available: alpha, beta"):
        resolve_model("ehr", "gamma")
    with pytest.raises(UserError, match="not a path"):
        resolve_model("ehr", "../speech/alpha")
    assert available_models("lm") == []
    with pytest.raises(UserError, match="none is published"):
        resolve_model("lm", "alpha")


def test_default_root_is_the_package_models_folder(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    import linmix

    assert models_root() == Path(linmix.__file__).resolve().parent / "models"
    assert models_root() == ROOT / "models" and (ROOT / "models" / "README.md").is_file()


@pytest.mark.parametrize("app", ["speech", "ehr", "physics"])
def test_tool_loads_the_named_model(app: str, models: Path, tmp_path: Path, capsys):
    rc = _main(app)(_tool(app, tmp_path) + ["--model", "beta"])
    err = capsys.readouterr().err
    # the resolved file was handed to the weights-only loader, which refused it with one line naming it
    assert rc == 2 and str(models / app / "beta.ckpt") in err and "no state_dict" in err, err


@pytest.mark.parametrize("app", ["speech", "ehr", "physics"])
def test_tool_unknown_model_lists_the_available_ones(app: str, models: Path, tmp_path: Path, capsys):
    rc = _main(app)(_tool(app, tmp_path) + ["--model", "gamma"])
    err = capsys.readouterr().err
    assert rc == 2 and "'gamma'" in err and "available: alpha, beta" in err, err


@pytest.mark.parametrize("app", ["speech", "ehr", "physics"])
def test_tool_model_and_ckpt_together_is_an_argparse_error(app: str, models: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        _main(app)(_tool(app, tmp_path) + ["--model", "alpha", "--ckpt", str(models / app / "beta.ckpt")])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _main(app)(_tool(app, tmp_path))
    assert exc.value.code == 2 and "one of the arguments --ckpt --model is required" in capsys.readouterr().err

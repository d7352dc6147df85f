"""The tiny LM through its real CLI: fit, export round trip, help, and the CLI's own error on unknown keys."""

import pathlib

import pytest

from linmix.apps.lm.cli import main
from linmix.apps.lm.tools import export_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "lm" / "tiny.yaml")


def test_fit_then_export_roundtrip(tmp_path):
    main(["fit", "-c", TINY, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path)])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    diff = export_checkpoint(ckpt, tmp_path / "lm.pt")
    assert diff < 1e-4


def test_unknown_config_key_is_the_cli_error(capsys):
    with pytest.raises(SystemExit) as err:
        main(["fit", "-c", TINY, "--model.net.d_modle", "3"])
    assert err.value.code != 0
    assert "d_modle" in capsys.readouterr().err


def test_help_lists_subcommands_and_tools(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("fit", "validate", "test", "predict", "export", "demo"):
        assert word in out
    assert main(["nonsense"]) == 2


def test_default_root_dir_is_honoured(tmp_path, monkeypatch):
    """``--trainer.default_root_dir D`` puts the logs and checkpoints under D, not under ``runs/<app>``."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    main(["fit", "-c", TINY, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)])
    assert next(root.rglob("last.ckpt")).is_file()
    assert not (tmp_path / "runs").exists()

"""``--ckpt_path last`` in another app than CTR: a second ``fit`` resumes from the newest ``last.ckpt`` of the earlier
runs (Lightning alone would look in the new run's empty ``version_N`` folder and start over); with none, one line, rc 2.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from linmix.apps.lm.cli import main
from linmix.shared.lightning_cli import last_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _argv(d: Path, steps: int) -> list:
    return ["fit", "-c", str(ROOT / "configs/lm/tiny.yaml"), "--trainer.default_root_dir", str(d),
            "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
            "false", "--trainer.enable_model_summary", "false", "--model.net.d_model", "16", "--model.net.n_layers", "1",
            "--data.n_train", "64", "--data.n_val", "8", "--data.batch_size", "8"]


def test_fit_ckpt_path_last_resumes_the_newest_run(tmp_path: Path, capsys) -> None:
    assert main([*_argv(tmp_path, 3)]) == 0
    first = next(tmp_path.rglob("version_0/checkpoints/last.ckpt"))
    capsys.readouterr()
    assert main([*_argv(tmp_path, 5), "--ckpt_path", "last"]) == 0
    assert f"--ckpt_path last -> {first}" in capsys.readouterr().err
    second = next(tmp_path.rglob("version_1/checkpoints/last.ckpt"))
    assert torch.load(second, weights_only=True, map_location="cpu")["global_step"] == 5  # 3 resumed + 2, not 5 anew
    assert main([*_argv(tmp_path, 6), "--ckpt_path", "last", "--model.net.d_model", "8"]) == 2
    err = capsys.readouterr().err
    assert f"--ckpt_path {second} does not fit the network of this command (size mismatch" in err, err[-2000:]
    assert "Traceback" not in err
    trainer = Trainer(logger=CSVLogger(str(tmp_path)), callbacks=[ModelCheckpoint(save_last=True)])
    assert last_checkpoint(trainer) == str(second)  # the newest run's, not version_0's nor the new version_2's


def test_ckpt_path_last_without_a_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    assert main([*_argv(tmp_path, 3), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err
    assert "linmix-lm fit: error: --ckpt_path last: no last checkpoint in" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.ckpt"))

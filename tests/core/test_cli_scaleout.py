"""Scale-out and faults through the real console script: 2-process CPU DDP (gloo), and kill + resume from `last`."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXE = pathlib.Path(sys.executable).parent / "linmix-lm"


def _run(args, tmp_path, extra_env=None, timeout=400):
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests' / 'core'}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1",
               **(extra_env or {}))
    return subprocess.run([str(EXE), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _yaml(tmp_path, name, max_steps, callbacks):
    cbs = "\n".join(f"    - {c}" for c in callbacks)
    text = f"""
trainer:
  accelerator: cpu
  max_steps: {max_steps}
  limit_val_batches: 1
  val_check_interval: 4
  check_val_every_n_epoch: null
  enable_progress_bar: false
  logger: {{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {{save_dir: {tmp_path}/logs}}}}
  callbacks:
{cbs}
model:
  net: {{d_model: 16, n_layers: 1, d_state: 8, n_heads: 2}}
data: {{seq_len: 32, n_train: 256, n_val: 16, batch_size: 8}}
"""
    (tmp_path / name).write_text(text)
    return name


CKPT = "{class_path: pytorch_lightning.callbacks.ModelCheckpoint, init_args: {dirpath: ckpt, save_last: true, every_n_train_steps: 1}}"


@pytest.mark.skipif(not shutil.which(str(EXE)), reason="console script not installed (pip install -e .)")
def test_fit_killed_mid_epoch_resumes_from_last_checkpoint(tmp_path):
    # 256 windows / batch 8 = 32 steps per epoch; killed at step 7 of 12, mid-epoch
    cfg = _yaml(tmp_path, "kill.yaml", 12, [CKPT, "{class_path: fault.KillAtStep, init_args: {step: 7}}"])
    out = _run(["fit", "-c", cfg], tmp_path)
    assert out.returncode == 137, out.stderr[-2000:]
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 6 <= last["global_step"] <= 7
    cfg = _yaml(tmp_path, "resume.yaml", 12, [CKPT])
    out = _run(["fit", "-c", cfg, "--ckpt_path", "last"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    final = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 12


@pytest.mark.skipif(not shutil.which(str(EXE)), reason="console script not installed (pip install -e .)")
def test_ddp_two_processes_on_cpu(tmp_path):
    cfg = _yaml(tmp_path, "ddp.yaml", 4, [CKPT])
    out = _run(["fit", "-c", cfg, "--trainer.strategy", "ddp", "--trainer.devices", "2"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "gloo" in log or "MEMBER: 2/2" in log, log[-2000:]
    final = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 4

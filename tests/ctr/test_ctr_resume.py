"""A fit killed mid-epoch (``os._exit``, as ``kill -9``) and started again with ``--ckpt_path last`` resumes its stream
after the last trained batch; ``last`` with nothing to resume is one line, rc 2."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from linmix.apps.ctr.cli import main
from linmix.apps.ctr.data import CTRDataModule

EXE = Path(sys.executable).parent / "linmix-ctr"
ROOT = Path(__file__).resolve().parents[2]

YAML = """
trainer:
  max_epochs: 2
  val_check_interval: 5
  enable_progress_bar: false
  enable_model_summary: false
  logger: {{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {{save_dir: {d}/logs}}}}
model:
  net: {{d_model: 4, n_layers: 1, n_linear_layers: 1}}
  early_stopping_patience: 0
data:
  data_dir: {d}/data
  synth_rows: 3000
  batch_size: 128
  eval_batch_size: 512
  streaming: true
  shuffle_buffer: 500
  num_workers: 2
"""


@pytest.mark.skipif(not shutil.which(str(EXE)), reason="console script not installed (pip install -e .)")
def test_killed_mid_epoch_resumes_without_repeating_or_skipping_rows(tmp_path, capsys):
    d = tmp_path
    (d / "fit.yaml").write_text(YAML.format(d=d))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT / 'tests' / 'core'}{os.pathsep}{ROOT.parent}")
    # 2,400 rows / 128 = 19 steps per epoch; validation (and last.ckpt) every 5 batches; killed at step 27 (epoch 1)
    out = subprocess.run([str(EXE), "fit", "-c", str(d / "fit.yaml"), "--trainer.callbacks+",
                          "{class_path: fault.KillAtStep, init_args: {step: 27}}"], cwd=d, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 137, out.stderr[-3000:]
    run0 = d / "logs" / "lightning_logs" / "version_0"
    last = run0 / "checkpoints" / "last.ckpt"
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["global_step"] == 24 and ck["epoch"] == 1  # saved after batch 5 of epoch 1
    capsys.readouterr()
    assert main(["fit", "-c", str(d / "fit.yaml"), "--ckpt_path", "last"]) == 0  # as a user restarts the command
    assert f"--ckpt_path last -> {last}" in capsys.readouterr().err  # the killed run's, not the new version's
    rec = [json.loads(x) for x in (d / "logs" / "lightning_logs" / "version_1" / "data_order.jsonl")
           .read_text().splitlines()]
    assert [(r["epoch"], r["resumed_after_batches"], r["batches"]) for r in rec] == [(1, 5, 14)]
    # the epoch as one uninterrupted pass: its first 5 batches (3 of worker 0, 2 of worker 1, interleaved) were
    # trained before the kill; after the resume each worker goes on with its next batch, the loader interleaving
    # them again from worker 0
    os.environ["PL_GLOBAL_SEED"] = "0"
    dm = CTRDataModule(data_dir=str(d / "data"), synth_rows=3000, batch_size=128, streaming=True, shuffle_buffer=500,
                       num_workers=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.epoch_fn = lambda: 1
    batches = list(loader)
    rows = [b["row"] for b in batches]
    assert sorted(torch.cat(rows).tolist()) == list(range(2400))
    per_worker = {w: [b["row"] for b in batches if int(b["worker"]) == w] for w in (0, 1)}
    rest = {0: per_worker[0][3:], 1: per_worker[1][2:]}
    sha = hashlib.sha256()
    for i in range(max(map(len, rest.values()))):
        for w in (0, 1):
            if i < len(rest[w]):
                sha.update(rest[w][i].numpy().tobytes())
    assert rec[0]["rows_sha256"] == sha.hexdigest()


def test_ckpt_path_last_without_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "fit.yaml").write_text(YAML.format(d=tmp_path))
    assert main(["fit", "-c", str(tmp_path / "fit.yaml"), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err
    assert f"--ckpt_path last: no last checkpoint in {tmp_path / 'logs' / 'lightning_logs' / '*' / 'checkpoints'}" \
        in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()  # stopped before encoding or training anything

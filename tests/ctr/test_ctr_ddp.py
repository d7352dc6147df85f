"""CTR under DDP through the console script: 2 gloo processes on CPU, streamed shards, 2 DataLoader workers each."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from linmix.apps.ctr.cli import main

EXE = Path(sys.executable).parent / "linmix-ctr"
ROOT = Path(__file__).resolve().parents[2]

YAML = """
trainer:
  max_epochs: 1
  accelerator: cpu
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
  eval_batch_size: 64
  streaming: true
"""


def _run(d: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT.parent))
    out = subprocess.run([str(EXE), *args, "-c", str(d / "ddp.yaml"), "--trainer.strategy", "ddp",
                          "--trainer.devices", "2", "--data.num_workers", "2"], cwd=d, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow  # 4 launches of 2 processes: ~80 s on an idle 2-core machine, minutes under load
@pytest.mark.skipif(not shutil.which(str(EXE)), reason="console script not installed (pip install -e .)")
def test_fit_test_predict_with_two_processes(tmp_path):
    d = tmp_path
    (d / "ddp.yaml").write_text(YAML.format(d=d))
    _run(d, "fit")
    ckpt = d / "logs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert step == math.ceil(math.ceil(2400 / 2) / 128) == 10  # one process: ceil(2400 / 128) = 19 steps
    order = [json.loads(x) for x in (ckpt.parents[1] / "data_order.jsonl").read_text().splitlines()]
    assert order[0]["world"] == 2 and order[0]["batches"] == 10 and order[0]["workers"] == 2

    _run(d, "test", "--ckpt_path", str(ckpt), "--model.out_dir", str(d / "two"))
    assert main(["test", "-c", str(d / "ddp.yaml"), "--ckpt_path", str(ckpt), "--model.out_dir", str(d / "one"),
                 "--trainer.default_root_dir", str(d / "one")]) == 0
    two = json.loads((d / "two" / "test_metrics.json").read_text())
    one = json.loads((d / "one" / "test_metrics.json").read_text())
    for k in ("auc", "logloss", "gauc", "ece", "bayes_auc"):
        assert abs(two[k] - one[k]) <= 1e-6, (k, two[k], one[k])

    _run(d, "predict", "--ckpt_path", str(ckpt), "--model.out_dir", str(d / "two"))
    pred = pl.read_parquet(d / "two" / "predictions.parquet")
    assert pred["row"].to_list() == list(range(300))  # every test row once, in row order

    _run(d, "validate", "--ckpt_path", str(ckpt), "--trainer.logger.init_args.version", "val2")
    assert main(["validate", "-c", str(d / "ddp.yaml"), "--ckpt_path", str(ckpt),
                 "--trainer.logger.init_args.version", "val1"]) == 0
    v2, v1 = (pl.read_csv(d / "logs" / "lightning_logs" / v / "metrics.csv") for v in ("val2", "val1"))
    for k in ("val/auc", "val/logloss"):
        assert abs(v2[k].drop_nulls()[0] - v1[k].drop_nulls()[0]) <= 1e-6, k

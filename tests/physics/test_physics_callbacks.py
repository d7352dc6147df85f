"""The time-boxed training callback used by the GPU job: wall-clock schedule, stop before the deadline, atomic
weights-only checkpoint that the CLI's test loads, per-epoch throughput log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from apps.physics.callbacks import TimeBudget
from apps.physics.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"d_model": 16, "n_layers": 1, "d_hidden": 16, "n_slots": 4, "n_freq": 2}


def test_lr_factor_warms_up_then_follows_the_clock():
    cb = TimeBudget(deadline=1000.0, reserve_s=0.0, warmup_steps=10, min_lr_ratio=0.1)
    cb.t0, cb.t_end = 0.0, 100.0
    assert cb.lr_factor(0, 0.0) == pytest.approx(0.1)
    assert cb.lr_factor(9, 0.0) == pytest.approx(1.0)
    assert cb.lr_factor(10, 0.0) == pytest.approx(1.0)
    assert cb.lr_factor(500, 50.0) == pytest.approx(0.55)
    assert cb.lr_factor(500, 100.0) == pytest.approx(0.1)
    assert cb.lr_factor(500, 500.0) == pytest.approx(0.1)  # past the end: stays at the floor
    with pytest.raises(ValueError, match="deadline"):
        TimeBudget()


def test_fit_stops_by_deadline_and_checkpoint_tests(darcy_dir, tmp_path):
    ckpt, curve, log = tmp_path / "ckpt/last.ckpt", tmp_path / "curve.jsonl", tmp_path / "fit.log"
    deadline = time.time() + 14
    cfg = {"model": SMALL, "data": {"data_dir": str(darcy_dir)},
           "trainer": {"max_epochs": 10000, "enable_checkpointing": False, "logger": False,
                       "enable_progress_bar": False, "default_root_dir": str(tmp_path),
                       "callbacks": [{"class_path": "apps.physics.callbacks.TimeBudget",
                                      "init_args": {"deadline": deadline, "reserve_s": 1.0, "warmup_steps": 2,
                                                    "ckpt_path": str(ckpt), "ckpt_every_s": 2.0,
                                                    "log_path": str(log), "curve_path": str(curve)}}]}}
    (tmp_path / "run.yaml").write_text(json.dumps(cfg))
    rc = main(["fit", "-c", str(ROOT / "configs/physics/tiny.yaml"), "-c", str(tmp_path / "run.yaml")])
    assert rc == 0
    assert time.time() < deadline + 3
    recs = [json.loads(x) for x in curve.read_text().splitlines()]
    assert 1 <= len(recs) < 10000 and all(r["steps_per_s"] > 0 for r in recs)
    lrs = [r["lr"] for r in recs]  # the lr the optimizer used: the wall-clock cosine, not the module's own scheduler
    assert len(lrs) == 1 or lrs[-1] < 0.5 * max(lrs)
    assert "train end" in log.read_text() and not ckpt.with_name("last.ckpt.tmp").exists()
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    assert "optimizer_states" not in state and bool(state["state_dict"]["net.fitted"])
    args = [f"--model.{k}={v}" for k, v in SMALL.items()]
    rc = main(["test", "-c", str(ROOT / "configs/physics/tiny.yaml"), "--data.data_dir", str(darcy_dir),
               "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(tmp_path), *args])
    assert rc == 0

"""The physics recipe's time-boxed fit: the shared TimeBudget (wall-clock schedule, stop before the deadline at an epoch end,
atomic weights-only checkpoint that the CLI's test loads) with the physics per-epoch throughput log (EpochLog)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from linmix.apps.physics.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"d_model": 16, "n_layers": 1, "d_hidden": 16, "n_slots": 4, "n_freq": 2}


def test_fit_stops_by_deadline_and_checkpoint_tests(darcy_dir, tmp_path):
    ckpt, curve, log = tmp_path / "ckpt/last.ckpt", tmp_path / "curve.jsonl", tmp_path / "fit.log"
    deadline = time.time() + 14
    cfg = {"model": {"net": SMALL}, "data": {"data_dir": str(darcy_dir)},
           "trainer": {"max_epochs": 10000, "enable_checkpointing": False, "logger": False,
                       "enable_progress_bar": False, "default_root_dir": str(tmp_path),
                       "callbacks": [{"class_path": "linmix.shared.lightning.TimeBudget",
                                      "init_args": {"deadline": deadline, "reserve_s": 1.0, "warmup_steps": 2,
                                                    "stop_at": "epoch", "ckpt_path": str(ckpt), "ckpt_every_s": 2.0}},
                                     {"class_path": "linmix.apps.physics.callbacks.EpochLog",
                                      "init_args": {"log_path": str(log), "curve_path": str(curve)}}]}}
    (tmp_path / "run.yaml").write_text(json.dumps(cfg))
    rc = main(["fit", "-c", str(ROOT / "configs/physics/tiny.yaml"), "-c", str(tmp_path / "run.yaml")])
    assert rc == 0
    assert time.time() < deadline + 3
    recs = [json.loads(x) for x in curve.read_text().splitlines()]
    assert 1 <= len(recs) < 10000 and all(r["steps_per_s"] > 0 for r in recs)
    lrs = [r["lr"] for r in recs]  # the lr the optimizer used: the wall-clock cosine, not the module's own scheduler
    assert len(lrs) == 1 or lrs[-1] < 0.5 * max(lrs)
    assert "train end" in log.read_text() and not ckpt.with_name("last.ckpt.tmp").exists()
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert "optimizer_states" not in state and bool(state["state_dict"]["net.fitted"])
    args = [f"--model.net.{k}={v}" for k, v in SMALL.items()]
    rc = main(["test", "-c", str(ROOT / "configs/physics/tiny.yaml"), "--data.data_dir", str(darcy_dir),
               "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(tmp_path), *args])
    assert rc == 0

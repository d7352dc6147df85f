"""``linmix-physics`` under DDP, 2 gloo processes on CPU, through the console script: fit (with validation) and
(slow) test. Each rank trains on a disjoint half of every epoch (a steady PhysGTO has no parameter outside the loss,
so DDP needs no ``find_unused_parameters``), and the 2-process validation / test metrics equal a single-process
evaluation of the same checkpoint on the same meshes."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import torch

from linmix.apps.physics.cli import main

TESTS = Path(__file__).resolve().parents[1]
TINY = str(TESTS.parent / "configs" / "physics" / "tiny.yaml")
_spec = importlib.util.spec_from_file_location("linmix_tests_scaleout", TESTS / "scaleout.py")
SO = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SO)
pytestmark = pytest.mark.skipif(not shutil.which(str(SO.exe("physics"))),
                                reason="console script not installed (pip install -e .)")
SMALL = ["--model.net.d_model", "16", "--model.net.n_layers", "1", "--model.net.d_hidden", "16",
         "--model.net.n_slots", "4", "--model.net.n_freq", "2"]
QUIET = [*SO.QUIET, "--trainer.accelerator", "cpu"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One 2-process fit of one epoch: 16 Darcy meshes, 8 train, 4 val, 4 test, batches of 2 (so each rank's
    evaluation batches are batches of the single-process run)."""
    from linmix.apps.physics.pde.synth import synthesize

    root = tmp_path_factory.mktemp("physics_ddp")
    data = root / "darcy"
    assert synthesize("darcy", 16, data, seed=0, h=0.3, workers=1, progress=False)["written"] == 16
    common = ["-c", TINY, "--data.data_dir", str(data), "--data.val_fraction", "0.25", "--data.test_fraction",
              "0.25", "--data.batch_size", "2", *SMALL]
    SO.run_ddp("physics", ["fit", *common, "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0"], root)
    (fit_dir,) = SO.versions(root / "runs" / "physics")
    return {"root": root, "common": common, "fit_dir": fit_dir, "ckpt": fit_dir / "checkpoints" / "last.ckpt"}


def test_ddp_fit_halves_the_epoch_and_validates_like_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    state = torch.load(fitted["ckpt"], map_location="cpu", weights_only=True)
    assert state["global_step"] == 2  # 8 training meshes: 4 per rank in batches of 2 (one process: 4 steps)
    assert "net.net.alpha" not in state["state_dict"]  # a steady PhysGTO has no step scale
    assert main(["validate", *fitted["common"], *QUIET, "--ckpt_path", str(fitted["ckpt"])]) == 0
    one = SO.metrics(SO.versions(fitted["root"] / "runs" / "physics")[-1])
    assert SO.assert_close_metrics(SO.metrics(fitted["fit_dir"]), one, "val/") == 2  # rel_l2, rel_l2_u


@pytest.mark.slow
def test_ddp_test_metrics_equal_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    logs = fitted["root"] / "runs" / "physics"
    SO.run_ddp("physics", ["test", *fitted["common"], "--ckpt_path", str(fitted["ckpt"])], fitted["root"])
    ddp = SO.metrics(SO.versions(logs)[-1])
    assert main(["test", *fitted["common"], *QUIET, "--ckpt_path", str(fitted["ckpt"])]) == 0
    one = SO.metrics(SO.versions(logs)[-1])
    assert SO.assert_close_metrics(ddp, one, "test/") == 2 and math.isfinite(one["test/rel_l2"])

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


@pytest.mark.parametrize("arch", ["physgto", "mgn", "transolver"])
@pytest.mark.parametrize("transient", [False, True])
def test_every_parameter_is_in_the_loss(arch, transient):
    """DDP all-reduces a gradient for every parameter: none may be left out of the loss (PhysGTO's step scale α
    exists only for transient problems)."""
    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.lit_module import build_net
    from linmix.apps.physics.operator import FieldOperator

    n_in, n_out, n_globals = (2, 2, 1) if transient else (3, 1, 1)
    cfg = PhysicsConfig(arch=arch, n_in=n_in, n_out=n_out, n_globals=n_globals, transient=transient, d_model=16,
                        n_layers=2, n_heads=2, n_slots=4, d_hidden=16, n_freq=2)
    op = FieldOperator(build_net(cfg), cfg=cfg, scale_steps=arch != "physgto")
    g = torch.Generator().manual_seed(0)
    n = 30
    batch = torch.arange(n) // 15
    edges = torch.randint(0, 15, (2, 40), generator=g)
    y = op(torch.rand(n, 2, generator=g), torch.randn(n, op.n_feat, generator=g), torch.randint(0, 4, (n,), generator=g),
           torch.cat([edges, edges + 15], 1), batch)
    y.pow(2).mean().backward()
    assert [k for k, p in op.named_parameters() if p.grad is None] == []
    assert (getattr(op.net, "alpha", None) is not None) == (arch == "physgto" and transient)


def test_steady_checkpoint_with_the_old_step_scale_still_loads():
    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.lit_module import PhysicsLitModule
    from linmix.apps.physics.pde.sample_io import get_problem

    spec = get_problem("darcy")
    cfg = PhysicsConfig(n_in=spec.n_in, n_out=spec.n_out, n_globals=spec.n_globals, transient=False, d_model=16,
                        n_layers=1, n_slots=4, d_hidden=16, n_freq=2)
    lit = PhysicsLitModule(net=cfg, problem="darcy")
    ckpt = {"state_dict": {**lit.state_dict(), "net.net.alpha": torch.tensor(1 / 30)}, "hyper_parameters": {}}
    lit.on_load_checkpoint(ckpt)
    lit.load_state_dict(ckpt["state_dict"])  # strict: the unused α of older steady checkpoints is dropped


@pytest.mark.slow
def test_ddp_transient_fit_and_rollout_test_equal_one_process(tmp_path, monkeypatch):
    """Heat (transient): 2-process fit finishes; the 2-process test metrics and the gathered rollout curve
    (``rollout_rel_l2.csv``, written by rank 0) equal one process's."""
    from linmix.apps.physics.pde.synth import synthesize

    monkeypatch.chdir(tmp_path)
    assert synthesize("heat", 8, tmp_path / "heat", seed=0, h=0.3, workers=1, n_steps=6, progress=False)["written"] == 8
    common = ["-c", TINY, "--data.problem", "heat", "--data.data_dir", str(tmp_path / "heat"), "--data.val_fraction",
              "0.25", "--data.test_fraction", "0.25", "--data.batch_size", "1", *SMALL]
    SO.run_ddp("physics", ["fit", *common, "--trainer.max_epochs", "1"], tmp_path)
    logs = tmp_path / "runs" / "physics"
    ckpt = SO.versions(logs)[0] / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 2  # 4 training trajectories
    SO.run_ddp("physics", ["test", *common, "--ckpt_path", str(ckpt)], tmp_path)
    ddp_dir = SO.versions(logs)[-1]
    assert main(["test", *common, *QUIET, "--ckpt_path", str(ckpt)]) == 0
    one_dir = SO.versions(logs)[-1]
    assert SO.assert_close_metrics(SO.metrics(ddp_dir), SO.metrics(one_dir), "test/") == 4  # + step 1, last step
    ddp_curve, one_curve = ((d / "rollout_rel_l2.csv").read_text().split()[1:] for d in (ddp_dir, one_dir))
    assert len(one_curve) == 6
    for a, b in zip(ddp_curve, one_curve, strict=True):
        assert abs(float(a.split(",")[1]) - float(b.split(",")[1])) <= 1e-6

"""Through the real console entry point: fit with configs/physics/tiny.yaml, then test, export (round trip on two
mesh sizes) and rollout (XDMF + PNGs) from the checkpoint it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from linmix.apps.physics.cli import main
from linmix.apps.physics.export import operator_inputs
from linmix.apps.physics.pde.sample_io import load_sample
from linmix.shared.export import load_torchscript

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--model.net.d_model", "16", "--model.net.n_layers", "1", "--model.net.d_hidden", "16",
         "--model.net.n_slots", "4", "--model.net.n_freq", "2"]


@pytest.fixture(scope="module")
def fitted(darcy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    rc = main(["fit", "-c", str(ROOT / "configs/physics/tiny.yaml"), "--data.data_dir", str(darcy_dir),
               "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
               "false", "--trainer.logger.init_args.save_dir", str(out), "--trainer.default_root_dir", str(out), *SMALL])
    assert rc == 0
    ckpts = sorted(out.rglob("last.ckpt"))
    assert ckpts, list(out.rglob("*"))
    return ckpts[0], out


def test_fit_writes_checkpoint_with_fitted_normalisers(fitted):
    ckpt = torch.load(fitted[0], weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["problem"] == "darcy"
    assert bool(ckpt["state_dict"]["net.fitted"])
    assert (ckpt["state_dict"]["net.out_std"] > 0).all()


def test_cli_test_reports_rel_l2(fitted, darcy_dir):
    rc = main(["test", "-c", str(ROOT / "configs/physics/tiny.yaml"), "--data.data_dir", str(darcy_dir),
               "--ckpt_path", str(fitted[0]), "--trainer.enable_progress_bar", "false",
               "--trainer.logger.init_args.save_dir", str(fitted[1]), *SMALL])
    assert rc == 0
    rows = [p for p in fitted[1].rglob("metrics.csv") if "test/rel_l2" in p.read_text()]
    assert rows


def test_export_round_trip_two_mesh_sizes(fitted, darcy_dir, tmp_path, capsys):
    samples = sorted(darcy_dir.glob("*.npz"), key=lambda p: len(load_sample(p)["pos"]))
    a, b = samples[0], samples[-1]
    out = tmp_path / "op.pt"
    assert main(["export", "--ckpt", str(fitted[0]), "--out", str(out), "--sample", str(a), "--sample", str(b),
                 "--format", "torchscript"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    module, cfg = load_torchscript(out)
    assert cfg["problem"] == "darcy" and cfg["channels"] == ["u"]
    for p in samples[1:3]:  # a third and fourth mesh, sizes not used in the check
        d = load_sample(p)
        y = module(*operator_inputs(d, False))
        assert y.shape == (len(d["pos"]), 1) and torch.isfinite(y).all()
    capsys.readouterr()
    assert main(["export", "--ckpt", str(fitted[0]), "--out", str(out), "--sample", str(a), "--sample", str(a)]) == 2
    assert "two meshes of different sizes" in capsys.readouterr().err


def test_rollout_tool_writes_xdmf_pngs_and_metrics(fitted, darcy_dir, tmp_path):
    sample = sorted(darcy_dir.glob("*.npz"))[0]
    assert main(["rollout", "--ckpt", str(fitted[0]), "--sample", str(sample), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "rollout_metrics.json").read_text())
    assert metrics["channels"] == ["u"] and metrics["rel_l2"] >= 0
    assert (tmp_path / "rollout.xdmf").stat().st_size > 0 and (tmp_path / "last_frame.vtu").exists()
    assert list(tmp_path.glob("u_step*.png"))


def test_tools_have_help(capsys):
    for tool in ("synth", "rollout", "export", "demo"):
        with pytest.raises(SystemExit) as e:
            main([tool, "--help"])
        assert e.value.code == 0
    assert "linmix-physics" in capsys.readouterr().out

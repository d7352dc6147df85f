"""Bad physics input: every bad input gets a clear error (where and why), is counted and set aside, nothing lost."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch_geometric.data import Batch

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.data import PhysicsDataModule
from linmix.apps.physics.dataset import MeshFieldDataset, scan_folder, to_graph
from linmix.apps.physics.lit_module import PhysicsLitModule
from linmix.apps.physics.pde.sample_io import SampleError, load_sample, save_sample, validate_sample
from linmix.apps.physics.rollout import rollout
from linmix.apps.physics.rollout_tool import predict_sample

TINY = dict(d_model=16, n_layers=1, n_heads=2, n_slots=4, d_hidden=16, n_freq=2)


def _good():
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cells = np.array([[0, 1, 2], [1, 3, 2]])
    return {"pos": pos, "cells": cells, "node_type": np.array([1, 1, 1, 0]), "inputs": np.zeros((4, 3)),
            "globals": np.array([0.5]), "fields": np.ones((1, 4, 1)), "problem": "darcy"}


def _bad(kind):
    d = _good()
    if kind == "degenerate":
        d["pos"] = np.vstack([d["pos"], [2.0, 0.0]])
        d["cells"] = np.vstack([d["cells"], [1, 4, 1]])
        d["node_type"], d["inputs"], d["fields"] = np.r_[d["node_type"], 0], np.zeros((5, 3)), np.ones((1, 5, 1))
    elif kind == "duplicate":
        d["cells"] = np.vstack([d["cells"], [2, 1, 0]])
    elif kind == "isolated":
        d["pos"] = np.vstack([d["pos"], [5.0, 5.0]])
        d["node_type"], d["inputs"], d["fields"] = np.r_[d["node_type"], 0], np.zeros((5, 3)), np.ones((1, 5, 1))
    elif kind == "nan":
        d["fields"] = d["fields"].copy()
        d["fields"][0, 2, 0] = np.nan
    elif kind == "size":
        d["fields"] = np.ones((1, 3, 1))
    elif kind == "globals":  # e.g. a flow sample with (radius, u_max), not (cx, cy, radius, u_max)
        d["globals"] = np.array([0.5, 0.1])
    return d


CASES = {"degenerate": "degenerate \\(zero-area\\) cells", "duplicate": "duplicate cells",
         "isolated": "isolated nodes", "nan": "NaN/inf values in fields", "size": "fields have 3 nodes but the mesh has 4",
         "globals": "darcy expects 1 globals \\('flux',\\), got 2"}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_validate_sample_names_the_problem(kind):
    validate_sample(_good())
    with pytest.raises(SampleError, match=CASES[kind]):
        validate_sample(_bad(kind), where="x.npz")


def test_bad_files_are_quarantined_and_counted(darcy_dir, tmp_path, caplog):
    for p in sorted(darcy_dir.glob("*.npz"))[:4]:
        shutil.copy(p, tmp_path / p.name)
    for kind in sorted(CASES):
        save_sample(tmp_path / f"bad_{kind}.npz", _bad(kind), "darcy")
    (tmp_path / "bad_truncated.npz").write_bytes(b"PK\x03\x04 not a zip")
    dm = PhysicsDataModule(problem="darcy", data_dir=str(tmp_path), batch_size=2)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    rejects = [json.loads(x) for x in (tmp_path / "rejects_scan.jsonl").read_text().splitlines()]
    assert len(rejects) == len(CASES) + 1
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 4  # 4 accepted, every bad one rejected
    assert all(r["file"].endswith(".npz") and r["reason"] for r in rejects)
    assert "cannot read npz" in " ".join(r["reason"] for r in rejects)
    assert len(list(tmp_path.glob("bad_*.npz"))) == len(CASES) + 1  # nothing deleted


def _lit(problem, **kw):
    from linmix.apps.physics.pde.sample_io import get_problem

    s = get_problem(problem)
    torch.manual_seed(0)
    net = PhysicsConfig(n_in=s.n_in, n_out=s.n_out, n_globals=s.n_globals, transient=s.transient, **TINY)
    return PhysicsLitModule(net=net, problem=problem, **kw)


def test_checkpoint_of_another_problem_is_refused(darcy_dir, heat_dir, tmp_path):
    darcy = _lit("darcy")
    ckpt = tmp_path / "darcy.ckpt"
    torch.save({"state_dict": darcy.state_dict(), "hyper_parameters": dict(darcy.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)
    heat = _lit("heat")
    with pytest.raises(ValueError, match="trained on 'darcy'.*'heat'"):
        heat.on_load_checkpoint(torch.load(ckpt, weights_only=True))
    heat_sample = load_sample(sorted(heat_dir.glob("*.npz"))[0])
    with pytest.raises(ValueError, match="trained on 'darcy' \\(channels \\('u',\\)\\) but the sample is 'heat'"):
        predict_sample(PhysicsLitModule.load_from_checkpoint(str(ckpt)), heat_sample)
    with pytest.raises(ValueError, match="problem 'heat' has n_in=1"):
        PhysicsLitModule(problem="heat", net=PhysicsConfig(n_in=3, n_out=1, n_globals=1, transient=False))


def test_rollout_beyond_data_runs_on_model_and_says_so(heat_dir, caplog):
    lit = _lit("heat").eval()
    paths, _ = scan_folder(heat_dir, "heat")
    ds = MeshFieldDataset(paths[:1])
    lit.net.fit_stats(ds.items[0].inputs, ds.items[0].globals, ds.items[0].fields.reshape(-1, 1), 0.3)
    b = Batch.from_data_list(ds.items)
    T = b.fields.shape[0]
    with caplog.at_level(logging.WARNING, logger="linmix.physics.rollout"):
        traj = rollout(lit.net, b, T + 3, (1, 3))
    assert traj.shape == (T + 4, b.num_nodes, 1) and torch.isfinite(traj).all()
    assert "run on the model alone" in caplog.text
    fixed = b.node_type == 1  # Dirichlet values kept beyond the data
    torch.testing.assert_close(traj[-1][fixed], b.fields[-1][fixed])
    sample = load_sample(paths[0])
    _, metrics = predict_sample(lit, sample, steps=T + 2)
    assert metrics["steps_beyond_data"] == 3 and len(metrics["rel_l2_per_step"]) == T - 1


def test_graph_conversion_rejects_unknown_graph_kind(darcy_dir):
    d = load_sample(sorted(darcy_dir.glob("*.npz"))[0])
    assert to_graph(d, graph="knn", k=4).edge_index.shape[1] >= 2 * len(d["pos"])
    with pytest.raises(ValueError, match="'mesh' or 'knn'"):
        to_graph(d, graph="radius")


def test_transient_training_step_imposes_boundaries_and_detaches(heat_dir, monkeypatch):
    lit = _lit("heat", horizon=3)
    paths, _ = scan_folder(heat_dir, "heat")
    ds = MeshFieldDataset(paths[:2])
    b = Batch.from_data_list(ds.items)
    lit.net.fit_stats(b.inputs, b.globals, b.fields.reshape(-1, 1), 0.3)
    seen = []
    real_forward = lit.net.forward

    def spy(pos, feats, node_type, edge_index, batch=None):
        seen.append(feats[:, 0].clone())
        assert not feats.requires_grad  # each step's input state is detached (no BPTT)
        return real_forward(pos, feats, node_type, edge_index, batch)

    monkeypatch.setattr(lit.net, "forward", spy)
    err = lit._unroll(b, 1, 3, noise=True)
    assert err.shape == (3, 2, 1) and torch.isfinite(err).all()
    fixed = (b.node_type == 1) | (b.node_type == 3)
    torch.testing.assert_close(seen[0][fixed], b.fields[1, fixed, 0])  # no noise on boundary nodes
    assert (seen[0][~fixed] - b.fields[1, ~fixed, 0]).abs().max() > 0  # noise on interior nodes
    torch.testing.assert_close(seen[2][fixed], b.fields[3, fixed, 0])  # boundary values imposed from the truth
    err.mean().backward()
    assert lit.net.net.alpha.grad is not None


def test_test_stage_writes_rollout_curve_to_out_dir_never_cwd(heat_dir, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    trainer_kw = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    dm = PhysicsDataModule(problem="heat", data_dir=str(heat_dir), batch_size=2)
    lit = _lit("heat")
    pl.Trainer(**trainer_kw).test(lit, datamodule=dm, verbose=False)
    assert lit.rollout_curve is not None and len(lit.rollout_curve) == 6  # 6-step trajectories
    assert not any(cwd.iterdir())  # no logger, no out_dir: nothing written to the working directory
    out = tmp_path / "out"
    lit = _lit("heat", out_dir=str(out))
    pl.Trainer(**trainer_kw).test(lit, datamodule=dm, verbose=False)
    rows = (out / "rollout_rel_l2.csv").read_text().splitlines()
    assert rows[0] == "step,rel_l2" and len(rows) == 7
    assert [float(r.split(",")[1]) for r in rows[1:]] == pytest.approx(lit.rollout_curve, rel=1e-4)
    assert not any(cwd.iterdir())

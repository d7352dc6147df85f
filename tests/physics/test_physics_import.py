"""``linmix-physics import`` round trips: the app's own samples written as VTU / VTK, an XDMF time series and a .pvd
of VTU frames come back as identical arrays, and a fit on the imported copy equals a fit on the originals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mesh_files import spec_for, write_pvd, write_steady, write_xdmf_series

from linmix.apps.physics.pde.import_spec import parse_spec
from linmix.apps.physics.pde.mesh_import import import_meshes
from linmix.apps.physics.pde.sample_io import load_sample

KEYS = ("pos", "cells", "node_type", "inputs", "globals", "fields")


def assert_same(a: Path, b: Path) -> None:
    x, y = load_sample(a), load_sample(b)
    for k in KEYS:
        assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), (k, a.name)
    assert np.float32(x["dt"]) == np.float32(y["dt"]) and x["problem"] == y["problem"]
    assert x["channels"] == y["channels"]


@pytest.mark.parametrize("suffix", [".vtu", ".vtk"])
def test_steady_round_trip_is_exact(darcy_dir, tmp_path, suffix):
    src = tmp_path / "src"
    src.mkdir()
    originals = sorted(darcy_dir.glob("*.npz"))
    for p in originals:
        write_steady(load_sample(p, validate=False) | {"problem": "darcy"}, src / f"{p.stem}{suffix}")
    (src / "notes.txt").write_text("not a mesh")
    report = import_meshes(parse_spec(spec_for("darcy")), src, tmp_path / "out", echo=lambda *_: None)
    assert (report["found"], report["written"], report["refused"]) == (len(originals), len(originals), 0)
    assert report["ignored"] == ["notes.txt"]
    assert json.loads((tmp_path / "out" / "import_report.json").read_text())["written"] == len(originals)
    for p in originals:
        assert_same(p, tmp_path / "out" / p.name)


def test_transient_round_trip_xdmf_and_pvd(heat_dir, tmp_path):
    xdmf, pvd = tmp_path / "xdmf", tmp_path / "pvd"
    xdmf.mkdir()
    originals = sorted(heat_dir.glob("*.npz"))[:3]
    for p in originals:
        s = load_sample(p)
        write_xdmf_series(s, xdmf / f"{p.stem}.xdmf")
        write_pvd(s, pvd, p.stem)
    r1 = import_meshes(parse_spec(spec_for("heat", dt=0.05)), xdmf, tmp_path / "out_xdmf", echo=lambda *_: None)
    r2 = import_meshes(parse_spec(spec_for("heat")), pvd, tmp_path / "out_pvd", echo=lambda *_: None)
    assert (r1["written"], r2["written"]) == (3, 3), (r1, r2)
    assert r2["frames_read_via_pvd"] == 3 * len(load_sample(originals[0])["fields"]) and r2["ignored"] == []
    for p in originals:
        assert_same(p, tmp_path / "out_xdmf" / p.name)
        assert_same(p, tmp_path / "out_pvd" / p.name)


def _fit(data_dir: Path):
    import pytorch_lightning as pl

    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.data import PhysicsDataModule
    from linmix.apps.physics.lit_module import PhysicsLitModule

    pl.seed_everything(0, verbose=False)
    dm = PhysicsDataModule(problem="darcy", data_dir=str(data_dir), batch_size=2, seed=0)
    net = PhysicsConfig(arch="physgto", n_in=3, n_out=1, n_globals=1, d_model=8, n_layers=1, n_slots=4,
                        n_heads=2, d_hidden=16, n_freq=2)
    model = PhysicsLitModule(net=net, problem="darcy", warmup_steps=1)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return model.state_dict(), float(trainer.callback_metrics["train/loss"])


def test_fit_on_imported_copy_equals_fit_on_originals(darcy_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted(darcy_dir.glob("*.npz")):
        write_steady(load_sample(p) | {"problem": "darcy"}, src / f"{p.stem}.vtu")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_for("darcy")))
    from linmix.apps.physics.cli import main

    assert main(["import", "--spec", str(spec), "--src", str(src), "--out", str(tmp_path / "out")]) == 0
    (w0, loss0), (w1, loss1) = _fit(darcy_dir), _fit(tmp_path / "out")
    assert loss0 == loss1
    assert w0.keys() == w1.keys() and all(bool((w0[k] == w1[k]).all()) for k in w0)


def test_import_tool_imports_no_torch(tmp_path, darcy_dir):
    """The import tool is data-side only: a real run in a fresh interpreter loads no torch / Lightning / PyG."""
    s = load_sample(sorted(darcy_dir.glob("*.npz"))[0]) | {"problem": "darcy"}
    write_steady(s, tmp_path / "case.vtu")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec_for("darcy")))
    code = ("import sys; from linmix.apps.physics.cli import main; "
            "rc = main(['import', '--spec', 'spec.yaml', '--src', 'case.vtu', '--out', 'out']); "
            "heavy = [m for m in ('torch', 'pytorch_lightning', 'torch_geometric') if m in sys.modules]; "
            "print('RESULT', rc, heavy)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "RESULT 0 []" in r.stdout, r.stdout + r.stderr
    assert "found 1 cases" in r.stdout and (tmp_path / "out" / "case.npz").is_file()


def test_hdf5_xdmf_round_trip(darcy_dir, heat_dir, tmp_path, monkeypatch):
    """XDMF with HDF5 data (how most solvers write it): a steady file and a time series, exact (needs h5py)."""
    pytest.importorskip("h5py")
    import meshio

    monkeypatch.chdir(tmp_path)  # meshio's TimeSeriesWriter puts the .h5 in the working directory
    (tmp_path / "src").mkdir()
    steady = sorted(darcy_dir.glob("*.npz"))[0]
    s = load_sample(steady)
    write_steady(s | {"problem": "darcy"}, tmp_path / "src" / f"{steady.stem}.xdmf")
    assert import_meshes(parse_spec(spec_for("darcy")), tmp_path / "src", tmp_path / "o1",
                         echo=lambda *_: None)["written"] == 1
    assert_same(steady, tmp_path / "o1" / steady.name)
    traj = sorted(heat_dir.glob("*.npz"))[0]
    h = load_sample(traj)
    from mesh_files import frame_arrays, points3, static_arrays

    with meshio.xdmf.TimeSeriesWriter(f"{traj.stem}.xdmf", data_format="HDF") as w:
        w.write_points_cells(points3(h["pos"]), [("triangle", h["cells"])])
        for k in range(len(h["fields"])):
            w.write_data(float(k * np.float64(h["dt"])), point_data={**static_arrays(h | {"problem": "heat"}),
                                                                     **frame_arrays(h | {"problem": "heat"}, k)})
    r = import_meshes(parse_spec(spec_for("heat")), tmp_path / f"{traj.stem}.xdmf", tmp_path / "o2",
                      echo=lambda *_: None)
    assert r["written"] == 1, r
    assert_same(traj, tmp_path / "o2" / traj.name)

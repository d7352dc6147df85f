"""Hostile-input catalogue for the physics tools: every bad sample file, flag or checkpoint is refused before a model
runs, with one message naming the file, the array and what is expected (exit status 2, no traceback), and nothing is
written or changed. Tiny hand-made meshes (6 or 8 nodes) and an untrained tiny checkpoint keep each case fast."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from linmix.apps.physics.cli import main
from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.data import PhysicsDataModule
from linmix.apps.physics.dataset import to_graph
from linmix.apps.physics.lit_module import PhysicsLitModule
from linmix.apps.physics.pde.sample_io import SampleError, get_problem, load_sample
from linmix.apps.physics.pde.synth import synthesize
from linmix.shared.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(d_model=16, n_layers=1, n_heads=2, n_slots=4, d_hidden=16, n_freq=2)


def _strip(nx: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2 x nx node strip: pos (2·nx, 2), cells (2·(nx-1), 3), every node in a cell."""
    pos = np.array([[x, y] for y in (0.0, 1.0) for x in range(nx)], np.float32)
    cells = [c for i in range(nx - 1) for c in ([i, i + 1, nx + i], [i + 1, nx + i + 1, nx + i])]
    return pos, np.array(cells, np.int32)


def _arrays(problem: str, nx: int = 3) -> dict:
    """Raw npz arrays of a valid sample of ``problem`` on a 2 x nx strip."""
    spec = get_problem(problem)
    pos, cells = _strip(nx)
    n = len(pos)
    rng = np.random.default_rng(nx)
    node_type = np.zeros(n, np.int8)
    node_type[[0, nx]] = 1
    T = 3 if spec.transient else 1
    return {"pos": pos, "cells": cells, "node_type": node_type,
            "inputs": rng.normal(size=(n, spec.n_in)).astype(np.float32),
            "globals": rng.uniform(0.1, 0.5, spec.n_globals).astype(np.float32),
            "fields": rng.normal(size=(T, n, spec.n_out)).astype(np.float32),
            "dt": np.float32(0.1 if spec.transient else 0.0), "problem": np.array(problem),
            "channels": np.array(spec.channels)}


def _write(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)  # raw: np.savez stores whatever dtype it is given (object arrays pickled)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _set(name, index, value):
    def f(d):
        arr = np.array(d[name])
        arr[index] = value
        return {**d, name: arr}
    return f


def _put(**kw):
    return lambda d: {**d, **kw}


def _as(name, dtype):
    return lambda d: {**d, name: np.asarray(d[name]).astype(dtype)}


def _drop(name):
    return lambda d: {k: v for k, v in d.items() if k != name}


def _cells_float(value):
    def f(d):
        cells = d["cells"].astype(np.float64)
        cells[0, 1] = value
        return {**d, "cells": cells}
    return f


# name: (problem, mutation of the raw arrays, expected message (regex)); the darcy strip has 6 nodes
ARRAY_CASES = {
    "pos_complex": ("darcy", _as("pos", np.complex64),
                    r"pos must hold real numbers \(float32\), got complex dtype complex64"),
    "pos_float16": ("darcy", _as("pos", np.float16),
                    r"pos is float16 \(about 3 significant digits\); save it as float32"),
    "fields_float16": ("darcy", _as("fields", np.float16), r"fields is float16"),
    "fields_complex": ("darcy", _as("fields", np.complex128),
                       r"fields must hold real numbers .*complex dtype complex128"),
    "inputs_strings": ("darcy", _as("inputs", "U8"),
                       r"inputs must hold real numbers \(float32\), got string dtype <U8"),
    "globals_bytes": ("darcy", _put(globals=np.array([b"0.2"])),
                      r"globals must hold real numbers .*bytes dtype \|S3"),
    "fields_bool": ("darcy", _as("fields", bool), r"fields must hold real numbers .*bool"),
    "cells_fractional": ("darcy", _cells_float(1.5),
                         r"cells must hold integer indices; 1 value\(s\) are fractional or NaN/inf \(first 1\.5 at "
                         r"index \[0, 1\]\)"),
    "cells_nan": ("darcy", _cells_float(np.nan), r"cells must hold integer indices; 1 value\(s\) .*first nan"),
    "cells_bool": ("darcy", _as("cells", bool), r"cells must hold integers, got bool dtype bool"),
    "cells_strings": ("darcy", _as("cells", "U4"), r"cells must hold integers, got string dtype <U4"),
    "cells_out_of_range": ("darcy", _set("cells", (0, 0), 6),
                           r"cell indices must lie in 0\.\.5 \(the mesh has 6 nodes\), got 1\.\.6; 1 do not, first "
                           r"6 in cell 0"),
    "cells_negative": ("darcy", _set("cells", (1, 2), -1),
                       r"cell indices must lie in 0\.\.5 .*got -1\.\.5; 1 do not, first -1 in cell 1"),
    "cells_not_triangles": ("darcy", lambda d: {**d, "cells": d["cells"][:, :2]},
                            r"cells must be a non-empty \(K, 3\) triangle array, got \(4, 2\)"),
    "pos_inf": ("darcy", _set("pos", (2, 1), np.inf), r"1 NaN/inf values in pos \(first at index \[2, 1\]\)"),
    "pos_3d": ("darcy", lambda d: {**d, "pos": np.c_[d["pos"], np.zeros(6, np.float32)]},
               r"pos must be \(N, 2\) node coordinates with N > 0, got \(6, 3\)"),
    "pos_empty": ("darcy", _put(pos=np.zeros((0, 2), np.float32)), r"pos must be \(N, 2\) .*N > 0, got \(0, 2\)"),
    "steady_no_frames": ("darcy", lambda d: {**d, "fields": d["fields"][:0]},
                         r"darcy is steady: fields must hold T = 1 frame, got T = 0"),
    "transient_no_frames": ("heat", lambda d: {**d, "fields": d["fields"][:0]},
                            r"heat is transient: fields need T >= 2 frames, got T = 0"),
    "transient_one_frame": ("heat", lambda d: {**d, "fields": d["fields"][:1]},
                            r"fields need T >= 2 frames, got T = 1"),
    "steady_two_frames": ("darcy", lambda d: {**d, "fields": np.repeat(d["fields"], 2, 0)},
                          r"fields must hold T = 1 frame, got T = 2"),
    "fields_nan": ("darcy", _set("fields", (0, 4, 0), np.nan),
                   r"1 NaN/inf values in fields \(first at index \[0, 4, 0\]\)"),
    "inputs_inf": ("darcy", _set("inputs", (5, 2), -np.inf),
                   r"1 NaN/inf values in inputs \(first at index \[5, 2\]\)"),
    "globals_nan": ("darcy", _put(globals=np.array([np.nan], np.float32)), r"1 NaN/inf values in globals"),
    "dt_nan": ("heat", _put(dt=np.float32(np.nan)),
               r"dt must be a positive number \(time between frames\) for heat, got nan"),
    "dt_negative": ("heat", _put(dt=np.float32(-0.1)), r"dt must be a positive number .* for heat, got -0\.1"),
    "dt_zero_transient": ("heat", _put(dt=np.float32(0)), r"dt must be a positive number .* for heat, got 0\.0"),
    "dt_missing_transient": ("heat", _drop("dt"), r"for heat, got none \(dt missing\)"),
    "dt_negative_steady": ("darcy", _put(dt=np.float32(-1)), r"dt must be 0 or positive \(unused when steady\)"),
    "dt_vector": ("heat", _put(dt=np.full(3, 0.1, np.float32)),
                  r"dt must be one real number \(float32\), got dtype float32, shape \(3,\)"),
    "dt_string": ("heat", _put(dt=np.array("0.1")), r"dt must be one real number .*string dtype <U3"),
    "channels_of_other_problem": ("darcy", _put(channels=np.array(["p"])),
                                  r"channels \('p',\) do not match problem 'darcy', whose channels are \('u',\)"),
    "channels_numbers": ("darcy", _put(channels=np.array([1.0])), r"channels must be a \(C,\) array of strings"),
    "node_type_category": ("darcy", _set("node_type", 3, 7),
                           r"node_type values must lie in 0\.\.3 \(0 interior, 1 Dirichlet, 2 Neumann, 3 "
                           r"obstacle\); 1 do not, first 7 at node 3"),
    "node_type_negative": ("darcy", _set("node_type", 0, -1),
                           r"node_type values must lie in 0\.\.3 .*first -1 at node 0"),
    "node_type_fractional": ("darcy", lambda d: {**d, "node_type": d["node_type"] + 0.5},
                             r"node_type must hold integer indices; 6 value\(s\) are fractional"),
    "node_type_short": ("darcy", lambda d: {**d, "node_type": d["node_type"][:5]},
                        r"node_type must be \(6,\) for the mesh's 6 nodes, got \(5,\)"),
    "inputs_rows": ("darcy", lambda d: {**d, "inputs": d["inputs"][:5]},
                    r"inputs have 5 rows but the mesh has 6 nodes"),
    "inputs_1d": ("darcy", lambda d: {**d, "inputs": d["inputs"][:, 0]},
                  r"inputs must be \(N, F_in\) = \(6, 3\), got \(6,\)"),
    "inputs_columns": ("darcy", lambda d: {**d, "inputs": d["inputs"][:, :2]},
                       r"darcy expects 3 input columns \('log_k', 'f', 'dist_dirichlet'\), got 2"),
    "fields_nodes": ("darcy", lambda d: {**d, "fields": d["fields"][:, :5]},
                     r"fields have 5 nodes but the mesh has 6"),
    "fields_channels": ("darcy", lambda d: {**d, "fields": np.repeat(d["fields"], 2, 2)},
                        r"darcy expects 1 channels \('u',\), got 2"),
    "globals_count": ("darcy", _put(globals=np.array([0.1, 0.2], np.float32)),
                      r"darcy expects 1 globals \('flux',\), got 2"),
    "globals_2d": ("darcy", _put(globals=np.array([[0.2]], np.float32)),
                   r"globals must be a \(G,\) vector, got \(1, 1\)"),
    "missing_cells": ("darcy", _drop("cells"), r"missing arrays \['cells'\] \(found \["),
    "unknown_problem": ("darcy", _put(problem=np.array("navier")),
                        r"unknown problem 'navier'; expected one of \['darcy', 'elasticity', 'flow', 'heat'\]"),
    "problem_number": ("darcy", _put(problem=np.array(3)),
                       r"problem must be one string, one of \[.*\]; got dtype int64"),
    "degenerate_cell": ("darcy", _set("cells", 0, [0, 1, 2]), r"1 degenerate \(zero-area\) cells, first cell 0"),
}


def _file_case(kind: str, folder: Path) -> Path:
    """A file that is no usable npz sample."""
    path = folder / f"{kind}.npz"
    good = _arrays("darcy")
    if kind == "text":
        path.write_text("x,y\n0,0\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(good))
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, good["pos"])
    elif kind == "object_array":
        _write(path, {**good, "inputs": np.array([{"evil": 1}], dtype=object)})
    elif kind == "truncated":
        full = folder / "full.npz"
        path.write_bytes(_write(full, good).read_bytes()[:120])
        full.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    return path


FILE_CASES = {
    "text": r"is not an npz file \(no zip header\); a sample is an npz of numeric and string arrays",
    "pickle": r"is a Python pickle, not an npz sample: linmix never unpickles sample files",
    "npy": r"is a single \.npy array, not an npz sample",
    "object_array": r"array 'inputs' holds Python objects \(object dtype\), which linmix never unpickles",
    "truncated": r"cannot read npz \(BadZipFile",
    "empty": r"is not an npz file \(no zip header\)",
    "folder": r"is a folder, not a sample file",
    "missing": r"no such file",
}


def _save_ckpt(path: Path, problem: str, nan: bool = False) -> Path:
    """A tiny untrained checkpoint of ``problem`` with normalisers fitted on one strip sample (``nan``: NaN scales)."""
    torch.manual_seed(0)
    s = get_problem(problem)
    lit = PhysicsLitModule(net=PhysicsConfig(n_in=s.n_in, n_out=s.n_out, n_globals=s.n_globals, transient=s.transient,
                                             **TINY), problem=problem)
    g = to_graph({k: v for k, v in _arrays(problem).items()})
    lit.net.fit_stats(g.inputs, g.globals, g.fields.reshape(-1, s.n_out), 1.0)
    state = lit.state_dict()
    if nan:
        state["net.out_std"] = torch.full_like(state["net.out_std"], float("nan"))
    torch.save({"state_dict": state, "hyper_parameters": dict(lit.hparams), "pytorch-lightning_version": pl.__version__,
                "linmix": {"app": "physics"}}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {"darcy": _save_ckpt(root / "darcy.ckpt", "darcy"),
            "darcy_nan": _save_ckpt(root / "nan.ckpt", "darcy", True),
            "heat_nan": _save_ckpt(root / "heat_nan.ckpt", "heat", True)}


def _refused(capsys, argv: list, pattern: str) -> str:
    """Run the console entry point: exit status 2, one ``error:`` message matching ``pattern``, no traceback."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"linmix-physics {argv[0]}: error: " in err
    assert re.search(pattern, err), err
    assert "Traceback" not in err and "allow_pickle" not in err
    return err


def test_base_samples_are_accepted_unchanged(tmp_path, ckpts, capsys):
    for problem in ("darcy", "heat", "elasticity"):
        raw = _arrays(problem)
        d = load_sample(_write(tmp_path / f"{problem}.npz", raw))
        for k in ("pos", "cells", "node_type", "inputs", "globals", "fields"):
            np.testing.assert_array_equal(d[k], raw[k])
    raw = {**_arrays("darcy"), "cells": _arrays("darcy")["cells"].astype(np.float64),
           "pos": _arrays("darcy")["pos"].astype(np.float64)}  # integer-valued float cells (a MATLAB export) are fine
    d = load_sample(_write(tmp_path / "float_cells.npz", raw))
    assert d["cells"].dtype == np.int64 and d["pos"].dtype == np.float64
    np.testing.assert_array_equal(d["cells"], raw["cells"])
    np.testing.assert_array_equal(d["pos"], raw["pos"])
    out = tmp_path / "out"
    assert main(["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(tmp_path / "float_cells.npz"),
                 "--out", str(out)]) == 0
    assert json.loads((out / "rollout_metrics.json").read_text())["non_finite_from_step"] is None


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_bad_array_is_refused_by_rollout(case, tmp_path, ckpts, capsys):
    problem, mutate, pattern = ARRAY_CASES[case]
    path = _write(tmp_path / f"{case}.npz", mutate(_arrays(problem)))
    before = _sha(path)
    with pytest.raises(SampleError, match=pattern):
        load_sample(path)
    out = tmp_path / "out"
    err = _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(path), "--out", str(out)],
                   pattern)
    assert str(path) in err  # the message names the file
    assert _sha(path) == before and not out.exists()  # nothing changed, nothing written


@pytest.mark.parametrize("kind", sorted(FILE_CASES))
def test_file_that_is_no_npz_sample_is_refused(kind, tmp_path, ckpts, capsys):
    path = tmp_path / "missing.npz" if kind == "missing" else _file_case(kind, tmp_path)
    before = _sha(path)
    out = tmp_path / "out"
    err = _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(path), "--out", str(out)],
                   FILE_CASES[kind])
    assert str(path) in err and "allow_pickle=True" not in err
    assert _sha(path) == before and not out.exists()


def test_sample_of_another_problem_names_both_channel_lists(tmp_path, ckpts, capsys):
    path = _write(tmp_path / "plate.npz", _arrays("elasticity"))
    pattern = (r"plate\.npz: checkpoint was trained on 'darcy' \(channels \('u',\)\) but the sample is 'elasticity' "
               r"\(channels \('u_x', 'u_y', 'von_mises'\)\)")
    _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(path), "--out", str(tmp_path / "o")],
             pattern)
    other = _write(tmp_path / "plate2.npz", _arrays("elasticity", nx=4))
    pt = tmp_path / "op.pt"
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(pt), "--sample", str(path),
                      "--sample", str(other)], pattern)
    assert not (tmp_path / "o").exists() and not pt.exists()


@pytest.mark.parametrize("which,step", [("darcy_nan", 0), ("heat_nan", 1)])
def test_non_finite_prediction_is_an_error(which, step, tmp_path, ckpts, capsys):
    problem = which.split("_")[0]
    sample = _write(tmp_path / "s.npz", _arrays(problem))
    out = tmp_path / "out"
    _refused(capsys, ["rollout", "--ckpt", str(ckpts[which]), "--sample", str(sample), "--out", str(out)],
             rf"the prediction of .* on .*s\.npz is NaN/inf from step {step} on \(\d+ of 6 nodes\): the checkpoint "
             r"diverged .*wrote only .*rollout_metrics\.json")
    metrics = json.loads((out / "rollout_metrics.json").read_text())  # strict JSON: NaN written as null
    assert metrics["non_finite_from_step"] == step and metrics["rel_l2"] is None
    assert sorted(p.name for p in out.iterdir()) == ["rollout_metrics.json"]  # no XDMF / PNG of a broken prediction


def test_export_refuses_non_finite_model_and_single_mesh(tmp_path, ckpts, capsys):
    a = _write(tmp_path / "a.npz", _arrays("darcy", nx=3))
    b = _write(tmp_path / "b.npz", _arrays("darcy", nx=4))
    pt = tmp_path / "op.pt"
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy_nan"]), "--out", str(pt), "--sample", str(a),
                      "--sample", str(b)], r"prediction on .*a\.npz holds 6 NaN/inf values .*nothing exported")
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(pt), "--sample", str(a)],
             r"needs two meshes of different sizes, got 1 sample\(s\) with node counts \[6\]")
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(tmp_path), "--sample", str(a),
                      "--sample", str(b)], r"--out .* is a folder")
    assert not pt.exists()
    ok = ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(pt), "--sample", str(a), "--sample", str(b)]
    assert main(ok) == 0 and pt.is_file()  # the same two samples with a finite checkpoint export fine


SYNTH = ["synth", "--problem", "darcy", "--samples", "2"]
ROLLOUT = ["rollout", "--ckpt", "x.ckpt", "--sample", "s.npz"]


@pytest.mark.parametrize("argv,pattern", [
    (["synth", "--problem", "darcy", "--samples", "-3"], r"argument --samples: must be an integer >= 1, got -3"),
    (["synth", "--problem", "darcy", "--samples", "0"], r"argument --samples: must be an integer >= 1, got 0"),
    (["synth", "--problem", "darcy", "--samples", "2.5"], r"argument --samples: must be an integer >= 1, got '2\.5'"),
    ([*SYNTH, "--h", "0"], r"argument --h: must be a finite number > 0, got 0"),
    ([*SYNTH, "--h", "-0.1"], r"argument --h: must be a finite number > 0"),
    ([*SYNTH, "--h", "nan"], r"argument --h: must be a finite number > 0"),
    ([*SYNTH, "--workers", "-1"], r"argument --workers: must be an integer >= 1"),
    ([*SYNTH, "--workers", "0"], r"argument --workers: must be an integer >= 1"),
    ([*SYNTH, "--seed", "-1"], r"argument --seed: must be an integer >= 0"),
    (["synth", "--problem", "heat", "--samples", "2", "--steps", "0"], r"argument --steps: must be an integer >= 1"),
    ([*ROLLOUT, "--steps", "-1"], r"argument --steps: must be an integer >= 1"),
    ([*ROLLOUT, "--steps", "0"], r"argument --steps: must be an integer >= 1"),
])
def test_numeric_flags_are_checked_at_parse_time(argv, pattern, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(pattern, err), err
    assert f"linmix-physics {argv[0]}: error: " in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("kwargs,pattern", [
    ({"n_samples": -3}, r"n_samples must be an integer >= 1, got -3"), ({"h": 0.0}, r"mesh size h must be .* got 0\.0"),
    ({"workers": -1}, r"workers must be an integer >= 1"), ({"seed": -2}, r"seed must be an integer >= 0"),
    ({"problem": "navier"}, r"unknown problem 'navier'")])
def test_synthesize_refuses_bad_arguments(kwargs, pattern, tmp_path):
    args = {"problem": "darcy", "n_samples": 2, "out": tmp_path / "out", **kwargs}
    with pytest.raises(UserError, match=pattern):
        synthesize(**args, progress=False)
    assert not (tmp_path / "out").exists()


def test_data_folder_keeps_bad_files_and_reports_each(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    good = [_write(folder / f"good_{i}.npz", _arrays("darcy", nx=3 + i)) for i in range(3)]
    bad = [_write(folder / f"bad_{c}.npz", ARRAY_CASES[c][1](_arrays(ARRAY_CASES[c][0])))
           for c in ("cells_fractional", "pos_complex", "fields_nan", "dt_nan", "channels_of_other_problem")]
    bad += [_file_case(k, folder) for k in ("pickle", "object_array", "text")]
    before = {p: _sha(p) for p in good + bad}
    dm = PhysicsDataModule(problem="darcy", data_dir=str(folder), batch_size=2)
    with caplog.at_level(logging.WARNING, logger="linmix.physics.data"):
        dm.setup("fit")
    rejects = [json.loads(x) for x in (folder / "rejects_scan.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in rejects) == sorted(str(p) for p in bad)
    assert all(r["reason"].startswith(r["file"]) and "allow_pickle" not in r["reason"] for r in rejects)
    assert f"found {len(good) + len(bad)} sample files, using 3, skipped {len(bad)} as unusable (listed in" \
        in caplog.text
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 3
    assert {p: _sha(p) for p in good + bad} == before  # nothing changed or deleted
    item = {d.name: d for d in dm.train_set.items + dm.val_set.items + dm.test_set.items}["good_0"]
    np.testing.assert_array_equal(item.fields.numpy(), _arrays("darcy", nx=3)["fields"])
    # a read-only data folder: the bad files are still skipped and counted, the log says the list was not written
    import linmix.apps.physics.data as data_mod

    def no_write(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data_mod.tempfile, "mkstemp", no_write)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="linmix.physics.data"):
        PhysicsDataModule(problem="darcy", data_dir=str(folder), batch_size=2).setup("fit")
    assert "skipped 8 as unusable (list not written: " in caplog.text and "Permission denied" in caplog.text


def test_data_folder_without_usable_samples_is_a_user_error(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "a.npz", _set("node_type", 1, 9)(_arrays("darcy")))
    pattern = r"no usable darcy samples: 1 \*\.npz found, 1 rejected \(listed in .*\); first: .*a\.npz: node_type values"
    with pytest.raises(UserError, match=pattern):
        PhysicsDataModule(problem="darcy", data_dir=str(folder)).setup("fit")
    monkeypatch.chdir(tmp_path)  # the fit command, end to end: status 2, the bad file named, nothing written into it
    before = _sha(folder / "a.npz")
    _refused(capsys, ["fit", "-c", str(ROOT / "configs/physics/tiny.yaml"), "--data.data_dir", str(folder),
                      "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
                      "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")], pattern)
    assert _sha(folder / "a.npz") == before
    with pytest.raises(UserError, match=r"does not exist or is not a folder"):
        PhysicsDataModule(problem="darcy", data_dir=str(tmp_path / "nowhere")).setup("fit")


def test_rollout_out_that_is_a_file_is_refused(tmp_path, ckpts, capsys):
    sample = _write(tmp_path / "s.npz", _arrays("darcy"))
    out = tmp_path / "out.txt"
    out.write_text("keep")
    _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(sample), "--out", str(out)],
             r"--out .*out\.txt is an existing file")
    assert out.read_text() == "keep"


def test_console_script_prints_one_line_and_exits_2(tmp_path, ckpts):
    """The installed ``linmix-physics`` script itself (one process start, the other cases run in-process)."""
    script = Path(sys.executable).parent / "linmix-physics"
    if not script.exists():
        pytest.skip("console script not installed")
    evil = _file_case("pickle", tmp_path)
    res = subprocess.run([str(script), "rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(evil), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "allow_pickle" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"linmix-physics rollout: error: {evil} is a Python pickle")
    assert not (tmp_path / "o").exists()

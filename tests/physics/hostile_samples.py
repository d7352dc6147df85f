"""Hand-made hostile physics samples for tests/physics/test_physics_hostile.py: a valid 2 x nx strip sample per
problem, the mutations that break one array each (with the message expected), files that are no npz sample, and a
tiny untrained checkpoint (optionally with NaN output scales)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.dataset import to_graph
from linmix.apps.physics.lit_module import PhysicsLitModule
from linmix.apps.physics.pde.sample_io import get_problem

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

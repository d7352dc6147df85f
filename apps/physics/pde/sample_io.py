"""Sample file format (compressed npz), problem registry and input validation.

One sample = one ``.npz`` (``np.savez_compressed``) with
- ``pos`` (N, 2) float32 node coordinates, ``cells`` (K, 3) int32 triangles, ``node_type`` (N,) int8
  (0 interior, 1 Dirichlet, 2 Neumann, 3 obstacle),
- ``inputs`` (N, F_in) float32 static node inputs, ``globals`` (G,) float32 global parameters,
- ``fields`` (T, N, C) float32 solution (T = 1 for steady problems), ``dt`` () float32 time step (0 for steady),
- ``problem`` () str and ``channels`` (C,) str, so a checkpoint can refuse data of another problem.

:func:`validate_sample` rejects degenerate or duplicate cells, isolated nodes, non-finite values and size mismatches
with a :class:`SampleError` that names the file and the reason.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from linmix.apps.physics.pde.geometry import N_NODE_TYPES, cell_areas


@dataclass(frozen=True)
class ProblemSpec:
    """Channel layout of one problem: ``n_in`` static node inputs, ``n_out`` field channels, ``n_globals``."""

    name: str
    inputs: tuple
    channels: tuple
    globals: tuple
    transient: bool
    imposed_types: tuple = (1, 3)  # node types whose values are known (Dirichlet) and imposed during rollout

    @property
    def n_in(self) -> int:
        return len(self.inputs)

    @property
    def n_out(self) -> int:
        return len(self.channels)

    @property
    def n_globals(self) -> int:
        return len(self.globals)


PROBLEMS: dict[str, ProblemSpec] = {
    "darcy": ProblemSpec("darcy", ("log_k", "f", "dist_dirichlet"), ("u",), ("flux",), False),
    "heat": ProblemSpec("heat", ("f",), ("u",), ("kappa",), True),
    "elasticity": ProblemSpec("elasticity", (), ("u_x", "u_y", "von_mises"), ("nu", "t_x", "t_y"), False, (1,)),
    "flow": ProblemSpec("flow", (), ("u_x", "u_y", "p"), ("cx", "cy", "radius", "u_max"), True, (1, 3)),
}


def get_problem(name: str) -> ProblemSpec:
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; expected one of {sorted(PROBLEMS)}")
    return PROBLEMS[name]


class SampleError(ValueError):
    """A sample file that cannot be used; the message names the file and the reason."""


def save_sample(path: str | Path, sample: dict, problem: str, dt: float = 0.0) -> Path:
    """Write ``sample`` atomically (tmp file in the same folder, then ``os.replace``) as compressed npz."""
    spec = get_problem(problem)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "pos": np.asarray(sample["pos"], np.float32),
        "cells": np.asarray(sample["cells"], np.int32),
        "node_type": np.asarray(sample["node_type"], np.int8),
        "inputs": np.asarray(sample["inputs"], np.float32).reshape(len(sample["pos"]), -1),
        "globals": np.asarray(sample["globals"], np.float32).reshape(-1),
        "fields": np.asarray(sample["fields"], np.float32),
        "dt": np.float32(dt),
        "problem": np.array(problem),
        "channels": np.array(spec.channels),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_sample(path: str | Path, validate: bool = True) -> dict:
    """Read one sample file into a dict of numpy arrays (``problem`` as str, ``channels`` as tuple)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:  # corrupt zip, truncated file, not an npz
        raise SampleError(f"{path}: cannot read npz ({type(exc).__name__}: {exc})") from exc
    missing = {"pos", "cells", "node_type", "inputs", "globals", "fields", "problem"} - set(d)
    if missing:
        raise SampleError(f"{path}: missing arrays {sorted(missing)}")
    d["problem"] = str(d["problem"])
    d["channels"] = tuple(str(c) for c in d.get("channels", np.array(get_problem(d["problem"]).channels)))
    d["dt"] = float(d.get("dt", 0.0))
    if validate:
        validate_sample(d, where=str(path))
    return d


def validate_sample(d: dict, where: str = "<sample>") -> None:
    """Raise :class:`SampleError` for: bad shapes, field/inputs size not matching the node count, a globals count
    other than the problem's, non-finite values, node types out of range, cell indices out of range, degenerate
    (zero-area) or duplicate cells, isolated nodes."""
    pos, cells, fields = np.asarray(d["pos"]), np.asarray(d["cells"]), np.asarray(d["fields"])
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise SampleError(f"{where}: pos must be (N, 2), got {pos.shape}")
    n = pos.shape[0]
    if cells.ndim != 2 or cells.shape[1] != 3 or len(cells) == 0:
        raise SampleError(f"{where}: cells must be a non-empty (K, 3) triangle array, got {cells.shape}")
    if fields.ndim != 3:
        raise SampleError(f"{where}: fields must be (T, N, C), got {fields.shape}")
    if fields.shape[1] != n:
        raise SampleError(f"{where}: fields have {fields.shape[1]} nodes but the mesh has {n} (fields {fields.shape})")
    spec = PROBLEMS.get(str(d.get("problem", "")))
    if spec is not None and fields.shape[2] != spec.n_out:
        raise SampleError(f"{where}: {spec.name} expects {spec.n_out} channels {spec.channels}, got {fields.shape[2]}")
    n_glob = np.asarray(d["globals"]).reshape(-1).shape[0]
    if spec is not None and n_glob != spec.n_globals:  # e.g. a flow file with 2 globals (radius, u_max), not 4
        raise SampleError(f"{where}: {spec.name} expects {spec.n_globals} globals {spec.globals}, got {n_glob} "
                          f"(a sample from an older version of the {spec.name} solver? re-run synth)")
    inputs = np.asarray(d["inputs"])
    if inputs.shape[0] != n:
        raise SampleError(f"{where}: inputs have {inputs.shape[0]} rows but the mesh has {n} nodes")
    nt = np.asarray(d["node_type"])
    if nt.shape != (n,):
        raise SampleError(f"{where}: node_type must be ({n},), got {nt.shape}")
    if nt.min() < 0 or nt.max() >= N_NODE_TYPES:
        raise SampleError(f"{where}: node_type values must lie in 0..{N_NODE_TYPES - 1}")
    for name in ("pos", "inputs", "globals", "fields"):
        arr = np.asarray(d[name])
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise SampleError(f"{where}: {int(bad.sum())} NaN/inf values in {name} (first at index {first})")
    if cells.min() < 0 or cells.max() >= n:
        raise SampleError(f"{where}: cell indices must lie in 0..{n - 1}, got {cells.min()}..{cells.max()}")
    area = np.abs(cell_areas(pos.astype(np.float64), cells))
    tol = 1e-12 * max(float(np.ptp(pos, axis=0).prod()), 1e-30)
    deg = np.flatnonzero(area <= tol)
    if len(deg):
        raise SampleError(f"{where}: {len(deg)} degenerate (zero-area) cells, first cell {int(deg[0])}: "
                          f"{cells[deg[0]].tolist()}")
    _, first_idx, counts = np.unique(np.sort(cells, axis=1), axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        raise SampleError(f"{where}: {int((counts > 1).sum())} duplicate cells, first cell "
                          f"{int(first_idx[counts > 1][0])}: {cells[first_idx[counts > 1][0]].tolist()}")
    used = np.zeros(n, bool)
    used[cells.reshape(-1)] = True
    if not used.all():
        iso = np.flatnonzero(~used)
        raise SampleError(f"{where}: {len(iso)} isolated nodes not in any cell, first {iso[:5].tolist()}")

"""Sample file format (compressed npz), problem registry and input validation.

One sample = one ``.npz`` (``np.savez_compressed``) with
- ``pos`` (N, 2) float32 node coordinates, ``cells`` (K, 3) int32 triangles, ``node_type`` (N,) int8
  (0 interior, 1 Dirichlet, 2 Neumann, 3 obstacle),
- ``inputs`` (N, F_in) float32 static node inputs, ``globals`` (G,) float32 global parameters,
- ``fields`` (T, N, C) float32 solution (T = 1 for steady problems), ``dt`` () float32 time step (0 for steady),
- ``problem`` () str and ``channels`` (C,) str, so a checkpoint can refuse data of another problem.

:func:`load_sample` reads with ``allow_pickle=False`` (a sample never holds Python objects) and :func:`validate_sample`
checks every array before a model sees it: dtype (real numbers for the float arrays, integer values for ``cells`` and
``node_type``; complex, float16, bool, string and object arrays are refused, nothing is cast silently), shape and node
count, the problem's channel layout, the frame count (steady T = 1, transient T >= 2 with a positive ``dt``),
finiteness, node types and cell indices in range, degenerate or duplicate cells and isolated nodes. Each failure is a
:class:`SampleError` naming the file, the array and what is expected.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linmix.apps.physics.pde.geometry import N_NODE_TYPES, cell_areas
from linmix.shared.errors import UserError

REQUIRED = ("pos", "cells", "node_type", "inputs", "globals", "fields", "problem")
FORMAT_HINT = "a sample is an npz of numeric and string arrays written by np.savez_compressed (apps/physics/README.md)"


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


class SampleError(UserError, ValueError):
    """A sample file that cannot be used; the message names the file, the array and what is expected. A
    :class:`~linmix.shared.errors.UserError` (console scripts print it and exit 2) and a ``ValueError``."""


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


def _read_npz(path: Path) -> dict:
    """Every array of the npz at ``path``, read without unpickling; :class:`SampleError` for anything else."""
    if not path.exists():
        raise SampleError(f"{path}: no such file")
    if path.is_dir():
        raise SampleError(f"{path} is a folder, not a sample file; {FORMAT_HINT}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise SampleError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if head.startswith(b"\x93NUMPY"):
        raise SampleError(f"{path} is a single .npy array, not an npz sample; {FORMAT_HINT}")
    if head[:1] == b"\x80":
        raise SampleError(f"{path} is a Python pickle, not an npz sample: linmix never unpickles sample files "
                          f"(unpickling can run code); {FORMAT_HINT}")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise SampleError(f"{path} is not an npz file (no zip header); {FORMAT_HINT}")
    d = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                try:
                    d[k] = z[k]
                except ValueError as exc:
                    if "pickle" not in str(exc).lower():
                        raise
                    raise SampleError(f"{path}: array {k!r} holds Python objects (object dtype), which linmix never "
                                      f"unpickles (unpickling can run code); save {k!r} as a numeric or string "
                                      "array") from None
    except SampleError:
        raise
    except Exception as exc:  # corrupt zip, truncated file, a member that is no .npy array
        text = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
        raise SampleError(f"{path}: cannot read npz ({type(exc).__name__}{': ' + text if text else ''})") from None
    return d


def load_sample(path: str | Path, validate: bool = True) -> dict:
    """Read one sample file into a dict of numpy arrays (``problem`` as str, ``channels`` as tuple, ``dt`` as float;
    after validation ``cells`` and ``node_type`` as int64, their values unchanged)."""
    path = Path(path)
    d = _read_npz(path)
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise SampleError(f"{path}: missing arrays {missing} (found {sorted(d)}); a sample needs {list(REQUIRED)}, "
                          "optionally dt and channels")
    where = str(path)
    d["problem"] = _problem_name(d["problem"], where)
    spec = PROBLEMS[d["problem"]]
    d["channels"] = _channel_names(d["channels"], where) if "channels" in d else spec.channels
    if "dt" in d:
        d["dt"] = _scalar(d["dt"], "dt", where)
    if validate:
        validate_sample(d, where=where)
        d["cells"] = np.asarray(d["cells"]).astype(np.int64)
        d["node_type"] = np.asarray(d["node_type"]).astype(np.int64)
    d.setdefault("dt", 0.0)
    return d


def _problem_name(value, where: str) -> str:
    arr = np.asarray(value)
    if arr.dtype.kind not in "US" or arr.size != 1:
        raise SampleError(f"{where}: problem must be one string, one of {sorted(PROBLEMS)}; got "
                          f"{_describe(arr)}")
    name = arr.reshape(()).item()
    name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    if name not in PROBLEMS:
        raise SampleError(f"{where}: unknown problem {name!r}; expected one of {sorted(PROBLEMS)}")
    return name


def _channel_names(value, where: str) -> tuple:
    arr = np.asarray(value)
    if arr.dtype.kind not in "US" or arr.ndim != 1:
        raise SampleError(f"{where}: channels must be a (C,) array of strings, got {_describe(arr)}")
    return tuple(c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in arr.tolist())


def _scalar(value, name: str, where: str) -> float:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf" or arr.dtype == np.float16:
        raise SampleError(f"{where}: {name} must be one real number (float32), got {_describe(arr)}")
    return float(arr.reshape(()))


def _describe(arr: np.ndarray) -> str:
    kind = {"c": "complex", "U": "string", "S": "bytes", "O": "Python objects", "b": "bool", "V": "structured",
            "M": "datetime", "m": "timedelta"}.get(arr.dtype.kind, "")
    return f"{kind + ' ' if kind else ''}dtype {arr.dtype}, shape {arr.shape}"


def _real(d: dict, name: str, where: str) -> np.ndarray:
    """``d[name]`` if it holds real numbers (float32 / float64 or integers), else :class:`SampleError`."""
    arr = np.asarray(d[name])
    if arr.dtype.kind not in "iuf":
        raise SampleError(f"{where}: {name} must hold real numbers (float32), got {_describe(arr)}")
    if arr.dtype == np.float16:
        raise SampleError(f"{where}: {name} is float16 (about 3 significant digits); save it as float32")
    return arr


def _index(d: dict, name: str, where: str) -> np.ndarray:
    """``d[name]`` if it holds integers (or floats with integer values only), else :class:`SampleError`."""
    arr = np.asarray(d[name])
    if arr.dtype.kind in "iu":
        return arr
    if arr.dtype.kind == "f" and arr.dtype != np.float16:
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise SampleError(f"{where}: {name} must hold integer indices; {int(bad.sum())} value(s) are fractional "
                              f"or NaN/inf (first {arr[tuple(first)].item()!r} at index {first})")
        return arr
    raise SampleError(f"{where}: {name} must hold integers, got {_describe(arr)}")


def validate_sample(d: dict, where: str = "<sample>") -> None:
    """Raise :class:`SampleError` for a sample dict a model must not see (see the module docstring for the list)."""
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise SampleError(f"{where}: missing arrays {missing}")
    spec = PROBLEMS[_problem_name(d["problem"], where)]
    pos, inputs, glob, fields = (_real(d, k, where) for k in ("pos", "inputs", "globals", "fields"))
    cells, nt = _index(d, "cells", where), _index(d, "node_type", where)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise SampleError(f"{where}: pos must be (N, 2) node coordinates with N > 0, got {pos.shape}")
    n = pos.shape[0]
    if cells.ndim != 2 or cells.shape[1] != 3 or len(cells) == 0:
        raise SampleError(f"{where}: cells must be a non-empty (K, 3) triangle array, got {cells.shape}")
    if nt.shape != (n,):
        raise SampleError(f"{where}: node_type must be ({n},) for the mesh's {n} nodes, got {nt.shape}")
    if inputs.ndim != 2:
        raise SampleError(f"{where}: inputs must be (N, F_in) = ({n}, {spec.n_in}), got {inputs.shape}")
    if inputs.shape[0] != n:
        raise SampleError(f"{where}: inputs have {inputs.shape[0]} rows but the mesh has {n} nodes")
    if inputs.shape[1] != spec.n_in:
        raise SampleError(f"{where}: {spec.name} expects {spec.n_in} input columns {spec.inputs}, got "
                          f"{inputs.shape[1]} (inputs {inputs.shape})")
    if glob.ndim > 1:
        raise SampleError(f"{where}: globals must be a (G,) vector, got {glob.shape}")
    if glob.size != spec.n_globals:  # e.g. a flow file with 2 globals (radius, u_max), not 4
        raise SampleError(f"{where}: {spec.name} expects {spec.n_globals} globals {spec.globals}, got {glob.size} "
                          f"(a sample from an older version of the {spec.name} solver? re-run synth)")
    if fields.ndim != 3:
        raise SampleError(f"{where}: fields must be (T, N, C), got {fields.shape}")
    if fields.shape[1] != n:
        raise SampleError(f"{where}: fields have {fields.shape[1]} nodes but the mesh has {n} (fields {fields.shape})")
    if fields.shape[2] != spec.n_out:
        raise SampleError(f"{where}: {spec.name} expects {spec.n_out} channels {spec.channels}, got {fields.shape[2]}")
    T = fields.shape[0]
    if spec.transient and T < 2:
        raise SampleError(f"{where}: {spec.name} is transient: fields need T >= 2 frames, got T = {T}")
    if not spec.transient and T != 1:
        raise SampleError(f"{where}: {spec.name} is steady: fields must hold T = 1 frame, got T = {T}")
    if "channels" in d:
        chans = _channel_names(d["channels"], where)
        if chans != spec.channels:
            raise SampleError(f"{where}: channels {chans} do not match problem {spec.name!r}, whose channels are "
                              f"{spec.channels}")
    dt = _scalar(d["dt"], "dt", where) if "dt" in d else 0.0
    if not np.isfinite(dt) or dt < 0 or (spec.transient and dt == 0):
        need = "a positive number (time between frames)" if spec.transient else "0 or positive (unused when steady)"
        raise SampleError(f"{where}: dt must be {need} for {spec.name}, got "
                          f"{dt if 'dt' in d else 'none (dt missing)'}")
    for name, arr in (("pos", pos), ("inputs", inputs), ("globals", glob), ("fields", fields)):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise SampleError(f"{where}: {int(bad.sum())} NaN/inf values in {name} (first at index {first})")
    if nt.min() < 0 or nt.max() >= N_NODE_TYPES:
        bad = np.flatnonzero((nt < 0) | (nt >= N_NODE_TYPES))
        raise SampleError(f"{where}: node_type values must lie in 0..{N_NODE_TYPES - 1} (0 interior, 1 Dirichlet, "
                          f"2 Neumann, 3 obstacle); {len(bad)} do not, first {nt[bad[0]].item()!r} at node "
                          f"{int(bad[0])}")
    if cells.min() < 0 or cells.max() >= n:
        bad = np.argwhere((cells < 0) | (cells >= n))
        raise SampleError(f"{where}: cell indices must lie in 0..{n - 1} (the mesh has {n} nodes), got "
                          f"{cells.min().item()}..{cells.max().item()}; {len(bad)} do not, first "
                          f"{cells[tuple(bad[0])].item()} in cell {int(bad[0][0])}")
    cells = cells.astype(np.int64)
    area = np.abs(cell_areas(pos.astype(np.float64), cells))
    tol = 1e-12 * max(float(np.ptp(pos.astype(np.float64), axis=0).prod()), 1e-30)
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

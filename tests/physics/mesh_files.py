"""Write the app's npz samples as the files a solver would give (meshio VTU / VTK, an XDMF temporal collection, a
ParaView .pvd of VTU frames), plus the import specs that read them back, for the import tests."""

from __future__ import annotations

from pathlib import Path

import meshio
import numpy as np

from linmix.apps.physics.pde.sample_io import PROBLEMS


def points3(pos: np.ndarray) -> np.ndarray:
    return np.c_[pos, np.zeros(len(pos), pos.dtype)]


def static_arrays(s: dict, dtype=np.float32) -> dict:
    """Point arrays of a sample that do not change in time: node_type, the inputs and the globals (uniform)."""
    p = PROBLEMS[s["problem"]]
    n = len(s["pos"])
    out = {"node_type": np.asarray(s["node_type"], np.int32)}
    out.update({name: np.asarray(s["inputs"][:, i], dtype) for i, name in enumerate(p.inputs)})
    out.update({f"g_{name}": np.full(n, s["globals"][i], dtype) for i, name in enumerate(p.globals)})
    return out


def frame_arrays(s: dict, k: int, dtype=np.float32) -> dict:
    p = PROBLEMS[s["problem"]]
    return {name: np.asarray(s["fields"][k, :, i], dtype) for i, name in enumerate(p.channels)}


def write_steady(s: dict, path: Path, **kw) -> Path:
    """One steady sample as a single mesh file (format from the suffix: .vtu, .vtk, ...)."""
    m = meshio.Mesh(points3(np.asarray(s["pos"])), [("triangle", np.asarray(s["cells"], np.int64))],
                    point_data={**static_arrays(s), **frame_arrays(s, 0)})
    meshio.write(path, m, **kw)
    return path


def write_xdmf_series(s: dict, path: Path, frames=None) -> Path:
    """A trajectory as an XDMF temporal collection with XML data. Float arrays are float64 there: meshio writes
    float32 XML text with 8 significant digits (``%.7e``), which does not round-trip every float32."""
    frames = range(len(s["fields"])) if frames is None else frames
    with meshio.xdmf.TimeSeriesWriter(str(path), data_format="XML") as w:
        w.write_points_cells(points3(np.asarray(s["pos"], np.float64)),
                             [("triangle", np.asarray(s["cells"], np.int64))])
        for k in frames:
            data = {**static_arrays(s, np.float64), **frame_arrays(s, k, np.float64)}
            w.write_data(float(k * np.float64(s["dt"])), point_data=data)
    return path


def write_pvd(s: dict, folder: Path, stem: str, mesh_of_frame=None) -> Path:
    """A trajectory as ``stem.pvd`` listing ``stem_frames/frame_k.vtu``; ``mesh_of_frame(k) -> (points, cells)``
    replaces a frame's mesh (to build a varying-mesh series)."""
    sub = folder / f"{stem}_frames"
    sub.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(len(s["fields"])):
        pts, cells = points3(np.asarray(s["pos"])), np.asarray(s["cells"], np.int64)
        data = {**static_arrays(s), **frame_arrays(s, k)}
        if mesh_of_frame is not None:
            pts, cells, data = mesh_of_frame(k, pts, cells, data)
        meshio.write(sub / f"frame_{k:03d}.vtu", meshio.Mesh(pts, [("triangle", cells)], point_data=data))
        rows.append(f'<DataSet timestep="{float(k * np.float64(s["dt"]))!r}" part="0" '
                    f'file="{sub.name}/frame_{k:03d}.vtu"/>')
    path = folder / f"{stem}.pvd"
    path.write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n<Collection>\n'
                    + "\n".join(rows) + "\n</Collection>\n</VTKFile>\n")
    return path


def spec_for(problem: str, dt: float | None = None, **over) -> dict:
    """The spec that reads what the writers above write: every channel from the array of its name, the globals from
    uniform ``g_<name>`` arrays, node types from the ``node_type`` array."""
    p = PROBLEMS[problem]
    spec = {"problem": problem, "inputs": {n: n for n in p.inputs}, "fields": {n: n for n in p.channels},
            "globals": {n: {"array": f"g_{n}"} for n in p.globals}, "node_type": {"array": "node_type"}}
    if dt is not None:
        spec["dt"] = dt
    spec.update(over)
    return spec

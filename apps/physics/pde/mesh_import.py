"""``linmix-physics import``: a folder of meshio-readable solver output -> the app's npz samples, with a report.

One steady case per file (``.vtu``, ``.vtk``, ``.msh``, ``.xdmf``, ...), one trajectory per time series (an XDMF
temporal collection or a ``.pvd`` of one ``.vtu`` per frame). The YAML spec (:mod:`.import_spec`) says which point
arrays are the problem's inputs and fields, where the globals and node types come from and the time step. Each case
is read (:mod:`.mesh_read`), reduced to a planar triangle mesh (quads split, said in the report), converted and
checked with :func:`~linmix.apps.physics.pde.sample_io.validate_sample`, then written atomically as
``<out>/<stem>.npz``. A case that cannot be converted is refused with its reason and counted, never repaired:
``found = written + refused``, in ``<out>/import_report.json`` (written atomically) and on stdout. Values are stored
as the sample format's float32; nothing else changes them except a channel's explicit ``scale``, or ``cell_data:
average`` (an array given per cell, averaged onto the points, area-weighted), both reported per file.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from linmix.apps.physics.pde.import_spec import PRECEDENCE, ImportSpec, load_spec
from linmix.apps.physics.pde.mesh_read import (
    DIM,
    CaseRefused,
    MeshCase,
    Planar,
    is_time_series,
    planar_triangles,
    pvd_members,
    read_case,
)
from linmix.apps.physics.pde.sample_io import PROBLEMS, SampleError, save_sample, validate_sample
from linmix.shared.errors import UserError

SERIES_SUFFIXES = (".pvd",)


def _select(arr, comp, name: str, n: int, what: str, where) -> np.ndarray:
    """The (n,) values of array ``name`` = ``arr`` (component ``comp`` of a vector array); :class:`CaseRefused` for
    a wrong shape, type, component count or NaN/inf."""
    arr, label = np.asarray(arr), repr(name)
    if arr.dtype.kind not in "iuf":
        raise CaseRefused(f"{where}: {label} holds {arr.dtype} values, not real numbers")
    if arr.ndim == 0 or arr.shape[0] != n:
        raise CaseRefused(f"{where}: {label} has {arr.shape[0] if arr.ndim else 0} values but the mesh has {n} {what}")
    k = 1 if arr.ndim == 1 else int(np.prod(arr.shape[1:]))
    flat = arr.reshape(n, k)
    if comp is None and k != 1:
        raise CaseRefused(f"{where}: {label} has {k} components per {what[:-1]} {list(arr.shape[1:])}; the channel "
                          f"takes one: name it as {name}[0] .. {name}[{k - 1}] (dimension mismatch)")
    if comp is not None and comp >= k:
        raise CaseRefused(f"{where}: {label} has {k} component(s) per {what[:-1]}, so no component {comp} "
                          "(dimension mismatch)")
    out = flat[:, comp or 0].astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        raise CaseRefused(f"{where}: {label} has {int(bad.sum())} NaN/inf values (first at {what[:-1]} "
                          f"{int(np.flatnonzero(bad)[0])})")
    return out


def _array(case: MeshCase, pl: Planar, name: str, comp, frame: int, spec: ImportSpec, notes: list,
           label: str) -> np.ndarray:
    """Point values (N,) of array ``name`` in ``frame``: point data, or cell data averaged when the spec allows."""
    where = case.path if case.times is None else f"{case.path} (frame {frame}, t = {case.times[frame]:g})"
    pd, cd = case.point_data[frame], case.cell_data[frame]
    if name in pd:
        return _select(pd[name], comp, name, len(pl.pos), "points", where)
    if name in cd:
        if spec.cell_data != "average":
            raise CaseRefused(f"{where}: {name!r} ({label}) is cell data (one value per cell), the sample format holds "
                              "point values; set cell_data: average in the spec to average it onto the points "
                              "(area-weighted), or export it as point data")
        blocks = cd[name]
        per_tri = np.concatenate([np.asarray(blocks[b])[pl.tri_cell[pl.tri_block == b]]
                                  for b in np.unique(pl.tri_block)])
        order = np.concatenate([np.flatnonzero(pl.tri_block == b) for b in np.unique(pl.tri_block)])
        vals = np.empty(len(order))
        vals[order] = _select(per_tri, comp, name, len(per_tri), "cells", where)
        a, b, c = (pl.pos[pl.tri[:, i]] for i in range(3))
        area = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
        num, den = np.zeros(len(pl.pos)), np.zeros(len(pl.pos))
        for j in range(3):
            np.add.at(num, pl.tri[:, j], vals * area)
            np.add.at(den, pl.tri[:, j], area)
        note = f"{name!r} ({label}) averaged from cells onto points (area-weighted)"
        if note not in notes:
            notes.append(note)
        return num / np.maximum(den, 1e-300)
    raise CaseRefused(f"{where}: no array {name!r} for {label} (point data: {sorted(pd)}, cell data: {sorted(cd)})")


def _channel(case, pl, src, frame, spec, notes, label, node_type=None) -> np.ndarray:
    if src.computed == "dirichlet_distance":
        from linmix.apps.physics.pde.geometry import dirichlet_distance

        return dirichlet_distance(pl.pos, node_type)
    v = _array(case, pl, src.array, src.component, frame, spec, notes, label)
    if src.scale != 1.0:
        v = v * src.scale
        note = f"{label} = {src.describe()} x {src.scale:g} (spec scale)"
        if note not in notes:
            notes.append(note)
    if src.range is not None:
        lo, hi = src.range
        if v.min() < lo or v.max() > hi:
            raise CaseRefused(f"{case.path}: {label} ({src.describe()}) spans {v.min():.6g} .. {v.max():.6g}, outside "
                              f"the spec's range [{lo:g}, {hi:g}]: another unit? (give scale in the spec)")
    return v


def _boundary(tri: np.ndarray) -> np.ndarray:
    from linmix.apps.physics.pde.geometry import boundary_edges

    return boundary_edges(tri)


def _set_nodes(case: MeshCase, name: str) -> np.ndarray:
    """Nodes of the cells of set ``name``: meshio ``cell_sets`` or a Gmsh physical name (``field_data`` [tag, dim]
    with the ``gmsh:physical`` cell tags)."""
    if name in case.cell_sets:
        return np.unique(np.concatenate([np.asarray(case.cells[b][1])[np.asarray(idx, np.int64)].reshape(-1)
                                         for b, idx in enumerate(case.cell_sets[name]) if len(idx)] or [[]]))
    phys = case.cell_data[0].get("gmsh:physical")
    fd = np.asarray(case.field_data.get(name, []))
    if phys is not None and fd.size == 2:
        tag, dim = int(fd.reshape(-1)[0]), int(fd.reshape(-1)[1])
        parts = [np.asarray(c)[np.asarray(phys[b]) == tag].reshape(-1) for b, (t, c) in enumerate(case.cells)
                 if DIM.get(t) == dim]
        return np.unique(np.concatenate(parts or [[]])).astype(np.int64)
    names = sorted(case.cell_sets) + [k for k, v in case.field_data.items() if np.asarray(v).size == 2]
    raise CaseRefused(f"{case.path}: no cell set {name!r} (sets / Gmsh physical names in the file: {names})")


def _node_types(case: MeshCase, pl: Planar, spec: ImportSpec) -> np.ndarray:
    src, n = spec.node_type, len(pl.pos)
    nt = np.zeros(n, np.int64)
    bnd = np.unique(_boundary(pl.tri))
    if src.kind == "array":
        where = case.path
        v = _select(case.point_data[0][src.array], None, src.array, n, "points", where) \
            if src.array in case.point_data[0] else None
        if v is None:
            cell = " (it is cell data: use node_type cell_tags)" if src.array in case.cell_data[0] else ""
            raise CaseRefused(f"{where}: no point array {src.array!r} for node_type{cell} (point data: "
                              f"{sorted(case.point_data[0])})")
        if (v != np.round(v)).any():
            raise CaseRefused(f"{where}: node_type array {src.array!r} holds fractional values")
        v = v.astype(np.int64)
        if src.codes:
            unmapped = sorted(set(np.unique(v).tolist()) - set(src.codes))
            if unmapped:
                raise CaseRefused(f"{where}: node_type codes {unmapped} of {src.array!r} are not in the spec's map "
                                  f"{src.codes}")
            return np.vectorize(src.codes.get, otypes=[np.int64])(v)
        if v.min() < 0 or v.max() > 3:
            raise CaseRefused(f"{where}: node_type array {src.array!r} holds values {sorted(set(v.tolist()))[:8]} "
                              "outside 0..3; give a map in the spec")
        return v
    if src.kind == "rule":
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        e = _boundary(pl.tri)
        _, labels = connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)),
                                         directed=False)
        loops = np.unique(labels[bnd])
        extent = [np.ptp(pl.pos[bnd[labels[bnd] == lab]], axis=0).sum() for lab in loops]
        outer = loops[int(np.argmax(extent))]
        nt[bnd] = np.where(labels[bnd] == outer, src.outer, src.holes)
        tol = 1e-9 * max(float(np.ptp(pl.pos, axis=0).max()), 1e-30)
        rim = bnd[labels[bnd] == outer]
        for t, (xlo, xhi), (ylo, yhi) in src.boxes:
            x, y = pl.pos[rim, 0], pl.pos[rim, 1]
            inside = (x >= xlo - tol) & (x <= xhi + tol) & (y >= ylo - tol) & (y <= yhi + tol)
            nt[rim[inside]] = t
        return nt
    nt[bnd] = src.other_boundary
    if src.kind == "cell_sets":
        groups = {t: [_set_nodes(case, name) for name, tt in src.sets.items() if tt == t] for t in PRECEDENCE}
    else:
        tags = case.cell_data[0].get(src.array)
        if tags is None:
            raise CaseRefused(f"{case.path}: no cell-data array {src.array!r} for node_type cell_tags (cell data: "
                              f"{sorted(case.cell_data[0])})")
        groups = {t: [np.asarray(c)[np.isin(np.asarray(tags[b]), [g for g, tt in src.codes.items() if tt == t])]
                      .reshape(-1) for b, (_, c) in enumerate(case.cells)] for t in PRECEDENCE}
    for t in PRECEDENCE:  # neumann, then obstacle, then dirichlet: the later wins on shared nodes
        for nodes in groups[t]:
            nt[np.asarray(nodes, np.int64)] = t
    return nt


def _global(case, pl, g, label: str, spec, notes) -> float:
    if g.value is not None:
        return g.value
    if g.field_data is not None:
        v = np.asarray(case.field_data.get(g.field_data, []))
        if v.size != 1 or v.dtype.kind not in "iuf":
            raise CaseRefused(f"{case.path}: global {label}: field data {g.field_data!r} must be one number, got "
                              f"{v.tolist() if v.size < 6 else v.shape} (field data: {sorted(case.field_data)})")
        return float(v.reshape(()))
    values = [_array(case, pl, g.array, g.component, k, spec, notes, f"global {label}")
              for k in range(len(case.point_data)) if k == 0 or g.array in case.point_data[k]]
    if any(np.ptp(v) != 0 for v in values) or any(v[0] != values[0][0] for v in values):
        raise CaseRefused(f"{case.path}: global {label} from array {g.array!r} is not one number (it varies over the "
                          "points or frames)")
    return float(values[0][0])


def _time_step(case: MeshCase, spec: ImportSpec) -> float:
    t = np.asarray(case.times, np.float64)
    d = np.diff(t)
    if (d <= 0).any():
        raise CaseRefused(f"{case.path}: frame times are not increasing ({t[:6].tolist()} ...)")
    if np.ptp(d) > 1e-6 * d.mean():
        raise CaseRefused(f"{case.path}: non-uniform time steps ({d.min():.6g} .. {d.max():.6g}); the model steps by "
                          "one dt")
    if spec.dt is not None and abs(d.mean() - spec.dt) > 1e-6 * spec.dt:
        raise CaseRefused(f"{case.path}: the frames are {d.mean():.6g} apart but the spec says dt = {spec.dt:g}: "
                          "another time unit?")
    return spec.dt if spec.dt is not None else float(d.mean())


def convert(case: MeshCase, spec: ImportSpec) -> tuple:
    """(sample dict, dt, notes) for one case; :class:`CaseRefused` when it cannot be a sample of the spec's
    problem."""
    p = PROBLEMS[spec.problem]
    n_frames = len(case.point_data)
    if not p.transient and n_frames > 1:
        raise CaseRefused(f"{case.path}: a time series of {n_frames} frames, but {spec.problem} is steady: give one "
                          "file (or one frame) per case")
    if p.transient and (case.times is None or n_frames < 2):
        raise CaseRefused(f"{case.path}: {spec.problem} is transient: give a time series of >= 2 frames (an XDMF "
                          "temporal collection or a .pvd), not a single mesh")
    pl = planar_triangles(case)
    notes = [f"meshio: {m}" for m in case.messages] + list(pl.notes)
    nt = _node_types(case, pl, spec)
    inputs = []
    for name, src in zip(p.inputs, spec.inputs):
        v = _channel(case, pl, src, 0, spec, notes, f"input {name}", nt)
        for k in range(1, n_frames):
            if src.array in case.point_data[k] or src.array in case.cell_data[k]:
                if not np.array_equal(_channel(case, pl, src, k, spec, notes, f"input {name}", nt), v):
                    raise CaseRefused(f"{case.path}: input {name} ({src.describe()}) changes at frame {k}; the "
                                      "model's inputs are static")
        inputs.append(v)
    fields = np.stack([np.stack([_channel(case, pl, src, k, spec, notes, f"field {name}", nt)
                                 for name, src in zip(p.channels, spec.fields)], 1) for k in range(n_frames)])
    glob = [_global(case, pl, g, name, spec, notes) for name, g in zip(p.globals, spec.globals)]
    dt = _time_step(case, spec) if p.transient else 0.0
    sample = {"pos": pl.pos, "cells": pl.tri, "node_type": nt,
              "inputs": np.stack(inputs, 1) if inputs else np.zeros((len(pl.pos), 0)),
              "globals": np.asarray(glob, np.float64), "fields": fields}
    arrays = {k: np.asarray(v, np.int64 if k in ("cells", "node_type") else np.float32) for k, v in sample.items()}
    try:
        validate_sample({**arrays, "problem": spec.problem, "dt": np.float32(dt)}, where=str(case.path))
    except SampleError as exc:
        raise CaseRefused(str(exc)) from None
    return sample, dt, notes


def find_cases(src: Path) -> tuple:
    """(case paths, frame files a .pvd lists, ignored file names, sub-folders) of folder ``src`` (or the one file
    ``src``). Sub-folders are not searched, except for the frames a .pvd lists."""
    import meshio

    if src.is_file():
        return [src], pvd_members(src) if src.suffix.lower() == ".pvd" else [], [], []
    known = set(meshio.extension_to_filetypes) | set(SERIES_SUFFIXES)
    entries = sorted(p for p in src.iterdir() if not p.name.startswith("."))
    members = sorted({m for p in entries if p.suffix.lower() == ".pvd" and p.is_file() for m in pvd_members(p)})
    cases, ignored, folders = [], [], []
    for p in entries:
        if p.is_dir():
            folders.append(p.name)
        elif p.resolve() in members:
            continue
        elif p.suffix.lower() in known or is_time_series(p):
            cases.append(p)
        else:
            ignored.append(p.name)
    return cases, members, ignored, folders


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def import_meshes(spec: ImportSpec, src: str | Path, out: str | Path, spec_path: str = "", echo=print) -> dict:
    """Convert every case under ``src`` into ``out``; returns the report (also ``out/import_report.json``).
    :class:`UserError` when ``src`` is missing or ``out`` already holds samples."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise UserError(f"import: {src} does not exist")
    if out.exists() and not out.is_dir():
        raise UserError(f"import: output folder {out} is an existing file")
    if out.is_dir() and any(out.glob("*.npz")):
        raise UserError(f"import: {out} already holds *.npz samples; import into an empty or new folder")
    cases, frames, ignored, folders = find_cases(src)
    out.mkdir(parents=True, exist_ok=True)
    records, stems = [], set()
    for path in cases:
        rec = {"file": str(path)}
        try:
            stem = path.stem
            if stem in stems:
                raise CaseRefused(f"{path}: another case already wrote {stem}.npz (same name, other extension)")
            case = read_case(path)
            sample, dt, notes = convert(case, spec)
            target = save_sample(out / f"{stem}.npz", sample, spec.problem, dt=dt)
            stems.add(stem)
            rec.update(ok=True, out=str(target), n_nodes=int(len(sample["pos"])), n_cells=int(len(sample["cells"])),
                       n_frames=int(len(sample["fields"])), dt=dt, notes=notes)
            for note in notes:
                echo(f"{path.name}: {note}")
        except CaseRefused as exc:
            rec.update(ok=False, reason=str(exc))
            echo(f"refused {exc}")
        records.append(rec)
    written = sum(r["ok"] for r in records)
    report = {"problem": spec.problem, "spec": spec_path, "src": str(src), "out": str(out), "found": len(cases),
              "written": written, "refused": len(records) - written, "frames_read_via_pvd": len(frames),
              "ignored": ignored, "subfolders": folders, "quads_split": sum(any("quads split" in n for n in r.get("notes", []))
                                                     for r in records),
              "cells_to_points": sum(any("from cells" in n for n in r.get("notes", [])) for r in records),
              "files": records}
    assert report["found"] == report["written"] + report["refused"]
    _write_json(out / "import_report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Turn a folder of meshio-readable meshes with point data into npz samples."""
    p = argparse.ArgumentParser(prog="linmix-physics import",
                                description="Turn a folder of meshio-readable meshes with point data (one steady case "
                                            "per file, or an XDMF / .pvd time series per trajectory) into npz "
                                            "samples, as a YAML spec says (apps/physics/README.md, 'Your own "
                                            "meshes').")
    p.add_argument("--spec", required=True, help="YAML spec: problem, inputs, fields, globals, node_type, dt")
    p.add_argument("--src", required=True, help="folder of mesh files (or one file)")
    p.add_argument("--out", required=True, help="new or empty output folder for the samples and import_report.json")
    a = p.parse_args(argv)
    spec = load_spec(a.spec)
    r = import_meshes(spec, a.src, a.out, spec_path=a.spec)
    extra = f", {r['frames_read_via_pvd']} frame files read via .pvd" if r["frames_read_via_pvd"] else ""
    extra += f", {len(r['ignored'])} other files ignored" if r["ignored"] else ""
    print(f"import {r['problem']}: found {r['found']} cases in {a.src}: wrote {r['written']}, refused {r['refused']}"
          f"{extra} -> {Path(a.out) / 'import_report.json'}")
    return 0 if r["written"] > 0 else 1

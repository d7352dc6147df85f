"""Read one case of ``linmix-physics import`` with meshio and reduce its cells to a planar triangle mesh.

A case is one file (a steady solution: ``.vtu``, ``.vtk``, ``.msh``, a plain ``.xdmf``, ... anything ``meshio.read``
takes) or one time series (an XDMF temporal collection, read with ``meshio.xdmf.TimeSeriesReader``; a ParaView
``.pvd`` collection of one file per frame, each read with ``meshio.read``). :func:`read_case` returns a
:class:`MeshCase`; :func:`planar_triangles` turns its cells into (N, 2) positions and (K, 3) triangles: quads are split
into two triangles (the split is reported), line / vertex cells on the 2-D cells' edges are boundary markers; 3-D
cells, 1-D meshes, 2-D cells mixed with 3-D ones or with free 1-D parts, higher-order or polygon cells, a surface
curved in z, and points in no 2-D cell are refused (:class:`CaseRefused`, counted by the import report).
"""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from linmix.shared.errors import UserError

DIM = {"vertex": 0, "line": 1, "line3": 1, "triangle": 2, "quad": 2, "triangle6": 2, "triangle7": 2, "quad8": 2,
       "quad9": 2, "polygon": 2, "tetra": 3, "tetra10": 3, "hexahedron": 3, "hexahedron20": 3, "hexahedron27": 3,
       "wedge": 3, "wedge15": 3, "pyramid": 3, "pyramid13": 3}


class CaseRefused(UserError):
    """One input case that cannot become a sample; the message says why (the import counts it and goes on)."""


@dataclass
class MeshCase:
    """One case as read: ``points`` (N, 2 or 3), meshio ``cells`` [(type, (K, n))], per frame ``point_data``
    {name: (N, ...)} and ``cell_data`` {name: [per block]}, ``times`` (None for a single steady file)."""

    path: Path
    points: np.ndarray
    cells: list
    point_data: list
    cell_data: list
    times: Optional[list] = None
    field_data: dict = field(default_factory=dict)
    cell_sets: dict = field(default_factory=dict)
    members: list = field(default_factory=list)  # files read for this case besides ``path`` (frames of a .pvd)
    messages: list = field(default_factory=list)  # what meshio printed while reading (warnings), for the report


@dataclass
class Planar:
    """``pos`` (N, 2) float64, ``tri`` (K, 3) int64, ``tri_block`` / ``tri_cell`` (K,): the meshio block and cell
    each triangle comes from (a quad gives two), ``notes`` for the report."""

    pos: np.ndarray
    tri: np.ndarray
    tri_block: np.ndarray
    tri_cell: np.ndarray
    notes: list


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def meshio_read(path: Path, where: Path | None = None) -> tuple:
    """``meshio.read(path)`` and the lines it printed. meshio prints its warnings and, on a file it cannot parse,
    an error before ``sys.exit(1)``: both are captured here, the failure becomes :class:`CaseRefused`."""
    import meshio

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            m = meshio.read(path)
    except ImportError:
        raise
    except (Exception, SystemExit) as exc:
        said = " ".join(buf.getvalue().split())[-200:]
        detail = _why(exc) if not isinstance(exc, SystemExit) else (said or "unreadable")
        raise CaseRefused(f"{where or path}: meshio cannot read {path.name} ({detail})") from None
    return m, [" ".join(line.split()) for line in buf.getvalue().splitlines() if line.strip()]


def _blocks(cells) -> list:
    return [(c.type, np.asarray(c.data)) for c in cells]


def is_time_series(path: Path) -> bool:
    """True for a ``.pvd`` or an XDMF file holding a temporal grid collection."""
    if path.suffix.lower() == ".pvd":
        return True
    if path.suffix.lower() not in (".xdmf", ".xmf"):
        return False
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return False
    return any(g.get("CollectionType") == "Temporal" for g in root.iter("Grid"))


def pvd_members(path: Path) -> list:
    """The frame files a ``.pvd`` lists, resolved against its folder (empty when unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []
    return [(path.parent / d.get("file", "")).resolve() for d in root.iter("DataSet") if d.get("file")]


def read_case(path: Path) -> MeshCase:
    """Read ``path`` (see the module docstring); :class:`CaseRefused` for an unreadable file or series."""
    try:
        if path.suffix.lower() == ".pvd":
            return _read_pvd(path)
        if is_time_series(path):
            return _read_xdmf_series(path)
        m, said = meshio_read(path)
    except ImportError as exc:  # meshio reads HDF5 (and every plain, non-series XDMF) through h5py
        raise CaseRefused(f"{path}: reading it needs the Python package {exc.name or 'h5py'} (pip install "
                          f"{exc.name or 'h5py'}), which is not installed") from None
    return MeshCase(path, np.asarray(m.points), _blocks(m.cells), [dict(m.point_data)], [dict(m.cell_data)],
                    None, dict(m.field_data), dict(m.cell_sets), messages=said)


def _read_xdmf_series(path: Path) -> MeshCase:
    import meshio

    root = ET.parse(path).getroot()
    coll = next(g for g in root.iter("Grid") if g.get("CollectionType") == "Temporal")
    steps = [g for g in coll if g.tag == "Grid"]
    domain = next(iter(root), root)  # the mesh meshio reads: a Uniform grid beside the collection, else the first step
    mesh_grid = next((g for g in domain if g.tag == "Grid" and g.get("GridType") == "Uniform"), steps[0] if steps
                     else coll)
    mesh_xml = {c.tag: ET.tostring(c) for c in mesh_grid if c.tag in ("Geometry", "Topology")}
    for k, g in enumerate(steps):  # a step with its own geometry / topology: the mesh changes along the series
        if any(ET.tostring(c) != mesh_xml.get(c.tag) for c in g if c.tag in ("Geometry", "Topology")):
            raise CaseRefused(f"{path}: varying mesh: step {k} declares another geometry / topology than the first; "
                              "a sample holds one mesh per trajectory (interpolate onto one mesh first)")
    try:
        with meshio.xdmf.TimeSeriesReader(str(path)) as r:
            points, cells = r.read_points_cells()
            frames = [r.read_data(k) for k in range(r.num_steps)]
    except ImportError as exc:
        raise CaseRefused(f"{path}: its data are in HDF5, which needs the Python package {exc.name or 'h5py'} (pip "
                          f"install {exc.name or 'h5py'}); not installed") from None
    except Exception as exc:
        raise CaseRefused(f"{path}: meshio cannot read the time series ({_why(exc)})") from None
    if not frames:
        raise CaseRefused(f"{path}: the time series holds no step")
    return MeshCase(path, np.asarray(points), _blocks(cells), [dict(f[1]) for f in frames],
                    [dict(f[2]) for f in frames], [float(f[0]) for f in frames])


def _read_pvd(path: Path) -> MeshCase:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise CaseRefused(f"{path}: not a readable .pvd collection ({_why(exc)})") from None
    sets = list(root.iter("DataSet"))
    if not sets:
        raise CaseRefused(f"{path}: the .pvd lists no DataSet")
    times, files = [], []
    for d in sets:
        if d.get("part", "0") != "0":
            raise CaseRefused(f"{path}: multi-part .pvd (part {d.get('part')}); one mesh per frame is supported")
        try:
            times.append(float(d.get("timestep")))
        except (TypeError, ValueError):
            raise CaseRefused(f"{path}: DataSet {d.get('file')!r} has no numeric timestep") from None
        files.append(path.parent / d.get("file", ""))
    frames, said = [], []
    for f in files:
        m, lines = meshio_read(f, where=path)
        frames.append(m)
        said += [line for line in lines if line not in said]
    first = frames[0]
    for k, m in enumerate(frames[1:], start=1):
        same = (m.points.shape == first.points.shape and np.array_equal(m.points, first.points)
                and len(m.cells) == len(first.cells)
                and all(a.type == b.type and np.array_equal(a.data, b.data) for a, b in zip(m.cells, first.cells)))
        if not same:
            raise CaseRefused(f"{path}: varying mesh: frame {k} ({files[k].name}, {len(m.points)} points) differs from "
                              f"frame 0 ({files[0].name}, {len(first.points)} points) in its points or cells; a "
                              "sample holds one mesh per trajectory (interpolate onto one mesh first)")
    return MeshCase(path, np.asarray(first.points), _blocks(first.cells), [dict(m.point_data) for m in frames],
                    [dict(m.cell_data) for m in frames], times, dict(first.field_data), dict(first.cell_sets),
                    members=[f.resolve() for f in files], messages=said)


def _edge_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    s = np.sort(pairs, axis=1).astype(np.int64)
    return s[:, 0] * n + s[:, 1]


def _split_quads(pos: np.ndarray, q: np.ndarray) -> tuple:
    """(2Q, 3) triangles of quads (Q, 4): diagonal 0-2 unless a half has the opposite orientation of the quad (a
    non-convex quad), then 1-3; returns (triangles, quad index per triangle)."""
    def area(a, b, c):
        return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

    p = [pos[q[:, i]] for i in range(4)]
    quad_area = area(p[0], p[1], p[2]) + area(p[0], p[2], p[3])
    ok = (area(p[0], p[1], p[2]) * quad_area > 0) & (area(p[0], p[2], p[3]) * quad_area > 0)
    t1 = np.where(ok[:, None], q[:, [0, 1, 2]], q[:, [0, 1, 3]])
    t2 = np.where(ok[:, None], q[:, [0, 2, 3]], q[:, [1, 2, 3]])
    idx = np.arange(len(q))
    return np.concatenate([t1, t2]), np.concatenate([idx, idx])


def planar_triangles(case: MeshCase) -> Planar:
    """Reduce ``case``'s cells to a planar triangle mesh; :class:`CaseRefused` (see the module docstring)."""
    where, notes = case.path, []
    types = [t for t, _ in case.cells]
    unknown = sorted({t for t in types if t not in DIM})
    if unknown:
        raise CaseRefused(f"{where}: cell types {unknown} are not supported (2-D triangle / quad meshes only)")
    dims = {DIM[t] for t in types}
    count = {t: sum(len(c) for tt, c in case.cells if tt == t) for t in dict.fromkeys(types)}
    if 3 in dims:
        kinds = ", ".join(f"{t}: {count[t]}" for t in count if DIM[t] == 3)
        if 2 in dims:
            raise CaseRefused(f"{where}: mixed-dimension mesh: 3-D cells ({kinds}) beside 2-D cells; the physics "
                              "models take planar 2-D meshes")
        raise CaseRefused(f"{where}: 3-D volume mesh ({kinds}): the physics models take planar 2-D triangle meshes "
                          "(pos (N, 2)); 3-D meshes are not supported")
    if 2 not in dims:
        what = "a 1-D mesh (line cells only)" if 1 in dims else "no 2-D cells"
        raise CaseRefused(f"{where}: {what} ({', '.join(f'{t}: {n}' for t, n in count.items()) or 'no cells'}); "
                          "the physics models take 2-D triangle / quad meshes")
    other2 = sorted(t for t in count if DIM[t] == 2 and t not in ("triangle", "quad"))
    if other2:
        raise CaseRefused(f"{where}: cells {other2} are not supported: export linear triangles or quads (corner "
                          "nodes only)")
    pts = np.asarray(case.points, np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or len(pts) == 0:
        raise CaseRefused(f"{where}: points must be (N, 2) or (N, 3), got {pts.shape}")
    if pts.shape[1] == 3:
        z = pts[:, 2]
        if np.ptp(z) != 0:
            raise CaseRefused(f"{where}: triangles in 3-D space (z from {z.min():.4g} to {z.max():.4g}): a curved "
                              "or tilted surface; the physics models take planar meshes in the x-y plane")
        if z[0] != 0:
            notes.append(f"constant z = {z[0]:.6g} dropped")
    pos = pts[:, :2]
    n = len(pos)
    tris, blocks, cells_idx = [], [], []
    for b, (t, c) in enumerate(case.cells):
        if t == "triangle":
            tris.append(c.astype(np.int64))
            blocks.append(np.full(len(c), b))
            cells_idx.append(np.arange(len(c)))
        elif t == "quad":
            tq, qi = _split_quads(pos, c.astype(np.int64))
            tris.append(tq)
            blocks.append(np.full(len(tq), b))
            cells_idx.append(qi)
            notes.append(f"{len(c)} quads split into {len(tq)} triangles")
    tri = np.concatenate(tris)
    if tri.min() < 0 or tri.max() >= n:
        raise CaseRefused(f"{where}: cell indices outside 0..{n - 1}")
    edges = set(_edge_keys(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), n).tolist())
    for t, c in case.cells:
        if DIM[t] == 1:
            c = np.asarray(c, np.int64)
            free = ~np.isin(_edge_keys(c[:, :2], n), list(edges))
            if free.any():
                raise CaseRefused(f"{where}: mixed-dimension mesh: {int(free.sum())} of {len(c)} {t} cells are not "
                                  "edges of the 2-D cells (a 1-D part beside the surface); only boundary markers are "
                                  "taken")
    used = np.zeros(n, bool)
    used[tri.reshape(-1)] = True
    if not used.all():
        raise CaseRefused(f"{where}: {int((~used).sum())} of {n} points are in no triangle / quad (e.g. geometry "
                          "points or a 1-D part); remove them first (meshio: mesh.remove_orphaned_nodes())")
    return Planar(pos, tri, np.concatenate(blocks), np.concatenate(cells_idx), notes)

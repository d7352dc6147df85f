"""``linmix-physics import`` on bad input: every case is refused with its reason and counted (found = written +
refused), a bad spec or output folder is a UserError (status 2, no traceback); quads and cell data are converted
only as said."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import meshio
import numpy as np
import pytest
import yaml
from mesh_files import points3, spec_for, static_arrays, write_pvd, write_steady, write_xdmf_series

from linmix.apps.physics.pde.import_spec import parse_spec
from linmix.apps.physics.pde.mesh_import import import_meshes
from linmix.apps.physics.pde.sample_io import load_sample
from linmix.shared.errors import UserError


@pytest.fixture(scope="module")
def darcy(darcy_dir) -> dict:
    return load_sample(sorted(darcy_dir.glob("*.npz"))[0]) | {"problem": "darcy"}


@pytest.fixture(scope="module")
def heat(heat_dir) -> dict:
    return load_sample(sorted(heat_dir.glob("*.npz"))[0]) | {"problem": "heat"}


def run(tmp_path: Path, spec: dict, src: Path | None = None) -> dict:
    out = tmp_path / f"out_{len(list(tmp_path.glob('out_*')))}"
    r = import_meshes(parse_spec(spec), src or tmp_path / "src", out, echo=lambda *_: None)
    assert r["found"] == r["written"] + r["refused"]
    return r


def reasons(r: dict) -> dict:
    return {Path(f["file"]).name: f.get("reason", "") for f in r["files"] if not f["ok"]}


def mesh(s: dict, cells=None, **point_data) -> meshio.Mesh:
    data = {**static_arrays(s), "u": s["fields"][0, :, 0]}
    data.update(point_data)
    return meshio.Mesh(points3(s["pos"]), cells or [("triangle", s["cells"])],
                       point_data={k: v for k, v in data.items() if v is not None})


def test_each_bad_case_is_refused_with_its_reason(darcy, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    n = len(darcy["pos"])
    write_steady(darcy, src / "good.vtu")
    cases = {
        "no_u.vtu": mesh(darcy, u=None),
        "cell_u.vtu": meshio.Mesh(points3(darcy["pos"]), [("triangle", darcy["cells"])],
                                  point_data=static_arrays(darcy),
                                  cell_data={"u": [np.ones(len(darcy["cells"]))]}),
        "vector_u.vtu": mesh(darcy, u=np.ones((n, 3))),
        "nan_u.vtu": mesh(darcy, u=np.where(np.arange(n) == 5, np.nan, 1.0)),
        "lines_only.vtu": meshio.Mesh(points3(darcy["pos"]), [("line", darcy["cells"][:, :2])],
                                      point_data={"u": np.ones(n)}),
        "tetra.vtu": meshio.Mesh(np.c_[darcy["pos"], np.arange(n) % 3], [("tetra", np.c_[darcy["cells"], (
            darcy["cells"][:, 0] + 1) % n])]),
        "tri_and_tetra.vtu": meshio.Mesh(np.c_[darcy["pos"], np.zeros(n)], [("triangle", darcy["cells"]), (
            "tetra", np.c_[darcy["cells"][:2], darcy["cells"][2:4, :1]])]),
        "tilted.vtu": meshio.Mesh(np.c_[darcy["pos"], darcy["pos"][:, 0]], [("triangle", darcy["cells"])],
                                  point_data={**static_arrays(darcy), "u": darcy["fields"][0, :, 0]}),
        "float_types.vtu": mesh(darcy, node_type=np.full(n, 0.5)),
        "quadratic.vtu": meshio.Mesh(points3(darcy["pos"]), [("triangle6", np.c_[darcy["cells"], darcy["cells"]])]),
        "orphan.vtu": meshio.Mesh(np.r_[points3(darcy["pos"]), [[9.0, 9.0, 0.0]]], [("triangle", darcy["cells"])],
                                  point_data={k: np.r_[v, v[:1]] for k, v in mesh(darcy).point_data.items()}),
    }
    for name, m in cases.items():
        meshio.write(src / name, m)
    (src / "broken.vtu").write_text("<VTKFile> not really")
    one = write_xdmf_series(darcy | {"dt": 1.0}, tmp_path / "one.xdmf")  # made a plain (non-series) XDMF:
    tree = ET.parse(one)
    domain = tree.getroot()[0]
    series = next(g for g in domain if g.get("GridType") == "Collection")
    mesh_grid = next(g for g in domain if g.get("GridType") == "Uniform")
    mesh_grid.extend(a for a in series[0] if a.tag == "Attribute")
    domain.remove(series)
    tree.write(src / "plain.xdmf")
    (src / "dangling_line.vtk").write_bytes(b"")  # an empty file of a mesh suffix
    r = run(tmp_path, spec_for("darcy"))
    why = reasons(r)
    try:  # meshio reads every non-series XDMF through h5py, even with XML data
        import h5py  # noqa: F401
    except ImportError:
        assert "needs the Python package h5py" in why.pop("plain.xdmf")
    else:
        assert "plain.xdmf" not in why
    assert r["written"] == 1 + ("plain.xdmf" not in reasons(r)) and len(why) == len(cases) + 2, why
    assert "no array 'u'" in why["no_u.vtu"]
    assert "cell data" in why["cell_u.vtu"] and "cell_data: average" in why["cell_u.vtu"]
    assert "3 components" in why["vector_u.vtu"] and "dimension mismatch" in why["vector_u.vtu"]
    assert "1 NaN/inf" in why["nan_u.vtu"] and "point 5" in why["nan_u.vtu"]
    assert "1-D mesh" in why["lines_only.vtu"]
    assert "3-D volume mesh" in why["tetra.vtu"] and "not supported" in why["tetra.vtu"]
    assert "mixed-dimension" in why["tri_and_tetra.vtu"]
    assert "z from" in why["tilted.vtu"]
    assert "fractional" in why["float_types.vtu"]
    assert "triangle6" in why["quadratic.vtu"] and "1 of" in why["orphan.vtu"] and "in no triangle" in why["orphan.vtu"]
    assert "meshio cannot read" in why["broken.vtu"] and "meshio cannot read" in why["dangling_line.vtk"]
    report = json.loads((tmp_path / "out_0" / "import_report.json").read_text())
    assert report["refused"] == r["refused"] and (tmp_path / "out_0" / "good.npz").is_file()


def test_cell_data_averaged_when_asked_and_quads_split(tmp_path):
    """A 3 x 2 quad grid with a cell-data field: averaged only with cell_data: average (said), quads split into
    two triangles each (said)."""
    x, y = np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 3))
    pts = np.c_[x.ravel(), y.ravel(), np.zeros(12)]
    quads = np.array([[j * 4 + i, j * 4 + i + 1, (j + 1) * 4 + i + 1, (j + 1) * 4 + i] for j in range(2)
                      for i in range(3)])
    boundary = [[0, 1], [1, 2], [2, 3]]  # bottom edge as line markers
    m = meshio.Mesh(pts, [("line", np.array(boundary)), ("quad", quads)],
                    point_data={"f": np.ones(12), "k": np.zeros(12), "d": np.ones(12)},
                    cell_data={"u": [np.zeros(3), np.arange(6.0)], "tag": [np.full(3, 7), np.zeros(6, int)]})
    src = tmp_path / "src"
    src.mkdir()
    meshio.write(src / "grid.vtu", m)
    q = quads[5]  # the same grid with mixed blocks: its last quad as two triangles (on the split's diagonal)
    mixed = meshio.Mesh(pts, [("line", np.array(boundary)), ("triangle", np.array([q[[0, 1, 2]], q[[0, 2, 3]]])),
                              ("quad", quads[:5])], point_data=m.point_data,
                        cell_data={"u": [np.zeros(3), np.full(2, 5.0), np.arange(5.0)],
                                   "tag": [np.full(3, 7), np.zeros(2, int), np.zeros(5, int)]})
    meshio.write(src / "mixed.vtu", mixed)
    spec = {"problem": "darcy", "inputs": {"log_k": "k", "f": "f", "dist_dirichlet": {"computed": "dirichlet_distance"}},
            "fields": {"u": "u"}, "globals": {"flux": 0.1},
            "node_type": {"cell_tags": {"array": "tag", "dirichlet": [7]}}}
    assert "cell data" in reasons(run(tmp_path, spec))["grid.vtu"]
    r = run(tmp_path, spec | {"cell_data": "average"})
    assert r["written"] == 2 and r["quads_split"] == 2 and r["cells_to_points"] == 2, r
    a, b = (load_sample(tmp_path / "out_1" / f"{name}.npz") for name in ("grid", "mixed"))
    assert len(b["cells"]) == 12 and np.array_equal(a["fields"], b["fields"])
    assert np.array_equal(a["node_type"], b["node_type"])
    notes = r["files"][0]["notes"]
    assert "6 quads split into 12 triangles" in notes and any("averaged from cells" in n for n in notes)
    s = load_sample(tmp_path / "out_1" / "grid.npz")
    assert s["cells"].shape == (12, 3)
    assert s["node_type"][:4].tolist() == [1, 1, 1, 1] and (s["node_type"][[5, 6]] == 0).all()
    assert set(s["node_type"][[4, 7, 8, 9, 10, 11]].tolist()) == {2}  # other boundary: neumann
    assert s["fields"][0, 0, 0] == 0.0 and s["fields"][0, 3, 0] == 2.0  # corner nodes: their one quad's value
    assert s["inputs"][0, 2] == 0.0 and s["inputs"][11, 2] == pytest.approx(np.hypot(0, 1))


def test_transient_bad_series(heat, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_xdmf_series(heat, src / "good.xdmf")
    write_pvd(heat, src, "good_pvd")

    def remesh(k, pts, cells, data):  # frame 2 on a mesh with one point moved
        if k == 2:
            pts = pts.copy()
            pts[0, 0] += 1e-3
        return pts, cells, data

    write_pvd(heat, src, "moving", mesh_of_frame=remesh)

    def nan_frame(k, pts, cells, data):
        if k == 3:
            data = data | {"u": np.where(np.arange(len(pts)) == 2, np.inf, data["u"])}
        return pts, cells, data

    write_pvd(heat, src, "nan", mesh_of_frame=nan_frame)

    def changing_input(k, pts, cells, data):
        return pts, cells, data | {"f": data["f"] + k}

    write_pvd(heat, src, "changing_f", mesh_of_frame=changing_input)
    write_steady(heat | {"fields": heat["fields"][:1]}, src / "single.vtu")
    uneven = write_pvd(heat, src, "uneven")
    uneven.write_text(uneven.read_text().replace('timestep="0.1', 'timestep="0.12', 1))
    tree = ET.parse(src / "good.xdmf")  # an XDMF series whose step 2 declares a mesh of its own (a remeshed step)
    mesh_grid = next(g for g in tree.iter("Grid") if g.get("GridType") == "Uniform")
    geometry = copy.deepcopy(mesh_grid.find("Geometry"))
    geometry[0].text = geometry[0].text.replace("0", "1", 1)
    steps = [g for g in tree.iter("Grid") if g.get("CollectionType") == "Temporal"][0]
    steps[2].append(geometry)
    tree.write(src / "remeshed.xdmf")
    why = reasons(run(tmp_path, spec_for("heat")))
    assert set(why) == {"moving.pvd", "nan.pvd", "changing_f.pvd", "single.vtu", "remeshed.xdmf", "uneven.pvd"}, why
    assert "non-uniform time steps" in why["uneven.pvd"]
    assert "varying mesh: step 2" in why["remeshed.xdmf"]
    assert "varying mesh" in why["moving.pvd"] and "frame 2" in why["moving.pvd"]
    assert "frame 3" in why["nan.pvd"] and "NaN/inf" in why["nan.pvd"]
    assert "changes at frame 1" in why["changing_f.pvd"]
    assert "transient" in why["single.vtu"] and "time series" in why["single.vtu"]
    r = run(tmp_path, spec_for("heat", dt=50.0))  # time step in another unit
    assert r["written"] == 0 and all("another time unit" in why for name, why in reasons(r).items()
                                     if name.startswith("good")), reasons(r)
    # the steady problem refuses a series of several frames
    assert "steady" in reasons(run(tmp_path, spec_for("darcy") | {"fields": {"u": "u"}}, src))["good.xdmf"]


def test_unit_range_and_gmsh_cell_sets(darcy, tmp_path):
    """A declared range catches a channel in another unit; Gmsh physical names set node types (dirichlet wins on
    shared nodes); the geometric rule gives outline / hole types."""
    src = tmp_path / "src"
    src.mkdir()
    s = darcy
    from linmix.apps.physics.pde.geometry import boundary_edges

    edges = boundary_edges(s["cells"])
    left = edges[(s["pos"][edges, 0] < 0).all(1)]
    right = edges[~(s["pos"][edges, 0] < 0).all(1)]
    m = meshio.Mesh(points3(s["pos"]), [("line", np.r_[left, right]), ("triangle", s["cells"])],
                    point_data={**static_arrays(s), "u": s["fields"][0, :, 0]},
                    cell_data={"gmsh:physical": [np.r_[np.full(len(left), 1), np.full(len(right), 2)],
                                                 np.full(len(s["cells"]), 3)],
                               "gmsh:geometrical": [np.ones(len(edges), int), np.ones(len(s["cells"]), int)]},
                    field_data={"left": np.array([1, 1]), "rest": np.array([2, 1]), "domain": np.array([3, 2])})
    meshio.write(src / "case.msh", m, file_format="gmsh22", binary=True)
    spec = spec_for("darcy", node_type={"cell_sets": {"dirichlet": ["left"], "obstacle": ["rest"]}})
    r = run(tmp_path, spec)
    assert r["written"] == 1, reasons(r)
    nt = load_sample(tmp_path / "out_0" / "case.npz")["node_type"]
    shared = np.intersect1d(left.ravel(), right.ravel())
    assert (nt[np.unique(left)] == 1).all() and (nt[np.setdiff1d(right, shared)] == 3).all()
    assert (nt[np.setdiff1d(np.arange(len(nt)), edges)] == 0).all()
    assert "no cell set 'inlet'" in reasons(run(tmp_path, spec_for(
        "darcy", node_type={"cell_sets": {"dirichlet": ["inlet"]}})))["case.msh"]
    u_max = float(np.abs(s["fields"]).max())
    bad = spec_for("darcy") | {"fields": {"u": {"array": "u", "range": [-u_max / 1000, u_max / 1000]}}}
    assert "another unit" in reasons(run(tmp_path, bad))["case.msh"]
    rule = spec_for("darcy", node_type={"rule": {"outer": "neumann", "holes": "obstacle",
                                                 "boxes": [{"type": "dirichlet", "x": [None, 0.0]}]}})
    assert run(tmp_path, rule)["written"] == 1
    nt = load_sample(tmp_path / "out_3" / "case.npz")["node_type"]
    outline = np.setdiff1d(edges, np.flatnonzero(s["node_type"] == 3))  # the generator marks hole nodes 3
    assert (nt[outline][s["pos"][outline, 0] <= 0] == 1).all() and (nt[outline][s["pos"][outline, 0] > 0] == 2).all()
    assert (nt == 3).sum() == (s["node_type"] == 3).sum()  # hole loops, as the generator marked them


@pytest.mark.parametrize("raw, msg", [
    ({"problem": "wave"}, "must be one of"),
    (spec_for("darcy") | {"fields": {"u": "u", "p": "p"}}, "unknown ['p']"),
    (spec_for("darcy") | {"inputs": {"log_k": "k"}}, "missing ['f', 'dist_dirichlet']"),
    (spec_for("darcy") | {"node_type": {"array": "a", "rule": {}}}, "exactly one of"),
    (spec_for("darcy") | {"dt": 0.1}, "steady: give no dt"),
    (spec_for("heat") | {"dt": -1}, "must be > 0"),
    (spec_for("darcy") | {"fields": {"u": {"array": "u", "scale": 0}}}, "scale must not be 0"),
    (spec_for("darcy") | {"node_type": {"array": "t", "map": {1: "wall"}}}, "node type must be one of"),
    (spec_for("darcy") | {"cell_data": "guess"}, "refuse or average"),
])
def test_bad_spec_is_a_user_error(raw, msg):
    with pytest.raises(UserError, match=None) as err:
        parse_spec(raw)
    assert msg in str(err.value)


def test_cli_errors_exit_2_without_traceback(darcy, tmp_path, capsys):
    from linmix.apps.physics.cli import main

    write_steady(darcy, tmp_path / "case.vtu")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"problem": "darcy", "fields": "u"}))
    assert main(["import", "--spec", str(tmp_path / "spec.yaml"), "--src", str(tmp_path / "case.vtu"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "linmix-physics import: error:" in err and "node_type is required" in err and "Traceback" not in err
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec_for("darcy")))
    (tmp_path / "full").mkdir()
    np.savez(tmp_path / "full" / "x.npz", a=np.zeros(1))
    assert main(["import", "--spec", str(tmp_path / "spec.yaml"), "--src", str(tmp_path / "case.vtu"),
                 "--out", str(tmp_path / "full")]) == 2
    assert "already holds *.npz" in capsys.readouterr().err
    assert main(["import", "--spec", str(tmp_path / "spec.yaml"), "--src", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["import", "--spec", str(tmp_path / "none.yaml"), "--src", str(tmp_path), "--out", str(tmp_path / "o3")]) == 2
    assert "cannot read the spec" in capsys.readouterr().err

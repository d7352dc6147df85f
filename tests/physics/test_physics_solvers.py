"""Solvers converge at the expected order; synthesis writes valid, reproducible samples and counts failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skfem import Basis, ElementTriP1, Functional, MeshTri

from linmix.apps.physics.pde import solvers, synth
from linmix.apps.physics.pde.geometry import (
    DIRICHLET,
    OBSTACLE,
    boundary_edges,
    cell_areas,
    mesh_edges,
    mesh_polygon,
)
from linmix.apps.physics.pde.sample_io import load_sample


@Functional
def _sq_err(w):
    return (w.uh - np.sin(np.pi * w.x[0]) * np.sin(np.pi * w.x[1])) ** 2


def test_poisson_manufactured_solution_converges_second_order():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    hs, errs = [], []
    for h in (0.2, 0.1, 0.05):
        pos, cells = mesh_polygon(square, [], h)
        mesh = MeshTri(np.ascontiguousarray(pos.T), np.ascontiguousarray(cells.T))
        exact = np.sin(np.pi * pos[:, 0]) * np.sin(np.pi * pos[:, 1])
        bnd = np.unique(boundary_edges(cells))
        u = solvers.poisson_p1(mesh, np.ones(len(pos)), 2 * np.pi ** 2 * exact, bnd, np.zeros(len(pos)))
        ib = Basis(mesh, ElementTriP1())
        errs.append(np.sqrt(_sq_err.assemble(ib, uh=ib.interpolate(u))))
        hs.append(np.sqrt(np.abs(cell_areas(pos, cells)).mean()))
    orders = np.log(np.array(errs[:-1]) / np.array(errs[1:])) / np.log(np.array(hs[:-1]) / np.array(hs[1:]))
    assert errs[-1] < 5e-3
    assert orders.min() > 1.7, (errs, orders)


@pytest.mark.parametrize("problem", ["darcy", "heat", "elasticity"])
def test_solvers_give_finite_fields_with_boundaries(problem):
    fn = synth._solver(problem)
    kwargs = {"h": 0.3 if problem != "elasticity" else 0.15}
    if problem == "heat":
        kwargs["n_steps"] = 4
    d = fn(np.random.default_rng(0), **kwargs)
    n = len(d["pos"])
    assert d["fields"].shape[1] == n and np.isfinite(d["fields"]).all()
    assert (d["node_type"] == DIRICHLET).any()
    if problem == "darcy":  # u = 0 and distance 0 on Dirichlet nodes; positive source and inflow: u >= 0 inside
        fixed = d["node_type"] == DIRICHLET
        np.testing.assert_allclose(d["fields"][0, fixed, 0], 0.0, atol=1e-12)
        np.testing.assert_allclose(d["inputs"][fixed, 2], 0.0, atol=1e-12)
        assert (d["inputs"][~fixed, 2] > 0).all() and (d["node_type"] == OBSTACLE).any()
        assert d["fields"][0, ~fixed, 0].min() > 0  # discrete maximum principle (no flux through the holes)
    if problem == "heat":  # Dirichlet values constant in time, interior evolves
        fixed = d["node_type"] == DIRICHLET
        np.testing.assert_allclose(d["fields"][:, fixed], d["fields"][:1, fixed].repeat(5, 0), atol=1e-12)
        assert np.abs(d["fields"][-1] - d["fields"][0]).max() > 1e-3
    if problem == "elasticity":  # clamped bottom has zero displacement
        np.testing.assert_allclose(d["fields"][0, d["node_type"] == DIRICHLET, :2], 0.0, atol=1e-12)


def test_mesh_edges_are_undirected_and_deduplicated():
    cells = np.array([[0, 1, 2], [1, 3, 2]])
    e = mesh_edges(cells)
    assert e.shape == (2, 5)
    assert (e[0] > e[1]).all()  # sender = max, receiver = min, stored once
    assert len({tuple(x) for x in e.T}) == 5


def test_synth_parallel_matches_serial_and_reconciles(tmp_path):
    s1 = synth.synthesize("darcy", 3, tmp_path / "a", seed=3, h=0.35, workers=1, progress=False)
    s2 = synth.synthesize("darcy", 3, tmp_path / "b", seed=3, h=0.35, workers=2, progress=False)
    assert s1["written"] == s2["written"] == 3 and s1["failed"] == 0
    for i in range(3):
        a, b = load_sample(tmp_path / "a" / f"darcy_{i:05d}.npz"), load_sample(tmp_path / "b" / f"darcy_{i:05d}.npz")
        np.testing.assert_array_equal(a["fields"], b["fields"])
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_failing_solve_is_skipped_logged_and_counted(tmp_path, monkeypatch, caplog):
    real = solvers.solve_darcy

    calls = []

    def flaky(rng, h=0.1, domain_seed=0):
        calls.append(1)
        if len(calls) == 2:  # sample 1 (serial synthesis) "fails to converge"
            raise solvers.SolverError("linear solve did not converge (test)")
        return real(rng, h=h, domain_seed=domain_seed)

    monkeypatch.setattr(solvers, "solve_darcy", flaky)
    s = synth.synthesize("darcy", 3, tmp_path, seed=0, h=0.35, workers=1, progress=False)
    assert (s["requested"], s["written"], s["failed"]) == (3, 2, 1)
    assert "did not converge" in s["failures"][0]["reason"] and s["failures"][0]["index"] == 1
    assert json.loads((tmp_path / "synth_summary.json").read_text())["failed"] == 1
    rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["index"] == 1
    assert "sample 1 skipped" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["darcy_00000.npz", "darcy_00002.npz"]


def test_flow_taylor_hood_no_slip_and_inlet_profile():
    from linmix.apps.physics.pde.flow import H_CHANNEL, inflow_ramp, solve_flow

    d = solve_flow(np.random.default_rng(0), h=0.12, n_steps=3, dt=0.2, start="rest", t_ramp=0.5, substeps=1)
    f, pos, nt = d["fields"], d["pos"], d["node_type"]
    assert f.shape == (4, len(pos), 3) and np.isfinite(f).all()
    np.testing.assert_array_equal(f[0], 0.0)  # starts from rest
    walls = (nt == DIRICHLET) & ((pos[:, 1] < 1e-9) | (pos[:, 1] > H_CHANNEL - 1e-9))
    np.testing.assert_allclose(f[:, walls, :2], 0.0, atol=1e-10)
    np.testing.assert_allclose(f[:, nt == OBSTACLE, :2], 0.0, atol=1e-10)
    inlet = (pos[:, 0] < 1e-9) & ~walls
    y, u_max = pos[inlet, 1], d["globals"][3]
    for k in (1, 3):  # ramped inflow: 0.345 U_max at t = 0.2, U_max from t = 0.5 on
        np.testing.assert_allclose(f[k, inlet, 0], inflow_ramp(0.2 * k, 0.5) * 4 * u_max * y * (H_CHANNEL - y)
                                   / H_CHANNEL ** 2, atol=1e-10)
    assert inflow_ramp(0.2, 0.5) == pytest.approx(0.5 * (1 - np.cos(0.4 * np.pi))) and inflow_ramp(0.6, 0.5) == 1.0
    assert f[-1, :, 0].max() > 0.5 * u_max  # flow goes through the channel
    cx, cy, r = d["globals"][:3]
    np.testing.assert_allclose(np.hypot(pos[nt == OBSTACLE, 0] - cx, pos[nt == OBSTACLE, 1] - cy), r, rtol=1e-3)


def test_flow_trajectory_is_a_transient():
    """The state must change from frame to frame (a trajectory recorded after a spin-up to the developed flow
    changes by only 0.04-0.11 % of the state std per step): std(u_{t+1} − u_t) > 2 % of the state std in every
    channel, from the default Stokes start (full inflow from the first frame on) as from rest."""
    from linmix.apps.physics.pde.flow import H_CHANNEL, solve_flow

    for start in ("stokes", "rest"):
        d = solve_flow(np.random.default_rng(2), h=0.15, n_steps=6, dt=0.05, start=start, substeps=1)
        f, pos = d["fields"], d["pos"]
        inc = np.diff(f, axis=0).reshape(-1, 3).std(0) / f.reshape(-1, 3).std(0)
        assert (inc > 0.02).all(), (start, inc)
        if start == "stokes":  # full parabolic inflow in every frame
            inlet = (pos[:, 0] < 1e-9) & (pos[:, 1] > 1e-9) & (pos[:, 1] < H_CHANNEL - 1e-9)
            y, u_max = pos[inlet, 1], d["globals"][3]
            np.testing.assert_allclose(f[:, inlet, 0], np.broadcast_to(4 * u_max * y * (H_CHANNEL - y)
                                                                        / H_CHANNEL ** 2, (7, inlet.sum())), atol=1e-10)


def test_flow_sample_trains_through_the_lit_module(tmp_path):
    import torch
    from torch_geometric.data import Batch

    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.dataset import to_graph
    from linmix.apps.physics.lit_module import PhysicsLitModule
    from linmix.apps.physics.pde.flow import solve_flow
    from linmix.apps.physics.pde.sample_io import save_sample

    d = solve_flow(np.random.default_rng(1), h=0.15, n_steps=3, dt=0.1, substeps=1)
    dt = d.pop("dt")
    sample = load_sample(save_sample(tmp_path / "flow.npz", d, "flow", dt=dt))
    assert sample["channels"] == ("u_x", "u_y", "p") and sample["dt"] == pytest.approx(dt)
    b = Batch.from_data_list([to_graph(sample)])
    net = PhysicsConfig(n_in=0, n_out=3, n_globals=4, transient=True, d_model=16, n_layers=1, n_slots=4,
                        d_hidden=16, n_freq=2)
    lit = PhysicsLitModule(net=net, problem="flow")
    lit.net.fit_stats(b.inputs, b.globals, b.fields.reshape(-1, 3), 3 * dt)
    err = lit._unroll(b, 0, 2, noise=True)
    assert err.shape == (2, 1, 3) and torch.isfinite(err).all()


def test_darcy_shares_one_domain_per_seed_unless_random_domains():
    a, b = (solvers.solve_darcy(np.random.default_rng(i), h=0.3) for i in (1, 2))
    np.testing.assert_array_equal(a["pos"], b["pos"])  # same mesh and boundary split, like the NORM / PhysGTO set
    np.testing.assert_array_equal(a["node_type"], b["node_type"])
    assert not np.allclose(a["fields"], b["fields"]) and not np.allclose(a["inputs"][:, 0], b["inputs"][:, 0])
    c = solvers.solve_darcy(np.random.default_rng(1), h=0.3, domain_seed=5)
    assert c["pos"].shape != a["pos"].shape or not np.allclose(c["pos"], a["pos"])
    r1, r2 = (solvers.solve_darcy(np.random.default_rng(i), h=0.3, domain_seed=None) for i in (1, 2))
    assert r1["pos"].shape != r2["pos"].shape or not np.allclose(r1["pos"], r2["pos"])


def test_elasticity_traction_is_oblique():
    for i in range(6):
        g = solvers.solve_elasticity(np.random.default_rng(i), h=0.2)["globals"]
        t = np.hypot(g[1], g[2])
        assert 0.05 - 1e-9 <= t <= 0.1 + 1e-9
        assert min(abs(g[1]), abs(g[2])) >= np.sin(np.deg2rad(20.0)) * t - 1e-9  # both displacement channels loaded

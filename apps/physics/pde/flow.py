"""Incompressible flow past a random cylinder in a DFG-like channel (2.2 x 0.41), Taylor-Hood P2/P1 with scikit-fem.

u_t + (u·∇)u − ν Δu + ∇p = 0, ∇·u = 0; inlet u = U(t) 4 y (H − y) / H², no-slip walls and cylinder, do-nothing
outlet; ν = 1e-3, so Re = (2/3 U_max)(2r)/ν spans ~53-160 over the sampled U_max ∈ [1, 2] and radius r ∈ [0.04, 0.06]
(DFG 2D-2 is Re 100 with vortex shedding). Each solver step is an Oseen-linearised implicit Euler step
[M/τ + νA + C(u^n), −Bᵀ; −B, −εI] [u^{n+1}; p^{n+1}] = [M u^n / τ; 0] with the convection matrix rebuilt each step
(an explicit Adams-Bashforth-2 convection step with Galerkin P2/P1 blows up without stabilisation at cell Reynolds
numbers of 40-70, so the implicit Oseen step is used); ``substeps`` solver steps of
τ = dt / substeps per recorded frame, frames ``dt`` apart.

Starts (``start``):
- ``"stokes"`` (default): the steady Stokes flow at the full inflow U(t) = U_max (fore-aft symmetric, no wake), then
  Navier-Stokes: the recirculation bubble forms, the wake lengthens and, where Re allows, sheds (at h = 0.05, Re ~120:
  shedding from t ~ 0.7 s, period ~0.4 s; at h = 0.07 the wake stays steady). The first frame is taken one frame
  (``dt``) after the start, so the impulsive jump of the pressure from its Stokes to its convective level (a Lagrange
  multiplier, not a state) is not a step of the trajectory.
- ``"rest"``: u = 0, p = 0 with the inflow ramped U(t) = U_max (1 − cos(π t / t_ramp)) / 2 up to ``t_ramp``
  (the state starts at zero and the early frames are a few % of the developed field; in the benchmark no model
  learned past holding the initial state on this start, ``apps/physics/README.md``).

Fields at mesh vertices: (u_x, u_y, p); globals (cylinder centre x, y, radius, U_max). Node types: inlet and walls
Dirichlet, outlet Neumann, cylinder obstacle.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from skfem import (
    Basis,
    BilinearForm,
    ElementTriP1,
    ElementTriP2,
    ElementVector,
    MeshTri,
    asm,
    condense,
    solve,
)
from skfem.helpers import ddot, div, dot, grad, mul

from linmix.apps.physics.pde.geometry import (
    DIRICHLET,
    INTERIOR,
    NEUMANN,
    OBSTACLE,
    boundary_edges,
    on_hole,
    random_domain,
)
from linmix.apps.physics.pde.solvers import SolverError

L_CHANNEL, H_CHANNEL = 2.2, 0.41
U_MAX_RANGE = (1.0, 2.0)


@BilinearForm
def _vector_laplace(u, v, w):
    return ddot(grad(u), grad(v))


@BilinearForm
def _divergence(u, q, w):
    return div(u) * q


@BilinearForm
def _mass(u, v, w):
    return dot(u, v)


@BilinearForm
def _convection(u, v, w):
    return dot(mul(grad(u), w.w), v)


def inflow_ramp(t: float, t_ramp: float) -> float:
    """Inflow factor U(t) / U_max: (1 − cos(π t / t_ramp)) / 2 up to ``t_ramp`` (zero slope at both ends), then 1."""
    if t_ramp <= 0:
        return 1.0
    return float(0.5 * (1.0 - np.cos(np.pi * min(max(t, 0.0) / t_ramp, 1.0))))


def solve_flow(rng: np.random.Generator, h: float = 0.05, n_steps: int = 50, dt: float = 0.02, nu: float = 1e-3,
               substeps: int = 2, start: str = "stokes", t_ramp: float = 0.5) -> dict:
    """One flow trajectory: fields (n_steps + 1, N, 3) = (u_x, u_y, p) at the vertices, frames ``dt`` (s) apart,
    each ``substeps`` implicit solver steps; ``start`` "stokes" (frame 0 one frame after the Stokes flow) or "rest"
    (frame 0 = rest, inflow ramped over ``t_ramp`` s)."""
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    if start not in ("stokes", "rest"):
        raise ValueError(f"start must be 'stokes' or 'rest', got {start!r}")
    ramp = (lambda t: inflow_ramp(t, t_ramp)) if start == "rest" else (lambda t: 1.0)
    dom = random_domain(rng, "channel", h)
    mesh = MeshTri(np.ascontiguousarray(dom.pos.T), np.ascontiguousarray(dom.cells.T))
    u_max = float(rng.uniform(*U_MAX_RANGE))
    ub = Basis(mesh, ElementVector(ElementTriP2()), intorder=4)
    pb = Basis(mesh, ElementTriP1(), intorder=4)
    A, B, M = asm(_vector_laplace, ub), asm(_divergence, ub, pb), asm(_mass, ub)
    eps = 1e-9
    inlet = mesh.facets_satisfying(lambda x: x[0] < eps, boundaries_only=True)
    walls = mesh.facets_satisfying(lambda x: (x[1] < eps) | (x[1] > H_CHANNEL - eps), boundaries_only=True)
    outlet = mesh.facets_satisfying(lambda x: x[0] > L_CHANNEL - eps, boundaries_only=True)
    cyl = np.setdiff1d(mesh.boundary_facets(), np.concatenate([inlet, walls, outlet]))
    D = np.unique(np.concatenate([ub.get_dofs(f).all() for f in (inlet, walls, cyl)]))
    nu_dofs, np_dofs = ub.N, pb.N
    x_dofs = np.concatenate([ub.nodal_dofs[0], ub.facet_dofs[0]])
    inlet_x = np.intersect1d(x_dofs[ub.doflocs[0, x_dofs] < eps], ub.get_dofs(inlet).all())
    y_in = ub.doflocs[1, inlet_x]
    profile = 4 * u_max * y_in * (H_CHANNEL - y_in) / H_CHANNEL ** 2
    I_p = sp.identity(np_dofs, format="csr")
    tau = dt / substeps
    MA = M / tau + nu * A

    def step(x, t_new):
        u = x[:nu_dofs]
        g = np.zeros(nu_dofs + np_dofs)
        g[inlet_x] = ramp(t_new) * profile
        C = asm(_convection, ub, w=ub.interpolate(u))
        K = sp.bmat([[MA + C, -B.T], [-B, -1e-8 * I_p]], format="csr")
        rhs = np.concatenate([M @ u / tau, np.zeros(np_dofs)])
        x = solve(*condense(K, rhs, x=g, D=D))
        if not np.all(np.isfinite(x)) or np.abs(x[:nu_dofs]).max() > 50 * u_max:
            raise SolverError(f"flow: Oseen step diverged (max |u| {np.abs(x[:nu_dofs]).max():.3g})")
        return x

    x = np.zeros(nu_dofs + np_dofs)  # rest, consistent with U(0) = 0
    n_skip = 0
    if start == "stokes":
        g = np.zeros(nu_dofs + np_dofs)
        g[inlet_x] = profile
        stokes = sp.bmat([[nu * A, -B.T], [-B, -1e-8 * I_p]], format="csr")
        x = solve(*condense(stokes, np.zeros(nu_dofs + np_dofs), x=g, D=D))
        n_skip = 1  # frame 0 one frame after the start: the pressure's impulsive jump is not a recorded step
    frames = []
    for k in range(n_skip, n_steps + 1 + n_skip):
        for s in range(substeps if k else 0):
            x = step(x, ((k - 1) * substeps + s + 1) * tau)
        u = x[:nu_dofs]
        frames.append(np.stack([u[ub.nodal_dofs[0]], u[ub.nodal_dofs[1]], x[nu_dofs:]], 1))
    fields = np.stack(frames)
    if not np.all(np.isfinite(fields)):
        raise SolverError("flow: non-finite fields")
    node_type = np.full(dom.n_nodes, INTERIOR, dtype=np.int64)
    node_type[np.unique(boundary_edges(dom.cells))] = DIRICHLET
    y = dom.pos[:, 1]
    node_type[(dom.pos[:, 0] > L_CHANNEL - eps) & (y > eps) & (y < H_CHANNEL - eps)] = NEUMANN
    node_type[on_hole(dom.pos, dom.holes)] = OBSTACLE
    cx, cy, r = dom.holes[0]
    return {"pos": dom.pos, "cells": dom.cells, "node_type": node_type, "inputs": np.zeros((dom.n_nodes, 0)),
            "globals": np.array([cx, cy, r, u_max]), "fields": fields, "dt": dt}

"""Incompressible flow past a random cylinder (DFG-like channel 2.2 x 0.41), Taylor-Hood P2/P1 with scikit-fem.

u_t + (u·∇)u − ν Δu + ∇p = 0, ∇·u = 0; parabolic inlet u = 4 U_max y (H − y) / H², no-slip walls and cylinder,
do-nothing outlet. Stokes initial state, then Oseen-linearised implicit Euler
[M/dt + νA + C(u^n), −Bᵀ; −B, −εI] [u^{n+1}; p^{n+1}] = [M u^n / dt; 0] with the convection matrix rebuilt each step
(the explicit AB2 variant blows up without stabilisation, physics reference §4). A spin-up of ``spinup`` coarse steps
(``4 dt``) lets the wake develop before ``n_steps`` recorded steps of ``dt``. Fields at mesh vertices:
(u_x, u_y, p), globals (radius, U_max). Node types: inlet and walls Dirichlet, outlet Neumann, cylinder obstacle.
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

from apps.physics.geometry import (
    DIRICHLET,
    INTERIOR,
    NEUMANN,
    OBSTACLE,
    boundary_edges,
    on_hole,
    random_domain,
)
from apps.physics.solvers import SolverError

L_CHANNEL, H_CHANNEL = 2.2, 0.41


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


def solve_flow(rng: np.random.Generator, h: float = 0.05, n_steps: int = 50, dt: float = 0.02, nu: float = 1e-3,
               spinup: int = 40) -> dict:
    """One flow trajectory: fields (n_steps + 1, N, 3) = (u_x, u_y, p) at the vertices."""
    dom = random_domain(rng, "channel", h)
    mesh = MeshTri(np.ascontiguousarray(dom.pos.T), np.ascontiguousarray(dom.cells.T))
    u_max = float(rng.uniform(1.0, 1.5))
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
    g = np.zeros(nu_dofs + np_dofs)
    x_dofs = np.concatenate([ub.nodal_dofs[0], ub.facet_dofs[0]])
    inlet_x = np.intersect1d(x_dofs[ub.doflocs[0, x_dofs] < eps], ub.get_dofs(inlet).all())
    g[inlet_x] = 4 * u_max * ub.doflocs[1, inlet_x] * (H_CHANNEL - ub.doflocs[1, inlet_x]) / H_CHANNEL ** 2
    I_p = sp.identity(np_dofs, format="csr")
    stokes = sp.bmat([[nu * A, -B.T], [-B, -1e-8 * I_p]], format="csr")
    x = solve(*condense(stokes, np.zeros(nu_dofs + np_dofs), x=g, D=D))
    frames = []

    def step(x, tau):
        u = x[:nu_dofs]
        C = asm(_convection, ub, w=ub.interpolate(u))
        K = sp.bmat([[M / tau + nu * A + C, -B.T], [-B, -1e-8 * I_p]], format="csr")
        rhs = np.concatenate([M @ u / tau, np.zeros(np_dofs)])
        x = solve(*condense(K, rhs, x=g, D=D))
        if not np.all(np.isfinite(x)) or np.abs(x[:nu_dofs]).max() > 50 * u_max:
            raise SolverError(f"flow: Oseen step diverged (max |u| {np.abs(x[:nu_dofs]).max():.3g})")
        return x

    for _ in range(spinup):
        x = step(x, 4 * dt)
    for k in range(n_steps + 1):
        if k:
            x = step(x, dt)
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
    r = dom.holes[0][2]
    return {"pos": dom.pos, "cells": dom.cells, "node_type": node_type, "inputs": np.zeros((dom.n_nodes, 0)),
            "globals": np.array([r, u_max]), "fields": fields, "dt": dt}

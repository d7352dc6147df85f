"""scikit-fem solvers that produce one training sample each (steady Darcy, transient heat, linear elasticity).

Every ``solve_*(rng, h)`` returns a sample dict (see :mod:`linmix.apps.physics.pde.sample_io`): ``pos`` (N, 2), ``cells`` (K, 3),
``node_type`` (N,), ``inputs`` (N, F_in) static node inputs, ``globals`` (G,), ``fields`` (T, N, C) with T = 1 for
steady problems. All quantities are dimensionless. A solve that produces a non-finite solution raises
:class:`SolverError` so the synthesis driver can skip and count it.

Discretisations (P1 Lagrange on triangles unless said otherwise):
- Darcy / Poisson: -∇·(k ∇u) = f, log-normal k and f from smooth 6-mode random Fourier fields; u = 0 on a random
  outer arc (Dirichlet), inflow flux k ∂u/∂n = q on the rest of the outline (Neumann), impermeable holes (obstacle).
- Heat: u_t = ∇·(κ∇u) + f, backward Euler (M + dt κ K) u^{n+1} = M u^n + dt M f, LU factorised once; Dirichlet outer arc
  and holes (constant in time), insulated Neumann elsewhere; random Gaussian-bump initial state.
- Elasticity: plane strain, unit plate with voids, bottom clamped, random oblique traction on the top edge, vector P1; fields
  (u_x, u_y, von Mises stress) with stress area-averaged from cells to nodes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import factorized
from skfem import (
    Basis,
    BilinearForm,
    ElementTriP1,
    ElementVector,
    FacetBasis,
    LinearForm,
    MeshTri,
    asm,
    condense,
    solve,
)
from skfem.helpers import dot, grad
from skfem.models.elasticity import lame_parameters, linear_elasticity

from linmix.apps.physics.pde.geometry import (
    DIRICHLET,
    INTERIOR,
    NEUMANN,
    OBSTACLE,
    boundary_edges,
    dirichlet_distance,
    on_hole,
    random_domain,
)


class SolverError(RuntimeError):
    """A sample whose solve failed (non-finite solution, singular system, meshing failure)."""


@BilinearForm
def _diffusion(u, v, w):
    return w.k * dot(grad(u), grad(v))


@BilinearForm
def _mass(u, v, w):
    return u * v


@LinearForm
def _load(v, w):
    return w.f * v


def random_field(rng: np.random.Generator, pos: np.ndarray, n_modes: int = 12, scale: float = 3.0) -> np.ndarray:
    """Smooth zero-mean unit-ish random field on nodes: random Fourier features, (N,)."""
    w = rng.normal(0.0, scale, size=(n_modes, 2))
    phase = rng.uniform(0, 2 * np.pi, size=n_modes)
    amp = rng.normal(size=n_modes) / np.sqrt(n_modes / 2)
    return (amp[None] * np.cos(pos @ w.T + phase[None])).sum(1)


def gaussian_bumps(rng: np.random.Generator, pos: np.ndarray, n: int = 3, width=(0.1, 0.3)) -> np.ndarray:
    lo, hi = pos.min(0), pos.max(0)
    out = np.zeros(len(pos))
    for _ in range(n):
        c = rng.uniform(lo, hi)
        s = rng.uniform(*width)
        out += rng.uniform(-1.0, 1.0) * np.exp(-((pos - c) ** 2).sum(1) / (2 * s * s))
    return out


def poisson_p1(mesh: MeshTri, k: np.ndarray, f: np.ndarray, dirichlet: np.ndarray, g: np.ndarray,
               neumann_facets: np.ndarray | None = None, flux: float = 0.0) -> np.ndarray:
    """Solve -∇·(k∇u) = f with u = g on ``dirichlet`` nodes and k∂u/∂n = ``flux`` on ``neumann_facets``.
    ``k``, ``f``, ``g`` are nodal (N,) arrays (P1 interpolants). Returns u (N,)."""
    ib = Basis(mesh, ElementTriP1())
    A = asm(_diffusion, ib, k=ib.interpolate(k))
    b = asm(_load, ib, f=ib.interpolate(f))
    if neumann_facets is not None and len(neumann_facets) and flux != 0.0:
        fb = FacetBasis(mesh, ElementTriP1(), facets=neumann_facets)
        b = b + asm(LinearForm(lambda v, w: flux * v), fb)
    x = np.zeros(mesh.p.shape[1])
    x[dirichlet] = g[dirichlet]
    return solve(*condense(A, b, x=x, D=dirichlet))


def _check(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        raise SolverError(f"{name}: solution has {int((~np.isfinite(arr)).sum())} non-finite values")


def _star_boundary(rng, dom, arc_frac=(0.4, 0.8)):
    """Node types and facet sets for a star domain: a random outer arc Dirichlet, the rest Neumann, holes obstacle."""
    mesh = MeshTri(np.ascontiguousarray(dom.pos.T), np.ascontiguousarray(dom.cells.T))
    bnd = np.unique(boundary_edges(dom.cells))
    hole = on_hole(dom.pos, dom.holes)
    theta = np.arctan2(dom.pos[:, 1], dom.pos[:, 0])
    t0, span = rng.uniform(-np.pi, np.pi), rng.uniform(*arc_frac) * 2 * np.pi
    in_arc = np.mod(theta - t0, 2 * np.pi) < span
    node_type = np.full(dom.n_nodes, INTERIOR, dtype=np.int64)
    outer = np.zeros(dom.n_nodes, bool)
    outer[bnd] = True
    outer &= ~hole
    node_type[outer] = np.where(in_arc[outer], DIRICHLET, NEUMANN)
    node_type[hole] = OBSTACLE
    facets = mesh.boundary_facets()
    fn = mesh.facets[:, facets]
    is_neu = (node_type[fn[0]] == NEUMANN) | (node_type[fn[1]] == NEUMANN)
    neu = facets[is_neu & ~(hole[fn[0]] | hole[fn[1]])]
    return mesh, node_type, theta, neu


def solve_darcy(rng: np.random.Generator, h: float = 0.1, domain_seed: int | None = 0, kind: str = "star",
                n_holes: tuple[int, int] | None = None) -> dict:
    """Steady Darcy/Poisson sample -∇·(k∇u) = f on a random star domain with impermeable inclusions (holes).

    k = exp(0.7·g_k), f = exp(0.4·g_f) with g_k, g_f smooth random Fourier fields of 6 modes (log-normal permeability
    and positive source, as in the FNO / PhysGTO Darcy benchmarks); u = 0 on a random outer arc covering 60-90 % of
    the outline (Dirichlet), inflow flux k∂u/∂n = q ∈ [0, 0.3] on the rest of the outline (Neumann), no flux through
    the holes (node type obstacle, natural boundary condition).
    inputs = (log k, f, distance to the nearest Dirichlet node); globals = (q,); fields (1, N, 1) = u.
    ``kind`` ('star' or 'square') and ``n_holes`` (lo, hi) choose the domain family (:func:`random_domain`)."""
    geo_rng = rng if domain_seed is None else np.random.default_rng([7919, domain_seed])
    dom = random_domain(geo_rng, kind, h, n_holes)
    mesh, node_type, _, neu = _star_boundary(geo_rng, dom, arc_frac=(0.6, 0.9))
    logk = 0.7 * random_field(rng, dom.pos, n_modes=6, scale=2.0)
    f = np.exp(0.4 * random_field(rng, dom.pos, n_modes=6, scale=1.5))
    fixed = np.flatnonzero(node_type == DIRICHLET)
    q = float(rng.uniform(0.0, 0.3))
    u = poisson_p1(mesh, np.exp(logk), f, fixed, np.zeros(dom.n_nodes), neu, q)
    _check("darcy", u)
    dist = dirichlet_distance(dom.pos, node_type)
    return {"pos": dom.pos, "cells": dom.cells, "node_type": node_type,
            "inputs": np.stack([logk, f, dist], 1), "globals": np.array([q]), "fields": u[None, :, None]}


def solve_heat(rng: np.random.Generator, h: float = 0.1, n_steps: int = 50, dt: float = 0.05) -> dict:
    """Transient heat trajectory. inputs = (f,); globals = (κ,); fields (n_steps + 1, N, 1) = u."""
    dom = random_domain(rng, "star", h)
    mesh, node_type, theta, _ = _star_boundary(rng, dom, arc_frac=(0.3, 0.6))
    kappa = float(rng.uniform(0.01, 0.05))
    f = gaussian_bumps(rng, dom.pos, n=2)
    u = gaussian_bumps(rng, dom.pos, n=int(rng.integers(2, 5)), width=(0.1, 0.25))
    fixed = np.flatnonzero((node_type == DIRICHLET) | (node_type == OBSTACLE))
    g = np.zeros(dom.n_nodes)
    g[node_type == DIRICHLET] = rng.uniform(-0.5, 0.5)
    for cx, cy, r in dom.holes:
        g[on_hole(dom.pos, [(cx, cy, r)])] = rng.uniform(-1.0, 1.0)
    u[fixed] = g[fixed]
    ib = Basis(mesh, ElementTriP1())
    K = asm(_diffusion, ib, k=ib.interpolate(np.ones(dom.n_nodes)))
    M = asm(_mass, ib)
    A = (M + dt * kappa * K).tocsr()
    free = np.setdiff1d(np.arange(dom.n_nodes), fixed)
    lu = factorized(sp.csc_matrix(A[free][:, free]))
    lift = A[free][:, fixed] @ g[fixed]
    src = dt * (M @ f)
    traj = [u.copy()]
    for _ in range(n_steps):
        rhs = M @ u + src
        u = u.copy()
        u[free] = lu(rhs[free] - lift)
        traj.append(u.copy())
    fields = np.stack(traj)[:, :, None]
    _check("heat", fields)
    return {"pos": dom.pos, "cells": dom.cells, "node_type": node_type,
            "inputs": f[:, None], "globals": np.array([kappa]), "fields": fields, "dt": dt}


def _nodal_von_mises(pos, cells, ux, uy, lam, mu):
    """Plane-strain von Mises stress per cell from P1 gradients, area-averaged onto nodes (N,)."""
    a, b, c = pos[cells[:, 0]], pos[cells[:, 1]], pos[cells[:, 2]]
    J = np.stack([b - a, c - a], axis=2)  # (K, 2, 2) columns are edge vectors
    det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
    Jinv_T = np.stack([np.stack([J[:, 1, 1], -J[:, 1, 0]], 1), np.stack([-J[:, 0, 1], J[:, 0, 0]], 1)], 1) / det[:, None, None]
    dN_ref = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    dN = np.einsum("kij,jn->kin", Jinv_T, dN_ref)  # (K, 2, 3) physical gradients of the 3 shape functions
    gx = np.einsum("kin,kn->ki", dN, ux[cells])
    gy = np.einsum("kin,kn->ki", dN, uy[cells])
    exx, eyy, exy = gx[:, 0], gy[:, 1], 0.5 * (gx[:, 1] + gy[:, 0])
    tr = exx + eyy
    sxx, syy, sxy = lam * tr + 2 * mu * exx, lam * tr + 2 * mu * eyy, 2 * mu * exy
    szz = lam * tr
    vm = np.sqrt(0.5 * ((sxx - syy) ** 2 + (syy - szz) ** 2 + (szz - sxx) ** 2) + 3 * sxy ** 2)
    area = 0.5 * np.abs(det)
    num, den = np.zeros(len(pos)), np.zeros(len(pos))
    for j in range(3):
        np.add.at(num, cells[:, j], vm * area)
        np.add.at(den, cells[:, j], area)
    return num / np.maximum(den, 1e-300)


def solve_elasticity(rng: np.random.Generator, h: float = 0.08) -> dict:
    """Linear elasticity on a plate with voids. globals = (ν, t_x, t_y); inputs empty (N, 0);
    fields (1, N, 3) = (u_x, u_y, σ_vM) with E = 1."""
    dom = random_domain(rng, "plate", h)
    mesh = MeshTri(np.ascontiguousarray(dom.pos.T), np.ascontiguousarray(dom.cells.T))
    nu = float(rng.uniform(0.2, 0.4))
    # oblique traction: magnitude in [0.05, 0.1], direction at least 20 degrees away from both axes, so every
    # displacement channel carries signal (a near-zero channel makes its relative L2 meaningless)
    mag = float(rng.uniform(0.05, 0.1))
    phi = float(np.deg2rad(rng.uniform(20.0, 70.0) + 90.0 * rng.integers(0, 4)))
    tx, ty = mag * np.cos(phi), mag * np.sin(phi)
    lam, mu = lame_parameters(1.0, nu)
    e = ElementVector(ElementTriP1())
    ib = Basis(mesh, e)
    K = asm(linear_elasticity(lam, mu), ib)
    eps = 1e-9
    bottom = mesh.facets_satisfying(lambda x: x[1] < eps, boundaries_only=True)
    top = mesh.facets_satisfying(lambda x: x[1] > 1 - eps, boundaries_only=True)
    fb = FacetBasis(mesh, e, facets=top)
    b = asm(LinearForm(lambda v, w: tx * v.value[0] + ty * v.value[1]), fb)
    D = ib.get_dofs(bottom).all()
    u = solve(*condense(K, b, D=D))
    ux, uy = u[ib.nodal_dofs[0]], u[ib.nodal_dofs[1]]
    vm = _nodal_von_mises(dom.pos, dom.cells, ux, uy, lam, mu)
    fields = np.stack([ux, uy, vm], 1)[None]
    _check("elasticity", fields)
    node_type = np.full(dom.n_nodes, INTERIOR, dtype=np.int64)
    bnd = np.unique(boundary_edges(dom.cells))
    node_type[bnd] = NEUMANN
    node_type[on_hole(dom.pos, dom.holes)] = OBSTACLE
    node_type[dom.pos[:, 1] < eps] = DIRICHLET
    return {"pos": dom.pos, "cells": dom.cells, "node_type": node_type,
            "inputs": np.zeros((dom.n_nodes, 0)), "globals": np.array([nu, tx, ty]), "fields": fields}

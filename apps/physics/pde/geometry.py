"""Random 2-D domains with holes, meshed with `triangle` (Shewchuk), and mesh graphs.

Domains (all lengths dimensionless, O(1)):
- ``star``: outer star polygon r(θ) = r0·(1 + Σ_k a_k cos kθ + b_k sin kθ) clipped to [0.5, 1.5]·r0, with 1-3 circular
  holes placed by rejection sampling (inside the outline, not overlapping each other).
- ``square``: square [-0.9, 0.9]^2 (corners: a shape the star family never has) with 1-3 circular holes.
- ``plate``: unit square with 1-3 circular voids (elasticity).
- ``channel``: DFG-like channel 2.2 x 0.41 with one circular obstacle (flow).

Node types (shared by every problem): 0 interior, 1 Dirichlet, 2 Neumann, 3 obstacle (hole / void boundary).
Graphs: PhysGTO-style undirected deduplicated mesh edges (sender = max(i, j), receiver = min(i, j)) or k nearest
neighbours from ``scipy.spatial.cKDTree`` (torch-geometric's ``knn_graph`` needs pyg-lib, which is unavailable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INTERIOR, DIRICHLET, NEUMANN, OBSTACLE = 0, 1, 2, 3
N_NODE_TYPES = 4


@dataclass
class Domain:
    """A meshed domain: ``pos`` (N, 2) float64, ``cells`` (K, 3) int64 triangles, ``holes`` list of (cx, cy, r),
    ``kind`` and ``outline`` (the outer polygon, (P, 2))."""

    pos: np.ndarray
    cells: np.ndarray
    holes: list = field(default_factory=list)
    kind: str = "star"
    outline: np.ndarray | None = None

    @property
    def n_nodes(self) -> int:
        return int(self.pos.shape[0])


def _circle(cx: float, cy: float, r: float, n: int) -> np.ndarray:
    th = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(th), cy + r * np.sin(th)], axis=1)


def _star_outline(rng: np.random.Generator, n: int, r0: float = 1.0) -> np.ndarray:
    th = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(th)
    for k in range(1, 4):
        r += rng.uniform(-0.12, 0.12) * np.cos(k * th) + rng.uniform(-0.12, 0.12) * np.sin(k * th)
    r = np.clip(r, 0.5, 1.5) * r0
    return np.stack([r * np.cos(th), r * np.sin(th)], axis=1)


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test; ``poly`` (P, 2), ``pts`` (Q, 2) -> (Q,) bool."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cond = (y0 > y) != (y1 > y)
    xint = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1e-300, y1 - y0)
    return (cond & (x < xint)).sum(axis=1) % 2 == 1


def _place_holes(rng, outline, n_holes, r_range, margin, box=None) -> list:
    holes: list = []
    for _ in range(200 * max(n_holes, 1)):
        if len(holes) == n_holes:
            break
        lo, hi = (outline.min(0), outline.max(0)) if box is None else box
        c = rng.uniform(lo, hi)
        r = rng.uniform(*r_range)
        ring = _circle(c[0], c[1], r + margin, 24)
        if not _inside(outline, ring).all():
            continue
        if any(np.hypot(c[0] - h[0], c[1] - h[1]) < r + h[2] + margin for h in holes):
            continue
        holes.append((float(c[0]), float(c[1]), float(r)))
    return holes


def mesh_polygon(outline: np.ndarray, holes: list, h: float, hole_pts: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Quality-mesh a polygon with circular holes. ``h`` target edge length -> (pos (N, 2), cells (K, 3))."""
    verts = [outline]
    segs = [np.stack([np.arange(len(outline)), (np.arange(len(outline)) + 1) % len(outline)], 1)]
    off = len(outline)
    for cx, cy, r in holes:
        n = max(8, min(hole_pts, int(np.ceil(2 * np.pi * r / h))))
        ring = _circle(cx, cy, r, n)
        verts.append(ring)
        segs.append(off + np.stack([np.arange(n), (np.arange(n) + 1) % n], 1))
        off += n
    geo = {"vertices": np.concatenate(verts), "segments": np.concatenate(segs)}
    if holes:
        geo["holes"] = np.array([[cx, cy] for cx, cy, _ in holes])
    import triangle  # only meshing needs it (the GPU machine reads packed samples and has no `triangle`)

    area = h * h * np.sqrt(3) / 4
    out = triangle.triangulate(geo, f"pq30a{area:.8f}")
    return out["vertices"].astype(np.float64), out["triangles"].astype(np.int64)


def _square_outline(h: float, half: float = 0.9) -> np.ndarray:
    n = max(4, int(round(2 * half / h)))
    s = np.linspace(-half, half, n, endpoint=False)
    lo, hi = -half + 0 * s, half + 0 * s
    return np.concatenate([np.stack([s, lo], 1), np.stack([hi, s], 1), np.stack([-s, hi], 1), np.stack([lo, -s], 1)])


def random_domain(rng: np.random.Generator, kind: str = "star", h: float = 0.1,
                  n_holes: tuple[int, int] | None = None) -> Domain:
    """Sample and mesh a random domain of the given ``kind`` at target edge length ``h``. ``n_holes`` (lo, hi):
    the number of holes tried is uniform in lo..hi inclusive (default 1..3; ``star`` and ``square`` only; fewer are
    placed when they do not fit: ``len(Domain.holes)`` is the count)."""
    lo, hi = (1, 3) if n_holes is None else n_holes
    if kind in ("star", "square"):
        outline = _star_outline(rng, max(24, int(2 * np.pi * 1.2 / h))) if kind == "star" else _square_outline(h)
        holes = _place_holes(rng, outline, int(rng.integers(lo, hi + 1)), (0.08, 0.22), margin=max(0.08, h))
    elif kind == "plate":
        n = max(4, int(round(1.0 / h)))
        s = np.linspace(0, 1, n, endpoint=False)
        outline = np.concatenate([np.stack([s, 0 * s], 1), np.stack([1 + 0 * s, s], 1),
                                  np.stack([1 - s, 1 + 0 * s], 1), np.stack([0 * s, 1 - s], 1)])
        holes = _place_holes(rng, outline, int(rng.integers(1, 4)), (0.06, 0.18), margin=max(0.06, h),
                             box=(np.array([0.1, 0.1]), np.array([0.9, 0.9])))
    elif kind == "channel":
        L, H = 2.2, 0.41
        nx, ny = max(8, int(round(L / h))), max(3, int(round(H / h)))
        sx, sy = np.linspace(0, L, nx, endpoint=False), np.linspace(0, H, ny, endpoint=False)
        outline = np.concatenate([np.stack([sx, 0 * sx], 1), np.stack([L + 0 * sy, sy], 1),
                                  np.stack([L - sx, H + 0 * sx], 1), np.stack([0 * sy, H - sy], 1)])
        r = float(rng.uniform(0.04, 0.06))  # centre off the mid-line (0.205) by up to ~0.06: asymmetric wakes
        holes = [(float(rng.uniform(0.15, 0.35)), float(rng.uniform(0.15, 0.26)), r)]
    else:
        raise ValueError(f"unknown domain kind {kind!r}; expected star, square, plate or channel")
    pos, cells = mesh_polygon(outline, holes, h, hole_pts=32 if kind == "channel" else 20)
    return Domain(pos=pos, cells=cells, holes=holes, kind=kind, outline=outline)


def boundary_edges(cells: np.ndarray) -> np.ndarray:
    """Edges that belong to exactly one triangle, (B, 2) sorted node pairs."""
    e = np.sort(np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    return uniq[counts == 1]


def on_hole(pos: np.ndarray, holes: list, tol: float = 1e-6) -> np.ndarray:
    """(N,) bool: node lies on the circle of one of ``holes`` (within ``tol`` relative to its radius)."""
    mask = np.zeros(len(pos), dtype=bool)
    for cx, cy, r in holes:
        mask |= np.abs(np.hypot(pos[:, 0] - cx, pos[:, 1] - cy) - r) < max(tol, 1e-3 * r)
    return mask


def dirichlet_distance(pos: np.ndarray, node_type: np.ndarray) -> np.ndarray:
    """Euclidean distance of every node to the nearest Dirichlet node (N,), 0 on them (scipy cKDTree). A known
    geometric input, like the signed distance functions Transolver / AirfRANS feed their models."""
    fixed = np.flatnonzero(node_type == DIRICHLET)
    if len(fixed) == 0:
        return np.zeros(len(pos))
    from scipy.spatial import cKDTree  # here, not at the top: `linmix-physics synth --help` stays quick

    return cKDTree(pos[fixed]).query(pos)[0]


def mesh_edges(cells: np.ndarray) -> np.ndarray:
    """PhysGTO ``make_edges``: undirected, deduplicated triangle edges stored once as (2, E) with
    sender = max(i, j) (row 0) and receiver = min(i, j) (row 1), sorted lexicographically."""
    cells = np.asarray(cells, dtype=np.int64)
    e = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [0, 2]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    return np.ascontiguousarray(np.stack([e[:, 1], e[:, 0]]))


def knn_edges(pos: np.ndarray, k: int = 6) -> np.ndarray:
    """k-nearest-neighbour graph for point clouds via ``cKDTree``, made undirected and deduplicated in the same
    (sender = max, receiver = min) convention as :func:`mesh_edges`. Returns (2, E) int64."""
    n = len(pos)
    if n < 2:
        return np.zeros((2, 0), dtype=np.int64)
    kk = min(k + 1, n)
    from scipy.spatial import cKDTree

    _, idx = cKDTree(pos).query(pos, k=kk)
    src = np.repeat(np.arange(n), kk - 1)
    dst = idx[:, 1:].reshape(-1)
    e = np.unique(np.sort(np.stack([src, dst], 1), axis=1), axis=0)
    e = e[e[:, 0] != e[:, 1]]
    return np.ascontiguousarray(np.stack([e[:, 1], e[:, 0]]).astype(np.int64))


def cell_areas(pos: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Signed areas of triangles (K,)."""
    a, b, c = pos[cells[:, 0]], pos[cells[:, 1]], pos[cells[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

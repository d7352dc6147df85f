"""Domain families of the Darcy generator used by the out-of-distribution benchmark: square outlines and a chosen
hole-count range."""

from __future__ import annotations

import numpy as np

from linmix.apps.physics.pde.geometry import random_domain
from linmix.apps.physics.pde.solvers import solve_darcy


def test_square_domains_and_hole_counts():
    sq = random_domain(np.random.default_rng(0), "square", h=0.3, n_holes=(2, 2))
    assert np.allclose(np.abs(sq.pos).max(0), 0.9) and len(sq.holes) == 2
    assert random_domain(np.random.default_rng(1), "star", h=0.3, n_holes=(0, 0)).holes == []
    assert len(random_domain(np.random.default_rng(2), "star", h=0.15, n_holes=(4, 4)).holes) == 4
    s = solve_darcy(np.random.default_rng(3), h=0.3, domain_seed=None, kind="square", n_holes=(1, 1))
    assert np.isfinite(s["fields"]).all() and set(np.unique(s["node_type"])) == {0, 1, 2, 3}


def test_default_hole_range_is_one_to_three():
    a = random_domain(np.random.default_rng(5), "star", h=0.3)
    b = random_domain(np.random.default_rng(5), "star", h=0.3, n_holes=(1, 3))
    assert np.array_equal(a.pos, b.pos) and a.holes == b.holes

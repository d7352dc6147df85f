"""Fixtures for the physics tests: one thread (small graphs run faster without intra-op threads on a loaded
2-core machine), tiny synthetic Darcy / heat sets generated once per session into a temp folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def darcy_dir(tmp_path_factory):
    from linmix.apps.physics.pde.synth import synthesize

    out = tmp_path_factory.mktemp("darcy")
    s = synthesize("darcy", 8, out, seed=0, h=0.3, workers=1, progress=False, random_domains=True)
    assert s["written"] == 8
    return out


@pytest.fixture(scope="session")
def heat_dir(tmp_path_factory):
    from linmix.apps.physics.pde.synth import synthesize

    out = tmp_path_factory.mktemp("heat")
    s = synthesize("heat", 6, out, seed=0, h=0.3, workers=1, n_steps=6, progress=False)
    assert s["written"] == 6
    return out

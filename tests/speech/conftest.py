"""Fixtures for the speech tests: a tiny espeak-ng corpus in the LibriMix layout (generated once per session)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from linmix.apps.speech.synth import generate

    root = tmp_path_factory.mktemp("speech_synth")
    generate(str(root), 2, {"train-100": 6, "dev": 2, "test": 2}, n_speakers=16, seed=0, progress=False)
    return root

"""glibc malloc thresholds set by the CLIs (linmix.shared.allocator): applied on glibc, skipped when the user chose."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from linmix.shared.allocator import tune_malloc; print(tune_malloc(), tune_malloc())"
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _run(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LINMIX_MALLOC"}
    return subprocess.run([sys.executable, "-c", CODE], env=clean | env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_thresholds_applied_once_on_glibc():
    assert _run() == "True True"


@pytest.mark.parametrize("env", [{"LINMIX_MALLOC": "default"}, {"MALLOC_TRIM_THRESHOLD_": "1048576"},
                                 {"MALLOC_MMAP_THRESHOLD_": "1048576"}])
def test_user_choice_wins(env):
    assert _run(**env) == "False False"


def test_cli_sets_them(monkeypatch):
    from linmix.shared import lightning_cli

    calls = []
    monkeypatch.setattr(lightning_cli, "tune_malloc", lambda: calls.append(1) or True)
    monkeypatch.setattr(lightning_cli.LightningCLI, "__init__", lambda self, *a, **k: None)
    lightning_cli.LinmixCLI(app="ctr")
    assert calls == [1]

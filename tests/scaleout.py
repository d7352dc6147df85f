"""Helpers of the per-app DDP tests (``tests/<app>/test_<app>_ddp.py``): run a console script with 2 gloo processes
on CPU, read what the CSV logger wrote. Loaded by path (``load()``), like the other shared test helpers."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def load():
    spec = importlib.util.spec_from_file_location("linmix_tests_scaleout", Path(__file__))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def exe(app: str) -> Path:
    return Path(sys.executable).parent / f"linmix-{app}"


def run_ddp(app: str, args: list[str], cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    """``linmix-<app> <args>`` with 2 gloo processes, one thread each; asserts success and that 2 ranks ran."""
    env = dict(os.environ, OMP_NUM_THREADS="1", LINMIX_BACKEND="torch")
    out = subprocess.run([str(exe(app)), *args, *DDP, *QUIET], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "MEMBER: 2/2" in log and "gloo" in log, log[-2000:]
    return out


def metrics(log_dir: Path) -> dict[str, float]:
    """The last logged value of every column of ``log_dir/metrics.csv``."""
    last: dict[str, float] = {}
    with open(log_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            last.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return last


def versions(logs: Path) -> list[Path]:
    """``lightning_logs/version_N`` folders under ``logs``, in N order."""
    return sorted((logs / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def assert_close_metrics(got: dict[str, float], want: dict[str, float], prefix: str, tol: float = 1e-6) -> int:
    """Every ``prefix`` metric of ``want`` is in ``got`` and equal within ``tol`` (NaN == NaN); returns the count."""
    keys = [k for k in want if k.startswith(prefix)]
    assert keys, f"no {prefix} metrics in {sorted(want)}"
    for k in keys:
        a, b = got[k], want[k]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol, (k, a, b)
    return len(keys)

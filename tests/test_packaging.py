"""One import root: an installed linmix is the package ``linmix`` and nothing else at the top level."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_package_list_matches_the_folders():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"linmix", "linmix.models"} | {"linmix." + ".".join(p.parent.relative_to(ROOT).parts)
                          for top in ("apps", "shared") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == found, f"pyproject packages differ from the folders: missing {found - listed}, extra {listed - found}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip wheel .`` (not editable), unpacked into a folder that stands in for a fresh site-packages."""
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "data", "*.png")
    shutil.copytree(ROOT, src, ignore=skip)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(out.glob("linmix-*.whl"))
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def _run(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], cwd=site, env=env, capture_output=True, text=True,
                          timeout=300)


def test_wheel_has_one_top_level_package(installed: Path):
    tops = {p.name for p in installed.iterdir()}
    assert tops == {"linmix", "linmix-0.1.0.dist-info"}, tops
    assert not (installed / "linmix" / "tests").exists() and not (installed / "linmix" / "benchmarks").exists()


def test_installed_imports_linmix_not_apps(installed: Path):
    r = _run(installed, "import linmix, linmix.shared, linmix.apps.ehr; print(linmix.__file__)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith(str(installed))
    for generic in ("apps", "shared"):
        r = _run(installed, f"import {generic}")
        assert r.returncode != 0 and "No module named" in r.stderr


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_installed_console_scripts_answer_help(installed: Path, script: str):
    module, func = SCRIPTS[script].split(":")
    r = _run(installed, f"import sys; from {module} import {func}; sys.argv = ['{script}', '--help']; "
                        f"sys.exit({func}())")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"usage: {script}" in r.stdout


def test_installed_package_carries_the_models_folder(installed: Path):
    assert (installed / "linmix" / "models" / "README.md").is_file()
    r = _run(installed, "from linmix.shared.models import models_root; print(models_root())")
    assert r.returncode == 0 and r.stdout.strip() == str(installed / "linmix" / "models"), r.stderr[-2000:]

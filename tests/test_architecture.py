"""Dependency rules: shared never imports an app; apps never import each other; model files import no Lightning;
no `lightning.*` namespace anywhere; mamba_ssm / causal_conv1d never imported at module top."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
APPS = sorted(p.name for p in (ROOT / "apps").iterdir() if p.is_dir() and (p / "__init__.py").exists())


def _imports(path: pathlib.Path, top_level_only: bool = False):
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _own(module: str) -> str:
    """``linmix.apps.ehr.x`` -> ``apps.ehr.x`` (the project's modules by their folder path); others unchanged."""
    return module.removeprefix("linmix.")


def _py(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def test_shared_never_imports_apps():
    bad = [(p.name, m) for p in _py("shared") for m in _imports(p) if _own(m).split(".")[0] == "apps"]
    assert not bad, bad


@pytest.mark.parametrize("app", APPS)
def test_apps_do_not_import_each_other(app):
    bad = [(p.name, m) for p in _py(f"apps/{app}") for m in _imports(p)
           if _own(m).startswith("apps.") and _own(m).split(".")[1] != app]
    assert not bad, bad


def test_model_files_do_not_import_lightning():
    model_files = [p for p in _py("apps") if p.name == "model.py"] + [
        p for p in _py("shared") if p.name not in ("lightning.py", "time_budget.py", "lightning_cli.py")]
    bad = [(str(p.relative_to(ROOT)), m) for p in model_files for m in _imports(p)
           if m.split(".")[0] in ("pytorch_lightning", "lightning")]
    assert not bad, bad


def test_one_lightning_namespace():
    files = _py("apps") + _py("shared") + _py("benchmarks") + _py("tests")
    bad = [(str(p.relative_to(ROOT)), m) for p in files for m in _imports(p) if m.split(".")[0] == "lightning"]
    assert not bad, bad


def test_cuda_only_packages_never_imported_at_module_top():
    files = _py("apps") + _py("shared")
    bad = [(str(p.relative_to(ROOT)), m) for p in files for m in _imports(p, top_level_only=True)
           if m.split(".")[0] in ("mamba_ssm", "causal_conv1d", "triton")]
    assert not bad, bad

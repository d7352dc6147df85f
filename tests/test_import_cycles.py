"""No import cycles among the project's modules (``linmix.apps.*`` and ``linmix.shared.*``).

The graph is read from the source with :mod:`ast`: every ``import linmix...`` / ``from linmix... import ...`` and every
relative import, at module level or inside a function. An edge goes to the module named; ``from pkg import name``
goes to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``). Importing a submodule does not add an
edge to its parent package.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Optional, Set

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOPS = ("apps", "shared")


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    """``<root>/apps/ehr/ingest/read.py`` -> ``linmix.apps.ehr.ingest.read``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["linmix", *parts])


def _targets(node: ast.AST, name: str, is_package: bool, modules: Set[str]) -> List[str]:
    """Project modules that one import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        if sub in modules:
            out.append(sub)
        elif origin in modules:
            out.append(origin)
    return out


def import_graph(root: pathlib.Path = ROOT, tops=TOPS) -> Dict[str, Set[str]]:
    """Module -> the project modules it imports (anywhere in its body)."""
    files = {module_name(p, root): p for top in tops for p in sorted((root / top).rglob("*.py"))}
    modules = set(files)
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            edges.update(_targets(node, name, is_package, modules))
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle as ``[a, b, ..., a]``, or None (iterative depth-first search, deterministic order)."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_graph_sees_absolute_relative_and_function_level_imports():
    g = import_graph()
    assert len(g) > 50
    assert "linmix.apps.ehr.ingest.read" in g["linmix.apps.ehr.ingest.pipeline"]  # absolute, module level
    assert "linmix.apps.speech.audio" in g["linmix.apps.speech.data"]  # relative (from .audio import ...)
    assert "linmix.apps.speech.synth" in g["linmix.apps.speech.data"]  # relative, inside a method
    assert "linmix.apps.ehr.synth.writer" in g["linmix.apps.ehr.synth.cohort"]  # absolute, inside a function
    assert "linmix.shared" in g["linmix.apps.ehr.model"]  # from linmix.shared import MixerStack -> the package


def test_find_cycle_reports_a_planted_cycle(tmp_path):
    pkg = tmp_path / "apps" / "x"
    pkg.mkdir(parents=True)
    (tmp_path / "apps" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from linmix.apps.x.c import g\n")
    (pkg / "c.py").write_text("from .a import h\n")
    g = import_graph(tmp_path, tops=("apps",))
    assert find_cycle(g) == ["linmix.apps.x.a", "linmix.apps.x.b", "linmix.apps.x.c", "linmix.apps.x.a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(tmp_path, tops=("apps",))) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)

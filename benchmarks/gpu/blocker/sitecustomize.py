"""Local rehearsal of the GPU machine's Python: packages it lacks fail to import (see ../README.md).

Put this folder first on PYTHONPATH (``benchmarks/gpu/local_check.sh`` does) to find, on this CPU machine, any import
of a package that the device image does not have and that is not carried as a wheel. ``importlib.util.find_spec``
answers None for them, as it does where they are absent (jsonargparse probes for pydantic that way).
"""

import importlib.abc
import importlib.util
import sys

MISSING = ("polars", "orjson", "msgspec", "fhir", "fhir_core", "skfem", "meshio", "pydantic", "pydantic_core", "triangle")


def _blocked(name: str) -> bool:
    return name.split(".")[0] in MISSING


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"{name} is not on the GPU machine (benchmarks/gpu/blocker)", name=name)
        return None


_find_spec = importlib.util.find_spec


def _find_spec_absent(name, package=None):
    return None if _blocked(name) else _find_spec(name, package)


importlib.util.find_spec = _find_spec_absent
sys.meta_path.insert(0, _Block())

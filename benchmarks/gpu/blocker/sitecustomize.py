"""Local rehearsal of the GPU machine's Python: packages it lacks fail to import (see ../README.md).

Put this folder first on PYTHONPATH (``benchmarks/gpu/local_check.sh`` does) to find, on this CPU machine, any import
of a package that the device image does not have and that is not carried as a wheel.
"""

import importlib.abc
import sys

MISSING = ("polars", "orjson", "msgspec", "fhir", "fhir_core", "skfem", "meshio", "pydantic", "pydantic_core")


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ImportError(f"{name} is not on the GPU machine (benchmarks/gpu/blocker)")
        return None


sys.meta_path.insert(0, _Block())

"""Import-string resolution, standard library only (used by the dispatcher and the LightningCLI factory)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load"]


def load(target: str) -> Any:
    """``"package.module:attribute"`` -> that attribute (importing the module)."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"{target!r}: expected 'package.module:attribute'")
    return getattr(importlib.import_module(module), attr)

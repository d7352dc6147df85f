"""TorchScript export of an app's inner ``nn.Module`` with its config embedded, and a round-trip check.

TorchScript is deprecated upstream in favour of ``torch.export`` but still works in torch 2.14 (``torch.jit.script``
and ``torch.jit.save`` emit DeprecationWarnings); scripting (not tracing) keeps data-dependent lengths dynamic,
which the round-trip check verifies at input sizes unlike any example.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import torch
from torch import nn

__all__ = ["export_torchscript", "load_torchscript", "check_roundtrip", "CONFIG_FILE"]

CONFIG_FILE = "config.json"


def _script(net: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        return torch.jit.script(net)


def export_torchscript(net: nn.Module, path: str | os.PathLike, config: Dict[str, Any]) -> Path:
    """Script ``net`` (in eval mode) and save it to ``path`` atomically with ``config`` as ``config.json`` inside."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    try:
        scripted = _script(net)
    finally:
        net.train(was_training)
    extra = {CONFIG_FILE: json.dumps(config, sort_keys=True, default=str)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            torch.jit.save(scripted, tmp, _extra_files=extra)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_torchscript(path: str | os.PathLike, map_location: str = "cpu") -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load an exported model and its embedded config."""
    extra = {CONFIG_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    raw = extra[CONFIG_FILE]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw else {}
    return module, config


def _flatten(out: Any) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten(out[k])]
    raise TypeError(f"check_roundtrip: unsupported output type {type(out).__name__}")


@torch.no_grad()
def check_roundtrip(
    net: nn.Module, path: str | os.PathLike, inputs: Sequence[Tuple[Any, ...]], rtol: float = 1e-4, atol: float = 1e-5
) -> float:
    """Reload ``path`` and compare with eager ``net`` on every input tuple; return the max abs difference.

    Raises AssertionError naming the input index and difference when outputs differ beyond tolerance. Pass at least
    two input sizes, one unlike any used while exporting.
    """
    if len(inputs) < 2:
        raise ValueError("check_roundtrip: pass at least two input tuples of different sizes")
    loaded, _ = load_torchscript(path)
    was_training = net.training
    net.eval()
    worst = 0.0
    try:
        for i, args in enumerate(inputs):
            ref, got = _flatten(net(*args)), _flatten(loaded(*args))
            if len(ref) != len(got):
                raise AssertionError(f"check_roundtrip: input {i}: {len(got)} outputs, expected {len(ref)}")
            for r, g in zip(ref, got):
                if r.shape != g.shape:
                    raise AssertionError(f"check_roundtrip: input {i}: shape {list(g.shape)} != {list(r.shape)}")
                diff = (r.float() - g.float()).abs().max().item() if r.numel() else 0.0
                worst = max(worst, diff)
                if not torch.allclose(r.float(), g.float(), rtol=rtol, atol=atol):
                    raise AssertionError(f"check_roundtrip: input {i}: max abs diff {diff:.3g} over tolerance")
    finally:
        net.train(was_training)
    return worst

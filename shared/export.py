"""Export of an app's inner ``nn.Module`` with its config embedded, in three formats, each round-trip checked.

* ``torchscript`` (``.pt``): ``torch.jit.script``; deprecated upstream in favour of ``torch.export`` but still working
  in torch 2.14 (DeprecationWarnings silenced here); scripting (not tracing) keeps data-dependent lengths dynamic.
* ``export`` (``.pt2``): a ``torch.export`` program with dynamic batch / length / node-count axes
  (:mod:`linmix.shared.export_program`).
* ``onnx`` (``.onnx``): the dynamo ONNX exporter, run by ONNX Runtime (CPU) in the round-trip check.

:func:`export_formats` writes the requested formats and checks each against the eager module at input sizes unlike the
export example; every app's ``export`` tool goes through it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from linmix.shared.argtypes import EXPORT_FORMATS

__all__ = ["export_torchscript", "load_torchscript", "check_roundtrip", "export_formats", "parse_formats",
           "format_paths", "load_runner", "report_lines", "CONFIG_FILE", "FORMATS", "SUFFIX"]

CONFIG_FILE = "config.json"
FORMATS = EXPORT_FORMATS
SUFFIX = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx"}


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


def load_runner(path: str | os.PathLike, fmt: str = "torchscript", threads: int = 0) -> Callable[..., Any]:
    """A callable running the exported file like the eager module (ONNX: ONNX Runtime CPU, outputs as tensors)."""
    if fmt == "torchscript":
        return load_torchscript(path)[0]
    from linmix.shared.export_program import load_program, onnx_runner

    if fmt == "export":
        return load_program(path)[0]
    if fmt == "onnx":
        return onnx_runner(path, threads)
    raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")


@torch.no_grad()
def check_roundtrip(
    net: nn.Module, path: str | os.PathLike, inputs: Sequence[Tuple[Any, ...]], rtol: float = 1e-4, atol: float = 1e-5,
    fmt: str = "torchscript",
) -> float:
    """Reload ``path`` (format ``fmt``) and compare with eager ``net`` on every input tuple; return the max abs
    difference.

    Raises AssertionError naming the input index and difference when outputs differ beyond tolerance. Pass at least
    two input sizes, one unlike any used while exporting.
    """
    if len(inputs) < 2:
        raise ValueError("check_roundtrip: pass at least two input tuples of different sizes")
    loaded = load_runner(path, fmt)
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


def parse_formats(values: Iterable[str] | str | None) -> Tuple[str, ...]:
    """Format names (each may be a comma list) -> formats in canonical order; none given -> all three.

    Raises :class:`linmix.shared.errors.UserError` for an unknown name."""
    import argparse

    from linmix.shared.argtypes import chosen_formats, export_format_list
    from linmix.shared.errors import UserError

    if values is None:
        return FORMATS
    try:
        return chosen_formats([export_format_list(v) for v in ([values] if isinstance(values, str) else values)])
    except argparse.ArgumentTypeError as e:
        raise UserError(f"--format: {e}") from None


def format_paths(out: str | os.PathLike, formats: Sequence[str]) -> Dict[str, Path]:
    """One path per format from ``out``: a file path keeps its stem and takes each format's suffix (``.pt`` /
    ``.pt2`` / ``.onnx``; TorchScript keeps any other suffix given, e.g. ``model.ts``)."""
    out = Path(out)
    known = set(SUFFIX.values())
    return {f: (out if f == "torchscript" and out.suffix and out.suffix not in known - {".pt"}
                else out.with_suffix(SUFFIX[f])) for f in formats}


def export_formats(
    net: nn.Module, paths: Dict[str, Path], config: Dict[str, Any], check_inputs: Sequence[Tuple[Any, ...]], *,
    example: Tuple[Any, ...], dims: Sequence[Optional[Dict[int, str]]], input_names: Sequence[str],
    output_names: Sequence[str], traced_net: Optional[nn.Module] = None,
) -> List[Dict[str, Any]]:
    """Write ``net`` in every format of ``paths`` ({format: path}) with ``config`` embedded, and check each round trip.

    ``example`` (no ``None`` entries) is traced by ``torch.export`` / ONNX with the ``dims`` axes dynamic; the checks run
    on ``check_inputs`` (>= 2 tuples, sizes unlike ``example``; ``None`` entries are skipped for ONNX).
    ``traced_net`` replaces ``net`` for the traced formats (e.g. a module without data-dependent input checks); the
    checks compare against ``net`` either way. Returns one dict per format: format, path, bytes, max_abs_diff.
    """
    from linmix.shared.export_program import export_onnx, export_program

    traced = traced_net if traced_net is not None else net
    results = []
    for fmt, path in paths.items():
        if fmt == "torchscript":
            export_torchscript(net, path, config)
        elif fmt == "export":
            export_program(traced, path, config, example, dims)
        elif fmt == "onnx":
            export_onnx(traced, path, config, example, dims, input_names, output_names)
        else:
            raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
        diff = check_roundtrip(net, path, check_inputs, fmt=fmt)
        results.append({"format": fmt, "path": str(path), "bytes": Path(path).stat().st_size, "max_abs_diff": diff})
    return results


def report_lines(results: Sequence[Dict[str, Any]], checked_on: str) -> List[str]:
    """One printed line per exported format: path, size and the round-trip difference at ``checked_on``."""
    return [f"exported {r['format']:<11s} {r['path']} ({r['bytes'] / 1e6:.2f} MB); round trip {checked_on}: "
            f"max abs diff {r['max_abs_diff']:.2e}" for r in results]

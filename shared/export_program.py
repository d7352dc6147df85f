"""``torch.export`` programs (``.pt2``) and ONNX files (dynamo exporter) with an embedded config, and their loaders.

Both formats trace the module once with symbolic sizes: ``dims`` names the dynamic axes of every input
(``[{0: "batch", 1: "length"}, ...]``, recorded in the config by the apps). Every other axis is fixed at the example's
size. A model whose code branches on a dynamic size in Python cannot keep it symbolic: export then fails with the axis
named, and the model needs an export path without the branch (e.g. :func:`linmix.shared.ssd.ssd_padded`).

The ``.pt2`` file holds the config as ``config.json`` among ``torch.export.save``'s extra files; the ``.onnx`` file holds
it in the model's ``metadata_props`` under the key ``config.json`` (read with ONNX Runtime's
``session.get_modelmeta().custom_metadata_map``). Writes are atomic (temp file in the target folder, then rename).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["Dims", "export_program", "load_program", "export_onnx", "load_onnx", "onnx_runner", "CONFIG_KEY"]

CONFIG_KEY = "config.json"
Dims = Sequence[Optional[Dict[int, str]]]  # per input: {axis: dim name} or None (all axes fixed)


def _dynamic_shapes(dims: Dims, n_inputs: int) -> Tuple[Any, ...]:
    """``Dim.AUTO`` on every named axis: the exporter keeps it symbolic and turns the size relations it cannot prove
    (ceil-divided frame counts, chunk counts) into runtime checks instead of refusing; :func:`_check_dynamic` then
    verifies that no named axis was specialised to the example's size."""
    from torch.export import Dim

    if len(dims) != n_inputs:
        raise ValueError(f"export: dims names {len(dims)} inputs, the example has {n_inputs}")
    return tuple(None if d is None else {axis: Dim.AUTO for axis in d} for d in dims)


def _check_dynamic(ep: Any, dims: Dims) -> None:
    """Raise when an axis named dynamic in ``dims`` came out of ``torch.export`` as a fixed size."""
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    user = [n for n, spec in zip(placeholders, ep.graph_signature.input_specs) if spec.kind.name == "USER_INPUT"]
    for node, d in zip(user, dims):
        for axis, name in (d or {}).items():
            size = node.meta["val"].shape[axis]
            if isinstance(size, int):
                raise RuntimeError(f"export: the model fixed the {name!r} axis of input {node.name!r} at {size} "
                                   "(its code branches on that size); it cannot be exported with that axis dynamic")


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints and deprecation chatter (errors still raise)."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def _eval(net: nn.Module):
    was = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was)


def _trace(net: nn.Module, example: Tuple[Any, ...], dims: Dims):
    for i, (a, d) in enumerate(zip(example, dims)):
        small = [axis for axis in (d or {}) if a.shape[axis] < 2]
        if small:  # torch.export fixes every example size of 0 or 1
            raise ValueError(f"export: example input {i} has size {a.shape[small[0]]} on dynamic axis {small[0]}; "
                             "give at least 2 so the axis can stay symbolic")
    with _eval(net), _quiet(), torch.no_grad():
        ep = torch.export.export(net, tuple(example), dynamic_shapes=_dynamic_shapes(dims, len(example)), strict=False)
    _check_dynamic(ep, dims)
    return ep


def export_program(net: nn.Module, path: str | os.PathLike, config: Dict[str, Any], example: Tuple[Any, ...],
                   dims: Dims) -> Path:
    """``torch.export`` ``net`` (eval mode) at ``example`` with the ``dims`` axes dynamic; save to ``path`` (.pt2)."""
    ep = _trace(net, example, dims)
    extra = {CONFIG_KEY: json.dumps(config, sort_keys=True, default=str)}
    return _atomic(Path(path), lambda tmp: torch.export.save(ep, tmp, extra_files=extra))


def load_program(path: str | os.PathLike) -> Tuple[Callable[..., Any], Dict[str, Any]]:
    """Load a ``.pt2`` file: (callable module, embedded config)."""
    extra = {CONFIG_KEY: ""}
    with _quiet():
        ep = torch.export.load(str(path), extra_files=extra)
    raw = extra[CONFIG_KEY]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw else {}
    return ep.module(), config


def export_onnx(net: nn.Module, path: str | os.PathLike, config: Dict[str, Any], example: Tuple[Any, ...],
                dims: Dims, input_names: Sequence[str], output_names: Sequence[str], opset: int = 18) -> Path:
    """ONNX via the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with ``config`` in ``metadata_props``.

    ``input_names`` name the ONNX inputs in ``example`` order (the names a serving client feeds)."""
    if len(input_names) != len(example):
        raise ValueError(f"export_onnx: {len(input_names)} input names for {len(example)} inputs")
    with _eval(net), _quiet(), torch.no_grad():
        prog = torch.onnx.export(net, tuple(example), dynamic_shapes=_dynamic_shapes(dims, len(example)),
                                 input_names=list(input_names), output_names=list(output_names), dynamo=True,
                                 opset_version=opset, verbose=False, optimize=True)
    prog.model.metadata_props[CONFIG_KEY] = json.dumps(config, sort_keys=True, default=str)

    def write(tmp: str) -> None:
        with _quiet():
            prog.save(tmp, external_data=False)
    return _atomic(Path(path), write)


def load_onnx(path: str | os.PathLike, threads: int = 0):
    """ONNX Runtime CPU session for ``path`` and its embedded config; ``threads`` > 0 fixes the intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map.get(CONFIG_KEY, "")
    return sess, (json.loads(raw) if raw else {})


def onnx_runner(path: str | os.PathLike, threads: int = 0) -> Callable[..., List[torch.Tensor]]:
    """A callable taking the exported inputs as tensors (``None`` ones skipped) and returning the outputs as tensors."""
    sess, _ = load_onnx(path, threads)
    names = [i.name for i in sess.get_inputs()]

    def run(*args: Any) -> List[torch.Tensor]:
        given = [a for a in args if a is not None]
        if len(given) != len(names):
            raise ValueError(f"onnx model takes {len(names)} inputs ({names}), got {len(given)}")
        feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, given)}
        return [torch.from_numpy(o) for o in sess.run(None, feeds)]
    return run

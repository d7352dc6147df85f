"""``linmix-physics export``: TorchScript, ``torch.export`` and ONNX of the trained operator (normalisers included).

Exported signature: ``forward(pos (N, 2), feats (N, F), node_type (N,) int64, edge_index (2, E) int64,
batch (N,) int64 | None = None) -> fields (N, C)`` in physical units (the ``.pt2`` and ``.onnx`` files: one mesh per
call, no ``batch``; node and edge counts dynamic), ``feats`` = [state (transient), inputs,
globals per node, time (transient)] as described in the embedded ``config.json``. The round trip is checked on two
meshes of different sizes (two given samples, or two freshly synthesised ones at different resolutions).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from linmix.apps.physics.pde.sample_io import load_sample
from linmix.apps.physics.rollout_tool import check_problem, load_checkpoint
from linmix.shared.argtypes import add_format_argument, chosen_formats
from linmix.shared.errors import UserError

log = logging.getLogger("linmix.physics.export")


def operator_inputs(sample: dict, transient: bool) -> tuple:
    """Exported-model inputs for a sample dict: (pos, feats, node_type, edge_index); transient uses frame 0, t = 0."""
    import torch

    from linmix.apps.physics.dataset import build_edges

    n = len(sample["pos"])
    parts = []
    if transient:
        parts.append(np.asarray(sample["fields"][0], np.float32))
    parts.append(np.asarray(sample["inputs"], np.float32).reshape(n, -1))
    parts.append(np.broadcast_to(np.asarray(sample["globals"], np.float32).reshape(1, -1), (n, len(sample["globals"]))))
    if transient:
        parts.append(np.zeros((n, 1), np.float32))
    feats = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=1)))
    return (torch.as_tensor(np.asarray(sample["pos"], np.float32)), feats,
            torch.as_tensor(np.asarray(sample["node_type"], np.int64)), torch.as_tensor(build_edges(sample)))


def export_config(lit) -> dict:
    spec = lit.spec
    return {"app": "physics", "problem": spec.name, "channels": list(spec.channels), "inputs": list(spec.inputs),
            "globals": list(spec.globals), "transient": spec.transient, "imposed_types": list(spec.imposed_types),
            "feature_layout": (["state:" + c for c in spec.channels] if spec.transient else [])
            + list(spec.inputs) + list(spec.globals) + (["time"] if spec.transient else []),
            "node_types": {"0": "interior", "1": "Dirichlet", "2": "Neumann", "3": "obstacle"},
            "net": dict(lit.hparams["net"]),
            "hparams": {k: v for k, v in dict(lit.hparams).items() if isinstance(v, (int, float, str, bool))}}


def export_operator(lit, out: str | Path, samples: list[dict], where: list[str] | None = None,
                    formats=("torchscript",)) -> list[dict]:
    """Export ``lit.exportable()`` beside ``out`` in ``formats`` (``.pt`` / ``.pt2`` / ``.onnx``) and check each round
    trip on ``samples`` (>= 2 meshes of different sizes, of the checkpoint's problem, named ``where`` in messages).
    Returns one result dict per format (path, bytes, max_abs_diff). Raises :class:`UserError` for fewer than two mesh
    sizes, a sample of another problem, or a non-finite prediction.

    The traced formats (``export``, ``onnx``) take one mesh per call: ``pos, feats, node_type, edge_index`` with the
    node and edge counts dynamic (no ``batch`` argument); TorchScript keeps the optional ``batch``."""
    import torch

    from linmix.shared.export import export_formats, format_paths

    where = list(where or [f"sample {i}" for i in range(len(samples))])
    sizes = {len(s["pos"]) for s in samples}
    if len(samples) < 2 or len(sizes) < 2:
        raise UserError(f"export: the round trip needs two meshes of different sizes, got {len(samples)} sample(s) "
                        f"with node counts {sorted(len(s['pos']) for s in samples)}; pass --sample twice with "
                        "meshes of different sizes, or no --sample to synthesise two")
    for s, w in zip(samples, where):
        check_problem(lit, s, w)
    net = lit.exportable().eval()
    inputs = [operator_inputs(s, lit.spec.transient) for s in samples]
    with torch.no_grad():
        for args, w in zip(inputs, where):
            y = net(*args)
            if not torch.isfinite(y).all():
                raise UserError(f"export: the model's prediction on {w} holds {int((~torch.isfinite(y)).sum())} "
                                "NaN/inf values (a diverged checkpoint?); nothing exported")
    config = {**export_config(lit), "dynamic": {"nodes": 0, "edges": "edge_index axis 1"}}
    dims = [{0: "nodes"}, {0: "nodes"}, {0: "nodes"}, {1: "edges"}]
    example = max(inputs, key=lambda a: a[0].shape[0])
    return export_formats(net, format_paths(out, formats), config, inputs, example=example, dims=dims,
                          input_names=["pos", "feats", "node_type", "edge_index"], output_names=["fields"])


def main(argv: list[str] | None = None) -> int:
    """Export a checkpoint to TorchScript, torch.export and ONNX; check each round trip on two meshes."""
    p = argparse.ArgumentParser(prog="linmix-physics export", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="output .pt path; the .pt2 and .onnx files take its stem")
    p.add_argument("--sample", action="append", default=[],
                   help="sample .npz for the round-trip check (give two of different sizes; default: synthesise two)")
    add_format_argument(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if Path(a.out).is_dir():
        raise UserError(f"--out {a.out} is a folder; give the path of the .pt file to write")
    lit = load_checkpoint(a.ckpt)
    if a.sample:
        samples = [load_sample(s) for s in a.sample]
    else:
        samples = synth_pair(lit.spec.name)
    from linmix.shared.export import report_lines

    results = export_operator(lit, a.out, samples, where=a.sample or None, formats=chosen_formats(a.formats))
    print(f"exported {lit.spec.name}, channels {list(lit.spec.channels)}")
    print("\n".join(report_lines(results, f"on meshes of {[len(s['pos']) for s in samples]} nodes")))
    return 0


def synth_pair(problem: str) -> list[dict]:
    """Two in-memory samples of ``problem`` on meshes of different resolution (for the round-trip check)."""
    from linmix.apps.physics.pde.synth import DEFAULT_H, _solver

    out = []
    for i, scale in enumerate((2.0, 1.4)):
        kwargs = {"h": DEFAULT_H[problem] * scale}
        if problem in ("heat", "flow"):
            kwargs["n_steps"] = 2
        d = _solver(problem)(np.random.default_rng(1000 + i), **kwargs)
        d.pop("dt", None)
        d["problem"] = problem
        out.append(d)
    return out

"""``linmix-speech export --ckpt C --out F``: the separator (waveform (B, T) -> sources (B, S, T)) as TorchScript,
``torch.export`` and ONNX.

Exports the pure ``ConvTasNet`` (never the LightningModule) with its config and the sample rate embedded as
``config.json``, then reloads each file and checks the outputs at two input lengths (neither a multiple of the hop;
ONNX with ONNX Runtime). Batch and time are dynamic in every format.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Optional

from linmix.shared.argtypes import add_format_argument, chosen_formats

if TYPE_CHECKING:  # torch loads when a model is exported, not for --help
    from .model import ConvTasNet


def export_separator_formats(net: ConvTasNet, path: str, sample_rate: int, formats=("torchscript", "export", "onnx"),
                            lengths=(1001, 2403)) -> list[dict]:
    """Write ``net`` in ``formats`` beside ``path`` (``.pt`` / ``.pt2`` / ``.onnx``; batch and time dynamic) and check
    each round trip at the two ``lengths``; returns one result dict per format (path, bytes, max_abs_diff)."""
    import torch

    from linmix.shared.export import export_formats, format_paths

    config = {**asdict(net.config), "sample_rate": sample_rate, "dynamic": {"batch": 0, "time": 1}}
    net = net.eval()
    gen = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(1 + i, n, generator=gen) * 0.1,) for i, n in enumerate(lengths)]
    example = (torch.randn(2, 1600, generator=gen) * 0.1,)
    return export_formats(net, format_paths(path, formats), config, inputs, example=example,
                          dims=[{0: "batch", 1: "time"}], input_names=["waveform"], output_names=["sources"])


def export_separator(net: ConvTasNet, path: str, sample_rate: int, lengths=(1001, 2403)) -> float:
    """Script, save and round-trip-check ``net`` (TorchScript only); returns the max abs difference."""
    return export_separator_formats(net, path, sample_rate, ("torchscript",), lengths)[0]["max_abs_diff"]


def main(argv: Optional[list[str]] = None) -> int:
    """export a checkpoint to TorchScript, torch.export and ONNX (waveform in, sources out), round-trip checked"""
    p = argparse.ArgumentParser(prog="linmix-speech export", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint from `linmix-speech fit`")
    p.add_argument("--out", required=True,
                   help="output file, e.g. runs/speech/convtasnet.pt; the .pt2 and .onnx files take its stem")
    add_format_argument(p)
    a = p.parse_args(argv)
    from linmix.shared.checkpoint import load_lit_checkpoint
    from linmix.shared.export import report_lines

    from .lit_module import SpeechLitModule

    lit, ckpt = load_lit_checkpoint(SpeechLitModule, a.ckpt, app="speech")
    sr = int(ckpt.get("datamodule_hyper_parameters", {}).get("sample_rate", 8000))
    results = export_separator_formats(lit.exportable(), a.out, sr, chosen_formats(a.formats))
    print(f"exported S={lit.net.n_src}, {sr} Hz")
    print("\n".join(report_lines(results, "at 1001 and 2403 samples")))
    return 0

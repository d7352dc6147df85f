"""``linmix-speech export --ckpt C --out F``: TorchScript of the separator (waveform (B, T) -> sources (B, S, T)).

Exports the pure ``ConvTasNet`` (never the LightningModule) with its config and the sample rate embedded as
``config.json``, then reloads it and checks the outputs at two input lengths (neither a multiple of the hop).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # torch loads when a model is exported, not for --help
    from .model import ConvTasNet


def export_separator(net: ConvTasNet, path: str, sample_rate: int, lengths=(1001, 2403)) -> float:
    """Script, save and round-trip-check ``net``; returns the max abs difference over the check lengths."""
    import torch

    from linmix.shared.export import check_roundtrip, export_torchscript

    config = {**asdict(net.config), "sample_rate": sample_rate}
    net = net.eval()
    export_torchscript(net, path, config)
    gen = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(1, n, generator=gen) * 0.1,) for n in lengths]
    return check_roundtrip(net, path, inputs)


def main(argv: Optional[list[str]] = None) -> int:
    """export a checkpoint to TorchScript (waveform in, sources out), round-trip checked"""
    p = argparse.ArgumentParser(prog="linmix-speech export", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint from `linmix-speech fit`")
    p.add_argument("--out", required=True, help="output file, e.g. runs/speech/convtasnet.pt")
    a = p.parse_args(argv)
    from linmix.shared.checkpoint import load_lit_checkpoint

    from .lit_module import SpeechLitModule

    lit, ckpt = load_lit_checkpoint(SpeechLitModule, a.ckpt, app="speech")
    sr = int(ckpt.get("datamodule_hyper_parameters", {}).get("sample_rate", 8000))
    diff = export_separator(lit.exportable(), a.out, sr)
    print(f"exported {Path(a.out)} (S={lit.net.n_src}, {sr} Hz); round-trip max abs diff {diff:.2e}")
    return 0

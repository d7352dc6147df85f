"""Fast CPU inference paths for a trained ``CTRNet`` (what ``benchmarks/ctr/throughput.py`` measures).

* ``eager``: the module in eval mode (callers run it under ``torch.inference_mode``);
* ``script``: TorchScript, frozen (weights folded as constants) and ``torch.jit.optimize_for_inference``;
* ``int8``: dynamic int8 quantisation of every ``nn.Linear`` (weights int8 per tensor, activations quantised
  per batch on the fly; embeddings, LayerNorm and the cross-layer products stay float32). It changes the
  numbers slightly: ``benchmarks/ctr/quality.py`` reports the test AUC/logloss change on the trained FCN.

All take ``idx`` (B, F) int64 and ``val`` (B, F) float32 and return the fused logit (B,).
FLOPs of the cross networks are ``flops_per_row``: 2 * in * out per Linear per row (elementwise ops ignored).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from linmix.apps.ctr.model import CTRNet

MODES = ("eager", "script", "int8")


class _Logit(nn.Module):
    """(idx, val) -> fused logit, without the optional sequence input (a fixed signature to script)."""

    def __init__(self, net: CTRNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, idx: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        return self.net(idx, val, None)


def serving_module(net: CTRNet, mode: str = "eager") -> nn.Module:
    """A copy of ``net`` prepared for inference in ``mode`` (``eager``, ``script`` or ``int8``). ``int8`` quantises
    every hidden ``nn.Linear`` dynamically; the logit layer (``LogitLinear``, one output) stays float32."""
    m = _Logit(copy.deepcopy(net)).eval()
    if mode == "eager":
        return m
    if mode == "script":
        with torch.no_grad():
            s = torch.jit.freeze(torch.jit.script(m))
            return torch.jit.optimize_for_inference(s)
    if mode == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"unknown serving mode {mode!r} ({'|'.join(MODES)})")


def flops_per_row(net: nn.Module) -> int:
    """Forward multiply-add FLOPs per row of every ``nn.Linear`` in ``net`` (2 * in * out each)."""
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))

"""linmix shared core: linear-complexity sequence mixers, residual blocks, Lightning base, TorchScript export.

Dependencies point one way: ``apps/* -> shared -> torch``. Lightning is imported only by ``linmix.shared.lightning`` (with
``linmix.shared.time_budget``) and ``linmix.shared.lightning_cli``; the mixers import torch alone and script with
TorchScript. The names below are imported on first use, so the torch-free modules (``errors``, ``noise``, ``cli``: the
console scripts' dispatcher) load without torch.
"""

import importlib

_EXPORTS = {
    "BiMamba2": "bimamba", "GatedMLP": "blocks", "MIXERS": "blocks", "MixerStack": "blocks", "ResidualBlock": "blocks",
    "build_mixer": "blocks", "kernel_available": "kernels", "LinearAttention": "linear_attention", "Mamba2": "mamba2",
    "Mamba3": "mamba3", "ParallelHybrid": "hybrid", "mamba3_scan_chunked": "ssd3", "mamba3_scan_ref": "ssd3",
    "RMSNorm": "norms", "RMSNormGated": "norms", "ProjectionAttention": "projection_attention",
    "SoftmaxAttention": "softmax_attention", "ssd_chunked": "ssd", "ssd_scan": "ssd", "ssd_scan_ref": "ssd",
}

__all__ = [
    "BiMamba2", "GatedMLP", "LinearAttention", "MIXERS", "Mamba2", "Mamba3", "MixerStack", "ParallelHybrid",
    "ProjectionAttention", "RMSNorm", "RMSNormGated", "ResidualBlock", "SoftmaxAttention", "build_mixer",
    "kernel_available", "mamba3_scan_chunked", "mamba3_scan_ref", "ssd_chunked", "ssd_scan", "ssd_scan_ref",
]


def __getattr__(name: str):
    """The names above load their module on first use, so ``import linmix.shared.<module>`` of a torch-free module
    (``errors``, ``cli``, ``noise``) stays torch-free."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])

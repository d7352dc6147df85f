"""linmix shared core: linear-complexity sequence mixers, residual blocks, Lightning base, TorchScript export.

Dependencies point one way: ``apps/* -> shared -> torch``. Lightning is imported only by ``shared.lightning`` (with
``shared.time_budget``) and ``shared.cli``; the mixers import torch alone and script with TorchScript.
"""

from shared.bimamba import BiMamba2
from shared.blocks import MIXERS, GatedMLP, MixerStack, ResidualBlock, build_mixer
from shared.kernels import kernel_available
from shared.linear_attention import LinearAttention
from shared.mamba2 import Mamba2
from shared.norms import RMSNorm, RMSNormGated
from shared.projection_attention import ProjectionAttention
from shared.softmax_attention import SoftmaxAttention
from shared.ssd import ssd_chunked, ssd_scan, ssd_scan_ref

__all__ = [
    "BiMamba2", "GatedMLP", "LinearAttention", "MIXERS", "Mamba2", "MixerStack", "ProjectionAttention", "RMSNorm",
    "RMSNormGated", "ResidualBlock", "SoftmaxAttention", "build_mixer", "kernel_available", "ssd_chunked", "ssd_scan",
    "ssd_scan_ref",
]

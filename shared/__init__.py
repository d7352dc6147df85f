"""linmix shared core: linear-complexity sequence mixers, residual blocks, Lightning base, TorchScript export.

Dependencies point one way: ``apps/* -> shared -> torch``. Lightning is imported only by ``linmix.shared.lightning`` (with
``linmix.shared.time_budget``) and ``linmix.shared.cli``; the mixers import torch alone and script with TorchScript.
"""

from linmix.shared.bimamba import BiMamba2
from linmix.shared.blocks import MIXERS, GatedMLP, MixerStack, ResidualBlock, build_mixer
from linmix.shared.kernels import kernel_available
from linmix.shared.linear_attention import LinearAttention
from linmix.shared.mamba2 import Mamba2
from linmix.shared.norms import RMSNorm, RMSNormGated
from linmix.shared.projection_attention import ProjectionAttention
from linmix.shared.softmax_attention import SoftmaxAttention
from linmix.shared.ssd import ssd_chunked, ssd_scan, ssd_scan_ref

__all__ = [
    "BiMamba2", "GatedMLP", "LinearAttention", "MIXERS", "Mamba2", "MixerStack", "ProjectionAttention", "RMSNorm",
    "RMSNormGated", "ResidualBlock", "SoftmaxAttention", "build_mixer", "kernel_available", "ssd_chunked", "ssd_scan",
    "ssd_scan_ref",
]

"""Lazy probes for optional CUDA kernels (mamba-ssm, causal-conv1d).

Never imported at module top: ``import mamba_ssm`` pulls in Triton and fails without its compiled CUDA extension
(state-spaces/mamba#237). The probe runs once, on first use, catches every exception (Triton and CUDA initialisation
errors are not ImportErrors) and caches the result. ``LINMIX_BACKEND=torch`` forces the pure-PyTorch path.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Callable, Optional

INSTALL_HINT = (
    "the mamba-ssm CUDA kernels are not available. On a CUDA host install them with "
    "`pip install -e .[cuda] --no-build-isolation` (needs nvcc and a CUDA build of torch), "
    "or use backend='torch' / 'auto' for the pure-PyTorch path."
)


SSD_KERNEL = ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
MAMBA3_SISO_KERNEL = ("mamba_ssm.ops.triton.mamba3.mamba3_siso_combined", "mamba3_siso_combined")
MAMBA3_MIMO_KERNEL = ("mamba_ssm.ops.tilelang.mamba3.mamba3_mimo", "mamba3_mimo")


@functools.cache
def _probe(module: str, name: str) -> Optional[Callable]:
    """``module.name`` when CUDA is available and the import succeeds, else None (cached per kernel)."""
    if os.environ.get("LINMIX_BACKEND", "") == "torch":
        return None
    try:
        import importlib

        import torch

        if not torch.cuda.is_available():
            return None
        return getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - any failure means "no kernel"
        return None


def mamba_chunk_scan(required: bool = False) -> Optional[Callable]:
    """Return mamba-ssm's ``mamba_chunk_scan_combined`` or None; raise a clear error when ``required``."""
    fn = _probe(*SSD_KERNEL)
    if fn is None and required:
        raise RuntimeError("backend='kernel': " + INSTALL_HINT)
    return fn


def kernel_available() -> bool:
    """True when the mamba-ssm SSD kernel imports and CUDA is available."""
    return _probe(*SSD_KERNEL) is not None


def mamba3_siso_kernel(required: bool = False) -> Optional[Callable]:
    """Return mamba-ssm's Mamba-3 SISO ``mamba3_siso_combined`` (mamba-ssm >= 2.3.2, Triton, CUDA) or None; raise a
    clear error when ``required``."""
    fn = _probe(*MAMBA3_SISO_KERNEL)
    if fn is None and required:
        raise RuntimeError("backend='kernel': " + INSTALL_HINT.replace("kernels are", "Mamba-3 kernels (mamba-ssm >= 2.3.2) are"))
    return fn


def _mimo_probe() -> Optional[Callable]:
    """``mamba3_mimo`` when it imports and takes ``cu_seqlens``: that interface takes the raw angle projections and
    accumulates ``pi * tanh(angle) * dt`` itself. An earlier interface without ``cu_seqlens`` passed ``Angles`` to the
    kernel as given (the caller accumulated them); it is not used."""
    fn = _probe(*MAMBA3_MIMO_KERNEL)
    try:
        return fn if fn is not None and "cu_seqlens" in inspect.signature(fn).parameters else None
    except (TypeError, ValueError):
        return None


def mamba3_mimo_kernel(required: bool = False) -> Optional[Callable]:
    """Return mamba-ssm's Mamba-3 MIMO ``mamba3_mimo`` (TileLang, CUDA; the entry point ``mamba_ssm.modules.mamba3``
    calls) or None; raise a clear error when ``required``."""
    fn = _mimo_probe()
    if fn is None and required:
        raise RuntimeError("backend='kernel': " + INSTALL_HINT.replace(
            "kernels are", "Mamba-3 MIMO kernels (mamba-ssm >= 2.3.2 with TileLang) are"))
    return fn

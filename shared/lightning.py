"""The thin Lightning base every app's LightningModule subclasses.

It owns what all apps share and nothing else: AdamW with linear warmup + cosine decay over the trainer's estimated
steps, no weight decay on biases, norms and SSM parameters (``A_log``, ``D``, ``dt_bias``), stage-prefixed logging,
the hand-over of the pure inner ``nn.Module`` for export (``torch.jit.script`` of a LightningModule fails,
Lightning #14036), and :class:`TimeBudget` (``shared/time_budget.py``), the same schedule sized by wall time.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Dict, Tuple

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from linmix.shared.time_budget import TimeBudget

__all__ = ["LinmixModule", "TimeBudget", "warmup_cosine", "param_groups"]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine down to ``min_lr_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(module: nn.Module, weight_decay: float) -> list:
    """Two AdamW groups: matrices decay; biases, norm weights, embeddings' norms and SSM parameters do not."""
    decay, no_decay = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class LinmixModule(pl.LightningModule):
    """Base LightningModule: optimiser, schedule, logging helpers, export hand-over.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay on matrices.
        warmup_steps: linear warmup steps.
        min_lr_ratio: final LR as a fraction of ``lr`` after the cosine decay.
        betas: AdamW betas.
    """

    app: str = "linmix"  #: the console script's app name (``linmix-<app>``); stamped into every checkpoint
    #: classes weights-only loading may rebuild besides primitives (empty in every app: ``net`` is saved as a dict)
    checkpoint_globals: tuple = ()
    #: hyperparameters that do not change the network (e.g. an output folder): ``test`` / ``predict`` with
    #: ``--ckpt_path`` keep the command line's value instead of the checkpoint's (``linmix.shared.lightning_cli``)
    runtime_hparams: tuple = ()

    def __init__(
        self, lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 100, min_lr_ratio: float = 0.1,
        betas: Tuple[float, float] = (0.9, 0.95),
    ) -> None:
        super().__init__()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.min_lr_ratio, self.betas = min_lr_ratio, betas

    def save_net_hyperparameters(self, net: Any) -> None:
        """``save_hyperparameters()`` of the calling ``__init__``, its ``net`` config dataclass stored as a plain dict.

        Call it from a subclass ``__init__`` after converting ``net`` with :func:`linmix.shared.config.as_config`. The
        saved ``hyper_parameters["net"]`` is ``dataclasses.asdict(net)``: checkpoints hold primitives, lists and dicts
        only and load with ``torch.load(weights_only=True)``; ``load_from_checkpoint`` hands the dict back to ``net``.
        """
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        if caller is None:
            raise RuntimeError("save_net_hyperparameters: no calling frame")
        code = caller.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        hp = {k: caller.f_locals[k] for k in names if k != "self" and k in caller.f_locals}
        hp["net"] = dataclasses.asdict(net)
        self.save_hyperparameters(hp)

    def configure_optimizers(self):
        groups = param_groups(self, self.weight_decay)
        # the fused kernel (CPU and CUDA): one pass per tensor instead of a dozen ops; 4x faster than the default
        # per-tensor loop on a CPU, the same update to rounding
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
        opt = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, fused=fused or None)
        # A fused optimiser announces that it unscales fp16 gradients itself, and Lightning's mixed-precision plugin
        # then refuses gradient clipping. Switched off, a GradScaler unscales before the step as for any optimiser
        # (clipping sees true gradients) and bf16-mixed, which has no scaler, clips as usual.
        opt._step_supports_amp_scaling = False
        total = self._trainer.estimated_stepping_batches if self._trainer is not None else 0
        total = int(total) if total is not None and math.isfinite(total) else 0
        warm, floor = self.warmup_steps, self.min_lr_ratio
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total, floor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Stamp the checkpoint with its app, so that another app's loader can name it (``linmix.shared.checkpoint``)."""
        checkpoint["linmix"] = {"app": self.app}

    def log_stage(self, stage: str, metrics: Dict[str, Tensor | float], **kwargs) -> None:
        """Log ``{stage}/{name}`` for every metric (``sync_dist`` on by default for epoch-level values)."""
        kwargs.setdefault("sync_dist", self._trainer is not None and self._trainer.world_size > 1)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, **kwargs)

    def exportable(self) -> nn.Module:
        """The pure ``nn.Module`` to export (``self.net`` by convention); override when it differs."""
        net = getattr(self, "net", None)
        if not isinstance(net, nn.Module):
            raise NotImplementedError(f"{type(self).__name__}: set self.net or override exportable()")
        return net

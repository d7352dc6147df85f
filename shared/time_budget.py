"""``TimeBudget``: the warmup + cosine schedule of :class:`linmix.shared.lightning.LinmixModule` sized by wall time, for runs
that must end by a deadline on a device of unknown speed or share (the training recipes in ``recipes/``).

A step-sized schedule needs the step rate in advance; on a shared GPU it is unknown, so such a run either stops before
its cosine ends or ends early and wastes the budget. Here the learning rate is a linear warmup over ``warmup_steps``
optimiser steps, then a cosine from the module's ``lr`` down to ``min_lr_ratio · lr`` over the wall time from the start
of training to ``deadline - reserve_s`` (``deadline``: an absolute ``time.time()``, what a job with a hard end uses,
since start-up and data setup take an unknown time), or else to the trainer's ``max_time`` (Lightning's ``Timer``,
which also stops the run). Without either the module's step schedule stays in charge. The callback sets the rate
before every optimiser step, overriding the module's scheduler.

Training stops at the first batch past the end (``stop_at="batch"``) or at the first epoch end where one more epoch,
at the mean of the last five, would pass it (``stop_at="epoch"``; the batch check stays as a guard). A weights-only
checkpoint is written atomically (temp file, then ``os.replace``) every ``ckpt_every_s`` seconds, at the end, and on an
exception or Ctrl-C, so a job killed from outside still leaves a loadable model.

    linmix-physics fit -c configs/physics/gto_darcy_gpu.yaml \\
      --trainer.callbacks+=linmix.shared.lightning.TimeBudget --trainer.callbacks.deadline=$(($(date +%s) + 300))
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

__all__ = ["TimeBudget"]

log = logging.getLogger("linmix")


class TimeBudget(pl.Callback):
    """Wall-clock warmup + cosine schedule, deadline stop, atomic weights-only checkpoints.

    Args:
        deadline: unix time (s) by which training must be over; None: the trainer's ``max_time``.
        reserve_s: seconds kept free before ``deadline`` (the last epoch's tail, the final checkpoint).
        warmup_steps: linear warmup in optimiser steps (None: the module's ``warmup_steps``).
        min_lr_ratio: final learning rate as a fraction of the module's ``lr`` (None: the module's ``min_lr_ratio``).
        stop_at: "batch" (stop at the first batch past the end) or "epoch" (stop before an epoch that would pass it).
        ckpt_path: the weights-only checkpoint (None: ``<log_dir>/checkpoints/snapshot.ckpt``; none without a log dir).
        ckpt_every_s: seconds between checkpoints (0: only at the end).
        matmul_precision: passed to ``torch.set_float32_matmul_precision`` at setup ("high" = TF32 on GPUs; None: leave).
    """

    def __init__(self, deadline: Optional[float] = None, reserve_s: float = 0.0, warmup_steps: Optional[int] = None,
                 min_lr_ratio: Optional[float] = None, stop_at: str = "batch", ckpt_path: Optional[str] = None,
                 ckpt_every_s: float = 60.0, matmul_precision: Optional[str] = None) -> None:
        super().__init__()
        if stop_at not in ("batch", "epoch"):
            raise ValueError(f"TimeBudget: stop_at must be 'batch' or 'epoch', got {stop_at!r}")
        if deadline is not None and deadline <= 0:
            raise ValueError(f"TimeBudget: deadline must be a unix time in seconds, got {deadline}")
        self.deadline, self.reserve_s, self.stop_at = deadline, float(reserve_s), stop_at
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.ckpt_path = Path(ckpt_path) if ckpt_path else None
        self.ckpt_every_s, self.matmul_precision = float(ckpt_every_s), matmul_precision
        self.t0 = self.t_ckpt = self.t_epoch = 0.0
        self.epoch_times: list[float] = []
        self._timer: Optional[Timer] = None

    @property
    def t_end(self) -> Optional[float]:
        """Unix time at which the schedule ends (None: it follows ``max_time``)."""
        return None if self.deadline is None else self.deadline - self.reserve_s

    def fraction(self, now: Optional[float] = None) -> Optional[float]:
        """Elapsed share of the training time budget in [0, 1] (None without a budget)."""
        now = time.time() if now is None else now
        if self.t_end is not None:
            return min(1.0, max(0.0, (now - self.t0) / max(self.t_end - self.t0, 1e-9)))
        if self._timer is None:
            return None
        done, left = self._timer.time_elapsed("train"), self._timer.time_remaining("train")
        return None if left is None else min(1.0, done / max(done + left, 1e-9))

    def lr_multiplier(self, step: int, warmup_steps: int, min_lr_ratio: float,
                      now: Optional[float] = None) -> Optional[float]:
        """Multiplier of the base lr at optimiser ``step`` (None: no budget, the step schedule stays)."""
        frac = self.fraction(now)
        if frac is None:
            return None
        warm = (step + 1) / warmup_steps if warmup_steps > 0 and step < warmup_steps else 1.0
        return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))

    def _path(self, trainer: pl.Trainer) -> Optional[Path]:
        if self.ckpt_path is not None:
            return self.ckpt_path
        return Path(trainer.log_dir) / "checkpoints" / "snapshot.ckpt" if trainer.log_dir else None

    def save(self, trainer: pl.Trainer) -> None:
        """Weights-only checkpoint, atomically (every rank calls it; rank 0 writes and renames)."""
        path = self._path(trainer)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(str(tmp), weights_only=True)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        self.t_ckpt = time.time()

    # -- hooks --------------------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.matmul_precision is not None:
            torch.set_float32_matmul_precision(self.matmul_precision)

    def on_train_start(self, trainer, pl_module) -> None:
        self._timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        self.t0 = self.t_ckpt = time.time()
        if self.t_end is not None:
            if self.t_end <= self.t0:
                raise RuntimeError(f"TimeBudget: the schedule end passed {self.t0 - self.t_end:.0f} s ago")
            rank_zero_info(f"TimeBudget: {self.t_end - self.t0:.0f} s of training until the schedule ends")
        elif self._timer is None:
            rank_zero_warn("TimeBudget: no deadline and no trainer.max_time; the step schedule stays in charge")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        warm = self.warmup_steps if self.warmup_steps is not None else getattr(pl_module, "warmup_steps", 0)
        floor = self.min_lr_ratio if self.min_lr_ratio is not None else getattr(pl_module, "min_lr_ratio", 0.0)
        mult = self.lr_multiplier(trainer.global_step, warm, floor)
        if mult is None:
            return
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.get("initial_lr", pl_module.lr) * mult
        pl_module.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.time()
        if self.t_end is not None and now >= self.t_end:
            trainer.should_stop = True
        if self.ckpt_every_s > 0 and now - self.t_ckpt >= self.ckpt_every_s:
            self.save(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t_epoch = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.time()
        self.epoch_times.append(now - self.t_epoch)
        recent = self.epoch_times[-5:]
        if self.stop_at == "epoch" and self.t_end is not None and now + sum(recent) / len(recent) > self.t_end:
            rank_zero_info(f"TimeBudget: stopping after epoch {trainer.current_epoch}: the next one would pass the "
                           "schedule end")
            trainer.should_stop = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            self.save(trainer)
        except Exception as err:  # noqa: BLE001 - never mask the original exception
            log.error("TimeBudget: checkpoint after %r failed: %s", exception, err)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)
        rank_zero_info(f"TimeBudget: {trainer.global_step} steps in {time.time() - self.t0:.1f} s of training; "
                       f"checkpoint {self._path(trainer)}")

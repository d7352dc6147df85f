"""Training callbacks for runs sized by wall time (a GPU of unknown speed or share): ``TimeBudget``.

``TimeBudget`` makes the learning-rate schedule a function of elapsed training time instead of optimiser steps:
linear warmup over the module's ``warmup_steps`` steps, then cosine decay from ``lr`` to ``lr * min_lr_ratio``
reached at the end of the time budget: ``deadline_unix`` (an absolute ``time.time()`` value, at which this callback
stops training; what a job with a hard end uses, since process start-up and data setup before training take an
unknown time) or else the trainer's ``max_time`` (Lightning's ``Timer`` callback, which also stops the run).  A
step-count schedule needs the step rate in advance; on a shared GPU that rate is unknown, so a step-sized run either
stops before its cosine ends or ends early and wastes the budget.  It also writes a weights-only checkpoint every
``snapshot_every_s`` seconds and at the end of training (atomically: temp file + rename), so a run killed from outside
still leaves a usable model (also on an exception or Ctrl-C).  Without either budget it leaves the step-based
schedule in charge.
"""

import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, Timer

log = logging.getLogger("linmix.speech")


class TimeBudget(Callback):
    """Warmup (steps) + cosine-in-wall-time LR schedule up to ``trainer.max_time``; periodic weights snapshots.

    Args:
        snapshot_every_s: seconds between weights-only checkpoints (0: only at the end of training).
        snapshot_name: file name, written into ``<log_dir>/checkpoints/``.
        deadline_unix: end of the budget as a ``time.time()`` value (None: ``trainer.max_time``).
    """

    def __init__(
        self, snapshot_every_s: float = 60.0, snapshot_name: str = "snapshot.ckpt", deadline_unix: Optional[float] = None
    ) -> None:
        self.snapshot_every_s = snapshot_every_s
        self.snapshot_name = snapshot_name
        self.deadline_unix = deadline_unix
        self._timer: Optional[Timer] = None
        self._last_snap = 0.0
        self._t0 = 0.0

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        self._t0 = self._last_snap = time.time()
        if self.deadline_unix is not None:
            log.info("TimeBudget: %.0f s of training until the deadline", self.deadline_unix - self._t0)
        elif self._timer is None:
            log.warning("TimeBudget: no trainer.max_time; the step-based schedule stays in charge")

    def fraction(self) -> Optional[float]:
        """Elapsed share of the training time budget in [0, 1] (None without ``max_time``)."""
        if self.deadline_unix is not None:
            now = time.time()
            return min(1.0, (now - self._t0) / max(self.deadline_unix - self._t0, 1e-9))
        if self._timer is None:
            return None
        done = self._timer.time_elapsed("train")
        left = self._timer.time_remaining("train")
        if left is None:
            return None
        return min(1.0, done / max(done + left, 1e-9))

    def lr_multiplier(self, step: int, warmup_steps: int, min_lr_ratio: float) -> Optional[float]:
        frac = self.fraction()
        if frac is None:
            return None
        warm = (step + 1) / warmup_steps if warmup_steps > 0 and step < warmup_steps else 1.0
        return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        mult = self.lr_multiplier(
            trainer.global_step, getattr(pl_module, "warmup_steps", 0), getattr(pl_module, "min_lr_ratio", 0.0)
        )
        if mult is None:
            return
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = pl_module.lr * mult
        pl_module.log("train/lr", pl_module.lr * mult, on_step=True, on_epoch=False)

    def _snapshot(self, trainer: "pl.Trainer") -> None:
        if trainer.global_rank != 0 or not trainer.log_dir:
            return
        path = Path(trainer.log_dir) / "checkpoints" / self.snapshot_name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=True)
        os.replace(tmp, path)
        self._last_snap = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.deadline_unix is not None and time.time() >= self.deadline_unix:
            trainer.should_stop = True
        if self.snapshot_every_s > 0 and time.time() - self._last_snap >= self.snapshot_every_s:
            self._snapshot(trainer)

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        try:
            self._snapshot(trainer)
        except Exception as err:  # noqa: BLE001 - never mask the original exception
            log.error("TimeBudget: snapshot after %r failed: %s", exception, err)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._snapshot(trainer)
        log.info("TimeBudget: %d steps in %.1f s of training", trainer.global_step, time.time() - self._t0)

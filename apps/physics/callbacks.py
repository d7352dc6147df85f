"""Training callbacks for time-boxed runs (the GPU job): a wall-clock schedule, atomic checkpoints and a progress log.

:class:`TimeBudget` makes a run end by an absolute deadline whatever the device speed turns out to be: the learning rate
follows a linear warm-up over ``warmup_steps`` optimizer steps, then a cosine from the module's ``lr`` down to
``min_lr_ratio · lr`` over the wall-clock time left until ``deadline`` (unix seconds) minus ``reserve_s``; the run
stops at the first epoch end where one more epoch (at the mean epoch time so far) would pass that point. It overrides
the module's step-based scheduler (set each batch, after that scheduler has stepped). Every ``ckpt_every_s`` seconds
and at the end it writes a weights-only Lightning checkpoint atomically (temp file, then ``os.replace``) to
``ckpt_path``, so a killed job still leaves a loadable model. Each epoch appends one line to ``log_path`` (plain text)
and one JSON record to ``curve_path``: epoch, optimizer steps, elapsed s, epoch wall s, steps/s, graphs/s,
nodes/s, mean train loss, val metrics when validation ran, lr.

    linmix-physics fit -c configs/physics/gto_darcy_gpu.yaml \\
      --trainer.callbacks+=apps.physics.callbacks.TimeBudget --trainer.callbacks.deadline=$(($(date +%s) + 300))
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch


def _now() -> float:
    return time.time()


class TimeBudget(pl.Callback):
    """Args:
        deadline: unix time (s) by which training must be over (checkpoint written).
        reserve_s: seconds kept free before ``deadline`` (the last epoch, the final checkpoint).
        warmup_steps: linear warm-up in optimizer steps.
        min_lr_ratio: final learning rate as a fraction of the module's ``lr``.
        ckpt_path: weights-only checkpoint written atomically every ``ckpt_every_s`` s and at the end (None: none).
        log_path, curve_path: plain-text log / JSON-lines learning curve, one entry per epoch (None: stdout only).
        matmul_precision: passed to ``torch.set_float32_matmul_precision`` at setup ('high' = TF32 on GPUs).
    """

    def __init__(self, deadline: float = 0.0, reserve_s: float = 5.0, warmup_steps: int = 100,
                 min_lr_ratio: float = 0.01, ckpt_path: Optional[str] = None, ckpt_every_s: float = 60.0,
                 log_path: Optional[str] = None, curve_path: Optional[str] = None,
                 matmul_precision: str = "high") -> None:
        super().__init__()
        if deadline <= 0:
            raise ValueError("TimeBudget needs deadline = unix time (s) by which training must end")
        self.deadline, self.reserve_s, self.warmup_steps = float(deadline), float(reserve_s), int(warmup_steps)
        self.min_lr_ratio, self.ckpt_every_s = float(min_lr_ratio), float(ckpt_every_s)
        self.ckpt_path = Path(ckpt_path) if ckpt_path else None
        self.log_path = Path(log_path) if log_path else None
        self.curve_path = Path(curve_path) if curve_path else None
        self.matmul_precision = matmul_precision
        self.t0 = self.t_end = self.t_epoch = self.t_ckpt = 0.0
        self.epoch_times: list = []
        self._loss_sum, self._n_batches, self._graphs, self._nodes, self._steps0 = 0.0, 0, 0, 0, 0

    # -- helpers ------------------------------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        print(f"[physics-fit] {line}", flush=True)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as fh:
                fh.write(line + "\n")

    def lr_factor(self, step: int, now: float) -> float:
        """Multiplier of the base lr at optimizer step ``step`` and wall time ``now``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.t_end - self.t0, 1e-6)
        frac = min(max((now - self.t0) / span, 0.0), 1.0)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    def save(self, trainer: pl.Trainer) -> None:
        if self.ckpt_path is None:
            return
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        trainer.save_checkpoint(str(tmp), weights_only=True)
        if trainer.is_global_zero:
            os.replace(tmp, self.ckpt_path)
        self.t_ckpt = _now()

    # -- hooks --------------------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        torch.set_float32_matmul_precision(self.matmul_precision)

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = self.t_ckpt = _now()
        self.t_end = self.deadline - self.reserve_s
        self._steps0 = trainer.global_step
        left = self.t_end - self.t0
        self._log(f"train start: {left:.0f} s until the schedule ends (deadline {self.deadline:.0f}, reserve "
                  f"{self.reserve_s:.0f} s), device {pl_module.device}, params "
                  f"{sum(p.numel() for p in pl_module.parameters())}")
        if left <= 0:
            raise RuntimeError(f"TimeBudget: deadline already passed ({-left:.0f} s ago)")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t_epoch = _now()
        self._loss_sum, self._n_batches, self._graphs, self._nodes = 0.0, 0, 0, 0
        self._steps0 = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        f = self.lr_factor(trainer.global_step, _now())
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.get("initial_lr", pl_module.hparams.get("lr", group["lr"])) * f
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum = self._loss_sum + loss.detach()  # a device tensor: no host sync per step
        self._n_batches += 1
        self._graphs += int(batch.num_graphs)
        self._nodes += int(batch.num_nodes)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = _now()
        wall = now - self.t_epoch
        self.epoch_times.append(wall)
        steps = trainer.global_step - self._steps0
        every = trainer.check_val_every_n_epoch or 1
        ran_val = (trainer.current_epoch + 1) % every == 0
        val = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if ran_val and k.startswith("val/")}
        # the lr the last optimizer step used (the module's own scheduler steps after it and rewrites param_groups)
        lr = getattr(self, "_lr", float("nan"))
        rec = {"epoch": trainer.current_epoch, "step": trainer.global_step, "elapsed_s": round(now - self.t0, 2),
               "epoch_s": round(wall, 3), "steps_per_s": round(steps / max(wall, 1e-9), 2),
               "graphs_per_s": round(self._graphs / max(wall, 1e-9), 1),
               "nodes_per_s": round(self._nodes / max(wall, 1e-9), 0),
               "train_loss": round(float(self._loss_sum) / max(self._n_batches, 1), 6), "lr": lr, **val}
        if self.curve_path is not None:
            self.curve_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.curve_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        self._log(" ".join(f"{k}={v}" for k, v in rec.items()))
        recent = self.epoch_times[-5:]
        if now + sum(recent) / len(recent) > self.t_end:
            self._log(f"stopping after epoch {trainer.current_epoch}: the next epoch would pass the schedule end")
            trainer.should_stop = True
        if now - self.t_ckpt >= self.ckpt_every_s:
            self.save(trainer)
            self._log(f"checkpoint -> {self.ckpt_path} ({_now() - now:.2f} s)")

    def on_train_end(self, trainer, pl_module) -> None:
        now = _now()
        self.save(trainer)
        self._log(f"train end: {trainer.current_epoch} epochs, {trainer.global_step} steps, {now - self.t0:.1f} s; "
                  f"final checkpoint -> {self.ckpt_path}")

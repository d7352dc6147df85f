"""Per-epoch progress of a time-boxed physics run (``recipes/physics.py``): throughput and learning-curve records.

The schedule, the deadline stop and the atomic checkpoints are the shared :class:`linmix.shared.lightning.TimeBudget`
(``stop_at: epoch``); :class:`EpochLog` beside it appends one plain-text line to ``log_path`` and one JSON record to
``curve_path`` per epoch: epoch, optimizer steps, elapsed s, epoch wall s, steps/s, graphs/s, nodes/s, mean train loss,
val metrics when validation ran, and the lr the last optimizer step used.

    linmix-physics fit -c configs/physics/gto_darcy_gpu.yaml \\
      --trainer.callbacks+=linmix.shared.lightning.TimeBudget --trainer.callbacks.deadline=$(($(date +%s) + 300)) \\
      --trainer.callbacks.stop_at=epoch --trainer.callbacks+=linmix.apps.physics.callbacks.EpochLog
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl


class EpochLog(pl.Callback):
    """Args:
        log_path: plain-text log, one line per epoch (None: stdout only).
        curve_path: JSON-lines learning curve, one record per epoch (None: none).
    """

    def __init__(self, log_path: Optional[str] = None, curve_path: Optional[str] = None) -> None:
        super().__init__()
        self.log_path = Path(log_path) if log_path else None
        self.curve_path = Path(curve_path) if curve_path else None
        self.t0 = self.t_epoch = 0.0
        self._lr = float("nan")
        self._loss_sum, self._n_batches, self._graphs, self._nodes, self._steps0 = 0.0, 0, 0, 0, 0

    def _log(self, line: str) -> None:
        print(f"[physics-fit] {line}", flush=True)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as fh:
                fh.write(line + "\n")

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = time.time()
        self._log(f"train start: device {pl_module.device}, params {sum(p.numel() for p in pl_module.parameters())}")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t_epoch = time.time()
        self._loss_sum, self._n_batches, self._graphs, self._nodes = 0.0, 0, 0, 0
        self._steps0 = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._lr = optimizer.param_groups[0]["lr"]  # after every batch-start hook (TimeBudget) has set it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum = self._loss_sum + loss.detach()  # a device tensor: no host sync per step
        self._n_batches += 1
        self._graphs += int(batch.num_graphs)
        self._nodes += int(batch.num_nodes)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.time()
        wall = now - self.t_epoch
        steps = trainer.global_step - self._steps0
        every = trainer.check_val_every_n_epoch or 1
        ran_val = (trainer.current_epoch + 1) % every == 0
        val = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if ran_val and k.startswith("val/")}
        rec = {"epoch": trainer.current_epoch, "step": trainer.global_step, "elapsed_s": round(now - self.t0, 2),
               "epoch_s": round(wall, 3), "steps_per_s": round(steps / max(wall, 1e-9), 2),
               "graphs_per_s": round(self._graphs / max(wall, 1e-9), 1),
               "nodes_per_s": round(self._nodes / max(wall, 1e-9), 0),
               "train_loss": round(float(self._loss_sum) / max(self._n_batches, 1), 6), "lr": self._lr, **val}
        if self.curve_path is not None:
            self.curve_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.curve_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        self._log(" ".join(f"{k}={v}" for k, v in rec.items()))

    def on_train_end(self, trainer, pl_module) -> None:
        self._log(f"train end: {trainer.current_epoch} epochs, {trainer.global_step} steps, "
                  f"{time.time() - self.t0:.1f} s")

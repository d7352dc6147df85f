"""Fault injection for the resume test: kill the training process hard after a given optimiser step."""

import os

from pytorch_lightning import Callback


class KillAtStep(Callback):
    """``os._exit(137)`` (as SIGKILL would) once ``trainer.global_step`` reaches ``step``, mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os._exit(137)

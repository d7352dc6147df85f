"""LightningModule of the tiny mixer LM: next-character cross-entropy, answer-digit accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from linmix.apps.lm.data import STOI
from linmix.apps.lm.model import MixerLM, MixerLMConfig
from linmix.shared.config import as_config
from linmix.shared.lightning import LinmixModule

__all__ = ["LMLitModule"]


class LMLitModule(LinmixModule):
    """Trains :class:`MixerLM`. ``net`` is the network config (saved as a plain dict; a dict, as in a checkpoint's
    ``hyper_parameters``, is accepted); the rest is the optimiser (see ``LinmixModule``)."""

    app = "lm"

    def __init__(self, *, net: MixerLMConfig = MixerLMConfig(),  # noqa: B008 (dataclass default read by the CLI)
                 lr: float = 3e-3, weight_decay: float = 0.01, warmup_steps: int = 20) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        net = as_config(MixerLMConfig, net)
        self.save_net_hyperparameters(net)
        self.net = MixerLM(net)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        metrics = {"loss": loss}
        if stage != "train":
            # accuracy on answer characters: targets that follow '=' up to ';'
            pos = torch.arange(x.size(1), device=x.device).expand_as(x)
            last_eq = torch.where(x == STOI["="], pos, -1).cummax(dim=1).values
            last_semi = torch.where(x == STOI[";"], pos, -1).cummax(dim=1).values
            ans = (last_eq > last_semi) & (y != STOI[";"])
            pred = logits.argmax(-1)
            metrics["answer_acc"] = (pred[ans] == y[ans]).float().mean() if ans.any() else loss.new_zeros(())
        self.log_stage(stage, metrics, prog_bar=True, on_step=stage == "train", on_epoch=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).argmax(-1)

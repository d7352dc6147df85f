"""LightningModule for speech separation: Conv-TasNet trained with uPIT negative SI-SNR.

Validation logs SI-SNRi on whole utterances; test also computes SDRi (BSS-eval, torchmetrics) and writes a
per-utterance CSV (``test_results.csv``, one row per test mixture in mixture_ID order, with its source groups) and
``test_summary.json`` (means, medians and the SI-SNRi of same-group vs different-group mixtures and per group:
:func:`metrics.group_breakdown`) into the logger's folder
(``runs/speech/lightning_logs/version_*``).  Not a constructor argument on purpose: with ``--ckpt_path``
LightningCLI restores the model's arguments from the checkpoint, overriding command-line values.
Batches: ``{"mix": (B, T), "sources": (B, S, T), "id": list[str]}``.
"""

import csv
import json
import os
from pathlib import Path

import torch

from linmix.shared.config import as_config
from linmix.shared.lightning import LinmixModule
from linmix.shared.sharding import gather_objects

from .dynamic_mix import source_speakers
from .losses import pit_si_snr_loss, si_snr
from .metrics import group_breakdown, separation_metrics
from .model import ConvTasNet, ConvTasNetConfig


class SpeechLitModule(LinmixModule):
    """Conv-TasNet + uPIT SI-SNR.

    Args:
        net: network hyperparameters (paper defaults); saved as a plain dict, and a dict (a checkpoint's
            ``hyper_parameters["net"]``) is accepted.
        lr, weight_decay, warmup_steps, min_lr_ratio: AdamW + warmup/cosine of ``LinmixModule`` (no weight decay
            by default, as in the asteroid/torchaudio recipes).
        test_sdr: also compute BSS-eval SDRi at test (about 0.2-0.5 s per utterance on CPU).
    """

    app = "speech"

    def __init__(
        self,
        *,
        net: ConvTasNetConfig = ConvTasNetConfig(),  # noqa: B008 (dataclass default read by LightningCLI)
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        test_sdr: bool = True,
    ) -> None:
        super().__init__(
            lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio
        )
        net = as_config(ConvTasNetConfig, net)
        self.save_net_hyperparameters(net)
        self.net = ConvTasNet(net)
        self.test_sdr = test_sdr
        self._rows: list[dict[str, object]] = []

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix (B, T) -> sources (B, S, T)."""
        return self.net(mix)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        mix, ref = batch["mix"], batch["sources"]
        est = self.net(mix)
        loss, perm = pit_si_snr_loss(est, ref)
        logs = {"loss": loss.detach(), "si_snr": -loss.detach()}
        if stage != "train":
            base = si_snr(mix.unsqueeze(1).expand_as(ref), ref).mean()
            logs["si_snri"] = -loss.detach() - base
        self.log_stage(stage, logs, prog_bar=stage != "test", batch_size=mix.shape[0],
                       on_step=stage == "train", on_epoch=True)  # fmt: skip
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self._rows = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        mix, ref = batch["mix"], batch["sources"]
        est = self.net(mix)
        for i in range(mix.shape[0]):
            m = separation_metrics(est[i], ref[i], mix[i], sdr=self.test_sdr)
            groups = "+".join(g for _, g in source_speakers(batch["id"][i], ref.shape[1]))
            self._rows.append({"mixture_ID": batch["id"][i], "groups": groups, "samples": int(mix.shape[-1]), **m})
            self.log_stage("test", {k: v for k, v in m.items()}, batch_size=1, on_epoch=True)

    def _out_dir(self) -> Path:
        if self.trainer is not None and self.trainer.log_dir:
            return Path(self.trainer.log_dir)
        return Path("runs/speech")

    def on_test_epoch_end(self) -> None:
        # under DDP each rank tested its own utterances (linmix.shared.sharding): gathered once, written by rank 0,
        # in mixture_ID order whatever the number of processes
        rows = sorted((r for part in gather_objects(self._rows) for r in part), key=lambda r: str(r["mixture_ID"]))
        out = self._out_dir()  # the trainer's log_dir is a collective call under DDP: every rank asks
        if not rows or self.trainer.global_rank != 0:
            return
        self._rows = rows
        out.mkdir(parents=True, exist_ok=True)
        keys = list(self._rows[0].keys())
        tmp = out / "test_results.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self._rows)
        os.replace(tmp, out / "test_results.csv")
        metric_keys = [k for k in keys if k not in ("mixture_ID", "groups", "samples")]
        summary = {"n_utterances": len(self._rows)}
        for k in metric_keys:
            vals = torch.tensor([float(r[k]) for r in self._rows], dtype=torch.float64)
            summary[f"{k}_mean"] = float(torch.nanmean(vals))
            summary[f"{k}_median"] = float(torch.nanmedian(vals))
        summary["si_snri_breakdown"] = group_breakdown(self._rows, "si_snri")
        tmp = out / "test_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out / "test_summary.json")

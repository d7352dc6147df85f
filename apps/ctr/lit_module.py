"""CTRLitModule: one LightningModule for FCN, DCNv2, DNN and LR (``net.arch`` in the YAML).

Training loss: Tri-BCE (``loss: official | detach | bce``) plus FuxiCTR's embedding regulariser
(embedding_l2 / 2) * ||E||^2 over the whole table. Validation logs ``val/auc`` (torchmetrics BinaryAUROC, the
early-stopping and checkpoint monitor, mode max) and ``val/logloss``. Test logs AUC, logloss, gAUC (when the
data has a group column), ECE, and the Bayes-optimal AUC/logloss when the data carries ``p_true``; it writes a
calibration plot + predicted-CTR histogram and ``test_metrics.json``. Predict writes a Parquet of probabilities.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_warn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from linmix.apps.ctr.encoder import FIRST
from linmix.apps.ctr.evaluation import calibration_table, group_auc, plot_calibration
from linmix.apps.ctr.losses import TriBCEMode, tri_bce
from linmix.apps.ctr.model import CTRNet, CTRNetConfig
from linmix.shared.config import as_config
from linmix.shared.lightning import LinmixModule


class CTRLitModule(LinmixModule):
    """Click-through-rate training module.

    Args:
        net: network config; ``field_sizes``/``seq_sizes`` are filled from the datamodule at setup. Saved as a plain
            dict; a dict (a checkpoint's ``hyper_parameters["net"]``) is accepted.
        loss: Tri-BCE ``official`` (non-detached weights), ``detach``, or plain ``bce``.
        embedding_l2: lambda of (lambda / 2) * ||E||^2 on the embedding table (FuxiCTR ``embedding_regularizer``).
        lr, weight_decay, warmup_steps, min_lr_ratio: optimiser / schedule (``linmix.shared.lightning``).
        betas: AdamW betas; (0.9, 0.999) is Adam's default, which FuxiCTR and the FCN / DCNv2 papers' code train
            with (the shared base's (0.9, 0.95) is a language-model setting).
        early_stopping_patience: epochs without val AUC gain before stopping (0 = off).
        out_dir: where test plots/metrics and predictions go (default: the trainer's log dir).
        vocab_path: encoder vocabulary (filled from the datamodule; exported beside the model).
        n_fields, n_seq_fields: field counts linked from the data module (``CTRCLI.links``). Before the data is
            encoded the vocabulary sizes are unknown, so the net is built with placeholder 4-row vocabularies
            (the cross/MLP layers already have their final shapes) and rebuilt with the real sizes at setup.
    """

    app = "ctr"
    #: settings a ``test`` / ``predict`` with ``--ckpt_path`` takes from the command line, not the checkpoint
    runtime_hparams = ("out_dir",)

    def __init__(self, *, net: CTRNetConfig = CTRNetConfig(),  # noqa: B008 (dataclass default read by the CLI)
                 loss: TriBCEMode = "official", embedding_l2: float = 0.0,
                 lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 0, min_lr_ratio: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.999), early_stopping_patience: int = 2,
                 out_dir: Optional[str] = None, vocab_path: Optional[str] = None, n_fields: int = 0,
                 n_seq_fields: int = 0) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
                         betas=betas)
        net = as_config(CTRNetConfig, net)
        self.save_net_hyperparameters(net)
        self.loss_mode = loss
        self.embedding_l2 = embedding_l2
        self.provisional = not (net.field_sizes or net.seq_sizes)
        if self.provisional and (n_fields or n_seq_fields):
            net = dataclasses.replace(net, field_sizes=(FIRST + 1,) * n_fields, seq_sizes=(FIRST + 1,) * n_seq_fields)
        self.net: Optional[CTRNet] = CTRNet(net) if (net.field_sizes or net.seq_sizes) else None
        self.val_auc, self.test_auc = BinaryAUROC(), BinaryAUROC()
        self.val_ll, self.test_ll = MeanMetric(), MeanMetric()
        self.val_ctr, self.test_ctr = MeanMetric(), MeanMetric()  # label mean: 0 or 1 means one class only
        self._test: list[dict] = []
        self._pred: list[torch.Tensor] = []

    # ------------------------------------------------------------------ build from data
    def setup(self, stage: str) -> None:
        if not self.provisional:
            return
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not getattr(dm, "field_sizes", None):
            raise RuntimeError("CTRLitModule: net.field_sizes is empty and no CTRDataModule provides them")
        cfg = dataclasses.replace(as_config(CTRNetConfig, self.hparams.net), field_sizes=tuple(dm.field_sizes),
                                  seq_sizes=tuple(dm.seq_sizes))
        self.hparams["net"] = dataclasses.asdict(cfg)
        self.hparams["vocab_path"] = dm.vocab_path
        self.net = CTRNet(cfg)
        self.provisional = False

    def configure_callbacks(self):
        cbs = [ModelCheckpoint(monitor="val/auc", mode="max", save_last=True,
                               filename="epoch{epoch}-auc{val/auc:.4f}", auto_insert_metric_name=False)]
        if self.hparams.early_stopping_patience > 0:
            cbs.append(EarlyStopping(monitor="val/auc", mode="max", patience=self.hparams.early_stopping_patience))
        return cbs

    # ------------------------------------------------------------------ steps
    def _logits(self, batch: dict):
        seq = batch["seq"] if batch["seq"].numel() else None
        return self.net.branch_logits(batch["idx"], batch["val"], seq)

    def training_step(self, batch: dict, batch_idx: int):
        z, z_e, z_l = self._logits(batch)
        loss = tri_bce(z, z_e, z_l, batch["label"], self.loss_mode)
        if self.embedding_l2 > 0:
            loss = loss + 0.5 * self.embedding_l2 * self.net.embedding.table.weight.pow(2).sum()
        self.log_stage("train", {"loss": loss}, prog_bar=True, batch_size=len(z))
        return loss

    def _eval(self, batch: dict, auc: BinaryAUROC, ll: MeanMetric, ctr: MeanMetric) -> torch.Tensor:
        z = self._logits(batch)[0]
        p = torch.sigmoid(z)
        y = batch["label"]
        auc.update(p, y.long())
        ctr.update(y.double())
        ll.update(F.binary_cross_entropy(p.double().clamp(1e-7, 1 - 1e-7), y.double(), reduction="none"))
        return p

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, self.val_auc, self.val_ll, self.val_ctr)

    def on_validation_epoch_end(self) -> None:
        auc, why = auc_or_nan(self.val_auc, self.val_ctr, "validation")
        if why and not self.trainer.sanity_checking:
            rank_zero_warn(f"{why}; val/auc is logged as NaN, so no checkpoint or early stop is chosen on it")
        self.log_stage("val", {"auc": auc, "logloss": self.val_ll.compute()}, prog_bar=True)
        self.val_ll.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        p = self._eval(batch, self.test_auc, self.test_ll, self.test_ctr)
        keep = {"p": p.detach().double().cpu(), "y": batch["label"].cpu()}
        for k in ("group", "p_true", "row"):
            if k in batch:
                keep[k] = batch[k].cpu()
        self._test.append(keep)

    def _out_dir(self) -> Path:
        d = self.hparams.out_dir or (self.trainer.log_dir if self.trainer and self.trainer.log_dir else "runs/ctr")
        return Path(d)

    def on_test_epoch_end(self) -> None:
        auc, why = auc_or_nan(self.test_auc, self.test_ctr, "test")
        m = {"auc": float(auc), "logloss": float(self.test_ll.compute())}
        if why:
            rank_zero_warn(f"{why}; test/auc is NaN")
            m["auc_undefined"] = why
        self.test_ll.reset()
        parts = gather_parts(self._test)  # every rank's rows (DDP), each row once
        cat = {k: torch.cat([b[k] for b in parts]).numpy() for k in parts[0]} if parts else {}
        self._test = []
        if cat:
            p, y = cat["p"], cat["y"]
            if "group" in cat:
                m["gauc"] = group_auc(p, y, cat["group"])
            m["ece"] = calibration_table(p, y)["ece"]
            m["mean_pred"], m["ctr"] = float(p.mean()), float(y.mean())
            if "p_true" in cat:
                from linmix.apps.ctr.synth import bayes_metrics

                b = bayes_metrics(cat["p_true"].astype(np.float64), y)
                m["bayes_auc"], m["bayes_logloss"] = b["auc"], b["logloss"]
            out = self._out_dir()
            if self.trainer.is_global_zero:
                plot_calibration(p, y, out / "calibration.png", title=as_config(CTRNetConfig, self.hparams.net).arch)
                tmp = out / ".test_metrics.json.tmp"
                tmp.write_text(json.dumps({k: None if isinstance(v, float) and v != v else v for k, v in m.items()},
                                          indent=1))
                os.replace(tmp, out / "test_metrics.json")
        self.log_stage("test", {k: v for k, v in m.items() if not isinstance(v, str)})

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        p = torch.sigmoid(self._logits(batch)[0])
        rows = batch["row"] if "row" in batch else torch.arange(len(p)) + sum(len(q["p"]) for q in self._pred)
        self._pred.append({"row": rows.detach().cpu(), "p": p.detach().cpu()})
        return p

    def on_predict_epoch_end(self) -> None:
        """Write ``predictions.parquet`` (row, p), rows of every rank once in row order, atomically (rank 0)."""
        parts = gather_parts(self._pred)
        self._pred = []
        row = torch.cat([q["row"] for q in parts]).numpy() if parts else np.zeros(0, np.int64)
        p = torch.cat([q["p"] for q in parts]).numpy() if parts else np.zeros(0, np.float32)
        order = np.argsort(row, kind="stable")
        row, p = row[order], p[order]
        if len(row) and (np.diff(row) == 0).any():
            raise RuntimeError("predictions hold a row more than once")
        if not self.trainer.is_global_zero:
            return
        out = self._out_dir()
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".predictions.parquet.tmp"
        pl.DataFrame({"row": row, "p": p}).write_parquet(tmp)
        os.replace(tmp, out / "predictions.parquet")


def gather_parts(parts: list[dict]) -> list[dict]:
    """Per-batch dicts of CPU tensors from every DDP rank (all ranks get all), or ``parts`` in one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return parts
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, parts)
    return [q for rank_parts in everyone for q in rank_parts]


def auc_or_nan(auc: BinaryAUROC, label_mean: MeanMetric, split: str) -> tuple[torch.Tensor, Optional[str]]:
    """The split's AUC, or NaN and the reason when its labels hold one class (AUC is undefined there; torchmetrics
    would return 0.0, which a checkpoint monitor would read as a real score). Resets both metrics."""
    ctr = float(label_mean.compute()) if label_mean.update_count else float("nan")
    label_mean.reset()
    if ctr in (0.0, 1.0) or ctr != ctr:
        auc.reset()
        what = f"only label {int(ctr)}" if ctr == ctr else "no rows"
        return torch.tensor(float("nan")), f"the {split} split holds {what}: AUC is undefined"
    value = auc.compute()
    auc.reset()
    return value, None


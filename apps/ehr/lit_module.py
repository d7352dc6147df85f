"""EHRMamba LightningModule: next-token pretraining and multitask prompted finetuning (MPF).

One module, two objectives (linked from the data module's ``objective``):

- ``pretrain``: cross-entropy of next-token logits; padding targets are ignored (-100; Odyssey leaves PAD targets
  in the loss, since Hugging Face's cross-entropy ignores only -100).
- ``finetune``: binary cross-entropy of the task logit read at the last real token; the task token leads each input and
  is appended after its last token, where the logit is read (``model.prompt``); batches mix tasks. ``pretrained`` names a pretraining checkpoint whose backbone/embedding weights are loaded at the
  start of fitting (the classification head starts fresh). ``test`` reports AUROC, AUPRC and F1 per task (torchmetrics,
  on probabilities), writes ``test_metrics.json`` and ROC/PR plots in the log folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from linmix.apps.ehr.metrics import all_task_metrics, plot_curves
from linmix.apps.ehr.model import EHRMamba, EHRMambaConfig, EHRMambaScorer, prompt
from linmix.shared.config import as_config
from linmix.shared.errors import UserError
from linmix.shared.lightning import LinmixModule
from linmix.shared.sharding import gather_objects

INPUTS = ("tokens", "token_type", "age", "time", "visit_order", "visit_segment")


class EHRLitModule(LinmixModule):
    """EHRMamba training module.

    Args:
        net: EHRMamba sizes (``net.vocab_size`` is linked from the data); saved as a plain dict, and a dict (a
            checkpoint's ``hyper_parameters["net"]``) is accepted.
        objective: "pretrain" or "finetune" (linked from the data).
        pretrained: pretraining checkpoint (.ckpt) to start finetuning from; None = from scratch.
        lr, weight_decay, warmup_steps, min_lr_ratio: optimiser (see ``LinmixModule``).
    """

    app = "ehr"

    def __init__(self, *, net: EHRMambaConfig = EHRMambaConfig(),  # noqa: B008 (dataclass default read by the CLI)
                 objective: Literal["pretrain", "finetune"] = "finetune", pretrained: Optional[str] = None,
                 lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 100,
                 min_lr_ratio: float = 0.1) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        net = as_config(EHRMambaConfig, net)  # a dict from a checkpoint's hyper_parameters too
        self.save_net_hyperparameters(net)
        self.objective, self.pretrained = objective, pretrained
        self.net = EHRMamba(net)
        self.freeze_unused_head()
        self.task_names: list[str] = []
        self.task_token_ids: list[int] = []
        self.vocab_json = ""  # the data's Vocabulary (tokens + lab bins), kept for export and scoring
        self.data_task_names: list[str] = []  # the attached data module's tasks (its batches' task indices)
        self.task_map: Optional[torch.Tensor] = None  # data task index -> model task index, set from a checkpoint
        self._outputs: dict[str, list] = {}

    def freeze_unused_head(self) -> None:
        """Freeze the head this objective's loss never reads: the task head when pretraining, an untied LM head when
        finetuning (a tied one is the concept embedding, which finetuning trains). They get no gradient either way;
        frozen, DDP does not wait for one (no ``find_unused_parameters``) and AdamW skips them. Both heads stay in
        the checkpoint, so a pretraining checkpoint still loads into a finetuning run (which trains its task head)."""
        self.net.cls_head.requires_grad_(self.objective == "finetune")
        if not self.net.cfg.tie_embeddings:
            self.net.lm_head.requires_grad_(self.objective == "pretrain")

    # ---- task metadata travels with checkpoints (needed by export / predict) ----
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "task_names", None):
            self.task_names, self.task_token_ids = list(dm.task_names), list(dm.task_token_ids)
            self.data_task_names = list(dm.task_names)
            self.vocab_json = dm.vocab.to_json()
            n_heads = self.net.cfg.n_tasks
            if n_heads and n_heads != len(self.task_names):
                raise UserError(f"net.n_tasks = {n_heads} readouts but the data has {len(self.task_names)} tasks "
                                f"{self.task_names}: with --data.task_heads true the readouts follow the tasks "
                                "--data.n_conditions asks for; this cohort has fewer condition groups, lower it")
        if stage == "fit" and self.pretrained and self.objective == "finetune":
            self.load_pretrained(self.pretrained)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ehr_tasks"] = {"names": self.task_names, "token_ids": self.task_token_ids,
                                   "vocab": self.vocab_json}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Take the checkpoint's tasks; when a data module is attached (test / predict / resume), its tasks must be
        among them and its vocabulary equal, and its task indices are mapped to the checkpoint's readouts."""
        meta = checkpoint.get("ehr_tasks", {})
        names, ids, vocab = list(meta.get("names", [])), list(meta.get("token_ids", [])), meta.get("vocab", "")
        data_tasks = getattr(self, "data_task_names", None)
        if data_tasks and names and self.objective == "finetune":
            _check_same_data(names, vocab, data_tasks, self.vocab_json)
            self.task_map = torch.tensor([names.index(t) for t in data_tasks], dtype=torch.long)
            self._match_readouts(checkpoint)
        self.task_names, self.task_token_ids, self.vocab_json = names, ids, vocab

    def _match_readouts(self, checkpoint: dict) -> None:
        """The task readout follows the checkpoint (its ``net.n_tasks``): the data may ask for fewer tasks."""
        weight = checkpoint.get("state_dict", {}).get("net.cls_head.1.weight")
        head = self.net.cls_head[1]
        if weight is not None and weight.shape[0] != head.out_features:
            self.net.cls_head[1] = torch.nn.Linear(head.in_features, weight.shape[0]).to(head.weight.device)
            self.net.cfg.n_tasks = int(checkpoint["hyper_parameters"]["net"]["n_tasks"])

    def readout_index(self, task: torch.Tensor) -> torch.Tensor:
        """Data task indices (B,) -> the model's task indices (the checkpoint's order after ``on_load_checkpoint``)."""
        if self.task_map is None:
            return task
        return self.task_map.to(task.device)[task]

    @classmethod
    def load(cls, path: str | Path) -> EHRLitModule:
        """``load_from_checkpoint`` on CPU with weights-only unpickling."""
        from linmix.shared.checkpoint import load_lit

        return load_lit(cls, path, app="ehr")

    def load_pretrained(self, path: str) -> None:
        """Copy every pretrained tensor except the classification head; shapes must match (same vocab/sizes)."""
        if not Path(path).exists():
            raise UserError(f"pretrained checkpoint {path!r} not found (run `linmix-ehr fit -c "
                            "configs/ehr/pretrain.yaml` first)")
        from linmix.shared.checkpoint import read_checkpoint

        state = read_checkpoint(path, app="ehr", safe_globals=self.checkpoint_globals)["state_dict"]
        own = self.net.state_dict()
        loaded = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.") and "cls_head" not in k}
        bad = [k for k, v in loaded.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise UserError(f"pretrained checkpoint {path} does not match this model at {bad[:5]} "
                             "(different vocab_size or sizes?)")
        self.net.load_state_dict(loaded, strict=False)

    def exportable(self) -> EHRMambaScorer:
        if not self.task_token_ids:
            raise RuntimeError("no task tokens known: export a finetuned checkpoint")
        return EHRMambaScorer(self.net, self.task_token_ids)

    # ---- steps ----
    def _hidden(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, L', D) and the lengths at which to pool; finetuning adds the task prompt first."""
        if self.objective == "pretrain":
            return self.net(*(batch[k] for k in INPUTS)), batch["lengths"]
        *arrays, lengths = prompt(*(batch[k] for k in INPUTS), batch["task_token"])
        return self.net(*arrays), lengths

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        hidden, lengths = self._hidden(batch)
        bsz = batch["tokens"].size(0)
        if self.objective == "pretrain":
            logits = self.net.lm_logits(hidden[:, :-1])
            target = batch["tokens"][:, 1:].masked_fill(batch["tokens"][:, 1:] == 0, -100)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100)
            self.log_stage(stage, {"loss": loss}, prog_bar=True, batch_size=bsz)
            return loss
        task = self.readout_index(batch["task"])
        logit = self.net.pool_logit(hidden, lengths, task)
        loss = F.binary_cross_entropy_with_logits(logit, batch["label"])
        self.log_stage(stage, {"loss": loss}, prog_bar=True, batch_size=bsz)
        if stage != "train":
            out = self._outputs.setdefault(stage, [])
            out.append((torch.sigmoid(logit).detach().cpu(), batch["label"].cpu(), task.cpu()))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Finetune: probabilities (B,) with task indices, subject ids, prediction times and labels; pretrain: the most
        likely next token after the history. ``linmix-ehr predict`` writes them (``predict_writer``)."""
        hidden, lengths = self._hidden(batch)
        if self.objective == "pretrain":
            idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
            prob, token = torch.softmax(self.net.lm_logits(hidden.gather(1, idx).squeeze(1)), dim=-1).max(dim=-1)
            return {"subject_id": batch["subject_id"], "next_token": token, "next_token_probability": prob}
        task = self.readout_index(batch["task"])
        return {"probability": torch.sigmoid(self.net.pool_logit(hidden, lengths, task)), "task": task,
                "label": batch["label"], "subject_id": batch["subject_id"],
                "prediction_time": batch["prediction_time"]}

    def _epoch_metrics(self, stage: str) -> dict[str, dict[str, float]]:
        # every rank's datapoints on every rank (a rank evaluates its own part): AUROC / AUPRC / F1 are computed on
        # the whole split, exactly the single-process values; files are written by rank 0
        outs = [o for part in gather_objects(self._outputs.pop(stage, [])) for o in part]
        if not outs or not self.task_names:
            return {}
        prob, label, task = (torch.cat(x) for x in zip(*outs, strict=True))
        per_task = all_task_metrics(prob, label, task, self.task_names)
        if self.task_map is not None:  # a checkpoint's tasks the data did not ask for
            per_task = {t: m for t, m in per_task.items() if t in self.data_task_names}
        flat = {f"{t}/{k}": v for t, m in per_task.items() for k, v in m.items() if k in ("auroc", "auprc", "f1")}
        aurocs = [m["auroc"] for m in per_task.values() if m["auroc"] == m["auroc"]]
        if aurocs:
            flat["auroc"] = sum(aurocs) / len(aurocs)
        self.log_stage(stage, flat)  # the same values on every rank: their mean over ranks is each
        if stage == "test":
            self.test_results = per_task
            out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # log_dir: collective under DDP
            if self.trainer.is_global_zero:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "test_metrics.json").write_text(json.dumps(per_task, indent=1))
                plot_curves(prob, label, task, self.task_names, out_dir)
        return per_task

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")


def _check_same_data(names: list[str], vocab: str, data_tasks: list[str], data_vocab: str) -> None:
    """A checkpoint's tasks must include the data's, and its vocabulary must be the data's (same token ids)."""
    missing = [t for t in data_tasks if t not in names]
    if missing:
        raise UserError(f"the checkpoint was not finetuned on task(s) {missing}; its tasks are {names}: choose among "
                        "them with --data.tasks (and --data.labels_dir / --data.builtin_tasks as in finetuning), or "
                        "finetune on these tasks first")
    if vocab and data_vocab:
        from linmix.apps.ehr.vocab import Vocabulary

        ours, theirs = Vocabulary.from_json(data_vocab).tokens, Vocabulary.from_json(vocab).tokens
        if ours != theirs:
            diff = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
            first = diff[0] if diff else min(len(ours), len(theirs))
            raise UserError(f"the data's vocabulary differs from the checkpoint's ({len(diff)} of {len(theirs)} ids "
                            f"differ, first id {first}): use the MEDS data, --data.vocab_size, --data.n_conditions "
                            "and the --data.labels_dir task names of the finetuning run")

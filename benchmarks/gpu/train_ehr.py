"""GPU job for EHR quality: EHRMamba pretraining (next token) then multitask prompted finetuning on the packed cohort.

    python3 benchmarks/gpu/train_ehr.py --pack gpu_pack/ehr --out $APP_OUT --work $WORK --budget $BUDGET_S --accel gpu

Runs where polars is absent: inputs come from ``gpu_pack/ehr`` (``benchmarks/gpu/pack_ehr.py``, made by the app's own
data path) through ``linmix.apps.ehr.batches`` (``collate_packed``: the data module's padding, vectorised; the
length-bucketed sampler) into the app's ``EHRLitModule`` (same loss, AdamW, warmup + cosine schedule,
``load_pretrained``) on a plain ``pytorch_lightning.Trainer``.

Time-based sizing: a short warm-up measures seconds per step; pretraining gets ``--pre-frac`` of the remaining time and
finetuning the rest, each phase's ``max_steps`` chosen so its cosine schedule ends inside its time (a deadline callback
stops it regardless). Finetuning validates on the tuning split every ~``--val-every-s`` seconds and keeps the best
mean-AUROC weights. Everything that comes back is written atomically into ``--out``: ``log.txt`` (phases, steps/s,
samples/s, validation AUROCs), ``results.json`` (rewritten after each phase), ``finetuned_best.ckpt`` and
``finetuned_last.ckpt`` (weights-only Lightning checkpoints, loadable by ``EHRLitModule.load``), and
``predictions_held_out.npz`` (probability, label, task, subject_id, prediction_time of every held-out datapoint).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from joblog import JobLog, write_json
from linmix.apps.ehr.batches import BucketBatchSampler, SortedBatchSampler, collate_packed
from linmix.apps.ehr.lit_module import EHRLitModule
from linmix.apps.ehr.metrics import all_task_metrics
from linmix.apps.ehr.model import EHRMambaConfig
from torch.utils.data import DataLoader, Dataset

T0 = time.time()
INPUT_KEYS = ("tokens", "token_type", "age", "time", "visit_order", "visit_segment")


class Packed:
    """One part of the pack: its inputs as (start, length) into concatenated arrays (``pack_ehr.py``: a finetuning
    input points into the sequences of its ``base`` part; older packs and ``pre_train`` use ``offsets``);
    ``inputs(j)`` -> the six arrays of input j."""

    def __init__(self, z, prefix: str) -> None:
        if f"{prefix}/start" in z:
            base = str(z[f"{prefix}/base"])
            self.starts, self.lengths = z[f"{prefix}/start"], z[f"{prefix}/length"].astype(np.int64)
            self.subject = z[f"{prefix}/input_subject_id"]
        else:
            base, off = prefix, z[f"{prefix}/offsets"]
            self.starts, self.lengths, self.subject = off[:-1], np.diff(off), z[f"{prefix}/subject_id"]
        self.arrays = {k: z[f"{base}/{k}"] for k in INPUT_KEYS}

    def inputs(self, j: int) -> dict[str, np.ndarray]:
        a = self.starts[j]
        return {k: v[a:a + self.lengths[j]] for k, v in self.arrays.items()}

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Inputs ``rows`` (B,) right-padded: what ``collate`` makes of ``inputs(j)`` for j in rows, vectorised."""
        return collate_packed(self.arrays, self.starts[rows], self.lengths[rows])


class PackedPretrain(Dataset):
    """``PretrainDataset`` items from the pack."""

    def __init__(self, z) -> None:
        self.p = Packed(z, "pre_train")

    def __len__(self) -> int:
        return len(self.p.lengths)

    def lengths(self) -> np.ndarray:
        return self.p.lengths

    def __getitem__(self, i: int) -> dict:
        return {**self.p.inputs(i), "subject_id": int(self.p.subject[i])}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader calls this with the sampler's batch; == collate of the items)."""
        rows = np.asarray(idx, dtype=np.int64)
        return {**self.p.batch(rows), "subject_id": torch.from_numpy(self.p.subject[rows].astype(np.int64))}


class PackedFinetune(Dataset):
    """``FinetuneDataset`` items from the pack (datapoint -> its stored input + task, label, subject, time)."""

    def __init__(self, z, split: str, task_token_ids: list[int], keep: np.ndarray | None = None) -> None:
        pre = f"ft_{split}"
        self.p = Packed(z, pre)
        self.item, self.task = z[f"{pre}/item"].astype(np.int64), z[f"{pre}/task"].astype(np.int64)
        self.label = z[f"{pre}/label"].astype(np.float32)
        self.subject = self.p.subject[self.item]  # a datapoint's subject is its input's (checked when packing)
        # prediction times are packed for the held-out part only (what predictions report); elsewhere 0
        self.pred_us = z[f"{pre}/prediction_time"] if f"{pre}/prediction_time" in z else np.zeros_like(self.item)
        self.task_ids = task_token_ids
        if keep is not None:
            self.item, self.task, self.label = self.item[keep], self.task[keep], self.label[keep]
            self.subject, self.pred_us = self.subject[keep], self.pred_us[keep]

    def __len__(self) -> int:
        return len(self.item)

    def lengths(self) -> np.ndarray:
        return self.p.lengths[self.item]

    def __getitem__(self, i: int) -> dict:
        t = int(self.task[i])
        return {**self.p.inputs(int(self.item[i])), "task": t, "task_token": self.task_ids[t],
                "label": float(self.label[i]), "subject_id": int(self.subject[i]),
                "prediction_time": int(self.pred_us[i])}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (== collate of the items)."""
        i = np.asarray(idx, dtype=np.int64)
        task = self.task[i]
        return {**self.p.batch(self.item[i]), "subject_id": torch.from_numpy(self.subject[i].astype(np.int64)),
                "prediction_time": torch.from_numpy(self.pred_us[i].astype(np.int64)),
                "task": torch.from_numpy(task), "task_token": torch.as_tensor(np.asarray(self.task_ids)[task]),
                "label": torch.from_numpy(self.label[i])}


def batched(batch: dict) -> dict:
    """collate_fn for datasets whose ``__getitems__`` already returns the padded batch."""
    return batch


def train_loader(ds, batch_size: int, workers: int, seed: int) -> DataLoader:
    return DataLoader(ds, batch_sampler=BucketBatchSampler(ds.lengths(), batch_size, seed=seed), collate_fn=batched,
                      num_workers=workers, persistent_workers=workers > 0, timeout=120 if workers else 0)


def eval_loader(ds, batch_size: int) -> DataLoader:
    """Batches of similar length (metrics do not depend on the order)."""
    return DataLoader(ds, batch_sampler=SortedBatchSampler(ds.lengths(), batch_size), collate_fn=batched)


class Monitor(pl.Callback):
    """Throughput log, deadline stop, periodic weights-only checkpoints, best-on-tuning selection."""

    def __init__(self, log: JobLog, phase: str, batch_size: int, deadline: float, out: Path | None = None,
                 save_every_s: float = 60.0) -> None:
        self.say, self.phase, self.bs, self.deadline, self.out = log, phase, batch_size, deadline, out
        self.save_every_s, self.last_save = save_every_s, time.time()
        self.t_start = self.t_win = None
        self.step_win = 0
        self.step_times: list[float] = []
        self.best, self.history = -1.0, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now, step = time.time(), trainer.global_step
        if self.t_start is None:
            self.t_start, self.t_win, self.step_win = now, now, step
        self.step_times.append(now)
        if now - self.t_win >= 20.0:
            rate = (step - self.step_win) / (now - self.t_win)
            loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
            self.say(f"{self.phase} step {step}/{trainer.max_steps}: {rate:.2f} steps/s, {rate * self.bs:.0f} "
                     f"samples/s, train/loss {loss:.4f}")
            self.t_win, self.step_win = now, step
        if self.out is not None and now - self.last_save >= self.save_every_s:
            self.save(trainer, "finetuned_last.ckpt")
            self.last_save = now
        if now >= self.deadline:
            self.say(f"{self.phase}: deadline reached at step {step}, stopping")
            trainer.should_stop = True

    def save(self, trainer, name: str) -> None:
        tmp = self.out / f".{name}.tmp"
        trainer.save_checkpoint(tmp, weights_only=True)
        os.replace(tmp, self.out / name)

    def on_validation_end(self, trainer, module) -> None:
        m = trainer.callback_metrics
        if "val/auroc" not in m:
            return
        auroc = float(m["val/auroc"])
        per = {k.split("/")[1]: round(float(v), 4) for k, v in m.items() if k.startswith("val/") and
               k.endswith("/auroc") and k.count("/") == 2}
        self.history.append({"step": trainer.global_step, "t": round(time.time() - T0, 1), "auroc": auroc, **per})
        best = auroc > self.best
        self.say(f"{self.phase} val step {trainer.global_step}: mean tuning AUROC {auroc:.4f}{' (best)' if best else ''}"
                 f" {per}")
        if best and self.out is not None:
            self.best, self.best_step = auroc, trainer.global_step
            self.save(trainer, "finetuned_best.ckpt")


def trainer_for(args, phase: str, max_steps: int, callbacks, val_every: int | None = None) -> pl.Trainer:
    from pytorch_lightning.loggers import CSVLogger

    kw = dict(val_check_interval=val_every, check_val_every_n_epoch=None) if val_every else dict(limit_val_batches=0)
    return pl.Trainer(accelerator=args.accel, devices=1, max_steps=max_steps, gradient_clip_val=1.0,
                      logger=CSVLogger(Path(args.out) / "logs", name=phase), log_every_n_steps=25,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, callbacks=callbacks, **kw)


def make_module(args, cfg: EHRMambaConfig, meta: dict, objective: str, pretrained: str | None = None,
                warmup: int = 100) -> EHRLitModule:
    lit = EHRLitModule(net=cfg, objective=objective, pretrained=pretrained, lr=args.lr, weight_decay=0.01,
                       warmup_steps=warmup, min_lr_ratio=0.1)
    lit.task_names, lit.task_token_ids, lit.vocab_json = meta["task_names"], meta["task_token_ids"], meta["vocab_json"]
    return lit


@torch.no_grad()
def predict(lit: EHRLitModule, ds, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Held-out probabilities through the module's own ``predict_step``."""
    lit.eval().to(device)
    cols: dict[str, list] = {}
    for i, batch in enumerate(eval_loader(ds, batch_size)):
        out = lit.predict_step({k: v.to(device) for k, v in batch.items()}, i)
        for k, v in out.items():
            cols.setdefault(k, []).append(v.detach().cpu())
    return {k: torch.cat(v).numpy() for k, v in cols.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", default="gpu_pack/ehr")
    p.add_argument("--out", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--budget", type=float, required=True, help="seconds from the job's start to the last write")
    p.add_argument("--accel", default="gpu")
    p.add_argument("--ncpu", type=int, default=3)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--d-state", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pre-frac", type=float, default=0.2, help="share of the training time spent pretraining")
    p.add_argument("--pre-max-epochs", type=float, default=10.0)
    p.add_argument("--ft-max-epochs", type=float, default=40.0)
    p.add_argument("--val-every-s", type=float, default=40.0)
    p.add_argument("--reserve-s", type=float, default=40.0, help="kept for the final validation, predictions, saving")
    p.add_argument("--warmup-steps", type=int, default=30, help="timed steps before sizing the phases")
    p.add_argument("--eval-limit", type=int, default=0, help="tuning datapoints for validation (0 = all)")
    p.add_argument("--test-limit", type=int, default=0, help="held-out datapoints to predict (0 = all; CPU rehearsal)")
    args = p.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = JobLog(out / "log.txt", T0)
    gpu = args.accel == "gpu"
    torch.set_float32_matmul_precision("high")
    torch.set_num_threads(max(1, min(args.ncpu, 3)) if gpu else 1)
    device = torch.device("cuda" if gpu else "cpu")
    hw = torch.cuda.get_device_name(0) if gpu else "cpu"
    from linmix.shared import kernel_available

    log(f"EHR GPU job: torch {torch.__version__}, lightning {pl.__version__}, device {hw}, budget {args.budget:.0f}s, "
        f"SSD path {'mamba-ssm kernel' if kernel_available() else 'pure PyTorch'}, args {vars(args)}")
    pl.seed_everything(0, workers=True)
    res: dict = {"args": vars(args), "hardware": hw, "torch": torch.__version__, "phases": {}}
    meta = json.loads((Path(args.pack) / "meta.json").read_text())
    with np.load(Path(args.pack) / "ehr_pack.npz") as zf:
        z = {k: zf[k] for k in zf.files}
    tids = meta["task_token_ids"]
    pre_ds, ft_ds = PackedPretrain(z), PackedFinetune(z, "train", tids)
    def subset(split: str, n: int) -> np.ndarray | None:
        return np.sort(np.random.default_rng(0).permutation(len(z[f"ft_{split}/item"]))[:n]) if n else None

    val_ds = PackedFinetune(z, "tuning", tids, subset("tuning", args.eval_limit))
    test_ds = PackedFinetune(z, "held_out", tids, subset("held_out", args.test_limit))
    log(f"pack loaded: {len(pre_ds)} pretraining sequences, {len(ft_ds)} train / {len(val_ds)} tuning / "
        f"{len(test_ds)} held-out datapoints, tasks {meta['task_names']}")
    cfg = EHRMambaConfig(vocab_size=meta["vocab_size"], d_model=args.d_model, n_layers=args.n_layers,
                         d_state=args.d_state, d_time=16, max_visits=64, dropout=args.dropout,
                         n_token_types=meta["n_token_types"], n_tasks=len(meta["task_names"]))
    res["net"] = cfg.__dict__
    workers = min(2, args.ncpu - 1) if gpu else 0
    bs, eval_bs = args.batch_size, 1024 if gpu else 256
    train_end = T0 + args.budget - args.reserve_s
    # ---- warm-up: time finetuning steps on a throwaway module ----
    t = time.time()
    mon = Monitor(log, "warmup", bs, deadline=train_end)
    tr = trainer_for(args, "warmup", args.warmup_steps, [mon])
    tr.fit(make_module(args, cfg, meta, "finetune"), train_loader(ft_ds, bs, 0, seed=99))
    ts = mon.step_times
    skip = min(5, max(0, len(ts) - 3))
    s_step = (ts[-1] - ts[skip]) / max(1, len(ts) - 1 - skip) if len(ts) > 1 else time.time() - t
    res["phases"]["warmup"] = {"steps": tr.global_step, "wall_s": round(time.time() - t, 1), "s_per_step": s_step}
    log(f"warm-up: {tr.global_step} steps in {time.time() - t:.1f}s, {s_step * 1e3:.1f} ms/step = {1 / s_step:.2f} "
        f"steps/s = {bs / s_step:.0f} samples/s (batch {bs})")
    write_json(out / "results.json", res)
    # ---- pretraining: next token on the train split ----
    remaining = train_end - time.time()
    t_pre = args.pre_frac * remaining
    per_epoch = len(train_loader(pre_ds, bs, 0, 0))
    pre_steps = max(1, min(int(args.pre_max_epochs * per_epoch), int(0.9 * t_pre / s_step)))
    log(f"pretrain: {pre_steps} steps ({pre_steps / per_epoch:.1f} epochs) in <= {t_pre:.0f}s")
    t = time.time()
    mon = Monitor(log, "pretrain", bs, deadline=t + t_pre)
    pre = make_module(args, cfg, meta, "pretrain", warmup=min(100, pre_steps // 10))
    tr = trainer_for(args, "pretrain", pre_steps, [mon])
    tr.fit(pre, train_loader(pre_ds, bs, workers, seed=0))
    pre_ckpt = work / "pretrain.ckpt"
    tr.save_checkpoint(pre_ckpt, weights_only=True)
    wall = time.time() - t
    ts = mon.step_times
    s_pre = (ts[-1] - ts[min(5, len(ts) - 2)]) / max(1, len(ts) - 1 - min(5, len(ts) - 2)) if len(ts) > 2 else s_step
    res["phases"]["pretrain"] = {"steps": tr.global_step, "planned_steps": pre_steps, "wall_s": round(wall, 1),
                                 "s_per_step": s_pre, "epochs": tr.global_step / per_epoch,
                                 "train_loss": float(tr.callback_metrics.get("train/loss", float("nan")))}
    log(f"pretrain done: {tr.global_step} steps in {wall:.1f}s ({1 / s_pre:.2f} steps/s, {bs / s_pre:.0f} samples/s), "
        f"train/loss {res['phases']['pretrain']['train_loss']:.4f}")
    write_json(out / "results.json", res)
    # ---- multitask prompted finetuning from the pretrained weights, best tuning AUROC kept ----
    t = time.time()
    t_ft = train_end - t
    s_ft = s_pre if len(ts) > 20 else max(s_step, s_pre)  # the latest speed under the current GPU sharing
    per_epoch = len(train_loader(ft_ds, bs, 0, 0))
    n_val = max(1, int(t_ft / args.val_every_s))
    val_cost = 3.0 if gpu else 30.0  # s per validation pass (rough; deadline callback guards anyway)
    ft_steps = max(1, min(int(args.ft_max_epochs * per_epoch), int(0.9 * (t_ft - n_val * val_cost) / s_ft)))
    val_every = max(1, ft_steps // n_val)
    log(f"finetune: {ft_steps} steps ({ft_steps / per_epoch:.1f} epochs), validation every {val_every} steps, "
        f"in <= {t_ft:.0f}s")
    mon = Monitor(log, "finetune", bs, deadline=train_end, out=out)
    fine = make_module(args, cfg, meta, "finetune", pretrained=str(pre_ckpt), warmup=min(200, ft_steps // 10))
    tr = trainer_for(args, "finetune", ft_steps, [mon], val_every=val_every)
    tr.fit(fine, train_loader(ft_ds, bs, workers, seed=1), eval_loader(val_ds, eval_bs))
    if not mon.history or mon.history[-1]["step"] != tr.global_step:
        tr.validate(fine, eval_loader(val_ds, eval_bs), verbose=False)
    mon.save(tr, "finetuned_last.ckpt")
    wall = time.time() - t
    res["phases"]["finetune"] = {"steps": tr.global_step, "planned_steps": ft_steps, "wall_s": round(wall, 1),
                                 "epochs": tr.global_step / per_epoch, "steps_per_s": tr.global_step / wall,
                                 "best_step": getattr(mon, "best_step", None), "best_tuning_auroc": mon.best,
                                 "validations": mon.history}
    log(f"finetune done: {tr.global_step} steps in {wall:.1f}s; best mean tuning AUROC {mon.best:.4f} at step "
        f"{getattr(mon, 'best_step', None)}")
    write_json(out / "results.json", res)
    # ---- held-out predictions of the best checkpoint ----
    t = time.time()
    best = EHRLitModule.load(out / "finetuned_best.ckpt")
    pred = predict(best, test_ds, eval_bs, device)
    tmp = out / ".predictions_held_out.tmp.npz"
    np.savez_compressed(tmp, **pred)
    os.replace(tmp, out / "predictions_held_out.npz")
    per_task = all_task_metrics(torch.as_tensor(pred["probability"]), torch.as_tensor(pred["label"]),
                                torch.as_tensor(pred["task"]), meta["task_names"])
    res["held_out_device"] = {k: {m: v[m] for m in ("auroc", "auprc", "f1", "n")} for k, v in per_task.items()}
    res["phases"]["predict"] = {"wall_s": round(time.time() - t, 1)}
    res["total_wall_s"] = round(time.time() - T0, 1)
    write_json(out / "results.json", res)
    log("held-out AUROC on the device: " + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in per_task.items()))
    log(f"done in {time.time() - T0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

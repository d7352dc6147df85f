"""EHR quality recipe: EHRMamba pretraining (next token) then multitask prompted finetuning, sized by wall time.

    python recipes/ehr.py --patients 60000 --budget 600                # on a CUDA machine
    python recipes/ehr.py --smoke --accel cpu --budget 60 --out /tmp/ehr_smoke   # rehearsal on a CPU

1. Cohort: ``synthesize(n, seed)`` + ``ingest`` (the app's own generator and FHIR -> MEDS ingest) into ``--data``,
   reused when it already holds that cohort; ``--meds DIR`` trains on an existing MEDS folder instead.
2. Data: ``EHRDataModule`` for each objective (the app's one data path: sequences cached under ``<data>/cache``,
   length-bucketed batches, ``num_workers=--workers``).
3. Sizing: a short timed warm-up gives the seconds per step; pretraining gets ``--pre-frac`` of the remaining time
   (at most ``--pre-max-epochs``), finetuning the rest (at most ``--ft-max-epochs``); each phase's ``max_steps`` is
   set so its cosine schedule (``EHRLitModule``'s own: AdamW, warmup, cosine to 10 %) ends inside its time, and a
   deadline callback stops it regardless.
4. Finetuning validates on the tuning split about every ``--val-every-s`` seconds and keeps the best mean-AUROC
   weights: ``finetuned_best.ckpt`` (weights-only Lightning checkpoint, loadable by ``EHRLitModule.load`` and
   ``linmix-ehr score --ckpt``); ``finetuned_last.ckpt`` is rewritten every minute.
5. The best weights score the held-out split on the device: ``predictions_held_out.npz`` (probability, label, task,
   subject_id, prediction_time per datapoint) and per-task AUROC in ``run.json``.

``--out`` gets ``log.txt`` and ``run.json`` (cohort, args, device, phases, validation history; rewritten after each
phase). Score it on CPU afterwards with ``recipes/eval_ehr.py --from <out>``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Log, base_parser, device_info, resolve_common, write_json  # noqa: E402

T0 = time.time()


def make_cohort(data: Path, n_patients: int, seed: int, workers: int, log: Log) -> dict:
    """``data/fhir`` + ``data/meds`` for ``synthesize(n_patients, seed)``, reused when ``fhir/synth.json`` matches."""
    from linmix.apps.ehr.ingest import ingest
    from linmix.apps.ehr.synth import synthesize

    cohort = {"n_patients": n_patients, "seed": seed}
    marker = data / "fhir" / "synth.json"
    if marker.is_file() and json.loads(marker.read_text()) == cohort and \
            (data / "meds" / "metadata" / "subject_splits.parquet").is_file():
        log(f"cohort: reusing {data} ({cohort})")
        return {**cohort, "synth_s": 0.0, "ingest_s": 0.0}
    t = time.time()
    synthesize(n_patients, data / "fhir", fmt="ndjson", seed=seed)
    t_synth = time.time() - t
    t = time.time()
    ingest([data / "fhir"], data / "meds", overwrite=True, workers=workers)
    t_ingest = time.time() - t
    marker.write_text(json.dumps(cohort))
    log(f"cohort: {n_patients} patients synthesised in {t_synth:.0f} s, ingested in {t_ingest:.0f} s -> {data}")
    return {**cohort, "synth_s": round(t_synth, 1), "ingest_s": round(t_ingest, 1)}


def monitor_class():
    import pytorch_lightning as pl

    class Monitor(pl.Callback):
        """Throughput lines, deadline stop, periodic weights-only checkpoints, best-on-tuning selection."""

        def __init__(self, log: Log, phase: str, batch_size: int, deadline: float, out: Path | None = None,
                     save_every_s: float = 60.0) -> None:
            self.say, self.phase, self.bs, self.deadline, self.out = log, phase, batch_size, deadline, out
            self.save_every_s, self.last_save = save_every_s, time.time()
            self.t_win, self.step_win = None, 0
            self.step_times: list[float] = []
            self.best, self.best_step, self.history = -1.0, None, []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            now, step = time.time(), trainer.global_step
            if self.t_win is None:
                self.t_win, self.step_win = now, step
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
            if "val/auroc" not in m or trainer.sanity_checking:
                return
            auroc = float(m["val/auroc"])
            per = {k.split("/")[1]: round(float(v), 4) for k, v in m.items()
                   if k.startswith("val/") and k.endswith("/auroc") and k.count("/") == 2}
            self.history.append({"step": trainer.global_step, "t": round(time.time() - T0, 1), "auroc": auroc, **per})
            best = auroc > self.best
            self.say(f"{self.phase} val step {trainer.global_step}: mean tuning AUROC {auroc:.4f}"
                     f"{' (best)' if best else ''} {per}")
            if best and self.out is not None:
                self.best, self.best_step = auroc, trainer.global_step
                self.save(trainer, "finetuned_best.ckpt")

    return Monitor


def seconds_per_step(times: list[float], fallback: float) -> float:
    """Mean step time after the first few steps (compilation, worker start-up)."""
    skip = min(5, max(0, len(times) - 3))
    return (times[-1] - times[skip]) / (len(times) - 1 - skip) if len(times) - 1 - skip > 0 else fallback


def main(argv=None) -> int:
    p = base_parser("ehr", __doc__, budget_s=600.0)
    p.add_argument("--patients", type=int, default=60000, help="synthetic cohort size (train/tuning/held-out 80/10/10)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed")
    p.add_argument("--data", type=Path, default=None, help="cohort folder (default: runs/recipes/data/ehr_<n>_<seed>)")
    p.add_argument("--meds", type=Path, default=None, help="train on this MEDS folder instead of a synthetic cohort")
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--d-state", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--mixer", choices=("mamba2", "mamba3", "hybrid"), default="mamba2",
                   help="MixerStack kind of the backbone (hybrid: Mamba3 + causal softmax attention in parallel)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pre-frac", type=float, default=0.4, help="share of the training time spent pretraining")
    p.add_argument("--pre-max-epochs", type=float, default=10.0)
    p.add_argument("--ft-max-epochs", type=float, default=40.0)
    p.add_argument("--val-every-s", type=float, default=40.0, help="seconds between validations while finetuning")
    p.add_argument("--reserve-s", type=float, default=40.0, help="kept for the final validation, predictions, saving")
    p.add_argument("--warmup-steps", type=int, default=30, help="timed steps before sizing the phases")
    args = resolve_common(p.parse_args(argv))
    if args.smoke:  # rehearsal: small cohort and model, short warm-up, a few evaluation batches
        args.patients, args.d_model, args.n_layers, args.d_state = min(args.patients, 300), 32, 1, 16
        args.batch_size, args.warmup_steps, args.val_every_s = 32, 4, 15.0
        args.reserve_s = min(args.reserve_s, 0.3 * args.budget)
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import CSVLogger

    from linmix.apps.ehr.data import EHRDataModule
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.metrics import all_task_metrics
    from linmix.apps.ehr.model import EHRMambaConfig
    from linmix.apps.ehr.sequence_cache import input_hash

    out = args.out
    log = Log(out / "log.txt", T0)
    gpu = args.accel == "gpu"
    torch.set_float32_matmul_precision("high")
    torch.set_num_threads(max(1, min(args.workers, 4)) if gpu else max(1, min(args.workers, 2)))
    info = device_info(args.accel)
    log(f"EHR recipe: {json.dumps(info)}; args {json.dumps(vars(args), default=str)}")
    res: dict = {"recipe": "recipes/ehr.py", "argv": sys.argv[1:] if argv is None else list(argv), "args": vars(args),
                 "device": info, "phases": {}}
    if args.meds is not None:
        meds, cache = args.meds, out / "cache"
        res["cohort"] = {"meds": str(meds)}
    else:
        data = args.data or ROOT / "runs" / "recipes" / "data" / f"ehr_{args.patients}_{args.seed}"
        res["cohort"] = {**make_cohort(data, args.patients, args.seed, args.workers, log), "data": str(data)}
        meds, cache = data / "meds", data / "cache"
    kw = dict(meds_dir=str(meds), cache_dir=str(cache), vocab_size=args.vocab_size, max_len=args.max_len,
              batch_size=args.batch_size, num_workers=args.workers if gpu else 0)
    pre_dm, ft_dm = EHRDataModule(objective="pretrain", **kw), EHRDataModule(objective="finetune", **kw)
    for dm in (ft_dm, pre_dm):
        dm.prepare_data()
        dm.setup("fit")
    res["cohort"]["input_hash"] = input_hash(meds, ft_dm.settings)
    res["cohort"]["datapoints"] = {s: len(ft_dm.datasets[s]) for s in ("train", "tuning", "held_out")}
    log(f"data: {len(pre_dm.datasets['train'])} pretraining sequences, {res['cohort']['datapoints']} finetuning "
        f"datapoints, tasks {ft_dm.task_names}")
    cfg = EHRMambaConfig(vocab_size=args.vocab_size, d_model=args.d_model, n_layers=args.n_layers,
                         d_state=args.d_state, d_time=16, max_visits=64, dropout=args.dropout, mixer=args.mixer)
    res["net"] = dict(cfg.__dict__)
    eval_limit = 2 if args.smoke else 1.0
    Monitor = monitor_class()
    pl.seed_everything(args.train_seed, workers=True)

    def trainer(phase: str, max_steps: int, callbacks: list, val_every: int | None = None) -> pl.Trainer:
        val = (dict(val_check_interval=val_every, check_val_every_n_epoch=None, limit_val_batches=eval_limit)
               if val_every else dict(limit_val_batches=0))
        return pl.Trainer(accelerator=args.accel, devices=1, max_steps=max_steps, gradient_clip_val=1.0,
                          logger=CSVLogger(out / "logs", name=phase), log_every_n_steps=25, enable_progress_bar=False,
                          enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                          callbacks=callbacks, **val)

    def module(objective: str, warmup: int, pretrained: str | None = None) -> EHRLitModule:
        return EHRLitModule(net=cfg, objective=objective, pretrained=pretrained, lr=args.lr, weight_decay=0.01,
                            warmup_steps=warmup, min_lr_ratio=0.1)

    bs = args.batch_size
    train_end = time.time() + args.budget - args.reserve_s  # the budget starts now, with the data ready
    # ---- warm-up: time finetuning steps on a throwaway module ----
    t = time.time()
    mon = Monitor(log, "warmup", bs, deadline=train_end)
    tr = trainer("warmup", args.warmup_steps, [mon])
    tr.fit(module("finetune", 1), datamodule=ft_dm)
    s_step = seconds_per_step(mon.step_times, time.time() - t)
    res["phases"]["warmup"] = {"steps": tr.global_step, "wall_s": round(time.time() - t, 1), "s_per_step": s_step}
    log(f"warm-up: {tr.global_step} steps in {time.time() - t:.1f} s, {s_step * 1e3:.1f} ms/step = "
        f"{bs / s_step:.0f} samples/s (batch {bs})")
    write_json(out / "run.json", res)
    # ---- pretraining: next token on the train split ----
    t_pre = args.pre_frac * (train_end - time.time())
    per_epoch = len(pre_dm.train_dataloader())
    pre_steps = max(1, min(int(args.pre_max_epochs * per_epoch), int(0.9 * t_pre / s_step)))
    log(f"pretrain: {pre_steps} steps ({pre_steps / per_epoch:.1f} epochs) in <= {t_pre:.0f} s")
    t = time.time()
    mon = Monitor(log, "pretrain", bs, deadline=t + t_pre)
    tr = trainer("pretrain", pre_steps, [mon])
    tr.fit(module("pretrain", min(100, pre_steps // 10)), datamodule=pre_dm)
    pre_ckpt = out / "pretrain.ckpt"
    tr.save_checkpoint(pre_ckpt, weights_only=True)
    s_pre = seconds_per_step(mon.step_times, s_step)
    res["phases"]["pretrain"] = {"steps": tr.global_step, "planned_steps": pre_steps, "wall_s": round(time.time() - t, 1),
                                 "s_per_step": s_pre, "epochs": tr.global_step / per_epoch,
                                 "train_loss": float(tr.callback_metrics.get("train/loss", float("nan")))}
    log(f"pretrain done: {tr.global_step} steps in {time.time() - t:.1f} s ({bs / s_pre:.0f} samples/s), "
        f"train/loss {res['phases']['pretrain']['train_loss']:.4f}")
    write_json(out / "run.json", res)
    # ---- multitask prompted finetuning from the pretrained weights, best tuning AUROC kept ----
    t = time.time()
    t_ft = train_end - t
    s_ft = s_pre if len(mon.step_times) > 20 else max(s_step, s_pre)
    per_epoch = len(ft_dm.train_dataloader())
    n_val = max(1, int(t_ft / args.val_every_s))
    val_cost = 3.0 if gpu else 10.0  # s per validation pass (rough; the deadline guards anyway)
    ft_steps = max(1, min(int(args.ft_max_epochs * per_epoch), int(0.9 * max(t_ft - n_val * val_cost, 1) / s_ft)))
    val_every = max(1, min(ft_steps // n_val, per_epoch))
    log(f"finetune: {ft_steps} steps ({ft_steps / per_epoch:.1f} epochs), validation every {val_every} steps, "
        f"in <= {t_ft:.0f} s")
    mon = Monitor(log, "finetune", bs, deadline=train_end, out=out)
    fine = module("finetune", min(200, ft_steps // 10), pretrained=str(pre_ckpt))
    tr = trainer("finetune", ft_steps, [mon], val_every=val_every)
    tr.fit(fine, datamodule=ft_dm)
    if not mon.history or mon.history[-1]["step"] != tr.global_step:
        tr.validate(fine, datamodule=ft_dm, verbose=False)
    mon.save(tr, "finetuned_last.ckpt")
    wall = time.time() - t
    res["phases"]["finetune"] = {"steps": tr.global_step, "planned_steps": ft_steps, "wall_s": round(wall, 1),
                                 "epochs": tr.global_step / per_epoch, "steps_per_s": tr.global_step / wall,
                                 "best_step": mon.best_step, "best_tuning_auroc": mon.best, "validations": mon.history}
    log(f"finetune done: {tr.global_step} steps in {wall:.1f} s; best mean tuning AUROC {mon.best:.4f} at step "
        f"{mon.best_step}")
    write_json(out / "run.json", res)
    # ---- held-out predictions of the best weights, on the device ----
    t = time.time()
    best = EHRLitModule.load(out / "finetuned_best.ckpt")
    tr = pl.Trainer(accelerator=args.accel, devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_predict_batches=eval_limit)
    rows = tr.predict(best, datamodule=ft_dm)
    pred = {k: torch.cat([r[k] for r in rows]).cpu().numpy() for k in rows[0]}
    import numpy as np

    tmp = out / ".predictions_held_out.tmp.npz"
    np.savez_compressed(tmp, **pred)
    os.replace(tmp, out / "predictions_held_out.npz")
    per_task = all_task_metrics(torch.as_tensor(pred["probability"]), torch.as_tensor(pred["label"]),
                                torch.as_tensor(pred["task"]), best.task_names)
    res["parameters"] = sum(p.numel() for p in best.net.parameters())
    res["held_out_device"] = {k: {m: v[m] for m in ("auroc", "auprc", "f1", "n")} for k, v in per_task.items()}
    res["phases"]["predict"] = {"wall_s": round(time.time() - t, 1), "datapoints": len(pred["label"])}
    res["total_wall_s"] = round(time.time() - T0, 1)
    write_json(out / "run.json", res)
    log("held-out AUROC on the device: " + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in per_task.items()))
    log(f"done in {time.time() - T0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

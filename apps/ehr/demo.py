"""``linmix-ehr demo``: synth -> ingest -> pretrain -> finetune (MPF) -> test -> baseline -> oracle -> export.

Runs the whole EHR app on a small synthetic cohort and writes under ``--out``: ``fhir/`` (+ ``oracle.parquet``),
``meds/``, ``cache/``, Lightning logs and checkpoints, ``roc.png``/``pr.png``, ``quality.md`` (EHRMamba vs baseline vs
oracle per task), ``ehr_mamba.pt`` (TorchScript) and ``summary.json`` (rows ``{stage, metric, value, note}``).
``run_pipeline`` is also what ``benchmarks/ehr/quality.py`` runs at larger sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # torch loads when the demo runs, not for --help
    from linmix.apps.ehr.model import EHRMambaConfig


def _demo_net() -> EHRMambaConfig:
    from linmix.apps.ehr.model import EHRMambaConfig

    return EHRMambaConfig(vocab_size=512, d_model=32, n_layers=2, d_state=16, d_time=8, max_visits=64, dropout=0.1)


@dataclass
class PipelineSettings:
    """Sizes of one end-to-end run (defaults: the demo, a few minutes on 2 CPU cores)."""

    n_patients: int = 400
    seed: int = 0
    net: EHRMambaConfig = field(default_factory=_demo_net)
    max_len: int = 512
    batch_size: int = 32
    pretrain_epochs: float = 1.0
    finetune_epochs: float = 1.0
    lr: float = 2e-3
    warmup_steps: int = 10
    baseline_iter: int = 200
    reuse_data: bool = False  # keep fhir/ + meds/ of an earlier run with the same n_patients and seed


def _trainer(out: Path, name: str, epochs: float, n_batches: int):
    import pytorch_lightning as pl_
    from pytorch_lightning.loggers import CSVLogger

    steps = max(1, int(round(epochs * n_batches)))
    return pl_.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=CSVLogger(out, name=name),
                       default_root_dir=out, enable_model_summary=False, num_sanity_val_steps=0,
                       limit_val_batches=0, gradient_clip_val=1.0, log_every_n_steps=10,
                       enable_progress_bar=True, enable_checkpointing=True)


def oracle_metrics(fhir_dir: Path, meds_dir: Path, dm) -> dict[str, dict]:
    """Oracle AUROC on the held-out datapoints: the generator's true probability vs the sampled label, plus how often
    the oracle label agrees with ours (same task definitions, so 1.0 is expected)."""
    import torch

    from linmix.apps.ehr.metrics import task_metrics

    oracle = pl.read_parquet(fhir_dir / "oracle.parquet")
    smap = pl.read_parquet(meds_dir / "metadata" / "subject_map.parquet")
    oracle = oracle.join(smap, on="patient_id", how="inner")
    ds = dm.datasets["held_out"]
    ours = ds.points.select("subject_id", "task", pl.col("boolean_value").alias("ours")).with_columns(
        pl.col("task").map_elements(lambda i: dm.task_names[i], return_dtype=pl.String))
    joined = ours.join(oracle, on=["subject_id", "task"], how="inner")
    out = {}
    for name in dm.task_names:
        part = joined.filter(pl.col("task") == name)
        if part.height == 0:
            continue
        m = task_metrics(torch.as_tensor(part["probability"].to_numpy(), dtype=torch.float32),
                         torch.as_tensor(part["label"].to_numpy()))
        m["label_agreement"] = float((part["label"] == part["ours"]).mean())
        out[name] = m
    return out


def run_pipeline(out: Path, s: PipelineSettings, log=print) -> dict:
    """Run every stage; returns {"model", "baseline", "oracle": per-task metrics, "rows": summary rows, ...}."""
    from linmix.apps.ehr.data import EHRDataModule
    from linmix.apps.ehr.ingest import ingest
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.synth import synthesize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, times = [], {}
    fhir, marker = out / "fhir", out / "fhir" / "synth.json"
    cohort = {"n_patients": s.n_patients, "seed": s.seed}
    if s.reuse_data and marker.exists() and json.loads(marker.read_text()) == cohort \
            and (out / "meds" / "metadata" / "subject_splits.parquet").exists():
        log(f"reusing the synthetic cohort and MEDS dataset under {out} ({cohort})")
        times["synth"] = times["ingest"] = 0.0
    else:
        t = time.perf_counter()
        synthesize(s.n_patients, fhir, fmt="ndjson", seed=s.seed)
        times["synth"] = time.perf_counter() - t
        t = time.perf_counter()
        ingest([fhir], out / "meds", overwrite=True)
        times["ingest"] = time.perf_counter() - t
        marker.write_text(json.dumps(cohort))
    rows.append({"stage": "ingest", "metric": "patients", "value": float(s.n_patients),
                 "note": f"synth {times['synth']:.1f}s, ingest {times['ingest']:.1f}s"})
    dm_kw = dict(meds_dir=str(out / "meds"), cache_dir=str(out / "cache"), vocab_size=s.net.vocab_size,
                 max_len=s.max_len, batch_size=s.batch_size)
    # pretraining: next token on whole train sequences
    t = time.perf_counter()
    dm_pre = EHRDataModule(objective="pretrain", **dm_kw)
    dm_pre.prepare_data()
    dm_pre.setup("fit")
    pre = EHRLitModule(net=s.net, objective="pretrain", lr=s.lr, warmup_steps=s.warmup_steps)
    tr = _trainer(out, "pretrain", s.pretrain_epochs, len(dm_pre.train_dataloader()))
    tr.fit(pre, datamodule=dm_pre)
    pre_ckpt = Path(tr.checkpoint_callback.last_model_path or tr.checkpoint_callback.best_model_path)
    if not pre_ckpt.is_file():
        pre_ckpt = out / "pretrain.ckpt"
        tr.save_checkpoint(pre_ckpt)
    times["pretrain"] = time.perf_counter() - t
    rows.append({"stage": "pretrain", "metric": "train_loss", "value": float(tr.callback_metrics["train/loss"]),
                 "note": f"{tr.global_step} steps, {times['pretrain']:.0f}s"})
    # multitask prompted finetuning from the pretrained weights
    t = time.perf_counter()
    dm = EHRDataModule(objective="finetune", **dm_kw)
    dm.prepare_data()
    dm.setup("fit")
    fine = EHRLitModule(net=s.net, objective="finetune", pretrained=str(pre_ckpt), lr=s.lr,
                        warmup_steps=s.warmup_steps)
    tr = _trainer(out, "finetune", s.finetune_epochs, len(dm.train_dataloader()))
    tr.fit(fine, datamodule=dm)
    fine_ckpt = out / "finetuned.ckpt"
    tr.save_checkpoint(fine_ckpt)
    times["finetune"] = time.perf_counter() - t
    rows.append({"stage": "finetune", "metric": "train_loss", "value": float(tr.callback_metrics["train/loss"]),
                 "note": f"{tr.global_step} steps, {times['finetune']:.0f}s, tasks mixed per batch"})
    rows += evaluate(out, s, dm, fine, fhir, times, log)
    return {"rows": rows, "times": times, **fine.quality}


def evaluate(out: Path, s: PipelineSettings, dm, fine, fhir: Path, times: dict, log=print) -> list[dict]:
    """Test ``fine`` on held_out, fit/score the baseline, read the oracle, write ``quality.md``, export."""
    from linmix.apps.ehr.baseline import run_baseline
    from linmix.apps.ehr.export import export_checkpoint

    rows = []
    tr = _trainer(out, "test", 1, 1)
    tr.test(fine, datamodule=dm, verbose=False)
    model = fine.test_results
    t = time.perf_counter()
    base = run_baseline(dm, max_iter=s.baseline_iter, seed=s.seed)
    times["baseline"] = time.perf_counter() - t
    oracle = oracle_metrics(fhir, out / "meds", dm)
    for name in dm.task_names:
        for metric in ("auroc", "auprc", "f1"):
            rows.append({"stage": "test", "metric": f"{name}/{metric}", "value": model[name][metric],
                         "note": f"EHRMamba, held_out n={int(model[name]['n'])}"})
        if name in base:
            rows.append({"stage": "baseline", "metric": f"{name}/auroc", "value": base[name]["auroc"],
                         "note": "bag-of-codes + age, HistGradientBoosting"})
        if name in oracle:
            rows.append({"stage": "oracle", "metric": f"{name}/auroc", "value": oracle[name]["auroc"],
                         "note": f"true probability; label agreement {oracle[name]['label_agreement']:.3f}"})
    table = quality_table(dm.task_names, model, base, oracle)
    (out / "quality.md").write_text(table)
    log(table)
    fine.quality = {"model": model, "baseline": base, "oracle": oracle, "table": table, "tasks": dm.task_names}
    for png in ("roc.png", "pr.png"):
        src = Path(tr.log_dir) / png
        if src.exists():
            os.replace(src, out / png)
    t = time.perf_counter()
    ckpt = out / "finetuned.ckpt"
    if not ckpt.exists():
        tr.save_checkpoint(ckpt)
    results = export_checkpoint(ckpt, out / "ehr_mamba.pt")
    rows.append({"stage": "export", "metric": "roundtrip_max_abs_diff",
                 "value": max(r["max_abs_diff"] for r in results),
                 "note": f"{', '.join(Path(r['path']).name for r in results)}, 2 lengths, "
                         f"{time.perf_counter() - t:.1f}s"})
    return rows


def evaluate_checkpoint(out: Path, s: PipelineSettings, log=print) -> dict:
    """Re-run ``evaluate`` for a finished ``run_pipeline`` folder from its ``finetuned.ckpt`` (no training)."""
    from linmix.apps.ehr.data import EHRDataModule
    from linmix.apps.ehr.lit_module import EHRLitModule

    out = Path(out)
    dm = EHRDataModule(objective="finetune", meds_dir=str(out / "meds"), cache_dir=str(out / "cache"),
                       vocab_size=s.net.vocab_size, max_len=s.max_len, batch_size=s.batch_size)
    dm.prepare_data()
    dm.setup("test")
    fine = EHRLitModule.load(out / "finetuned.ckpt")
    times: dict = {}
    rows = evaluate(out, s, dm, fine, out / "fhir", times, log)
    return {"rows": rows, "times": times, **fine.quality}


def quality_table(tasks: list[str], model: dict, base: dict, oracle: dict) -> str:
    """Markdown: AUROC per task for EHRMamba, the baseline and the oracle, with the bar checks."""
    lines = ["| task | n | EHRMamba AUROC | baseline AUROC | oracle AUROC | >= baseline | within 0.03 of oracle |",
             "|---|---|---|---|---|---|---|"]
    for name in tasks:
        m = model.get(name, {}).get("auroc", float("nan"))
        b = base.get(name, {}).get("auroc", float("nan"))
        o = oracle.get(name, {}).get("auroc", float("nan"))
        n = int(model.get(name, {}).get("n", 0))
        lines.append(f"| {name} | {n} | {m:.3f} | {b:.3f} | {o:.3f} | {'yes' if m >= b else 'no'} | "
                     f"{'yes' if o - m <= 0.03 else 'no'} |")
    return "\n".join(lines) + "\n"


def demo_main(argv=None) -> int:
    """synth -> ingest -> pretrain -> finetune -> test -> baseline -> export on a small cohort"""
    p = argparse.ArgumentParser(prog="linmix-ehr demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo/ehr", help="output folder")
    p.add_argument("--patients", type=int, default=PipelineSettings.n_patients)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    t = time.perf_counter()
    res = run_pipeline(out, PipelineSettings(n_patients=args.patients, seed=args.seed))
    rows = res["rows"] + [{"stage": "demo", "metric": "wall_s", "value": time.perf_counter() - t, "note": ""}]
    tmp = out / f".summary.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, out / "summary.json")
    print(f"demo done in {time.perf_counter() - t:.0f}s; summary: {out / 'summary.json'}")
    return 0

"""Evaluate the GPU-trained EHRMamba here, on CPU, through the app's own evaluation path.

    .venv/bin/python benchmarks/gpu/eval_ehr.py --from <unpacked ehr APP_OUT>       # writes benchmarks/results/ehr_gpu.*

1. Builds an evaluation run folder (``--work``) whose ``meds/``, ``cache/`` and ``fhir/`` link to the benchmark cohort the
   pack was made from (``--run``, checked against the pack's input hash) and whose ``finetuned.ckpt`` is the job's
   ``finetuned_best.ckpt``; runs ``linmix.apps.ehr.demo.evaluate_checkpoint`` on it: the held-out test through the
   LightningModule (AUROC/AUPRC/F1 per task), the bag-of-codes baseline and the oracle on the same datapoints, export.
2. Re-scores every held-out datapoint on CPU through the module's ``predict_step`` and compares the probabilities with
   the device's ``predictions_held_out.npz`` (max abs difference, AUROC per task from each).
3. Writes ``<results>/ehr_gpu.md`` (table with the bar, training conditions from the job's ``results.json``),
   ``ehr_gpu.json`` and ``ehr_gpu.png`` (AUROC bars; tuning AUROC over finetuning steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BAR_GAP = 0.03


def cpu_predictions(work: Path, fine, s, dev: dict, limit: int = 0) -> dict[str, np.ndarray]:
    """Held-out probabilities on CPU for the datapoints the device scored (all, or a seeded random ``limit`` of them):
    the data module's held-out items, collated as its predict loader does, through the module's ``predict_step``."""
    from linmix.apps.ehr.data import EHRDataModule, collate
    from torch.utils.data import DataLoader, Subset

    dm = EHRDataModule(objective="finetune", meds_dir=str(work / "meds"), cache_dir=str(work / "cache"),
                       vocab_size=s.net.vocab_size, max_len=s.max_len, batch_size=256)
    dm.setup("predict")
    ds = dm.datasets["held_out"]
    scored = set(zip(dev["subject_id"].tolist(), dev["task"].tolist(), dev["prediction_time"].tolist()))
    idx = np.array([i for i, k in enumerate(zip(ds.subject.tolist(), ds.task.tolist(), ds.pred_us.tolist()))
                    if k in scored])
    if limit and limit < len(idx):
        idx = np.sort(np.random.default_rng(0).permutation(idx)[:limit])
    idx = idx[np.argsort(ds.lengths()[idx], kind="stable")]  # similar lengths per batch: less padding
    fine.eval()
    cols: dict[str, list] = {}
    with torch.no_grad():
        for i, batch in enumerate(DataLoader(Subset(ds, idx.tolist()), batch_size=256, collate_fn=collate)):
            for k, v in fine.predict_step(batch, i).items():
                cols.setdefault(k, []).append(v)
    return {k: torch.cat(v).numpy() for k, v in cols.items()}


def device_quality(work: Path, s, dev: dict, names: list[str]) -> dict:
    """Model metrics from the device's held-out probabilities; baseline and oracle here on the same datapoints."""
    from linmix.apps.ehr.baseline import run_baseline
    from linmix.apps.ehr.data import EHRDataModule
    from linmix.apps.ehr.demo import oracle_metrics
    from linmix.apps.ehr.metrics import all_task_metrics

    dm = EHRDataModule(objective="finetune", meds_dir=str(work / "meds"), cache_dir=str(work / "cache"),
                       vocab_size=s.net.vocab_size, max_len=s.max_len, batch_size=s.batch_size)
    dm.setup("fit")
    if dm.task_names != names:
        raise ValueError(f"checkpoint tasks {names} != data tasks {dm.task_names}")
    model = all_task_metrics(torch.as_tensor(dev["probability"]).float(), torch.as_tensor(dev["label"]),
                             torch.as_tensor(dev["task"]), names)
    base = run_baseline(dm, max_iter=s.baseline_iter, seed=s.seed)
    oracle = oracle_metrics(work / "fhir", work / "meds", dm)
    return {"model": model, "baseline": base, "oracle": oracle, "tasks": names,
            "n_held_out": len(dm.datasets["held_out"])}


def compare(dev: dict, cpu: dict, names: list[str]) -> dict:
    """Join device and CPU predictions on (subject, task, prediction_time); max |diff| and per-task AUROC of both."""
    from linmix.apps.ehr.metrics import task_metrics

    key = lambda d: list(zip(d["subject_id"].tolist(), d["task"].tolist(), d["prediction_time"].tolist()))  # noqa: E731
    dev_at = {k: i for i, k in enumerate(key(dev))}
    pos = np.array([dev_at.get(k, -1) for k in key(cpu)])
    if (pos < 0).any():
        raise ValueError(f"{int((pos < 0).sum())} CPU datapoints have no device prediction")
    dev = {k: v[pos] for k, v in dev.items()}  # the device's predictions of the CPU-scored datapoints, same order
    idx = np.arange(len(pos))
    pd, pc = dev["probability"].astype(np.float64), cpu["probability"][idx].astype(np.float64)
    if not np.array_equal(dev["label"].astype(np.float64), cpu["label"][idx].astype(np.float64)):
        raise ValueError("device and CPU labels differ")
    out = {"n": len(idx), "max_abs_diff": float(np.abs(pd - pc).max()), "mean_abs_diff": float(np.abs(pd - pc).mean())}
    per = {}
    for t, name in enumerate(names):
        m = dev["task"] == t
        if m.sum():
            lab = torch.as_tensor(dev["label"][m])
            per[name] = {"n": int(m.sum()), "device_auroc": task_metrics(torch.as_tensor(pd[m]).float(), lab)["auroc"],
                         "cpu_auroc": task_metrics(torch.as_tensor(pc[m]).float(), lab)["auroc"]}
    out["per_task"] = per
    return out


def plot(res: dict, job: dict, path: Path, cohort: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = res["tasks"]
    x = np.arange(len(tasks))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2]})
    for k, (key, label) in enumerate((("model", f"EHRMamba, GPU-trained ({res.get('scored', '')})"),
                                      ("baseline", "bag of codes + age, HistGB"), ("oracle", "oracle"))):
        ax.bar(x + (k - 1) * 0.27, [res[key].get(t, {}).get("auroc", np.nan) for t in tasks], 0.27, label=label)
    ax.set_xticks(x, tasks, rotation=20)
    ax.set_ylim(0.4, 1.08)
    ax.set_ylabel("held-out AUROC")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    hist = job.get("phases", {}).get("finetune", {}).get("validations", [])
    if hist:
        steps = [h["step"] for h in hist]
        for t in tasks:
            ax2.plot(steps, [h.get(t, np.nan) for h in hist], lw=1, label=t)
        ax2.plot(steps, [h["auroc"] for h in hist], "k", lw=2, label="mean")
        ax2.set_xlabel("finetuning step")
        ax2.set_ylabel("tuning AUROC")
        ax2.legend(fontsize=6, ncol=2)
    fig.suptitle(f"EHRMamba trained on {job.get('hardware', '?')}, evaluated on CPU ({cohort} synthetic patients)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def conditions(job: dict) -> str:
    ph, a, net = job.get("phases", {}), job.get("args", {}), job.get("net", {})
    pre, ft, wu = ph.get("pretrain", {}), ph.get("finetune", {}), ph.get("warmup", {})
    lines = [f"- hardware: {job.get('hardware', '?')} (shared with the other apps' jobs), torch {job.get('torch', '?')}",
             f"- model: EHRMamba d_model {net.get('d_model')} x {net.get('n_layers')} Mamba2 layers (pure-PyTorch SSD), "
             f"d_state {net.get('d_state')}, dropout {net.get('dropout')}, {net.get('n_tasks')} task readouts; "
             f"AdamW lr {a.get('lr')}, warmup + cosine to 10 %, batch {a.get('batch_size')}, grad clip 1.0",
             f"- warm-up: {wu.get('steps')} steps, {wu.get('s_per_step', float('nan')) * 1e3:.1f} ms/step",
             f"- pretraining (next token, train split): {pre.get('steps')} steps ({pre.get('epochs', 0):.1f} epochs) in "
             f"{pre.get('wall_s')} s, {1 / pre['s_per_step'] if pre.get('s_per_step') else float('nan'):.1f} steps/s",
             f"- finetuning (MPF, 8 tasks mixed per batch): {ft.get('steps')} of {ft.get('planned_steps')} planned steps "
             f"({ft.get('epochs', 0):.1f} epochs) in {ft.get('wall_s')} s ({ft.get('steps_per_s', float('nan')):.1f} "
             f"steps/s incl. validation); weights kept: best mean tuning AUROC "
             f"{ft.get('best_tuning_auroc', float('nan')):.4f} at step {ft.get('best_step')}",
             f"- job wall {job.get('total_wall_s')} s of a {a.get('budget')} s budget"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="src", required=True, help="the unpacked APP_OUT of benchmarks/gpu/ehr.sh")
    p.add_argument("--run", default="runs/bench/ehr_quality_20000", help="the cohort the pack was made from")
    p.add_argument("--pack", default="gpu_pack/ehr", help="for the input-hash check (skipped if absent)")
    p.add_argument("--work", default="runs/bench/ehr_gpu_eval")
    p.add_argument("--ckpt", default="finetuned_best.ckpt")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--name", default="ehr_gpu")
    p.add_argument("--full-cpu", action="store_true",
                   help="score the whole held-out split on CPU with evaluate_checkpoint (slow: ~11 min on the loaded "
                        "2-core machine) instead of using the device's probabilities")
    p.add_argument("--compare-limit", type=int, default=3000,
                   help="held-out datapoints re-scored on CPU for the device/CPU comparison (0 = all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from linmix.apps.ehr import sequences as S
    from linmix.apps.ehr.demo import PipelineSettings, evaluate_checkpoint, quality_table
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.model import EHRMambaConfig

    t0 = time.perf_counter()
    src, run, work = Path(args.src), Path(args.run).resolve(), Path(args.work)
    job = json.loads((src / "results.json").read_text()) if (src / "results.json").exists() else {}
    meta_file = Path(args.pack) / "meta.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        have = S.input_hash(run / "meds", S.SequenceSettings(vocab_size=meta["vocab_size"]))
        if have != meta["input_hash"]:
            raise SystemExit(f"{run} is not the cohort the pack was made from (hash {have} != {meta['input_hash']})")
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("meds", "cache", "fhir"):
        link = work / sub
        if not link.exists():
            os.symlink(run / sub, link)
    shutil.copyfile(src / args.ckpt, work / "finetuned.ckpt")
    fine = EHRLitModule.load(work / "finetuned.ckpt")
    marker = run / "fhir" / "synth.json"
    n_patients = json.loads(marker.read_text())["n_patients"] if marker.exists() else 0
    cohort = f"{n_patients // 1000}k" if n_patients else "?"
    s = PipelineSettings(n_patients=n_patients or 20000, net=EHRMambaConfig(**fine.hparams["net"]), max_len=512, batch_size=128)
    dev = None
    if (src / "predictions_held_out.npz").exists():
        with np.load(src / "predictions_held_out.npz") as z:
            dev = {k: z[k] for k in z.files}
    if args.full_cpu or dev is None:  # the CLI's test path on CPU over the whole held-out split
        res = evaluate_checkpoint(work, s)
        source = ("the GPU job's best-on-tuning weights, re-scored here on CPU over the whole held-out split through "
                  "`linmix.apps.ehr.demo.evaluate_checkpoint` (the CLI's test path)")
    else:  # the device's held-out probabilities; baseline and oracle here; a CPU re-score below must agree
        res = device_quality(work, s, dev, fine.task_names)
        source = (f"the GPU job's best-on-tuning weights, probabilities computed on the device for "
                  f"{len(dev['label'])} of {res['n_held_out']} held-out datapoints, re-checked on CPU below")
    t_eval = time.perf_counter() - t0
    agree = None
    if dev is not None:
        t = time.perf_counter()
        cpu = cpu_predictions(work, EHRLitModule.load(work / "finetuned.ckpt"), s, dev, args.compare_limit)
        agree = compare(dev, cpu, res["tasks"])
        agree["wall_s"] = round(time.perf_counter() - t, 1)
    wall = time.perf_counter() - t0
    met = {t: bool(res["model"][t]["auroc"] >= res["baseline"][t]["auroc"] and
                   res["oracle"][t]["auroc"] - res["model"][t]["auroc"] <= BAR_GAP) for t in res["tasks"]}
    cmd = (f".venv/bin/python benchmarks/gpu/eval_ehr.py --from {src} --run {args.run} --pack {args.pack} "
           f"--name {args.name}")
    md = [f"# EHR quality, GPU-trained EHRMamba, held-out split of {cohort} synthetic patients\n",
          f"Bar (issue 3): EHRMamba AUROC >= baseline on every task and within {BAR_GAP} of the oracle AUROC. "
          f"**{'Met' if all(met.values()) else 'Not met'}** ({sum(met.values())}/{len(met)} tasks meet both).\n",
          f"EHRMamba column: {source} (`{args.ckpt}`); baseline (`linmix.apps.ehr.baseline.run_baseline`) and oracle "
          "(`linmix.apps.ehr.demo.oracle_metrics`) on the same held-out datapoints.\n",
          quality_table(res["tasks"], res["model"], res["baseline"], res["oracle"]), "\n## Training (from the job's "
          "results.json)\n", conditions(job)]
    if agree:
        md.append(f"\n## Device vs CPU scores\n{agree['n']} held-out datapoints: max |p_gpu - p_cpu| = "
                  f"{agree['max_abs_diff']:.2e} (mean {agree['mean_abs_diff']:.2e}); AUROC per task device / CPU: " +
                  ", ".join(f"{k} {v['device_auroc']:.4f}/{v['cpu_auroc']:.4f}" for k, v in agree["per_task"].items())
                  + "\n")
    md.append(f"\nEvaluation: `{cmd}`, {wall:.0f} s on the shared 2-core CPU (one torch thread; "
              f"model/baseline/oracle scores {t_eval:.0f} s, CPU re-score for the comparison "
              f"{agree['wall_s'] if agree else 0:.0f} s).\n")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text("".join(md))
    keep = {k: {t: {m: v for m, v in d.items() if m in ("auroc", "auprc", "f1", "n", "label_agreement")}
                for t, d in res[k].items()} for k in ("model", "baseline", "oracle")}
    summary = {"command": cmd, "bar_met": met, "eval_wall_s": round(wall, 1), "device_vs_cpu": agree,
               "job": {k: v for k, v in job.items()}, **keep}
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1))
    scored = "CPU scores" if args.full_cpu or dev is None else "device scores"
    plot({**keep, "tasks": res["tasks"], "scored": scored}, job, out / f"{args.name}.png", cohort)
    print("".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

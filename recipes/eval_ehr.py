"""Score the EHR recipe's weights on CPU through the app's own evaluation path, and optionally publish them.

    python recipes/eval_ehr.py --from runs/recipes/ehr --name ehr_gpu        # benchmarks/results/ehr_gpu.{md,json,png}
    python recipes/eval_ehr.py --from runs/recipes/ehr --publish ehrmamba_synth60k   # + models/ehr/<name>.{ckpt,md}

1. The cohort the run trained on is made again here (``synthesize`` + ``ingest`` with the size and seed in its
   ``run.json``; reused when present) and checked datapoint by datapoint against the device's held-out predictions.
2. Model column: the device's held-out probabilities (``predictions_held_out.npz``), with up to ``--compare-limit``
   of those datapoints re-scored here on CPU through the module's ``predict_step`` (the two must agree); or, with
   ``--full-cpu`` (or without device predictions), ``linmix.apps.ehr.demo.evaluate_checkpoint`` over the whole
   held-out split: the app's test path through the LightningModule. Baseline (bag of codes + age) and oracle (the
   generator's true probability) on the same datapoints.
3. Writes ``<results>/<name>.md`` (table with the bar: EHRMamba AUROC >= baseline and within 0.03 of the oracle on
   every task; training conditions from ``run.json``), ``<name>.json`` and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import ROOT, hardware, publish, read_json  # noqa: E402
from ehr import make_cohort  # noqa: E402

BAR_GAP = 0.03
KEY = ("subject_id", "task", "prediction_time")


def _keys(d: dict) -> list[tuple]:
    return list(zip(*(d[k].tolist() for k in KEY)))


def cpu_predictions(dm, fine, dev: dict, limit: int) -> dict[str, np.ndarray]:
    """CPU probabilities for (a seeded random ``limit`` of) the held-out datapoints the device scored: the data
    module's items and ``collate``, the module's ``predict_step``."""
    from torch.utils.data import DataLoader, Subset

    from linmix.apps.ehr.data import collate

    ds = dm.datasets["held_out"]
    scored = set(_keys(dev))
    idx = np.array([i for i, k in enumerate(zip(ds.subject.tolist(), ds.task.tolist(), ds.pred_us.tolist()))
                    if k in scored])
    if limit and limit < len(idx):
        idx = np.sort(np.random.default_rng(0).permutation(idx)[:limit])
    idx = idx[np.argsort(ds.lengths()[idx], kind="stable")]  # similar lengths per batch: less padding
    cols: dict[str, list] = {}
    with torch.no_grad():
        for i, batch in enumerate(DataLoader(Subset(ds, idx.tolist()), batch_size=256, collate_fn=collate)):
            for k, v in fine.eval().predict_step(batch, i).items():
                cols.setdefault(k, []).append(v)
    return {k: torch.cat(v).numpy() for k, v in cols.items()}


def compare(dev: dict, cpu: dict, names: list[str]) -> dict:
    """Join device and CPU predictions on (subject, task, prediction_time): labels must match; max |diff| and
    per-task AUROC of both."""
    from linmix.apps.ehr.metrics import task_metrics

    at = {k: i for i, k in enumerate(_keys(dev))}
    pos = np.array([at.get(k, -1) for k in _keys(cpu)])
    if (pos < 0).any():
        raise SystemExit(f"{int((pos < 0).sum())} CPU datapoints have no device prediction: not the same cohort")
    dev = {k: v[pos] for k, v in dev.items()}
    if not np.array_equal(dev["label"].astype(np.float64), cpu["label"].astype(np.float64)):
        raise SystemExit("device and CPU labels differ: not the same cohort")
    pd, pc = dev["probability"].astype(np.float64), cpu["probability"].astype(np.float64)
    per = {}
    for t, name in enumerate(names):
        m = dev["task"] == t
        if m.sum():
            lab = torch.as_tensor(dev["label"][m])
            per[name] = {"n": int(m.sum()), "device_auroc": task_metrics(torch.as_tensor(pd[m]).float(), lab)["auroc"],
                         "cpu_auroc": task_metrics(torch.as_tensor(pc[m]).float(), lab)["auroc"]}
    return {"n": len(pos), "max_abs_diff": float(np.abs(pd - pc).max()), "mean_abs_diff": float(np.abs(pd - pc).mean()),
            "per_task": per}


def plot(res: dict, job: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = res["tasks"]
    x = np.arange(len(tasks))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2]})
    for k, (key, label) in enumerate((("model", f"EHRMamba ({res['scored']})"), ("baseline", "bag of codes + age"),
                                      ("oracle", "oracle"))):
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
        ax2.set(xlabel="finetuning step", ylabel="tuning AUROC")
        ax2.legend(fontsize=6, ncol=2)
    fig.suptitle(f"EHRMamba trained on {hardware(job.get('device', {}))}, scored on CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def conditions(job: dict) -> str:
    ph, a, net = job.get("phases", {}), job.get("args", {}), job.get("net", {})
    pre, ft = ph.get("pretrain", {}), ph.get("finetune", {})
    return "\n".join([
        f"- command: `python recipes/ehr.py {' '.join(job.get('argv', []))}`",
        f"- hardware: {hardware(job.get('device', {}))}",
        f"- cohort: {job.get('cohort', {}).get('n_patients', '?')} synthetic patients, seed "
        f"{job.get('cohort', {}).get('seed', '?')}; datapoints {job.get('cohort', {}).get('datapoints', '?')}",
        f"- model: EHRMamba d_model {net.get('d_model')} x {net.get('n_layers')} Mamba2 layers, d_state "
        f"{net.get('d_state')}, dropout {net.get('dropout')}; AdamW lr {a.get('lr')}, warmup + cosine to 10 %, batch "
        f"{a.get('batch_size')}, grad clip 1.0",
        f"- pretraining (next token): {pre.get('steps')} steps ({pre.get('epochs', 0):.1f} epochs) in {pre.get('wall_s')} s",
        f"- finetuning (8 tasks mixed per batch): {ft.get('steps')} of {ft.get('planned_steps')} planned steps "
        f"({ft.get('epochs', 0):.1f} epochs) in {ft.get('wall_s')} s; kept: best mean tuning AUROC "
        f"{ft.get('best_tuning_auroc', float('nan')):.4f} at step {ft.get('best_step')}",
        f"- recipe wall {job.get('total_wall_s')} s, budget {a.get('budget')} s"]) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="src", type=Path, required=True, help="the recipe's --out folder")
    p.add_argument("--ckpt", default="finetuned_best.ckpt", help="checkpoint in that folder")
    p.add_argument("--data", type=Path, default=None, help="cohort folder here (default: runs/recipes/data/ehr_<n>_<seed>)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "recipes" / "ehr_eval")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="ehr_gpu")
    p.add_argument("--full-cpu", action="store_true", help="score the whole held-out split on CPU (evaluate_checkpoint)")
    p.add_argument("--compare-limit", type=int, default=3000, help="datapoints re-scored on CPU for the check (0: all)")
    p.add_argument("--publish", metavar="NAME", help="also copy the weights to models/ehr/NAME.ckpt with a card")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from linmix.apps.ehr.baseline import run_baseline
    from linmix.apps.ehr.data import EHRDataModule
    from linmix.apps.ehr.demo import PipelineSettings, evaluate_checkpoint, oracle_metrics, quality_table
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.metrics import all_task_metrics
    from linmix.apps.ehr.model import EHRMambaConfig
    from linmix.apps.ehr.sequence_cache import input_hash

    t0 = time.perf_counter()
    src, job = args.src, read_json(args.src / "run.json")
    cohort, a = job.get("cohort", {}), job.get("args", {})
    if "n_patients" not in cohort:
        raise SystemExit(f"{src / 'run.json'} names no synthetic cohort: this evaluation re-creates it to score")
    data = args.data or ROOT / "runs" / "recipes" / "data" / f"ehr_{cohort['n_patients']}_{cohort['seed']}"
    make_cohort(data, cohort["n_patients"], cohort["seed"], workers=0, log=print)
    fine = EHRLitModule.load(src / args.ckpt)
    s = PipelineSettings(n_patients=cohort["n_patients"], seed=cohort["seed"],
                         net=EHRMambaConfig(**fine.hparams["net"]), max_len=a.get("max_len", 512), batch_size=128)
    dm = EHRDataModule(objective="finetune", meds_dir=str(data / "meds"), cache_dir=str(data / "cache"),
                       vocab_size=s.net.vocab_size, max_len=s.max_len, batch_size=s.batch_size)
    dm.prepare_data()
    dm.setup("fit")
    same_hash = input_hash(data / "meds", dm.settings) == cohort.get("input_hash")
    dev = None
    if (src / "predictions_held_out.npz").is_file():
        with np.load(src / "predictions_held_out.npz") as z:
            dev = {k: z[k] for k in z.files}
    if args.full_cpu or dev is None:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
        for sub in ("meds", "cache", "fhir"):
            if not (work / sub).exists():
                os.symlink(data.resolve() / sub, work / sub)
        shutil.copyfile(src / args.ckpt, work / "finetuned.ckpt")
        res = evaluate_checkpoint(work, s)
        scored = "scored on CPU over the whole held-out split (evaluate_checkpoint: the app's test path)"
    else:
        model = all_task_metrics(torch.as_tensor(dev["probability"]).float(), torch.as_tensor(dev["label"]),
                                 torch.as_tensor(dev["task"]), fine.task_names)
        res = {"model": model, "baseline": run_baseline(dm, max_iter=s.baseline_iter, seed=s.seed),
               "oracle": oracle_metrics(data / "fhir", data / "meds", dm), "tasks": fine.task_names}
        scored = (f"the device's probabilities for {len(dev['label'])} of {len(dm.datasets['held_out'])} held-out "
                  "datapoints, re-checked on CPU below")
    agree = None
    if dev is not None:
        t = time.perf_counter()
        agree = compare(dev, cpu_predictions(dm, fine, dev, args.compare_limit), res["tasks"])
        agree["wall_s"] = round(time.perf_counter() - t, 1)
    wall = time.perf_counter() - t0
    met = {t: bool(res["model"][t]["auroc"] >= res["baseline"][t]["auroc"] and
                   res["oracle"][t]["auroc"] - res["model"][t]["auroc"] <= BAR_GAP) for t in res["tasks"]}
    cmd = (f"python recipes/eval_ehr.py --from {src} --name {args.name}" + (f" --data {args.data}" if args.data else "")
           + (" --full-cpu" if args.full_cpu else ""))
    md = [f"# EHR quality: recipe-trained EHRMamba, held-out split of {cohort['n_patients']} synthetic patients\n\n",
          f"Bar: EHRMamba AUROC >= baseline on every task and within {BAR_GAP} of the oracle AUROC. "
          f"**{'Met' if all(met.values()) else 'Not met'}** ({sum(met.values())}/{len(met)} tasks meet both).\n\n",
          f"EHRMamba column: `{args.ckpt}`, {scored}; baseline (`linmix.apps.ehr.baseline.run_baseline`) and oracle "
          "(`linmix.apps.ehr.demo.oracle_metrics`) on the same held-out datapoints.\n\n",
          quality_table(res["tasks"], res["model"], res["baseline"], res["oracle"]),
          "\n## Training (the run's run.json)\n", conditions(job)]
    if not same_hash:
        md.append("- the cohort made here hashes differently from the training host's (its MEDS parquet bytes differ, "
                  "e.g. another polars version); " + ("the datapoints and labels match (below)\n" if agree else
                                                      "datapoints not compared (no device predictions)\n"))
    if agree:
        md.append(f"\n## Device vs CPU\n{agree['n']} held-out datapoints: max |p_device - p_cpu| = "
                  f"{agree['max_abs_diff']:.2e} (mean {agree['mean_abs_diff']:.2e}); AUROC per task device / CPU: "
                  + ", ".join(f"{k} {v['device_auroc']:.4f}/{v['cpu_auroc']:.4f}" for k, v in agree["per_task"].items())
                  + "\n")
    md.append(f"\nEvaluation: `{cmd}`, {wall:.0f} s on CPU (one torch thread).\n")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text("".join(md))
    keep = {k: {t: {m: v for m, v in d.items() if m in ("auroc", "auprc", "f1", "n", "label_agreement")}
                for t, d in res[k].items()} for k in ("model", "baseline", "oracle")}
    summary = {"command": cmd, "bar_met": met, "eval_wall_s": round(wall, 1), "same_input_hash": same_hash,
               "device_vs_cpu": agree, "job": job, **keep}
    (args.results / f"{args.name}.json").write_text(json.dumps(summary, indent=1, default=str))
    plot({**keep, "tasks": res["tasks"], "scored": "device scores" if dev is not None and not args.full_cpu
          else "CPU scores"}, job, args.results / f"{args.name}.png")
    print("".join(md))
    if args.publish:
        card = (f"# {args.publish}: EHRMamba, multitask prompted finetuning on a synthetic EHR cohort\n\n"
                f"Load: `linmix-ehr score --model {args.publish} --meds <MEDS folder>`; tasks {res['tasks']}.\n\n"
                f"## Metrics (held-out AUROC)\n\n{quality_table(res['tasks'], res['model'], res['baseline'], res['oracle'])}"
                f"\nMeasured by `{cmd}`.\n\n## Data, recipe, hardware\n\n{conditions(job)}\n## Limits\n\n"
                "Trained on synthetic patients only (`linmix.apps.ehr.synth`); its vocabulary is that cohort's. "
                "Not for clinical use.\n")
        path = publish("ehr", args.publish, src / args.ckpt, card, safe_globals=EHRLitModule.checkpoint_globals)
        print(f"published {path} and its card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

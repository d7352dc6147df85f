"""EHR quality table: finetuned EHRMamba vs the bag-of-codes baseline vs the oracle, AUROC per task, held-out split.

    .venv/bin/python benchmarks/ehr/quality.py --patients 20000   # the quality target's size (>= 20k patients)
    .venv/bin/python benchmarks/ehr/quality.py --patients 2000 --finetune-epochs 3   # what fits a loaded 2-core CPU

Runs ``linmix.apps.ehr.demo.run_pipeline`` (synth -> ingest -> pretrain -> MPF finetune -> test -> baseline -> oracle ->
export) and writes ``runs/bench/ehr_quality.md`` (+ ``.json``, ``.png``; ROC/PR plots under the run folder). The bar:
EHRMamba AUROC >= baseline on every task and within 0.03 of the oracle.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from linmix.apps.ehr.demo import PipelineSettings, evaluate_checkpoint, run_pipeline
from linmix.apps.ehr.model import EHRMambaConfig


def plot(result: dict, path: Path, title: str) -> Path:
    """Grouped bars: AUROC per task for EHRMamba, the baseline and the oracle (``result`` as in ehr_quality.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(result["model"])
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for k, (key, label) in enumerate((("model", "EHRMamba (MPF)"), ("baseline", "bag of codes + age, HistGB"),
                                      ("oracle", "oracle (true probability)"))):
        vals = [result[key].get(t, {}).get("auroc", float("nan")) for t in tasks]
        ax.bar(x + (k - 1) * 0.27, vals, 0.27, label=label)
    ax.set_xticks(x, tasks, rotation=20)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("held-out AUROC")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=20000)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--pretrain-epochs", type=float, default=1.0)
    p.add_argument("--finetune-epochs", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--task-heads", action="store_true", help="one linear readout per task (default: one shared)")
    p.add_argument("--reuse-data", action="store_true",
                   help="reuse fhir/ and meds/ of an earlier run of the same size and seed (no synthesis or ingest)")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--eval-only", action="store_true",
                   help="re-evaluate the finished run folder's finetuned.ckpt (no synthesis or training)")
    args = p.parse_args(argv)
    net = EHRMambaConfig(vocab_size=args.vocab_size, d_model=args.d_model, n_layers=args.n_layers, d_state=32,
                         d_time=16, max_visits=64, dropout=args.dropout, n_tasks=8 if args.task_heads else 0)
    s = PipelineSettings(n_patients=args.patients, net=net, max_len=args.max_len, batch_size=args.batch_size,
                         pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs, lr=args.lr,
                         warmup_steps=args.warmup_steps, reuse_data=args.reuse_data)
    out = Path(args.out)
    t = time.perf_counter()
    run = out / f"ehr_quality_{args.patients}"
    res = evaluate_checkpoint(run, s) if args.eval_only else run_pipeline(run, s)
    wall = time.perf_counter() - t
    head = (f"# EHR quality, {args.patients} synthetic patients (held-out split), EHRMamba d_model {args.d_model} x "
            f"{args.n_layers} layers, pretrain {args.pretrain_epochs} + finetune {args.finetune_epochs} epochs, "
            f"CPU wall {wall / 60:.1f} min\n\n")
    (out / "ehr_quality.md").write_text(head + res["table"])
    keep = {k: {t: {m: v for m, v in d.items() if m in ("auroc", "auprc", "f1", "n", "label_agreement")}
                for t, d in res[k].items()} for k in ("model", "baseline", "oracle")}
    (out / "ehr_quality.json").write_text(json.dumps({"args": vars(args), "times": res["times"], **keep}, indent=1))
    plot(keep, out / "ehr_quality.png", head.strip("# \n"))
    print(head + res["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CTR quality: FCN vs DCNv2 vs DNN vs LR vs the Bayes-optimal predictor on the default synthetic log.

All nets share one pipeline, data module and LightningModule (early stopping on val AUC, best checkpoint
tested). The Bayes row scores the test split with the saved true click probability. Bars (issue 4): FCN test AUC
within 0.005 of Bayes and logloss within 2% of Bayes; FCN >= DCNv2 >= DNN >= LR on AUC.
Every net gets the same recipe (Adam lr 1e-2, 100 warm-up steps then cosine to 0.1x, batch 1024, clip 10, at
most 12 epochs). Also reports the test AUC/logloss change of the trained FCN with dynamic int8 Linear layers.
Writes ``<out>/ctr_quality.{md,json,png}`` (data and checkpoints under ``--work``).

    python benchmarks/ctr_quality.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SETTINGS = {  # arch -> (loss, extra net args); one recipe for all nets (configs/ctr/{fcn,dcnv2}_synth.yaml)
    "fcn": ("official", {}),
    "dcnv2": ("bce", {"n_layers": 3, "hidden": (256, 256)}),
    "dnn": ("bce", {"hidden": (256, 256)}),
    "lr": ("bce", {}),
}


def mean_row(rs: list[dict]) -> dict:
    """Mean over seeds (std of the test AUC kept as ``auc_std``)."""
    import numpy as np

    r = dict(rs[0])
    for k in ("auc", "logloss", "seconds", "epochs"):
        r[k] = float(np.mean([x[k] for x in rs]))
    r["auc_std"] = float(np.std([x["auc"] for x in rs], ddof=1)) if len(rs) > 1 else 0.0
    r["n"] = len(rs)
    return r


def int8_change(net, dm) -> dict:
    """Test AUC/logloss of the trained FCN eager vs dynamic int8 Linear layers (``apps.ctr.serving``)."""
    import numpy as np
    import torch
    from sklearn.metrics import log_loss, roc_auc_score

    from apps.ctr.serving import serving_module

    t = dm.datasets["test"].t
    y = t["label"].numpy()
    out = {}
    for mode in ("eager", "int8"):
        m = serving_module(net.cpu(), mode)
        with torch.inference_mode():
            p = torch.sigmoid(torch.cat([m(t["idx"][s:s + 16384], t["val"][s:s + 16384])
                                         for s in range(0, len(y), 16384)])).double().numpy()
        out[mode] = {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}
    out["auc_change"] = out["int8"]["auc"] - out["eager"]["auc"]
    out["logloss_change"] = out["int8"]["logloss"] - out["eager"]["logloss"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000, help="synthetic rows (80/10/10)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-2, help="peak lr (100 warm-up steps, cosine to 0.1x)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", default="fcn,dcnv2,dnn,lr")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows mean (± std over seeds)")
    ap.add_argument("--out", default="runs/bench", help="where ctr_quality.{md,json,png} go")
    ap.add_argument("--work", default="runs/bench", help="data, checkpoints and per-run plots")
    ap.add_argument("--data-dir", default=None, help="default: <work>/data/synth_<rows>")
    a = ap.parse_args(argv)
    import pytorch_lightning as pl_
    import torch

    from apps.ctr.data import CTRDataModule
    from apps.ctr.lit_module import CTRLitModule
    from apps.ctr.model import CTRNetConfig

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dm = CTRDataModule(data_dir=a.data_dir or str(Path(a.work) / "data" / f"synth_{a.rows}"), synth_rows=a.rows,
                       batch_size=a.batch, eval_batch_size=16384)
    dm.setup("fit")
    meta = json.loads((Path(dm.data_dir) / "meta.json").read_text())
    rows = [{"model": "Bayes-optimal", "auc": meta["splits"]["test"]["bayes"]["auc"],
             "logloss": meta["splits"]["test"]["bayes"]["logloss"], "epochs": 0, "seconds": 0.0, "params": 0,
             "loss": "-", "lr": 0.0, "auc_std": 0.0, "n": 1}]
    runs: list[dict] = []
    int8 = None
    for arch in a.archs.split(","):
        loss, extra = SETTINGS[arch]
        lr = a.lr
        for seed in [int(x) for x in a.seeds.split(",")]:
            pl_.seed_everything(seed)
            root = Path(a.work) / "ctr_q" / f"{arch}_s{seed}"
            lit = CTRLitModule(net=CTRNetConfig(arch=arch, **extra), loss=loss, lr=lr, out_dir=str(root),
                               warmup_steps=100, min_lr_ratio=0.1, early_stopping_patience=3)
            tr = pl_.Trainer(max_epochs=a.epochs, default_root_dir=str(root), enable_progress_bar=False,
                             enable_model_summary=False, logger=False, gradient_clip_val=10.0)
            t = time.perf_counter()
            tr.fit(lit, datamodule=dm)
            secs = time.perf_counter() - t
            m = tr.test(lit, datamodule=dm, ckpt_path="best", verbose=False)[0]
            r = {"model": arch.upper() if arch != "lr" else "LR", "seed": seed, "auc": m["test/auc"],
                 "logloss": m["test/logloss"], "gauc": m.get("test/gauc"), "ece": m.get("test/ece"),
                 "epochs": tr.current_epoch, "seconds": secs, "params": sum(p.numel() for p in lit.net.parameters()),
                 "loss": loss, "lr": lr}
            runs.append(r)
            print(json.dumps(r), flush=True)
            if arch == "fcn" and int8 is None:
                int8 = int8_change(lit.net, dm)
                print(json.dumps({"int8": int8}), flush=True)
            (out / "ctr_quality.json").write_text(json.dumps({"runs": runs, "int8": int8, "args": vars(a),
                                                              "meta": meta}, indent=1))
    rows = [rows[0]] + [mean_row([r for r in runs if r["model"] == name])
                        for name in dict.fromkeys(r["model"] for r in runs)]
    bayes = rows[0]
    load = os.getloadavg()[0]
    lines = [f"# CTR quality on the synthetic log ({a.rows:,} rows, 80/10/10; batch {a.batch}; max {a.epochs} "
             f"epochs, early stop on val AUC; {a.threads} threads, load average {load:.1f})", "",
             "| model | seeds | test AUC | AUC gap to Bayes | test logloss | logloss / Bayes | epochs | fit s | "
             "params | loss | lr |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        std = f" ± {r['auc_std']:.4f}" if r["n"] > 1 else ""
        lines.append(f"| {r['model']} | {r['n'] if r['params'] else '-'} | {r['auc']:.4f}{std} | "
                     f"{bayes['auc'] - r['auc']:+.4f} | {r['logloss']:.4f} | {r['logloss'] / bayes['logloss']:.3f} | "
                     f"{r['epochs']:.0f} | {r['seconds']:.0f} | {r['params']:,} | {r['loss']} | {r['lr']:g} |")
    by = {r["model"]: r for r in rows}
    if "FCN" in by:
        f = by["FCN"]
        lines += ["", f"- FCN AUC gap {bayes['auc'] - f['auc']:.4f} (bar <= 0.005): "
                      f"{'met' if bayes['auc'] - f['auc'] <= 0.005 else 'NOT met'}",
                  f"- FCN logloss {100 * (f['logloss'] / bayes['logloss'] - 1):.1f}% above Bayes (bar <= 2%): "
                  f"{'met' if f['logloss'] <= 1.02 * bayes['logloss'] else 'NOT met'}"]
    if int8:
        lines.append(f"- FCN with dynamic int8 Linear layers: test AUC {int8['int8']['auc']:.4f} "
                     f"({int8['auc_change']:+.4f}), logloss {int8['int8']['logloss']:.4f} "
                     f"({int8['logloss_change']:+.4f}) vs float32")
    order = [k for k in ("FCN", "DCNV2", "DNN", "LR") if k in by]
    ok = all(by[x]["auc"] >= by[y]["auc"] for x, y in zip(order, order[1:]))
    lines.append(f"- ordering {' >= '.join(order)} on AUC: {'met' if ok else 'NOT met'}")
    (out / "ctr_quality.md").write_text("\n".join(lines) + "\n")
    (out / "ctr_quality.json").write_text(json.dumps({"rows": rows, "runs": runs, "int8": int8, "args": vars(a),
                                                      "meta": meta, "load_average": load}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["model"] for r in rows]
    ax[0].bar(names, [r["auc"] for r in rows])
    ax[0].set_ylim(min(r["auc"] for r in rows) - 0.02, bayes["auc"] + 0.01)
    ax[0].set_title("test AUC")
    ax[1].bar(names, [r["logloss"] for r in rows])
    ax[1].set_ylim(bayes["logloss"] * 0.95, max(r["logloss"] for r in rows) * 1.02)
    ax[1].set_title("test logloss")
    fig.tight_layout()
    fig.savefig(out / "ctr_quality.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

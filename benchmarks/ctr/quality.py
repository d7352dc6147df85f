"""CTR quality: FCN vs DCNv2 vs DNN vs LR vs the Bayes-optimal predictor on the default synthetic log.

All nets share one pipeline, data module and LightningModule (early stopping on val AUC, best checkpoint
tested). The Bayes row scores the test split with the saved true click probability. Target bars: FCN test AUC
within 0.005 of Bayes and logloss within 2% of Bayes; FCN >= DCNv2 >= DNN >= LR on AUC.
Every net gets the same recipe (Adam lr 1e-2, 100 warm-up steps then cosine to 0.1x, batch 1024, clip 10, at
most 12 epochs). Also reports the test AUC/logloss change of the trained FCN with dynamic int8 Linear layers.
Writes ``<out>/ctr_quality.{md,json,png}`` after every fit (data and checkpoints under ``--work``); each run in
the JSON keeps its val AUC per epoch, best epoch, fit seconds and the load average when it ended.

    python benchmarks/ctr/quality.py --out benchmarks/results     # default 2M rows: ~1.5-2 h on one core

Default size = ``SynthConfig.n_rows`` (the configs' default data). ``--resume`` keeps the runs already in
``<out>/ctr_quality.json`` (same rows/epochs/batch/lr) so fits run one after another end in one table, e.g.
``--archs fcn`` first, then ``--archs fcn,dcnv2,dnn,lr --resume``.
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
    eps = [x.get("best_epoch") for x in rs]
    r["best_epoch"] = float(np.mean(eps)) if None not in eps else None
    r["auc_std"] = float(np.std([x["auc"] for x in rs], ddof=1)) if len(rs) > 1 else 0.0
    r["n"] = len(rs)
    return r


def int8_change(net, dm) -> dict:
    """Test AUC/logloss of the trained FCN eager vs dynamic int8 Linear layers (``linmix.apps.ctr.serving``)."""
    import numpy as np
    import torch
    from sklearn.metrics import log_loss, roc_auc_score

    from linmix.apps.ctr.serving import serving_module

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


def best_ckpt(root: Path) -> Path | None:
    """Best-val-AUC checkpoint ``epoch{N}-auc{A}.ckpt`` of a run folder (highest A if several are left)."""
    cs = list((root / "checkpoints").glob("epoch*-auc*.ckpt"))
    return max(cs, key=lambda c: float(c.stem.split("-auc")[1].split("-")[0])) if cs else None


def epoch_of(ckpt) -> int | None:
    """1-based epoch of a checkpoint named ``epoch{N}-...`` (N 0-based)."""
    return int(Path(ckpt).name.split("-")[0][5:]) + 1 if ckpt else None


def test_bootstrap(runs: list[dict], dm, n: int, seed: int = 0) -> dict:
    """Test-sampling noise: the test rows are resampled ``n`` times (with replacement, the same draws for every
    net) and each net's paired gap AUC(p_true) - AUC(net) and the AUC difference of neighbours in the ordering
    recomputed on each. Adds ``gap_bootstrap`` {value, std, p2.5, p97.5, n} to each run (from its best checkpoint)
    and returns {"A - B": {diff, std, p2.5, p97.5, n}}. Seed-to-seed training noise is not in it."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from linmix.apps.ctr.lit_module import CTRLitModule

    t = dm.datasets["test"].t
    y, q = t["label"].numpy(), t["p_true"].double().numpy()
    preds = {}
    for r in runs:
        net = CTRLitModule.load_from_checkpoint(r["ckpt"], map_location="cpu", weights_only=True).net.eval()
        with torch.inference_mode():
            preds[(r["model"], r["seed"])] = torch.sigmoid(torch.cat([
                net(t["idx"][s:s + 16384], t["val"][s:s + 16384]) for s in range(0, len(y), 16384)])).double().numpy()
    rng = np.random.default_rng(seed)
    aucs = {k: [] for k in preds}
    bayes = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        bayes.append(roc_auc_score(y[i], q[i]))
        for k, p in preds.items():
            aucs[k].append(roc_auc_score(y[i], p[i]))

    def stats(full: float, xs) -> dict:
        return {"value": full, "std": float(np.std(xs, ddof=1)), "p2.5": float(np.percentile(xs, 2.5)),
                "p97.5": float(np.percentile(xs, 97.5)), "n": n}

    full = {k: roc_auc_score(y, p) for k, p in preds.items()}
    for r in runs:
        k = (r["model"], r["seed"])
        r["gap_bootstrap"] = stats(roc_auc_score(y, q) - full[k], np.array(bayes) - np.array(aucs[k]))
    pairs = {}
    seeds = sorted({k[1] for k in preds})
    for sd in seeds:
        order = [m for m in ("FCN", "DCNV2", "DNN", "LR") if (m, sd) in preds]
        for x, z in zip(order, order[1:]):
            pairs[f"{x} - {z} (seed {sd})"] = stats(full[(x, sd)] - full[(z, sd)],
                                                     np.array(aucs[(x, sd)]) - np.array(aucs[(z, sd)]))
    return pairs


def write_table(out: Path, a, bayes_row: dict, runs: list[dict], int8, meta: dict,
                pairs: dict | None = None) -> list[str]:
    """Write ``ctr_quality.{md,json,png}`` for the runs so far (called after every run)."""
    names = sorted(dict.fromkeys(r["model"] for r in runs), key=["FCN", "DCNV2", "DNN", "LR"].index)
    rows = [bayes_row] + [mean_row([r for r in runs if r["model"] == name]) for name in names]
    bayes = rows[0]
    load = os.getloadavg()[0]
    lines = [f"# CTR quality on the synthetic log ({a.rows:,} rows, 80/10/10; batch {a.batch}; max {a.epochs} "
             f"epochs, early stop on val AUC; {a.threads} threads)", "",
             "| model | seeds | test AUC | AUC gap to Bayes | test logloss | logloss / Bayes | best / last epoch | "
             "fit s | load | params | loss | lr |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        std = f" ± {r['auc_std']:.4f}" if r["n"] > 1 else ""
        be = r.get("best_epoch")
        ep = f"{'?' if be is None else format(be, 'g')} / {r['epochs']:g}" if r["params"] else "-"
        ld = f"{r['load']:.1f}" if r.get("load") is not None else "-"
        bs = f" (± {r['gap_bootstrap']['std']:.4f})" if r.get("gap_bootstrap") else ""
        lines.append(f"| {r['model']} | {r['n'] if r['params'] else '-'} | {r['auc']:.4f}{std} | "
                     f"{bayes['auc'] - r['auc']:+.4f}{bs} | {r['logloss']:.4f} | "
                     f"{r['logloss'] / bayes['logloss']:.3f} | "
                     f"{ep} | {r['seconds']:.0f} | {ld} | {r['params']:,} | {r['loss']} | {r['lr']:g} |")
    lines += ["", "`load`: 15-minute load average of the 2-core machine when the fit ended (fit s inflated by load)."]
    if any(r.get("gap_bootstrap") for r in runs):
        n = next(r["gap_bootstrap"]["n"] for r in runs if r.get("gap_bootstrap"))
        lines.append(f"(± x) after a gap: std of the paired gap AUC(p_true) - AUC(model) over {n} bootstrap resamples "
                     "of the test rows (test-sampling noise; seed-to-seed noise is not in it).")
    if len({r["seed"] for r in runs}) > 1:
        lines.append("Several seeds: the table shows means, ± the std of the test AUC over seeds; per-seed rows "
                     "in the JSON (`runs`).")
    by = {r["model"]: r for r in rows}
    if "FCN" in by:
        f = by["FCN"]
        b = f["gap_bootstrap"] if f.get("gap_bootstrap") else None
        ci = f" (test-bootstrap 95% interval {b['p2.5']:.4f} to {b['p97.5']:.4f})" if b else ""
        lines += ["", f"- FCN AUC gap {bayes['auc'] - f['auc']:.4f} (bar <= 0.005): "
                      f"{'met' if bayes['auc'] - f['auc'] <= 0.005 else 'NOT met'}{ci}",
                  f"- FCN logloss {100 * (f['logloss'] / bayes['logloss'] - 1):.1f}% above Bayes (bar <= 2%): "
                  f"{'met' if f['logloss'] <= 1.02 * bayes['logloss'] else 'NOT met'}"]
    if int8:
        lines.append(f"- FCN with dynamic int8 Linear layers: test AUC {int8['int8']['auc']:.4f} "
                     f"({int8['auc_change']:+.4f}), logloss {int8['int8']['logloss']:.4f} "
                     f"({int8['logloss_change']:+.4f}) vs float32")
    order = [k for k in ("FCN", "DCNV2", "DNN", "LR") if k in by]
    ok = all(by[x]["auc"] >= by[y]["auc"] for x, y in zip(order, order[1:]))
    lines.append(f"- ordering {' >= '.join(order)} on AUC: {'met' if ok else 'NOT met'}")
    for k, d in (pairs or {}).items():
        lines.append(f"  - AUC {k}: {d['value']:+.4f} (test-bootstrap std {d['std']:.4f}, 95% interval "
                     f"{d['p2.5']:+.4f} to {d['p97.5']:+.4f})")
    (out / "ctr_quality.md").write_text("\n".join(lines) + "\n")
    (out / "ctr_quality.json").write_text(json.dumps({"rows": rows, "runs": runs, "int8": int8, "pairs": pairs,
                                                      "args": vars(a), "meta": meta, "load_average": load}, indent=1))
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
    plt.close(fig)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="synthetic rows (80/10/10; default: SynthConfig.n_rows)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-2, help="peak lr (100 warm-up steps, cosine to 0.1x)")
    ap.add_argument("--betas", default="0.9,0.999", help="AdamW betas (the committed table: 0.9,0.95)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", default="fcn,dcnv2,dnn,lr")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows mean (± std over seeds)")
    ap.add_argument("--out", default="runs/bench", help="where ctr_quality.{md,json,png} go")
    ap.add_argument("--work", default="runs/bench", help="data, checkpoints and per-run plots")
    ap.add_argument("--data-dir", default=None, help="default: <work>/data/synth_<rows>")
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs already in <out>/ctr_quality.json (same rows/epochs/batch/lr) and skip "
                         "those (arch, seed): one table from fits run one after another")
    ap.add_argument("--bootstrap", type=int, default=0,
                    help="resample the test split N times per run: std / 95%% interval of the AUC gap to Bayes")
    a = ap.parse_args(argv)
    import pytorch_lightning as pl_
    import torch

    from linmix.apps.ctr.data import CTRDataModule
    from linmix.apps.ctr.lit_module import CTRLitModule
    from linmix.apps.ctr.model import CTRNetConfig
    from linmix.apps.ctr.synth import SynthConfig

    a.rows = a.rows or SynthConfig.n_rows
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    int8 = None
    prev = out / "ctr_quality.json"
    if a.resume and prev.is_file():
        old = json.loads(prev.read_text())
        same = {k: old["args"][k] for k in ("rows", "epochs", "batch", "lr")}
        same["betas"] = old["args"].get("betas", "0.9,0.95")  # files without it were run with (0.9, 0.95)
        if same != {k: getattr(a, k) for k in same}:
            raise SystemExit(f"--resume: {prev} was run with {same}, not these settings")
        runs, int8 = old["runs"], old["int8"]
    dm = CTRDataModule(data_dir=a.data_dir or str(Path(a.work) / "data" / f"synth_{a.rows}"), synth_rows=a.rows,
                       batch_size=a.batch, eval_batch_size=16384)
    dm.setup("fit")
    meta = json.loads((Path(dm.data_dir) / "meta.json").read_text())
    bayes_row = {"model": "Bayes-optimal", "auc": meta["splits"]["test"]["bayes"]["auc"],
                 "logloss": meta["splits"]["test"]["bayes"]["logloss"], "epochs": 0, "seconds": 0.0, "params": 0,
                 "loss": "-", "lr": 0.0, "auc_std": 0.0, "n": 1, "seed": None}
    for arch in a.archs.split(","):
        loss, extra = SETTINGS[arch]
        lr = a.lr
        name = arch.upper() if arch != "lr" else "LR"
        for seed in [int(x) for x in a.seeds.split(",")]:
            root = Path(a.work) / "ctr_q" / f"{arch}_s{seed}"
            done = [r for r in runs if r["model"] == name and r["seed"] == seed]
            if done:
                done[0].setdefault("best_epoch", epoch_of(best_ckpt(root)))
                done[0].setdefault("ckpt", str(best_ckpt(root)))
                print(f"{name} seed {seed}: kept from {prev}", flush=True)
                continue
            pl_.seed_everything(seed)
            lit = CTRLitModule(net=CTRNetConfig(arch=arch, **extra), loss=loss, lr=lr, out_dir=str(root),
                               warmup_steps=100, min_lr_ratio=0.1, early_stopping_patience=3,
                               betas=tuple(float(b) for b in a.betas.split(",")))
            hist: list[float] = []
            keep = pl_.callbacks.LambdaCallback(on_validation_end=lambda trn, _: hist.append(  # noqa: B023 (used in this iteration)
                round(float(trn.callback_metrics["val/auc"]), 5)) if not trn.sanity_checking else None)
            tr = pl_.Trainer(max_epochs=a.epochs, default_root_dir=str(root), enable_progress_bar=False,
                             enable_model_summary=False, logger=False, gradient_clip_val=10.0, callbacks=[keep])
            t = time.perf_counter()
            tr.fit(lit, datamodule=dm)
            secs = time.perf_counter() - t
            load = os.getloadavg()[2]
            m = tr.test(lit, datamodule=dm, ckpt_path="best", verbose=False)[0]
            r = {"model": name, "seed": seed, "auc": m["test/auc"],
                 "logloss": m["test/logloss"], "gauc": m.get("test/gauc"), "ece": m.get("test/ece"),
                 "epochs": tr.current_epoch, "best_epoch": epoch_of(tr.checkpoint_callback.best_model_path),
                 "val_auc": hist, "seconds": secs,
                 "load": load, "ckpt": tr.checkpoint_callback.best_model_path,
                 "params": sum(p.numel() for p in lit.net.parameters()), "loss": loss, "lr": lr}
            runs.append(r)
            print(json.dumps(r), flush=True)
            if arch == "fcn" and int8 is None:
                int8 = int8_change(lit.net, dm)
                print(json.dumps({"int8": int8}), flush=True)
            write_table(out, a, bayes_row, runs, int8, meta)
    pairs = test_bootstrap(runs, dm, a.bootstrap) if a.bootstrap else None
    print("\n".join(write_table(out, a, bayes_row, runs, int8, meta, pairs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

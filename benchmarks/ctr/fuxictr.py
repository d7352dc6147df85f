"""CTR side by side with FuxiCTR 2.3.10: FCN and DCNv2, same data, splits, sizes and recipe, in one run.

One synthetic click log (``linmix.apps.ctr.synth``, CSV with a header: 10 hashed categorical fields, 3 count
fields bucketed as floor(ln(x)^2), 80/10/10 splits) is written once; linmix (project venv,
``fuxictr_linmix.py``) and FuxiCTR (its own venv, ``fuxictr_runner.py``, a subprocess) each encode the same CSV
files with their own pipeline (vocabularies on train, min count 2, a missing value its own token) and train the
same nets: embedding 16, FCN ECN 4 + LCN 4 (dropout 0.1 / 0.3, LayerNorm mask, Tri-BCE), DCNv2 3 cross layers ||
MLP 256-256 (dropout 0.1, BCE); Adam with a constant lr (``--lr``; FuxiCTR's lr x0.1 on plateau off), batch 4096,
gradient norm clip 10, validation AUC each epoch, best weights kept, early stop patience 2. Every run is a fresh process
with ``OMP_NUM_THREADS`` = ``torch.set_num_threads`` = the thread count (FuxiCTR's Ray gets as many CPUs).

Reported per (net, threads, library), median of ``--repeats`` runs: test AUC / logloss recomputed with
scikit-learn from the saved test predictions, parameters (must match within 1%), training rows/s (train rows x
epochs / fit seconds minus the seconds spent in per-epoch validation + checkpointing), inference rows/s on the
test split at the training batch (linmix: eager ``CTRNet`` on encoded tensors; FuxiCTR: ``BaseModel.predict``
with its Ray loader, and its forward alone on batches already in memory); the fp32 GEMM rate of the cross-layer
matmul shape (B x D) @ (D x D/2) measured in the same run at each thread count, and linmix inference as % of it
for the net's Linear FLOPs (``linmix.apps.ctr.serving.flops_per_row``). Bars: AUC within 0.002; training >= 2x
FuxiCTR; inference >= FuxiCTR at the same batch; inference >= 60% of the GEMM rate.

The FuxiCTR venv (never a linmix dependency) comes from ``benchmarks/ctr/fuxictr_env.sh``; pass its python with
``--fuxictr-python`` (default ``$FUXICTR_PYTHON``). Results: ``<out>/ctr_fuxictr.{md,json}``; per-run folders,
data and caches under ``--work`` (runs already in ``<work>/runs.json`` with the same settings are kept).

    bash benchmarks/ctr/fuxictr_env.sh /tmp/fuxictr-venv
    export FUXICTR_PYTHON=/tmp/fuxictr-venv/bin/python
    python benchmarks/ctr/fuxictr.py --quick        # smoke: 60k rows, 1 thread, 1 run (5.5 min at load average 8)
    python benchmarks/ctr/fuxictr.py --lr 1e-2 --threads 1 --repeats 3 --out benchmarks/results  # the committed table
    python benchmarks/ctr/fuxictr.py --lr 1e-2 --threads 1,2 --report --step-check 8 --out benchmarks/results

A run stopped midway resumes from ``<work>/runs.json``; ``--report`` rewrites the tables from it without new runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BARS = {"auc_gap": 0.002, "train_ratio": 2.0, "infer_ratio": 1.0, "gemm_pct": 60.0, "param_gap": 0.01}


def test_metrics(p, y) -> dict:
    """Test AUC and logloss with scikit-learn (probabilities clipped to [1e-7, 1 - 1e-7] for the log)."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be equal-length 1-d arrays")
    return {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))),
            "rows": int(len(y))}


def param_gap(a: int, b: int) -> float:
    """Relative parameter-count difference |a - b| / max(a, b)."""
    return abs(a - b) / max(a, b, 1)


def expected_params(model: str, vocab: list[int], d_model: int = 16, n_layers: int = 4, n_linear_layers: int = 4,
                    hidden: tuple[int, ...] = (256, 256), cross_layers: int = 3) -> int:
    """Parameter count of the nets both sides build, from the per-field vocabulary sizes (embedding rows):
    FCN = embeddings + per stack L x (D x D/2 weight + D bias + LayerNorm(D/2)) + Linear(D, 1);
    DCNv2 = embeddings + cross layers x Linear(D, D) + MLP + Linear(D + h, 1)."""
    dim = len(vocab) * d_model
    emb = sum(vocab) * d_model
    if model == "fcn":
        stack = lambda n: n * (dim * (dim // 2) + dim + dim) + dim + 1  # noqa: E731
        return emb + stack(n_layers) + stack(n_linear_layers)
    if model == "dcnv2":
        mlp, d_in = 0, dim
        for h in hidden:
            mlp, d_in = mlp + d_in * h + h, h
        return emb + cross_layers * (dim * dim + dim) + mlp + dim + d_in + 1
    raise ValueError(f"unknown model {model!r}")


def gemm_pct(rows_per_s: float, flops_per_row: float, gflops: float) -> float:
    """Inference compute rate as % of the measured GEMM rate."""
    return 100.0 * rows_per_s * flops_per_row / (gflops * 1e9)


def summarise(runs: list[dict], gemm: dict) -> list[dict]:
    """Median over repeats per (model, threads, library) and the bars per (model, threads)."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        for th in sorted({r["threads"] for r in runs if r["model"] == model}):
            side = {}
            for lib in ("linmix", "fuxictr"):
                rs = [r for r in runs if r["model"] == model and r["threads"] == th and r["lib"] == lib]
                if rs:
                    side[lib] = {k: statistics.median(r[k] for r in rs) for k in
                                 ("auc", "logloss", "train_rows_per_s", "infer_rows_per_s", "forward_rows_per_s",
                                  "epochs", "params")} | {"n": len(rs), "auc_runs": [r["auc"] for r in rs]}
                    side[lib]["flops_per_row"] = rs[0].get("flops_per_row")
                    onnx = [r["onnx_rows_per_s"] for r in rs if r.get("onnx_rows_per_s")]
                    side[lib]["onnx_rows_per_s"] = statistics.median(onnx) if onnx else None
            if len(side) < 2:
                continue
            lm, fx = side["linmix"], side["fuxictr"]
            g = gemm.get(str(th), {}).get(model)
            row = {"model": model, "threads": th, "linmix": lm, "fuxictr": fx,
                   "auc_gap": lm["auc"] - fx["auc"], "param_gap": param_gap(lm["params"], fx["params"]),
                   "train_ratio": lm["train_rows_per_s"] / fx["train_rows_per_s"],
                   "infer_ratio": lm["infer_rows_per_s"] / fx["infer_rows_per_s"],
                   "forward_ratio": lm["infer_rows_per_s"] / fx["forward_rows_per_s"],
                   "gemm_gflops": g, "gemm_pct": gemm_pct(lm["infer_rows_per_s"], lm["flops_per_row"], g) if g else None}
            ox = lm.get("onnx_rows_per_s")
            row["onnx_ratio"] = ox / fx["infer_rows_per_s"] if ox else None
            row["onnx_gemm_pct"] = gemm_pct(ox, lm["flops_per_row"], g) if ox and g else None
            row["pass"] = {"auc": abs(row["auc_gap"]) <= BARS["auc_gap"], "params": row["param_gap"] <= BARS["param_gap"],
                           "train": row["train_ratio"] >= BARS["train_ratio"],
                           "infer": row["infer_ratio"] >= BARS["infer_ratio"],
                           "gemm": row["gemm_pct"] is not None and row["gemm_pct"] >= BARS["gemm_pct"],
                           "onnx_infer": row["onnx_ratio"] is not None and row["onnx_ratio"] >= BARS["infer_ratio"],
                           "onnx_gemm": row["onnx_gemm_pct"] is not None and row["onnx_gemm_pct"] >= BARS["gemm_pct"]}
            rows.append(row)
    return rows


def _ok(b: bool) -> str:
    return "**pass**" if b else "**FAIL**"


def markdown(rows: list[dict], meta: dict) -> list[str]:
    a = meta["args"]
    reps = "/".join(str(n) for n in sorted({r[lib]["n"] for r in rows for lib in ("linmix", "fuxictr")})) or "0"
    lines = [f"# CTR side by side with FuxiCTR {meta.get('fuxictr_version', '2.3.10')}: FCN and DCNv2", "",
             f"Synthetic log ({a['rows']:,} rows, 80/10/10, CSV read by both pipelines), embedding {a['d_model']}, "
             f"batch {a['batch']}, Adam lr {a['lr']} (linmix: AdamW with weight decay 0, the same update), "
             f"max {a['epochs']} epoch(s), early stop patience {a['patience']}; "
             f"median of {reps} run(s) per library and cell; {meta['cpu']}; load average {meta['load_start']} at start, "
             f"{meta['load_end']} at end. Absolute rows/s depend on the machine and its load; only "
             "the ratios of runs in the same invocation carry over (runs of the two libraries alternate).", "",
             f"Command(s): `{meta['command']}` (VENV = the FuxiCTR venv, WORK = the data and run folder)", "",
             *([meta["note"], ""] if meta.get("note") else []),
             "| net | threads | params linmix / FuxiCTR (gap) | test AUC linmix / FuxiCTR (gap) | test logloss | "
             "train rows/s linmix / FuxiCTR (ratio) | infer rows/s linmix / FuxiCTR predict (ratio) | "
             "FuxiCTR forward only | GEMM GFLOP/s | linmix infer % of GEMM | linmix ONNX Runtime rows/s (ratio, % of GEMM) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lm, fx = r["linmix"], r["fuxictr"]
        g = f"{r['gemm_gflops']:.1f}" if r["gemm_gflops"] else "-"
        pct = f"{r['gemm_pct']:.0f}%" if r["gemm_pct"] is not None else "-"
        ox = (f"{lm['onnx_rows_per_s']:,.0f} ({r['onnx_ratio']:.2f}x, {r['onnx_gemm_pct']:.0f}%)"
              if r.get("onnx_ratio") and r.get("onnx_gemm_pct") is not None else "-")
        lines.append(
            f"| {r['model'].upper()} | {r['threads']} | {lm['params']:,} / {fx['params']:,} ({100 * r['param_gap']:.2f}%) "
            f"| {lm['auc']:.4f} / {fx['auc']:.4f} ({r['auc_gap']:+.4f}) | {lm['logloss']:.4f} / {fx['logloss']:.4f} "
            f"| {lm['train_rows_per_s']:,.0f} / {fx['train_rows_per_s']:,.0f} ({r['train_ratio']:.2f}x) "
            f"| {lm['infer_rows_per_s']:,.0f} / {fx['infer_rows_per_s']:,.0f} ({r['infer_ratio']:.2f}x) "
            f"| {fx['forward_rows_per_s']:,.0f} ({r['forward_ratio']:.2f}x) | {g} | {pct} | {ox} |")
    lines += ["", "Bars (per net and thread count):", "",
              "| net | threads | params within 1% | AUC within 0.002 | training >= 2x | inference >= 1x "
              "(eager / ONNX Runtime) | inference >= 60% GEMM (eager / ONNX Runtime) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["pass"]
        lines.append(f"| {r['model'].upper()} | {r['threads']} | {_ok(p['params'])} | {_ok(p['auc'])} | "
                     f"{_ok(p['train'])} | {_ok(p['infer'])} / {_ok(p.get('onnx_infer', False))} | "
                     f"{_ok(p['gemm'])} / {_ok(p.get('onnx_gemm', False))} |")
    lines += ["", "What runs on each side:", "",
              "- FuxiCTR 2.3.10 from PyPI in its own venv (`benchmarks/ctr/fuxictr_env.sh`): its `FeatureProcessor` + "
              "`build_dataset` encode the CSV (polars + Ray), `RankDataLoader` (Ray Data over Parquet) feeds batches, "
              "`BaseModel.fit` trains (evaluation, checkpoint and early stop each epoch, best weights reloaded), "
              "`BaseModel.predict` scores. The wheel ships neither FCN nor a plain-CTR DCNv2 (its only DCNv2 is "
              "`model_zoo/LongCTR/DCNv2`, which needs behaviour sequences), so `fuxictr_runner.py` assembles both as "
              "`BaseModel` subclasses: DCNv2 from FuxiCTR's own `FeatureEmbedding`, `CrossNetV2` and `MLP_Block`; FCN "
              "from `FeatureEmbedding` plus ECN/LCN cross layers written there in the official code's form (FuxiCTR "
              "has no layer for them). The FCN row therefore compares the two pipelines and training loops around "
              "the same cross-layer math, not two independent FCN implementations.",
              "- linmix: `CTRDataModule` (`format: schema` on the same CSV files), `CTRLitModule` under a Lightning "
              "`Trainer`, inference with the best checkpoint's `CTRNet` in eval mode under `torch.inference_mode` on "
              "batches sliced from the encoded test tensors (`linmix.apps.ctr.serving`, eager); then the same net "
              "exported to ONNX by the app's exporter and run by ONNX Runtime with the same thread count (the serving "
              "path of the CTR README; its probabilities must equal eager's within 1e-5).",
              "- Parameters differ only in embedding rows: linmix keeps pad, OOV and missing apart (one more row per "
              "field); FuxiCTR has pad and OOV, a missing value being a token of its own.",
              "- Training rows/s = train rows x epochs / (fit seconds - seconds in per-epoch validation and "
              "checkpointing); each side's data loading is inside it. FuxiCTR's Ray loader runs in other processes "
              "(prefetching in parallel with the model), so at 1 torch thread it uses more than one core.",
              "- Inference rows/s: the fastest of 3 passes over the test split after a warm-up pass, at the training "
              "batch; \"FuxiCTR forward only\" times its model on batches already collated in memory (no loader, no "
              "per-element numpy collection), the ratio in brackets being linmix's over it.",
              "- GEMM: fp32 (B x D) @ (D x D/2) for FCN and (B x D) @ (D x D) for DCNv2 (B = batch, D = 13 x 16), "
              "the higher of a measurement before and after the runs; linmix inference % = rows/s x Linear FLOPs per "
              "row / GEMM rate."]
    if meta.get("step"):
        lines += ["", "Model math alone (`--step-check`: training step and forward on one resident batch, the two "
                  "libraries alternating in one process, median rows/s):", "",
                  "| net | threads | train step linmix / FuxiCTR | forward linmix / FuxiCTR | GEMM GFLOP/s | "
                  "linmix forward % of GEMM |", "|---|---|---|---|---|---|"]
        for s in meta["step"].values():
            lines.append(f"| {s['model'].upper()} | {s['threads']} | {s['linmix_train_rows_per_s']:,.0f} / "
                         f"{s['fuxictr_train_rows_per_s']:,.0f} "
                         f"({s['linmix_train_rows_per_s'] / s['fuxictr_train_rows_per_s']:.2f}x) | "
                         f"{s['linmix_forward_rows_per_s']:,.0f} / {s['fuxictr_forward_rows_per_s']:,.0f} "
                         f"({s['linmix_forward_rows_per_s'] / s['fuxictr_forward_rows_per_s']:.2f}x) | "
                         f"{s['gemm_gflops']:.1f} | {s['linmix_forward_gemm_pct']:.0f}% |")
    lines += ["", "Per-run test AUC (linmix; FuxiCTR): " + "; ".join(
        f"{r['model'].upper()} {r['threads']}t: {', '.join(f'{x:.4f}' for x in r['linmix']['auc_runs'])}; "
        f"{', '.join(f'{x:.4f}' for x in r['fuxictr']['auc_runs'])}" for r in rows)]
    return lines


# ---------------------------------------------------------------------------------------------- measurement
def _env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYTHONWARNINGS="ignore")
    return env


def _call(cmd: list[str], threads: int, log: Path, timeout: float = 3600) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=_env(threads), stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
    if rc != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {rc}); log {log}:\n" + "\n".join(tail))


def gemm_worker(threads: int, batch: int, dim: int, out_dim: int, seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of (batch x dim) @ (dim x out_dim), repeated for ~``seconds``."""
    import torch

    torch.set_num_threads(threads)
    x, w = torch.randn(batch, dim), torch.randn(dim, out_dim)
    with torch.inference_mode():
        for _ in range(3):
            x @ w
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            x @ w
            n += 1
        dt = time.perf_counter() - t0
    return 2.0 * batch * dim * out_dim * n / dt / 1e9


def measure_gemm(threads: int, batch: int, dim: int, work: Path) -> dict:
    """GEMM rate at the FCN cross-layer shape (D -> D/2) and the DCNv2 one (D -> D), in a fresh process."""
    res = {}
    for model, out_dim in (("fcn", dim // 2), ("dcnv2", dim)):
        log = work / "logs" / f"gemm_{model}_{threads}t.log"
        _call([sys.executable, __file__, "--gemm-worker", str(threads), str(batch), str(dim), str(out_dim)], threads, log)
        res[model] = float(log.read_text().split()[-1])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuxictr-python", default=os.environ.get("FUXICTR_PYTHON"),
                    help="python of the FuxiCTR venv (benchmarks/ctr/fuxictr_env.sh); default $FUXICTR_PYTHON")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--d-model", type=int, default=16)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="fcn,dcnv2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke: 60k rows, 1 repeat, 1 thread, 1 epoch")
    ap.add_argument("--work", default="runs/bench/ctr_fuxictr")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--report", action="store_true",
                    help="no new runs: write the tables from the runs already in <work>/runs.json")
    ap.add_argument("--note", default="", help="a sentence for the result file (e.g. which cells were not run)")
    ap.add_argument("--step-check", type=int, default=0, metavar="N",
                    help="also time both nets' training step and forward alone, alternating N times in one "
                         "process (FuxiCTR venv, linmix imported from this venv): is the model math equal?")
    ap.add_argument("--gemm-worker", nargs=4, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.gemm_worker:
        print(f"{gemm_worker(*a.gemm_worker):.3f}")
        return 0
    if a.quick:
        a.rows, a.repeats, a.threads, a.epochs = 60_000, 1, "1", 1
        a.work = a.work.rstrip("/") + "_quick"
    if not a.fuxictr_python or not Path(a.fuxictr_python).is_file():
        ap.error("give the FuxiCTR venv's python (--fuxictr-python or $FUXICTR_PYTHON); make the venv with "
                 "benchmarks/ctr/fuxictr_env.sh")
    work, out = Path(a.work).resolve(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not a.report and not (data / "meta.json").is_file():
        from linmix.apps.ctr.synth import SynthConfig, write_synth

        write_synth(data, SynthConfig(n_rows=a.rows), fmt="csv")
    fx, lm = [a.fuxictr_python, str(HERE / "fuxictr_runner.py")], [sys.executable, str(HERE / "fuxictr_linmix.py")]
    if not a.report and not (work / "linmix_cache" / "report.json").is_file():
        _call(lm + ["--prep", "--data", str(data), "--work", str(work)], 2, work / "logs" / "prep_linmix.log")
    if not a.report and not (work / "prep.json").is_file():
        _call(fx + ["prep", "--data", str(data), "--work", str(work)], 2, work / "logs" / "prep_fuxictr.log")
    settings = {k: getattr(a, k) for k in ("rows", "epochs", "batch", "lr", "d_model", "patience")}
    state = work / "runs.json"
    saved = json.loads(state.read_text()) if state.is_file() else {}
    if saved.get("settings") != settings:
        saved = {}
    runs = saved.get("runs", [])
    threads = [int(t) for t in a.threads.split(",")]
    dim = 13 * a.d_model  # 10 categorical + 3 bucketed fields (linmix.apps.ctr.synth defaults)
    this = "python benchmarks/ctr/fuxictr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    command = saved.get("command") or this  # the invocations whose runs are in runs.json, in order
    if not a.report and this not in command.split("`, then `"):
        command += f"`, then `{this}"
    load_start = saved.get("load_start") or [round(x, 2) for x in os.getloadavg()]
    gemm = saved.get("gemm_start") or {str(t): measure_gemm(t, a.batch, dim, work) for t in threads}
    common = ["--epochs", str(a.epochs), "--batch", str(a.batch), "--lr", str(a.lr), "--d-model", str(a.d_model),
              "--patience", str(a.patience), "--work", str(work)]
    for rep in range(0 if a.report else a.repeats):
        for t in threads:
            for model in a.models.split(","):
                for lib in ("fuxictr", "linmix") if rep % 2 else ("linmix", "fuxictr"):
                    if any(r["lib"] == lib and r["model"] == model and r["threads"] == t and r["rep"] == rep
                           for r in runs):
                        continue
                    rd = work / "runs" / f"{lib}_{model}_{t}t_r{rep}"
                    base = fx + ["run"] if lib == "fuxictr" else lm + ["--data", str(data)]
                    _call(base + common + ["--model", model, "--threads", str(t), "--seed", str(rep), "--out", str(rd)],
                          t, rd / "log.txt")
                    r = json.loads((rd / "result.json").read_text())
                    import numpy as np

                    z = np.load(rd / "test_pred.npz")
                    r.update(test_metrics(z["p"], z["y"]), rep=rep, load=round(os.getloadavg()[0], 2))
                    runs.append(r)
                    print(json.dumps({k: r[k] for k in ("lib", "model", "threads", "rep", "auc", "logloss", "params",
                                                        "train_rows_per_s", "infer_rows_per_s", "load")}), flush=True)
                    tmp = state.with_name(".runs.json.tmp")
                    tmp.write_text(json.dumps({"settings": settings, "runs": runs, "gemm_start": gemm,
                                               "load_start": load_start, "command": command,
                                               "step": saved.get("step", {})}, indent=1))
                    os.replace(tmp, state)
    steps = saved.get("step", {})
    if a.step_check:
        import sysconfig

        for t in threads:
            for model in a.models.split(","):
                log = work / "logs" / f"step_{model}_{t}t.log"
                _call(fx + ["step", "--work", str(work), "--linmix-site", sysconfig.get_paths()["purelib"],
                            "--model", model, "--threads", str(t), "--batch", str(a.batch), "--d-model",
                            str(a.d_model), "--steps", str(a.step_check)], t, log)
                steps[f"{model}_{t}"] = json.loads(log.read_text().strip().splitlines()[-1])
        tmp = state.with_name(".runs.json.tmp")
        tmp.write_text(json.dumps({"settings": settings, "runs": runs, "gemm_start": gemm, "load_start": load_start,
                                   "command": command, "step": steps}, indent=1))
        os.replace(tmp, state)
    flops = {r["model"]: r["flops_per_row"] for r in runs if r["lib"] == "linmix"}
    for r in runs:
        if r["lib"] == "fuxictr":
            r["flops_per_row"] = flops.get(r["model"])
    gemm_end = {str(t): measure_gemm(t, a.batch, dim, work) for t in threads}
    best = {t: {m: max(gemm[t][m], gemm_end[t][m]) for m in gemm[t]} for t in gemm if t in gemm_end}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "CPU") if Path("/proc/cpuinfo").is_file() else "CPU"
    def clean(text: str) -> str:  # machine paths -> placeholders in the written files
        for path, name in ((a.fuxictr_python, "VENV/bin/python"), (str(work), "WORK"), (a.work, "WORK")):
            text = text.replace(path, name) if path else text
        return re.sub(r"--out [^\s`]+", f"--out {a.out}", text)

    command = clean(command)
    meta = {"args": vars(a) | {"fuxictr_python": "VENV/bin/python", "work": "WORK", "out": a.out},
            "settings": settings, "note": a.note,
            "cpu": f"{cpu}, {os.cpu_count()} cores", "load_start": load_start,
            "load_end": [round(x, 2) for x in os.getloadavg()], "gemm_start": gemm, "gemm_end": gemm_end,
            "command": command, "fuxictr_version": next((r["version"] for r in runs if r.get("version")), "?"),
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "step": steps}
    rows = summarise(runs, best)
    lines = markdown(rows, meta)
    for name, text in (("ctr_fuxictr.md", "\n".join(lines) + "\n"),
                       ("ctr_fuxictr.json", json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=1))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tables of ``benchmarks/ctr/fuxictr.py``: metrics recomputed from predictions, medians, bars and the Markdown report.

Pure functions (numpy / scikit-learn only), imported by the orchestrator and by the tests.
"""

from __future__ import annotations

import statistics

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


def precision(r: dict) -> str:
    """A run's Lightning precision (runs written before the option existed trained in ``32-true``)."""
    return r.get("precision", "32-true")


def label(row: dict) -> str:
    """The table's net column: ``FCN``, or ``FCN bf16-mixed`` for a linmix row in another precision."""
    p = row.get("precision", "32-true")
    return row["model"].upper() + ("" if p == "32-true" else f" {p}")


def summarise(runs: list[dict], gemm: dict) -> list[dict]:
    """Median over repeats per (model, threads, library, linmix precision) and the bars per row; every linmix
    precision is compared with the same FuxiCTR runs (FuxiCTR trains in float32). linmix inference is the float32
    serving path whatever the training precision, so its columns are the median over every linmix run of the
    (model, threads) cell: the same numbers on each precision's row."""
    rows = []
    cells = [(model, th, prec) for model in dict.fromkeys(r["model"] for r in runs)
             for th in sorted({r["threads"] for r in runs if r["model"] == model})
             for prec in dict.fromkeys(precision(r) for r in runs if r["lib"] == "linmix" and r["model"] == model)]
    for model, th, prec in cells:
        side = {}
        for lib in ("linmix", "fuxictr"):
            rs = [r for r in runs if r["model"] == model and r["threads"] == th and r["lib"] == lib
                  and (lib == "fuxictr" or precision(r) == prec)]
            if rs:
                serving = [r for r in runs if r["model"] == model and r["threads"] == th and r["lib"] == lib]
                side[lib] = {k: statistics.median(r[k] for r in rs) for k in
                             ("auc", "logloss", "train_rows_per_s", "epochs", "params")} | {
                    k: statistics.median(r[k] for r in serving) for k in ("infer_rows_per_s", "forward_rows_per_s")
                } | {"n": len(rs), "n_serving": len(serving), "auc_runs": [r["auc"] for r in rs]}
                side[lib]["flops_per_row"] = rs[0].get("flops_per_row")
                onnx = [r["onnx_rows_per_s"] for r in serving if r.get("onnx_rows_per_s")]
                side[lib]["onnx_rows_per_s"] = statistics.median(onnx) if onnx else None
        if len(side) < 2:
            continue
        lm, fx = side["linmix"], side["fuxictr"]
        g = gemm.get(str(th), {}).get(model)
        row = {"model": model, "threads": th, "precision": prec, "linmix": lm, "fuxictr": fx,
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
             f"batch {a['batch']}, Adam lr {a['lr']} (linmix: AdamW with weight decay 0 and Adam's betas "
             "(0.9, 0.999), the same update), "
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
            f"| {label(r)} | {r['threads']} | {lm['params']:,} / {fx['params']:,} ({100 * r['param_gap']:.2f}%) "
            f"| {lm['auc']:.4f} / {fx['auc']:.4f} ({r['auc_gap']:+.4f}) | {lm['logloss']:.4f} / {fx['logloss']:.4f} "
            f"| {lm['train_rows_per_s']:,.0f} / {fx['train_rows_per_s']:,.0f} ({r['train_ratio']:.2f}x) "
            f"| {lm['infer_rows_per_s']:,.0f} / {fx['infer_rows_per_s']:,.0f} ({r['infer_ratio']:.2f}x) "
            f"| {fx['forward_rows_per_s']:,.0f} ({r['forward_ratio']:.2f}x) | {g} | {pct} | {ox} |")
    lines += ["", "Bars (per net and thread count):", "",
              "| net | threads | params within 1% | AUC within 0.002 | training >= 2x | inference >= 1x "
              "(eager / ONNX Runtime) | inference >= 60% GEMM (eager / ONNX Runtime) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["pass"]
        lines.append(f"| {label(r)} | {r['threads']} | {_ok(p['params'])} | {_ok(p['auc'])} | "
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
              "path of the CTR README; its probabilities must equal eager's within 1e-5). The process sets the glibc "
              "malloc thresholds that `linmix-ctr fit` sets (`linmix.shared.allocator`; `fuxictr_linmix.py --malloc "
              "default` leaves glibc's) and trains with the module's fused AdamW kernel; FuxiCTR runs as it ships "
              "(glibc's defaults, torch's default Adam).",
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
              "row / GEMM rate.",
              "- Rows named `bf16-mixed`: linmix trained under Lightning's `--trainer.precision bf16-mixed` (bfloat16 "
              "autocast: the matmuls run in bfloat16; weights, optimiser, LayerNorm, loss and the logit layer in "
              "float32), against the same float32 FuxiCTR runs. linmix inference is the float32 serving path "
              "whatever the training precision: its columns are the median over all linmix runs of the net and "
              "thread count (both precisions), the same on both rows."]
    if meta.get("step"):
        lines += ["", "Model math alone (`--step-check`: training step and forward on one resident batch, the two "
                  "libraries alternating in one process, median rows/s):", "",
                  "| net | threads | train step linmix / FuxiCTR | linmix bf16-mixed train step | forward linmix / "
                  "FuxiCTR | GEMM GFLOP/s | linmix forward % of GEMM |", "|---|---|---|---|---|---|---|"]
        for s in meta["step"].values():
            bf = s.get("linmix_train_bf16_rows_per_s")
            bf = f"{bf:,.0f} ({bf / s['fuxictr_train_rows_per_s']:.2f}x)" if bf else "-"
            lines.append(f"| {s['model'].upper()} | {s['threads']} | {s['linmix_train_rows_per_s']:,.0f} / "
                         f"{s['fuxictr_train_rows_per_s']:,.0f} "
                         f"({s['linmix_train_rows_per_s'] / s['fuxictr_train_rows_per_s']:.2f}x) | {bf} | "
                         f"{s['linmix_forward_rows_per_s']:,.0f} / {s['fuxictr_forward_rows_per_s']:,.0f} "
                         f"({s['linmix_forward_rows_per_s'] / s['fuxictr_forward_rows_per_s']:.2f}x) | "
                         f"{s['gemm_gflops']:.1f} | {s['linmix_forward_gemm_pct']:.0f}% |")
    lines += ["", "Per-run test AUC (linmix; FuxiCTR): " + "; ".join(
        f"{label(r)} {r['threads']}t: {', '.join(f'{x:.4f}' for x in r['linmix']['auc_runs'])}; "
        f"{', '.join(f'{x:.4f}' for x in r['fuxictr']['auc_runs'])}" for r in rows)]
    return lines



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
    python benchmarks/ctr/fuxictr.py --lr 1e-2 --linmix-precision 32-true,bf16-mixed ...   # also linmix in bf16

A run stopped midway resumes from ``<work>/runs.json``; ``--report`` rewrites the tables from it without new runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # loaded by file path (the tests): the report module sits beside this file
    sys.path.insert(0, str(HERE))
# re-exported: the tests read them from here
from fuxictr_report import (BARS, expected_params, gemm_pct, markdown, param_gap, precision,  # noqa
                            summarise, test_metrics)

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
    ap.add_argument("--linmix-precision", default="32-true",
                    help="comma list of linmix training precisions (32-true, bf16-mixed); each gets its own rows, "
                         "against the same float32 FuxiCTR runs")
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
    precisions = a.linmix_precision.split(",")
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
                libs = [("fuxictr", "32-true")] + [("linmix", p) for p in precisions]
                for lib, prec in libs[::-1] if rep % 2 else libs:
                    if any(r["lib"] == lib and r["model"] == model and r["threads"] == t and r["rep"] == rep
                           and (lib == "fuxictr" or precision(r) == prec) for r in runs):
                        continue
                    tag = "" if prec == "32-true" else f"_{prec}"
                    rd = work / "runs" / f"{lib}_{model}_{t}t_r{rep}{tag}"
                    base = fx + ["run"] if lib == "fuxictr" else lm + ["--data", str(data), "--precision", prec]
                    _call(base + common + ["--model", model, "--threads", str(t), "--seed", str(rep), "--out", str(rd)],
                          t, rd / "log.txt")
                    r = json.loads((rd / "result.json").read_text())
                    import numpy as np

                    z = np.load(rd / "test_pred.npz")
                    r.update(test_metrics(z["p"], z["y"]), rep=rep, load=round(os.getloadavg()[0], 2))
                    runs.append(r)
                    keys = ("lib", "model", "threads", "rep", "precision", "auc", "logloss", "params",
                            "train_rows_per_s", "infer_rows_per_s", "load")
                    print(json.dumps({k: r.get(k) for k in keys}), flush=True)
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

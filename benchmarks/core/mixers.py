"""Mixer benchmark: forward and forward+backward time and peak training memory vs sequence length, side by side.

Every linmix mixer and softmax SDPA, next to the implementation a CPU user would otherwise pick: Hugging Face
transformers' ``Mamba2Mixer`` (its torch path, same config: d_model 256, expand 2, head dim 64, state 64, 1 group;
its default chunk 256). Batch 1. Each (mixer, threads) runs in two fresh processes, lengths ascending:

* time, with the default allocator (what a user runs): min over repeated runs of wall time; every cell is timed at
  least twice (the first call pays one-off set-up) unless one run takes over ``budget / 4`` s (marked ``*``: one run).
* memory, with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed tensors leave the RSS at once (glibc's dynamic
  threshold otherwise keeps them cached): max RSS after one forward+backward minus RSS before the first run (the
  largest training working set so far, which grows with L). Time and memory come from separate processes because
  with the fixed threshold every large temporary is a fresh mmap whose pages fault in on first touch, which doubles
  linmix Mamba2's forward time at 16k (0.79 -> 1.68 s, 1 thread) and leaves transformers' nearly unchanged
  (2.55 -> 2.58 s).

    python benchmarks/core/mixers.py --out runs/bench            # full: L = 256 ... 65536, 1 thread and all threads
    python benchmarks/core/mixers.py --quick --out runs/demo/bench  # L = 256 ... 4096, all threads (the demo)

Writes ``mixers.json``, ``mixers.md`` (tables + the target bars with measured ratios) and ``mixers.png``.

``--paired A,B`` instead times two mixers alternately in one process (A, B, A, B, ... ``--reps`` times per length,
best of each), so that both see the same machine load: on a shared machine this is the fair way to a ratio. Writes
``paired_A_B.{json,md}``.

    python benchmarks/core/mixers.py --paired mamba2,mamba3 --lengths 1024,4096,16384,65536 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

D_MODEL, D_STATE, HEADDIM = 256, 64, 64
MIXERS = ("mamba2", "hf_mamba2", "mamba3", "mamba3_mimo", "hybrid", "bimamba2", "linear", "linear_causal", "projection", "softmax",
          "softmax_causal")
LABELS = {
    "mamba2": "linmix Mamba2 (SSD, chunk 64)", "hf_mamba2": "transformers Mamba2Mixer (torch path, chunk 256)",
    "mamba3": "linmix Mamba3 SISO (chunk 64)", "mamba3_mimo": "linmix Mamba3 MIMO rank 4 (chunk 16)",
    "hybrid": "linmix hybrid: Mamba3 + causal softmax in parallel", "bimamba2": "linmix BiMamba2", "linear": "linear attention", "linear_causal": "causal linear attention + decay",
    "projection": "projection attention (M=32)", "softmax": "softmax SDPA", "softmax_causal": "causal softmax SDPA",
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _build(kind: str):

    if kind == "hf_mamba2":
        import logging

        logging.getLogger("transformers").setLevel(logging.ERROR)
        from transformers import Mamba2Config
        from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

        cfg = Mamba2Config(hidden_size=D_MODEL, state_size=D_STATE, expand=2, head_dim=HEADDIM,
                           num_heads=2 * D_MODEL // HEADDIM, n_groups=1, chunk_size=256, num_hidden_layers=1)
        return Mamba2Mixer(cfg, layer_idx=0)
    from linmix.shared import build_mixer

    heads = 2 * D_MODEL // HEADDIM if kind in ("mamba2", "mamba3", "mamba3_mimo", "bimamba2") else 4
    if kind == "mamba3_mimo":  # chunk 64 / R, as mamba-ssm recommends
        return build_mixer("mamba3", D_MODEL, n_heads=heads, d_state=D_STATE, chunk_size=16, backend="torch",
                           mixer_cfg={"is_mimo": True, "mimo_rank": 4})
    if kind == "hybrid":  # Mamba3 with the Mamba kinds' heads, attention with 4 heads (as the softmax rows)
        return build_mixer(kind, D_MODEL, n_heads=4, d_state=D_STATE, chunk_size=64, backend="torch",
                           mixer_cfg={"ssm": "mamba3", "layout": "parallel",
                                      "ssm_cfg": {"n_heads": 2 * D_MODEL // HEADDIM}})
    return build_mixer(kind, D_MODEL, n_heads=heads, d_state=D_STATE, chunk_size=64, backend="torch")


def _time(fn, budget_s: float) -> tuple[float, int]:
    """Best wall seconds of ``fn`` over 2-3 runs (1 if the first exceeds ``budget_s / 4``), and the number of runs."""
    best, runs = float("inf"), 0
    while runs < 3:
        t = time.perf_counter()
        fn()
        best, runs = min(best, time.perf_counter() - t), runs + 1
        if best > budget_s / 4 or (runs >= 2 and best > 1.0):
            break
    return best, runs


def worker(kind: str, lengths: list[int], threads: int, budget_s: float, what: str) -> list[dict]:
    """Measure one mixer at ascending lengths in this process (``what``: "time" or "memory"); stop a mode once one
    run exceeds ``budget_s / 4``."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = _build(kind)
    base = _rss_mb()
    rows, fwd_ok, bwd_ok = [], what == "time", True
    for L in lengths:
        row = {"mixer": kind, "L": L, "threads": threads}
        x = torch.randn(1, L, D_MODEL)
        xg = x.clone().requires_grad_()

        def fwd(x=x):
            with torch.no_grad():
                m(x)

        def fwdbwd(xg=xg):
            m(xg).sum().backward()
            m.zero_grad(set_to_none=True)
            xg.grad = None

        if fwd_ok:
            best, row["fwd_runs"] = _time(fwd, budget_s)
            row["fwd_ms"] = best * 1e3
            fwd_ok = best < budget_s / 4
        if bwd_ok and what == "time":
            best, row["fwdbwd_runs"] = _time(fwdbwd, budget_s)
            row["fwdbwd_ms"] = best * 1e3
            bwd_ok = best < budget_s / 4
        elif bwd_ok:
            t = time.perf_counter()
            fwdbwd()
            row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
            bwd_ok = time.perf_counter() - t < budget_s / 4
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not (fwd_ok or bwd_ok):
            break
    return rows


def _worker_rows(kind: str, what: str, threads: int, lengths: list[int], budget_s: float, console) -> list[dict]:
    """Run one ``worker`` in a fresh process and return its rows (what finished, if it hits the time limit)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--what", what, "--threads", str(threads),
           "--budget", str(budget_s), "--lengths", ",".join(map(str, lengths))]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LINMIX_BACKEND="torch",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    if what == "memory":  # RSS tracks live tensors, not allocator caching (same for every mixer)
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=budget_s * 12)
        text = out.stdout
        if out.returncode != 0:
            console.print(f"[red]{kind} ({what}): exit {out.returncode}: {out.stderr[-300:]}")
    except subprocess.TimeoutExpired as err:
        text = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        console.print(f"[yellow]{kind} ({threads} thr, {what}): time limit, kept what finished")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_all(lengths: list[int], threads_list: list[int], budget_s: float, mixers: list[str]) -> list[dict]:
    """Every (threads, mixer) timed and measured in two processes; one row per (mixer, threads, L) with both."""
    from rich.progress import Progress

    merged: dict[tuple, dict] = {}
    with Progress() as prog:
        task = prog.add_task("mixers", total=2 * len(mixers) * len(threads_list))
        for threads in threads_list:
            for kind in mixers:
                for what in ("time", "memory"):
                    prog.update(task, description=f"{kind} ({threads} thr, {what})")
                    for r in _worker_rows(kind, what, threads, lengths, budget_s, prog.console):
                        merged.setdefault((r["mixer"], r["threads"], r["L"]), {}).update(r)
                    prog.advance(task)
    return list(merged.values())


def _get(rows, kind, L, threads, key):
    for r in rows:
        if r["mixer"] == kind and r["L"] == L and r["threads"] == threads and key in r:
            return r[key]
    return None


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def bars(rows: list[dict], threads: int) -> list[tuple[str, str, str]]:
    """The core's target bars as (bar, measured, verdict)."""
    out = []

    def verdict(ok):
        return "n/a (not measured)" if ok is None else ("met" if ok else "NOT met")

    for L in sorted({r["L"] for r in rows if r["L"] >= 4096}):
        r = _ratio(_get(rows, "hf_mamba2", L, threads, "fwd_ms"), _get(rows, "mamba2", L, threads, "fwd_ms"))
        out.append((f"Mamba2 forward >= 2x faster than transformers at L={L}",
                    "n/a" if r is None else f"{r:.2f}x", verdict(None if r is None else r >= 2)))
    r = _ratio(_get(rows, "mamba2", 16384, threads, "peak_mb"), _get(rows, "hf_mamba2", 16384, threads, "peak_mb"))
    out.append(("Mamba2 peak training memory <= 0.5x transformers' at 16k", "n/a" if r is None else f"{r:.2f}x",
                verdict(None if r is None else r <= 0.5)))
    r = _ratio(_get(rows, "softmax", 16384, threads, "fwd_ms"), _get(rows, "mamba2", 16384, threads, "fwd_ms"))
    out.append(("SSD (Mamba2) >= 10x faster than softmax SDPA at 16k (forward)", "n/a" if r is None else f"{r:.1f}x",
                verdict(None if r is None else r >= 10)))
    r = _ratio(_get(rows, "mamba2", 65536, threads, "fwd_ms"), _get(rows, "mamba2", 16384, threads, "fwd_ms"))
    out.append(("Mamba2 time(64k) / time(16k) <= 5 (linear scaling)", "n/a" if r is None else f"{r:.2f}",
                verdict(None if r is None else r <= 5)))
    for L in sorted({r["L"] for r in rows if r["L"] >= 1024}):
        r = _ratio(_get(rows, "mamba3", L, threads, "fwd_ms"), _get(rows, "mamba2", L, threads, "fwd_ms"))
        out.append((f"Mamba3 SISO forward <= 1.3x linmix Mamba2's at L={L} (same d_model, state)",
                    "n/a" if r is None else f"{r:.2f}x", verdict(None if r is None else r <= 1.3)))
    r = _ratio(_get(rows, "mamba3", 65536, threads, "fwd_ms"), _get(rows, "mamba3", 16384, threads, "fwd_ms"))
    out.append(("Mamba3 time(64k) / time(16k) <= 5 (linear scaling)", "n/a" if r is None else f"{r:.2f}",
                verdict(None if r is None else r <= 5)))
    r = _ratio(_get(rows, "mamba2", 16384, threads, "peak_mb"), _get(rows, "softmax", 16384, threads, "peak_mb"))
    out.append(("Mamba2 fwd+bwd peak memory at 16k <= 2x softmax SDPA's", "n/a" if r is None else f"{r:.2f}x",
                verdict(None if r is None else r <= 2)))
    return out


def write_report(rows: list[dict], out: Path, cmd: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixers.json").write_text(json.dumps(rows, indent=1))
    lengths = sorted({r["L"] for r in rows})
    md = [f"Measured with `{cmd}` (batch 1, d_model {D_MODEL}, fp32, CPU; time = best wall ms of 2-3 runs with the "
          f"default allocator, `*` = one run, first-call set-up included; memory = peak extra RSS MB of one "
          f"forward+backward, in a separate process with a fixed mmap threshold).", ""]
    for threads in sorted({r["threads"] for r in rows}):
        for key, title in (("fwd_ms", "forward ms"), ("fwdbwd_ms", "forward+backward ms"),
                           ("peak_mb", "fwd+bwd peak MB")):
            md += [f"**{title}, {threads} thread(s)**", "",
                   "| mixer | " + " | ".join(f"{L // 1024}k" if L >= 1024 else str(L) for L in lengths) + " |",
                   "|---|" + "---|" * len(lengths)]
            for kind in MIXERS:
                vals = [_get(rows, kind, L, threads, key) for L in lengths]
                runs = [_get(rows, kind, L, threads, key.replace("_ms", "_runs")) for L in lengths]
                if any(v is not None for v in vals):
                    md.append(f"| {LABELS[kind]} | " + " | ".join(
                        "–" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.1f}") + ("*" if n == 1 else "")
                        for v, n in zip(vals, runs)) + " |")
            md.append("")
        md += [f"**Bars ({threads} thread(s))**", "", "| bar | measured | verdict |", "|---|---|---|"]
        md += [f"| {a} | {b} | {c} |" for a, b, c in bars(rows, threads) if b != "n/a"] + [""]
    (out / "mixers.md").write_text("\n".join(md))
    threads = max(r["threads"] for r in rows)
    summary = [{"stage": "mixers", "metric": bar, "value": float(val.rstrip("x")), "note": f"{verdict}, {threads} thr"}
               for bar, val, verdict in bars(rows, threads) if val != "n/a"]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plot(rows, out / "mixers.png")
    print("\n".join(md))


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = max(r["threads"] for r in rows)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, title in zip(axes, ("fwd_ms", "fwdbwd_ms", "peak_mb"),
                              ("forward time (ms)", "forward+backward time (ms)", "fwd+bwd peak memory (MB)")):
        for kind in MIXERS:
            pts = sorted((r["L"], r[key]) for r in rows if r["mixer"] == kind and r["threads"] == threads and key in r
                         and r[key] > 0)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=LABELS[kind])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_title(f"{title}, {threads} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def paired(kinds: list[str], lengths: list[int], threads: int, reps: int, bwd_max: int, out: Path, cmd: str) -> None:
    """Time ``kinds`` alternately at each length (forward; forward+backward up to ``bwd_max``); best of ``reps``."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mods = {k: _build(k) for k in kinds}
    rows = []
    for L in lengths:
        x = torch.randn(1, L, D_MODEL)
        row: dict = {"L": L, "threads": threads}
        for what in ("fwd", "fwdbwd"):
            if what == "fwdbwd" and L > bwd_max:
                continue
            best = {k: float("inf") for k in kinds}
            for _ in range(reps):
                for k, m in mods.items():
                    xg = x.clone().requires_grad_(what == "fwdbwd")
                    t = time.perf_counter()
                    if what == "fwd":
                        with torch.no_grad():
                            m(xg)
                    else:
                        m(xg).sum().backward()
                        m.zero_grad(set_to_none=True)
                    best[k] = min(best[k], time.perf_counter() - t)
            for k in kinds:
                row[f"{k}_{what}_ms"] = best[k] * 1e3
            row[f"ratio_{what}"] = best[kinds[1]] / best[kinds[0]]
        rows.append(row)
        print(json.dumps(row), flush=True)
    a, b = kinds
    md = [f"Measured with `{cmd}` (batch 1, d_model {D_MODEL}, state {D_STATE}, fp32, CPU, {threads} thread(s); "
          f"the two mixers timed alternately in one process, best of {reps} each, so both see the same machine "
          f"load; only the ratios are meaningful on a shared machine).", "",
          f"| L | {LABELS[a]} fwd ms | {LABELS[b]} fwd ms | ratio | fwd+bwd ms ({a}) | fwd+bwd ms ({b}) | ratio |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        fb = [r.get(f"{a}_fwdbwd_ms"), r.get(f"{b}_fwdbwd_ms"), r.get("ratio_fwdbwd")]
        md.append(f"| {r['L']} | {r[f'{a}_fwd_ms']:.0f} | {r[f'{b}_fwd_ms']:.0f} | {r['ratio_fwd']:.2f} | "
                  + " | ".join("–" if v is None else (f"{v:.2f}" if i == 2 else f"{v:.0f}") for i, v in enumerate(fb))
                  + " |")
    by_l = {r["L"]: r for r in rows}
    if 16384 in by_l and 65536 in by_l:
        md += ["", f"Linear scaling, forward time(64k) / time(16k): {a} "
               f"{by_l[65536][f'{a}_fwd_ms'] / by_l[16384][f'{a}_fwd_ms']:.2f}, {b} "
               f"{by_l[65536][f'{b}_fwd_ms'] / by_l[16384][f'{b}_fwd_ms']:.2f}."]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"paired_{a}_{b}.json").write_text(json.dumps(rows, indent=1))
    (out / f"paired_{a}_{b}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--quick", action="store_true", help="L = 256 ... 4096, all threads only")
    ap.add_argument("--lengths", default=None, help="comma-separated lengths")
    ap.add_argument("--threads", type=int, default=None, help="one thread count (default: 1 and all)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per measurement before larger L are skipped")
    ap.add_argument("--mixers", default=",".join(MIXERS))
    ap.add_argument("--paired", default=None, help="two mixers, A,B: time them alternately in one process")
    ap.add_argument("--reps", type=int, default=3, help="--paired: runs per mixer and length")
    ap.add_argument("--bwd-max", type=int, default=16384, help="--paired: longest length timed with backward")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", default="time", choices=("time", "memory"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    default = "256,1024,4096" if a.quick else "256,1024,4096,16384,65536"
    lengths = [int(v) for v in (a.lengths or default).split(",")]
    if a.paired:
        os.environ.setdefault("LINMIX_BACKEND", "torch")
        paired(a.paired.split(","), lengths, a.threads or 1, a.reps, a.bwd_max, Path(a.out),
               "python " + " ".join(sys.argv))
        return 0
    if a.worker:
        worker(a.worker, lengths, a.threads or 1, a.budget, a.what)
        return 0
    threads = [a.threads] if a.threads else ([os.cpu_count() or 1] if a.quick else sorted({1, os.cpu_count() or 1}))
    rows = run_all(lengths, threads, a.budget if not a.quick else 20.0, a.mixers.split(","))
    write_report(rows, Path(a.out), "python " + " ".join(sys.argv))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""PhysGTO inference scaling: time and peak memory vs mesh size, projection attention vs full softmax attention.

Time = fastest of ``--reps`` forwards after one warm-up. Same PhysGTO network (message passing + attention + FFN blocks), only the global mixer differs: the shared
``ProjectionAttention`` (N -> M slots -> N, O(N·M)) or ``SoftmaxAttention`` over all nodes (O(N²) time; SDPA's CPU
flash kernel keeps its memory O(N)). Meshes: structured n x n grids on the unit square split into triangles (N = n²
nodes, ≈3N undirected edges), one graph, ``torch.no_grad``, eval mode, float32, CPU.

Target bars: time(200k) / time(50k) <= 4.5 for the projection model, and >= 10x faster than softmax at 20k.

    .venv/bin/python benchmarks/physics/scaling.py --sizes 1000 5000 20000 50000 100000 200000 --softmax-max 20000

Writes benchmarks/results/physics_scaling.{md,json,png} (``--out``). Peak memory = growth of the process max RSS (one process per attention variant, sizes ascending).
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from linmix.apps.physics.config import PhysicsConfig  # noqa: E402
from linmix.apps.physics.model import PhysGTO  # noqa: E402
from linmix.apps.physics.pde.geometry import mesh_edges  # noqa: E402

# glibc settings for --malloc cache: never mmap (so freed blocks are reused instead of unmapped) and never trim
MALLOC_CACHE_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(1 << 30)}


def grid_mesh(n_nodes: int):
    n = max(2, int(round(np.sqrt(n_nodes))))
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    pos = np.stack([x.ravel(), y.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    cells = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    node_type = np.zeros(n * n, dtype=np.int64)
    node_type[(pos[:, 0] == 0) | (pos[:, 0] == 1) | (pos[:, 1] == 0) | (pos[:, 1] == 1)] = 1
    return (torch.tensor(pos, dtype=torch.float32), torch.tensor(node_type), torch.tensor(mesh_edges(cells)))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(net, n_nodes: int, reps: int, base_mb: float) -> dict:
    """Fastest of ``reps`` forwards (least disturbed by other processes on a shared machine); peak = process max RSS after this size minus the baseline (sizes run in ascending
    order in a fresh process per attention variant, so the max RSS after size k is size k's peak)."""
    pos, nt, ei = grid_mesh(n_nodes)
    n = pos.shape[0]
    feats = torch.randn(n, net.n_in + net.n_globals, generator=torch.Generator().manual_seed(0))
    batch = torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        net(pos, feats, nt, ei, batch)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            net(pos, feats, nt, ei, batch)
            times.append(time.perf_counter() - t0)
    return {"nodes": n, "edges": int(ei.shape[1]), "seconds": float(np.min(times)),
            "peak_mb": _maxrss_mb() - base_mb}


def run_variant(a) -> None:
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = PhysGTO(PhysicsConfig(d_model=a.d_model, n_layers=a.layers, n_slots=32, d_hidden=2 * a.d_model, n_freq=7,
                                attention=a.variant)).eval()
    measure(net, 256, 1, 0.0)
    base = _maxrss_mb()
    for n in sorted(a.sizes):
        if a.variant == "softmax" and n > a.softmax_max:
            continue
        r = measure(net, n, a.reps, base)
        r["attention"] = a.variant
        print("ROW " + json.dumps(r), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 50000, 100000, 200000])
    p.add_argument("--softmax-max", type=int, default=20000, help="largest mesh for the quadratic softmax variant")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--malloc", choices=["cache", "default"], default="cache",
                   help="cache: glibc keeps freed memory (MALLOC_MMAP_MAX_=0, no trimming), as jemalloc/tcmalloc "
                        "deployments do; default: glibc as configured, where every tensor over 32 MB is a fresh "
                        "mmap whose page faults grow faster than the mesh")
    p.add_argument("--variant", choices=["projection", "softmax"], default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.variant:
        run_variant(a)
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for attention in ("projection", "softmax"):
        cmd = [sys.executable, __file__, "--variant", attention, "--sizes", *map(str, a.sizes), "--softmax-max",
               str(a.softmax_max), "--reps", str(a.reps), "--threads", str(a.threads), "--d-model", str(a.d_model),
               "--layers", str(a.layers)]
        env = dict(os.environ)
        if a.malloc == "cache":
            env.update(MALLOC_CACHE_ENV)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        for line in proc.stdout:
            if line.startswith("ROW "):
                r = json.loads(line[4:])
                rows.append(r)
                print(f"{attention:<10} N={r['nodes']:>7} E={r['edges']:>7} {r['seconds']:8.3f} s "
                      f"{r['peak_mb']:8.1f} MB", flush=True)
        if proc.wait() != 0:
            print(f"{attention} run failed with exit code {proc.returncode}", file=sys.stderr)
    proj = {r["nodes"]: r for r in rows if r["attention"] == "projection"}
    soft = {r["nodes"]: r for r in rows if r["attention"] == "softmax"}

    def near(d, n):
        return d[min(d, key=lambda k: abs(k - n))] if d else None

    bars = {}
    p50, p200 = near(proj, 50000), near(proj, 200000)
    if p50 and p200 and p200["nodes"] > p50["nodes"]:
        bars["time_ratio_200k_50k"] = {"value": p200["seconds"] / p50["seconds"], "bar": "<= 4.5",
                                       "nodes": [p50["nodes"], p200["nodes"]]}
    common = sorted(set(proj) & set(soft))
    if common:
        n20 = min(common, key=lambda k: abs(k - 20000))
        bars["softmax_over_projection_at_20k"] = {"value": soft[n20]["seconds"] / proj[n20]["seconds"],
                                                  "bar": ">= 10", "nodes": n20}
    meta = {"threads": a.threads, "d_model": a.d_model, "layers": a.layers, "n_slots": 32,
            "load_avg_at_end": os.getloadavg(), "malloc": a.malloc, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    (out / "physics_scaling.json").write_text(json.dumps({"rows": rows, "bars": bars, "meta": meta}, indent=2))
    lines = ["# PhysGTO inference scaling (CPU)", "",
             f"PhysGTO d_model {a.d_model}, {a.layers} blocks, 32 slots; {a.threads} thread(s); load average at end "
             f"{meta['load_avg_at_end'][0]:.1f} on {os.cpu_count()} cores (shared machine: times are inflated); "
             f"allocator: glibc {'with freed memory kept (--malloc cache)' if a.malloc == 'cache' else 'defaults'}.",
             "",
             "| attention | nodes | edges | time (s) | peak RSS growth (MB) |", "|---|---|---|---|---|"]
    lines += [f"| {r['attention']} | {r['nodes']} | {r['edges']} | {r['seconds']:.3f} | {r['peak_mb']:.1f} |" for r in rows]
    lines += ["", "| bar | measured | target |", "|---|---|---|"]
    lines += [f"| {k} ({v['nodes']}) | {v['value']:.2f} | {v['bar']} |" for k, v in bars.items()]
    (out / "physics_scaling.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for name, d in (("projection", proj), ("softmax", soft)):
        ks = sorted(d)
        ax[0].loglog(ks, [d[k]["seconds"] for k in ks], "o-", label=name)
        ax[1].semilogx(ks, [d[k]["peak_mb"] for k in ks], "o-", label=name)
    ax[0].set_xlabel("mesh nodes")
    ax[0].set_ylabel("forward time (s)")
    ax[1].set_xlabel("mesh nodes")
    ax[1].set_ylabel("peak RSS growth (MB)")
    ax[0].legend()
    fig.savefig(out / "physics_scaling.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

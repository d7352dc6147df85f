"""Inference latency and throughput per app and runtime: eager PyTorch, TorchScript, ``torch.export`` (.pt2, its
``module()``) and ONNX Runtime (CPU), at two input sizes, 1 and 2 threads.

Each app's network is built at a small served size with random weights (the speed does not depend on the values),
exported in the three formats through ``linmix.shared.export.export_formats`` (round trip checked, max abs diff in the
table), then every runtime runs the same inputs: the median of ``--reps`` timed calls after two warm-up calls.
Throughput counts the app's unit per second (rows, tokens, audio samples, mesh nodes). ``torch.set_num_threads`` and
ONNX Runtime's ``intra_op_num_threads`` set the threads.

The machine may be shared with other jobs: absolute numbers move with its load; only ratios within one run (same
app, size and threads) are meaningful. Writes ``<out>/export_runtime.{md,json}``.

    python benchmarks/core/export_runtime.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RUNTIMES = ("eager", "torchscript", "export", "onnx")


def _ctr():
    from linmix.apps.ctr.export import example_inputs
    from linmix.apps.ctr.model import CTRNet, CTRNetConfig, CTRServing

    sizes = (1000,) * 13 + (100,) * 13  # Criteo-like: 26 fields (13 bucketed numeric + 13 categorical)
    net = CTRNet(CTRNetConfig(arch="fcn", field_sizes=sizes, d_model=16, n_layers=4, n_linear_layers=4)).eval()
    return dict(net=CTRServing(net), traced=CTRServing(net, checks=False), unit="rows",
                make=lambda n, seed: example_inputs(sizes, (), n, seed), sizes=(64, 4096), example=16,
                dims=[{0: "batch"}] * 2, names=["idx", "val"], count=lambda n: n, label="batch {}")


def _ehr():
    from linmix.apps.ehr.export import example_inputs
    from linmix.apps.ehr.lit_module import INPUTS
    from linmix.apps.ehr.model import EHRMamba, EHRMambaConfig, EHRMambaScorer

    cfg = EHRMambaConfig(vocab_size=512, d_model=64, n_layers=2, d_state=16, dropout=0.0, d_time=8, max_visits=64)
    net = EHRMambaScorer(EHRMamba(cfg), [3, 4]).eval()
    return dict(net=net, unit="tokens", make=lambda n, seed: example_inputs(512, 2, 8, n, seed), sizes=(128, 512),
                example=40, dims=[{0: "batch", 1: "length"}] * len(INPUTS) + [{0: "batch"}],
                names=list(INPUTS) + ["task"], count=lambda n: 8 * n, label="8 x {} tokens")


def _speech():
    from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig

    net = ConvTasNet(ConvTasNetConfig(n_filters=128, bottleneck=64, hidden=128, skip=64, n_blocks=4,
                                      n_repeats=2)).eval()

    def make(n, seed, batch=1):
        return (torch.randn(batch, n, generator=torch.Generator().manual_seed(seed)) * 0.1,)
    return dict(net=net, unit="samples", make=make, sizes=(8000, 32000), example=1600, example_args=make(1600, 9, 2),
                dims=[{0: "batch", 1: "time"}], names=["waveform"], count=lambda n: n, label="{} samples (8 kHz)")


def _physics():
    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.lit_module import build_net
    from linmix.apps.physics.operator import FieldOperator

    cfg = PhysicsConfig(arch="physgto", n_in=1, n_out=1, n_globals=1, transient=False, d_model=64, n_layers=2,
                        n_heads=4, n_slots=16, d_hidden=64, n_freq=3, dropout=0.0)
    net = FieldOperator(build_net(cfg), cfg=cfg).eval()

    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        nbr = torch.randint(1, 8, (3 * n,), generator=g)
        src = torch.arange(3 * n) % n
        return (torch.rand(n, 2, generator=g), torch.randn(n, 2, generator=g), torch.randint(0, 3, (n,), generator=g),
                torch.stack([src, (src + nbr) % n]))
    return dict(net=net, unit="nodes", make=make, sizes=(500, 4000), example=300,
                dims=[{0: "nodes"}, {0: "nodes"}, {0: "nodes"}, {1: "edges"}],
                names=["pos", "feats", "node_type", "edge_index"], count=lambda n: n, label="mesh of {} nodes")


APPS = {"ctr": _ctr, "ehr": _ehr, "speech": _speech, "physics": _physics}


def _time(fn, args, reps: int) -> float:
    for _ in range(2):
        fn(*args)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_app(name: str, reps: int, threads: tuple[int, ...], workdir: Path) -> list[dict]:
    from linmix.shared.export import FORMATS, export_formats, format_paths, load_runner

    spec = APPS[name]()
    net = spec["net"]
    paths = format_paths(workdir / f"{name}.pt", FORMATS)
    res = export_formats(net, paths, {"app": name}, [spec["make"](n, i) for i, n in enumerate(spec["sizes"])],
                         example=spec.get("example_args") or spec["make"](spec["example"], 9), dims=spec["dims"], input_names=spec["names"],
                         output_names=["out"], traced_net=spec.get("traced"))
    diff = {r["format"]: r["max_abs_diff"] for r in res}
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        runners = {"eager": net, **{f: load_runner(paths[f], f, threads=t) for f in FORMATS}}
        for n in spec["sizes"]:
            args = spec["make"](n, 1)
            with torch.inference_mode():
                secs = {rt: _time(runners[rt], args, reps) for rt in RUNTIMES}
            for rt in RUNTIMES:
                rows.append({"app": name, "size": spec["label"].format(n), "threads": t, "runtime": rt,
                             "latency_ms": 1e3 * secs[rt], "throughput": spec["count"](n) / secs[rt],
                             "unit": f"{spec['unit']}/s", "vs_eager": secs["eager"] / secs[rt],
                             "max_abs_diff": diff.get(rt, 0.0)})
    return rows


def _load(meta: dict) -> str:
    if "load_avg_1min" not in meta:
        return ""
    return f"1-minute load average at start / end: {meta['load_avg_1min'][0]:.1f} / {meta['load_avg_1min'][1]:.1f}."


def compact_table(rows: list[dict]) -> list[str]:
    """One line per (app, input, threads): eager latency and each runtime's speed-up over it (the README table)."""
    out = ["| app | input | threads | eager ms | TorchScript | torch.export | ONNX Runtime |",
           "|---|---|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((r["app"], r["size"], r["threads"]) for r in rows))
    for key in keys:
        by = {r["runtime"]: r for r in rows if (r["app"], r["size"], r["threads"]) == key}
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {by['eager']['latency_ms']:.1f} | "
                   + " | ".join(f"{by[rt]['vs_eager']:.2f}x" for rt in RUNTIMES[1:]) + " |")
    return out


def to_markdown(rows: list[dict], meta: dict) -> str:
    out = ["# Export runtimes: eager vs TorchScript vs torch.export vs ONNX Runtime", "",
           f"{meta['machine']}, torch {meta['torch']}, onnxruntime {meta['onnxruntime']}; median of {meta['reps']} calls "
           "after 2 warm-up calls; random weights at a small served size per app (see "
           "`benchmarks/core/export_runtime.py`). The machine is shared with other jobs: absolute numbers move with "
           "its load, so compare only within a row group (same app, size, threads: `x eager` is the speed-up over "
           "eager PyTorch measured in the same run). " + _load(meta), "",
           *compact_table(rows), "", "All measurements:", "",
           "| app | input | threads | runtime | latency ms | throughput | x eager | max abs diff |",
           "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['app']} | {r['size']} | {r['threads']} | {r['runtime']} | {r['latency_ms']:.2f} | "
                   f"{r['throughput']:,.0f} {r['unit']} | {r['vs_eager']:.2f} | {r['max_abs_diff']:.1e} |")
    out += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", default=",".join(APPS), help="comma list of " + ", ".join(APPS))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default="runs/bench/export_runtime")
    ap.add_argument("--render", help="only rewrite the Markdown from this export_runtime.json")
    a = ap.parse_args(argv)
    if a.render:
        d = json.loads(Path(a.render).read_text())
        Path(a.render).with_suffix(".md").write_text(to_markdown(d["rows"], d["meta"]))
        return 0
    import onnxruntime

    threads = tuple(int(t) for t in a.threads.split(","))
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="export_runtime_") as d:
        for name in a.apps.split(","):
            rows += bench_app(name, a.reps, threads, Path(d))
            print(f"{name}: done", flush=True)
    meta = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "load_avg_1min": [load0, os.getloadavg()[0]],
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "reps": a.reps,
            "command": " ".join(["python benchmarks/core/export_runtime.py", *(sys.argv[1:] if argv is None else argv)])}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_runtime.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "export_runtime.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

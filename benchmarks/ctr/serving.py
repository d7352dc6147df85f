"""CTR serving: ONNX Runtime vs TorchScript on the exported FCN, rows/s at batch 1, 64 and 4096 and the latency
percentiles at batch 1, with 1 and 2 threads.

The FCN is built at Criteo width (39 fields: 13 bucketed numeric with 1000 tokens, 26 categorical with 10k; d = 16,
ECN 4 / LCN 4; random weights, the speed does not depend on the values) and exported with ``linmix-ctr export``'s own
code (``linmix.apps.ctr.export.export_net``: ``model.ts`` and ``model.onnx``, round trip checked). Both runtimes take
the same encoded ``idx``/``val`` arrays; the featurizer is not timed. TorchScript runs the exported file as loaded (with
its input checks) under ``torch.inference_mode``; ONNX Runtime runs a CPU session with ``intra_op_num_threads`` set.
Rows/s = batch / median call time over ``--seconds`` of calls per cell; p50 / p99 from every batch-1 call.

The machine may be shared with other jobs: only the ratios within one run are meaningful. Writes
``<out>/ctr_serving.{md,json}``.

    python benchmarks/ctr/serving.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BATCHES = (1, 64, 4096)
SIZES = (1000,) * 13 + (10_000,) * 26


def _calls(fn, seconds: float, min_calls: int = 5) -> np.ndarray:
    for _ in range(3):
        fn()
    ts = []
    end = time.perf_counter() + seconds
    while len(ts) < min_calls or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return np.asarray(ts)


def run(seconds: float, threads: tuple[int, ...]) -> tuple[list[dict], dict]:
    from linmix.apps.ctr.export import example_inputs, export_net
    from linmix.apps.ctr.model import CTRNet, CTRNetConfig
    from linmix.shared.export import load_torchscript
    from linmix.shared.export_program import load_onnx

    torch.manual_seed(0)
    net = CTRNet(CTRNetConfig(arch="fcn", field_sizes=SIZES, d_model=16, n_layers=4, n_linear_layers=4)).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctr_serving_") as d:
        res = export_net(net, d, {"bench": "ctr_serving"}, formats=("torchscript", "onnx"))
        diff = {r["format"]: r["max_abs_diff"] for r in res}
        ts_model, _ = load_torchscript(Path(d) / "model.ts")
        for t in threads:
            torch.set_num_threads(t)
            sess, _ = load_onnx(Path(d) / "model.onnx", threads=t)
            for b in BATCHES:
                idx, val = example_inputs(SIZES, (), b, seed=b)
                feeds = {"idx": idx.numpy(), "val": val.numpy()}

                def ts_call(idx=idx, val=val):
                    with torch.inference_mode():
                        ts_model(idx, val, None)

                def ort_call(feeds=feeds, sess=sess):
                    sess.run(None, feeds)
                for runtime, fn in (("torchscript", ts_call), ("onnxruntime", ort_call)):
                    s = _calls(fn, seconds)
                    rows.append({"runtime": runtime, "threads": t, "batch": b, "calls": len(s),
                                 "rows_per_s": b / float(np.median(s)), "p50_ms": 1e3 * float(np.percentile(s, 50)),
                                 "p99_ms": 1e3 * float(np.percentile(s, 99))})
    return rows, diff


def to_markdown(rows: list[dict], meta: dict) -> str:
    out = ["# CTR serving: ONNX Runtime vs TorchScript (exported FCN, Criteo width)", "",
           f"{meta['machine']}, torch {meta['torch']}, onnxruntime {meta['onnxruntime']}. FCN with 39 fields, d = 16, "
           "ECN 4 / LCN 4, random weights; encoded inputs (the featurizer is not timed). Round trip vs eager at batch 3 "
           f"and 257: TorchScript {meta['diff']['torchscript']:.1e}, ONNX Runtime {meta['diff']['onnx']:.1e}. "
           "The machine is shared with other jobs: absolute numbers move with its load; compare the two runtimes "
           "within one (threads, batch) pair (`ORT / TS`, measured in the same run). 1-minute load average at start / "
           f"end: {meta['load_avg_1min'][0]:.1f} / {meta['load_avg_1min'][1]:.1f} on {os.cpu_count()} cores.", "",
           "| threads | batch | TorchScript rows/s | ONNX Runtime rows/s | ORT / TS | TS p50 / p99 ms | ORT p50 / p99 ms |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["runtime"], r["threads"], r["batch"]): r for r in rows}
    for t in sorted({r["threads"] for r in rows}):
        for b in BATCHES:
            ts, ort = by[("torchscript", t, b)], by[("onnxruntime", t, b)]
            lat = (f"{ts['p50_ms']:.3f} / {ts['p99_ms']:.3f}", f"{ort['p50_ms']:.3f} / {ort['p99_ms']:.3f}") \
                if b == 1 else ("", "")
            out.append(f"| {t} | {b} | {ts['rows_per_s']:,.0f} | {ort['rows_per_s']:,.0f} | "
                       f"{ort['rows_per_s'] / ts['rows_per_s']:.2f} | {lat[0]} | {lat[1]} |")
    out += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed calls per (runtime, threads, batch) cell")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default="runs/bench/ctr_serving")
    a = ap.parse_args(argv)
    import onnxruntime

    load0 = os.getloadavg()[0]
    rows, diff = run(a.seconds, tuple(int(t) for t in a.threads.split(",")))
    meta = {"machine": f"{os.cpu_count()}-core CPU", "load_avg_1min": [load0, os.getloadavg()[0]], "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "diff": diff,
            "command": " ".join(["python benchmarks/ctr/serving.py", *(sys.argv[1:] if argv is None else argv)])}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ctr_serving.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "ctr_serving.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

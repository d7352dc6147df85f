"""Resident memory of the CTR training process before any data: what each import adds, and what a streamed
``linmix-ctr fit`` has loaded when its first batch starts.

Part 1: in a fresh interpreter, the imports of the fit path one by one in the order they load (VmRSS from
``/proc/self/status`` after each; a package that an earlier step already pulled in adds ~0). Steps in brackets are
pulled in by Lightning or torchmetrics, not by linmix: ``torch._dynamo`` (with sympy; ``lightning_fabric.wrappers``),
scipy and matplotlib (``torchmetrics``' top level) and, only where ``transformers`` is installed (the ``bench`` extra),
its auto classes (``torchmetrics.functional.text.bert``). Part 2: a fresh interpreter runs ``linmix-ctr fit`` on a
small synthetic log with ``--data.streaming true`` and ``--num-workers`` DataLoader workers (data encoded
beforehand in another process) and, at the first training batch, prints its VmRSS, the workers' private memory
(``smaps_rollup``: not shared with the parent after ``fork``) and which optional packages the main process has loaded.

    python benchmarks/ctr/import_rss.py --work runs/bench/import_rss
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

STEPS = [
    ("numpy", "import numpy"),
    ("torch", "import torch"),
    ("[torch._dynamo + sympy]", "import torch._dynamo"),
    ("[scipy.signal]", "import scipy.signal"),
    ("[matplotlib.pyplot]", "import matplotlib.pyplot"),
    ("[transformers AutoModel, AutoTokenizer]", "from transformers import AutoModel, AutoTokenizer"),
    ("torchmetrics", "import torchmetrics"),
    ("pytorch_lightning", "import pytorch_lightning"),
    ("jsonargparse + LightningCLI", "import pytorch_lightning.cli"),
    ("pyarrow.parquet", "import pyarrow.parquet"),
    ("polars", "import polars"),
    ("linmix.shared.lightning_cli", "import linmix.shared.lightning_cli"),
    ("linmix.apps.ctr.data", "import linmix.apps.ctr.data"),
    ("linmix.apps.ctr.lit_module", "import linmix.apps.ctr.lit_module"),
]
OPTIONAL = ("transformers", "tokenizers", "huggingface_hub", "matplotlib", "scipy", "sympy", "sklearn", "pandas",
            "polars", "pyarrow", "torchmetrics", "torch._dynamo", "torch._inductor", "triton", "onnx", "onnxruntime",
            "rich", "PIL")


def vmrss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _private_mb(pid: int) -> float:
    """Private (not shared with the parent after ``fork``) resident memory of a process, from ``smaps_rollup``."""
    kb = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb / 1024


def _steps() -> list[dict]:
    import time

    rows, prev = [{"step": "python", "rss_mb": vmrss_mb(), "added_mb": 0.0, "s": 0.0}], vmrss_mb()
    for name, stmt in STEPS:
        t0 = time.perf_counter()
        try:
            exec(stmt, {})
            ok = True
        except ImportError:
            ok = False
        now = vmrss_mb()
        rows.append({"step": name if ok else f"{name} (not installed)", "rss_mb": now, "added_mb": now - prev,
                     "s": time.perf_counter() - t0})
        prev = now
    return rows


def __getattr__(name: str):
    """``import_rss.FirstBatchProbe`` (a Lightning callback) is built on first access, so that importing this file
    for part 1 loads nothing."""
    if name != "FirstBatchProbe":
        raise AttributeError(name)
    from pytorch_lightning import Callback

    class FirstBatchProbe(Callback):
        """Prints one JSON line at the first training batch: VmRSS and the optional packages loaded."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                import multiprocessing as mp

                workers = [_private_mb(p.pid) for p in mp.active_children()]
                print("PROBE " + json.dumps({"rss_mb": vmrss_mb(), "workers_private_mb": workers,
                                             "loaded": [m for m in OPTIONAL if m in sys.modules]}), flush=True)

    globals()["FirstBatchProbe"] = FirstBatchProbe
    return FirstBatchProbe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/bench/import_rss")
    ap.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of the fit (their private memory "
                    "at the first batch is printed too)")
    ap.add_argument("--steps-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.steps_only:
        print(json.dumps(_steps()))
        return 0
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, __file__, "--steps-only"], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'import (cumulative, fit order)':45s} {'VmRSS MB':>9s} {'added':>8s} {'s':>6s}")
    for r in rows:
        print(f"{r['step']:45s} {r['rss_mb']:9.1f} {r['added_mb']:+8.1f} {r['s']:6.2f}")
    work = Path(a.work)
    common = ["fit", "-c", str(Path(here).parents[1] / "configs/ctr/tiny.yaml"), "--data.data_dir", str(work / "data"),
              "--data.synth_rows", "3000", "--data.streaming", "true", "--trainer.max_steps", "1",
              "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(work / "run"),
              "--model.out_dir", str(work / "out"), "--model.early_stopping_patience", "0",
              "--data.num_workers", str(a.num_workers),
              "--trainer.enable_model_summary", "false"]
    code = "import sys; from linmix.apps.ctr.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=here)
    subprocess.run([sys.executable, "-c", code, *common], env=env, check=True, capture_output=True)  # data, encode
    probe = subprocess.run([sys.executable, "-c", code, *common, "--trainer.callbacks+",
                            "{class_path: import_rss.FirstBatchProbe}"], env=env, capture_output=True, text=True)
    line = [x for x in probe.stdout.splitlines() if x.startswith("PROBE ")]
    if probe.returncode != 0 or not line:
        raise SystemExit(f"the fit probe failed: {probe.stderr[-2000:]}")
    res = json.loads(line[0][6:])
    print(f"\nstreamed linmix-ctr fit, first training batch: VmRSS {res['rss_mb']:.1f} MB; DataLoader workers' "
          f"private memory {', '.join(f'{w:.1f}' for w in res['workers_private_mb']) or '-'} MB; loaded: "
          f"{', '.join(res['loaded'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

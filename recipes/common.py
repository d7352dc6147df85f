"""What the recipes share: the common flags, a timestamped log, atomic JSON, the device record, publishing a model.

The recipes run as scripts (``python recipes/<app>.py``), so this folder is on ``sys.path`` and they import it as
``common``. ``ROOT`` is the repository the recipes sit in: ``configs/`` are read from it and ``models/`` written to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def base_parser(app: str, doc: str, budget_s: float) -> argparse.ArgumentParser:
    """The flags every training recipe takes (``--out``, ``--budget``, ``--accel``, ``--workers``, ``--smoke``)."""
    p = argparse.ArgumentParser(prog=f"recipes/{app}.py", description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "recipes" / app,
                   help="run folder: log.txt, run.json, the checkpoints and the device's test scores")
    p.add_argument("--budget", type=float, default=budget_s,
                   help="wall-clock seconds from the start of training until the model and its test are written")
    p.add_argument("--accel", choices=("gpu", "cpu"), default=None, help="default: gpu when CUDA is available")
    p.add_argument("--workers", type=int, default=None,
                   help="data processes (synthesis, loaders); default: min(8, CPU cores - 1)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny data, batches and evaluation: a rehearsal of the whole recipe on a CPU in a few minutes")
    return p


def resolve_common(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on the machine (accelerator, worker count)."""
    if args.accel is None:
        import torch

        args.accel = "gpu" if torch.cuda.is_available() else "cpu"
    if args.workers is None:
        args.workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


class Log:
    """``log(msg)`` prints ``[  12.3 s] msg`` (seconds since ``t0``) and appends it to ``path``, one open per line, so
    a run stopped from outside leaves a complete log up to its last line."""

    def __init__(self, path: Path, t0: Optional[float] = None) -> None:
        self.path, self.t0 = Path(path), time.time() if t0 is None else t0

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")


def write_json(path: Path, obj, indent: int = 1) -> None:
    """Write ``obj`` as JSON through a temporary file and a rename (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def device_info(accel: str) -> dict:
    """Versions, CPU count and the GPU (asked of ``nvidia-smi``: no CUDA context in this process, which may fork)."""
    import pytorch_lightning as pl
    import torch

    info = {"accel": accel, "python": sys.version.split()[0], "torch": torch.__version__, "lightning": pl.__version__,
            "cuda": torch.version.cuda, "cpus": os.cpu_count(), "host_cpu": platform.processor() or platform.machine()}
    if accel == "gpu":
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
            info["gpu"] = q.splitlines()[0] if q else "?"
        except (OSError, subprocess.TimeoutExpired) as err:
            info["gpu"] = f"? ({err})"
    return info


def hardware(info: dict) -> str:
    """One line for a report: 'NVIDIA H100 80GB HBM3, 81559 MiB; torch 2.6.0, 16 CPU cores' (or the CPU)."""
    dev = info.get("gpu") or f"CPU ({info.get('host_cpu', '?')})"
    return f"{dev}; torch {info.get('torch', '?')}, Lightning {info.get('lightning', '?')}, {info.get('cpus', '?')} CPU cores"


def publish(app: str, name: str, ckpt: Path, card: str, safe_globals=()) -> Path:
    """Copy ``ckpt`` (weights, hyperparameters and the app's metadata; no optimiser state) to
    ``<models>/<app>/<name>.ckpt`` and write the card ``<name>.md`` beside it (``models/README.md``; ``<models>`` as
    ``--model`` resolves it: ``$LINMIX_MODELS``, else the package's ``models/``). The file is read weights-only
    (``linmix.shared.checkpoint``; ``safe_globals``: the app module's ``checkpoint_globals``)."""
    import torch

    from linmix.shared.checkpoint import read_checkpoint
    from linmix.shared.models import models_root

    if not name or Path(name).name != name or name.endswith(".ckpt"):
        raise SystemExit(f"--publish takes a plain model name, got {name!r}")
    dest = models_root() / app
    dest.mkdir(parents=True, exist_ok=True)
    ck = read_checkpoint(ckpt, app=app, safe_globals=safe_globals)
    for key in ("optimizer_states", "lr_schedulers", "loops", "callbacks"):
        ck.pop(key, None)
    tmp = dest / f".{name}.ckpt.tmp"
    torch.save(ck, tmp)
    os.replace(tmp, dest / f"{name}.ckpt")
    (dest / f"{name}.md").write_text(card)
    return dest / f"{name}.ckpt"

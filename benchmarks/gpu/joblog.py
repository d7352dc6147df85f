"""What every GPU job writes the same way: timestamped progress lines and atomic JSON files.

Used by ``speech_job.py``, ``physics_job.py`` and ``train_ehr.py`` (each run as ``python3 benchmarks/gpu/<x>.py``, so
this folder is on ``sys.path``). Standard library only: it runs under the GPU machine's own Python.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional


class JobLog:
    """``log(msg)`` prints ``[  12.3 s] msg`` (seconds since ``t0``) and appends the line to ``path``, opening the file
    per line so a job killed at its budget leaves a complete log up to its last line."""

    def __init__(self, path: Path, t0: Optional[float] = None) -> None:
        self.path, self.t0 = Path(path), time.time() if t0 is None else t0

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")


def write_json(path: Path, obj, indent: int = 1) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    os.replace(tmp, path)

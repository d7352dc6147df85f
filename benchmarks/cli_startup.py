"""Console-script start-up: wall time of ``linmix-<app> ... --help`` (best of N fresh processes per command).

    .venv/bin/python benchmarks/cli_startup.py [--bin .venv/bin] [--before OTHER/.venv/bin] [--repeats 3]
        [--out benchmarks/results/cli_startup.md]

Each command runs ``--repeats`` times as a new process (``subprocess.run``, output discarded); the table keeps the
minimum wall time, the run least disturbed by other load. ``--before`` adds a column for a second installation (the
console scripts of another checkout's virtual environment) measured in the same interleaved loop, so both columns
see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (
    ("linmix-ehr", "--help"),
    ("linmix-ehr", "ingest", "--help"),
    ("linmix-ehr", "synth", "--help"),
    ("linmix-ctr", "--help"),
    ("linmix-ctr", "encode", "--help"),
    ("linmix-physics", "--help"),
    ("linmix-physics", "synth", "--help"),
    ("linmix-speech", "--help"),
    ("linmix-speech", "synth", "--help"),
    ("linmix-lm", "--help"),
    ("linmix-lm", "fit", "--help"),
    ("linmix-ehr", "export", "--help"),
    ("linmix-speech", "separate", "--help"),
    ("linmix-physics", "rollout", "--help"),
)
"""The app overviews, the tools that need no model, one training subcommand and three model tools."""


def wall_time(argv: list[str]) -> float:
    """Seconds for one run of ``argv`` to exit (it must exit 0)."""
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def measure(bins: list[Path], repeats: int) -> list[list[float]]:
    """best[i][j]: minimum wall time of COMMANDS[i] with the scripts of ``bins[j]``, runs interleaved."""
    times = [[[] for _ in bins] for _ in COMMANDS]
    for _ in range(repeats):
        for i, cmd in enumerate(COMMANDS):
            for j, b in enumerate(bins):
                times[i][j].append(wall_time([str(b / cmd[0]), *cmd[1:]]))
    return [[min(t) for t in row] for row in times]


def table(bins: dict[str, Path], best: list[list[float]], repeats: int, command: str) -> str:
    names = list(bins)
    lines = [f"# Console-script start-up, best of {repeats} runs (seconds of wall time)", "",
             f"Machine: {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}, "
             f"{platform.system()} {platform.machine()}. Command: `{command}`.", "",
             "| command | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cmd, row in zip(COMMANDS, best):
        lines.append(f"| `{' '.join(cmd)}` | " + " | ".join(f"{t:.2f}" for t in row) + " |")
    for name, b in bins.items():
        lines.append(f"\n{name}: `{b}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", type=Path, default=Path(".venv/bin"), help="folder holding the linmix-* console scripts")
    p.add_argument("--before", type=Path, help="a second installation's script folder, measured as 'before'")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cli_startup.md"))
    a = p.parse_args(argv)
    bins = {"before": a.before, "after": a.bin} if a.before else {"seconds": a.bin}
    best = measure(list(bins.values()), a.repeats)
    command = "python benchmarks/cli_startup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(bins, best, a.repeats, command.strip())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

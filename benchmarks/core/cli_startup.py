"""Console-script start-up: wall time of ``linmix-<app> ... --help`` (best of N fresh processes per command).

    .venv/bin/python benchmarks/core/cli_startup.py [--before-rev REV] [--repeats 3] [--out benchmarks/results/cli_startup.md]

Each command runs ``--repeats`` times as a new process, exactly what the console script runs
(``python -c "from linmix.apps.<app>.cli import main; main()" ARGS``, output discarded); the table keeps the minimum
wall time, the run least disturbed by other load. The code measured is this checkout; ``--before-rev`` adds a column
for another git revision (exported with ``git archive`` to a temporary folder and put first on ``PYTHONPATH``), timed
by the same interpreter in the same interleaved loop, so both columns see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
    ("linmix-ehr", "score", "--help"),
    ("linmix-speech", "export", "--help"),
    ("linmix-physics", "export", "--help"),
)
"""The app overviews, the tools that need no model, one training subcommand and six model tools."""

SCRIPT = "import sys; from linmix.apps.{app}.cli import main; sys.argv[0] = {prog!r}; sys.exit(main())"


def wall_time(cmd: tuple[str, ...], pythonpath: Path | None) -> float:
    """Seconds for one run of ``cmd`` (console-script name + arguments) to exit; it must exit 0."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    code = SCRIPT.format(app=cmd[0].removeprefix("linmix-"), prog=cmd[0])
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *cmd[1:]], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def measure(paths: list[Path | None], repeats: int) -> list[list[float]]:
    """best[i][j]: minimum wall time of COMMANDS[i] with the code found on ``paths[j]`` (None: this checkout's
    installation), runs interleaved."""
    times = [[[] for _ in paths] for _ in COMMANDS]
    for _ in range(repeats):
        for i, cmd in enumerate(COMMANDS):
            for j, path in enumerate(paths):
                times[i][j].append(wall_time(cmd, path))
    return [[min(t) for t in row] for row in times]


def export_revision(rev: str, into: Path) -> Path:
    """``git archive`` of ``rev`` as ``into/linmix`` (the repository root is the package); returns ``into``."""
    tree = into / "linmix"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return into


def table(names: list[str], best: list[list[float]], repeats: int, command: str, load: tuple[float, float]) -> str:
    lines = [f"# Console-script start-up, best of {repeats} runs (seconds of wall time)", "",
             f"Machine: {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}, "
             f"{platform.system()} {platform.machine()}; 1-minute load average {load[0]:.1f} before and {load[1]:.1f} "
             f"after the runs. Command: `{command}`.", "",
             "| command | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cmd, row in zip(COMMANDS, best):
        lines.append(f"| `{' '.join(cmd)}` | " + " | ".join(f"{t:.2f}" for t in row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-rev", help="git revision to time as 'before' (this checkout is 'after')")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cli_startup.md")
    a = p.parse_args(argv)
    command = " ".join(["python benchmarks/core/cli_startup.py", *(sys.argv[1:] if argv is None else argv)])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="linmix-before-") as tmp:
        if a.before_rev:
            names, paths = [f"before ({a.before_rev})", "after (this checkout)"], [export_revision(a.before_rev,
                                                                                                   Path(tmp)), None]
        else:
            names, paths = ["seconds"], [None]
        best = measure(paths, a.repeats)
    text = table(names, best, a.repeats, command, (load_before, os.getloadavg()[0]))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``linmix-physics synth``: generate PDE samples with scikit-fem, in parallel over samples.

Each sample i is solved from its own seed (``seed + i``) so runs are reproducible regardless of worker count and order.
A failing solve (exception or non-finite solution) is skipped: its reason is logged, written to ``rejects.jsonl`` and
counted in ``synth_summary.json`` (``requested = written + failed``). Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from linmix.apps.physics.pde.sample_io import get_problem, save_sample, validate_sample
from linmix.shared.argtypes import at_least, positive_float
from linmix.shared.errors import UserError

log = logging.getLogger("linmix.physics.synth")

DEFAULT_H = {"darcy": 0.1, "heat": 0.1, "elasticity": 0.06, "flow": 0.05}


def _solver(problem: str) -> Callable:
    from linmix.apps.physics.pde import solvers

    if problem == "darcy":
        return solvers.solve_darcy
    if problem == "heat":
        return solvers.solve_heat
    if problem == "elasticity":
        return solvers.solve_elasticity
    if problem == "flow":
        from linmix.apps.physics.pde.flow import solve_flow

        return solve_flow
    raise ValueError(f"unknown problem {problem!r}")


def synth_one(problem: str, index: int, seed: int, h: float, out: str, n_steps: int | None = None,
              random_domains: bool = False) -> dict:
    """Solve and write sample ``index``. Returns a record ``{index, ok, path | reason, n_nodes, seconds}``.
    Darcy samples share one domain per ``seed`` (like the PhysGTO / NORM Darcy benchmark) unless ``random_domains``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, index])
    kwargs = {"h": h}
    if n_steps is not None and get_problem(problem).transient:
        kwargs["n_steps"] = n_steps
    if problem == "darcy":
        kwargs["domain_seed"] = None if random_domains else seed
    try:
        sample = _solver(problem)(rng, **kwargs)
        dt = float(sample.pop("dt", 0.05 if get_problem(problem).transient else 0.0))
        validate_sample({**sample, "problem": problem, "dt": dt}, where=f"{problem} sample {index}")
        path = save_sample(Path(out) / f"{problem}_{index:05d}.npz", sample, problem, dt=dt)
    except Exception as exc:  # any solver failure: skip, report, count
        return {"index": index, "ok": False, "reason": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}
    return {"index": index, "ok": True, "path": str(path), "n_nodes": int(len(sample["pos"])),
            "seconds": time.perf_counter() - t0}


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        if isinstance(obj, list):
            fh.write("".join(json.dumps(r) + "\n" for r in obj))
        else:
            json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


def synthesize(problem: str, n_samples: int, out: str | Path, seed: int = 0, h: float | None = None,
               workers: int = 1, n_steps: int | None = None, progress: bool = True,
               random_domains: bool = False) -> dict:
    """Generate ``n_samples`` samples of ``problem`` into ``out``; returns the summary dict (also written to
    ``out/synth_summary.json``; failures to ``out/rejects.jsonl``). Raises :class:`UserError` for an unknown problem,
    ``n_samples`` < 1, a non-positive or non-finite ``h``, ``workers`` < 1, ``n_steps`` < 1 or a negative ``seed``."""
    if problem not in DEFAULT_H:
        raise UserError(f"synth: unknown problem {problem!r}; expected one of {sorted(DEFAULT_H)}")
    for name, value, low in (("n_samples", n_samples, 1), ("workers", workers, 1), ("seed", seed, 0),
                             ("n_steps", 1 if n_steps is None else n_steps, 1)):
        if int(value) != value or value < low:
            raise UserError(f"synth: {name} must be an integer >= {low}, got {value}")
    if h is not None and not (np.isfinite(h) and h > 0):
        raise UserError(f"synth: the mesh size h must be a finite number > 0, got {h}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"synth: output folder {out} is an existing file")
    if n_steps is not None and not get_problem(problem).transient:
        log.info("%s is steady: n_steps %d is not used", problem, n_steps)
    out.mkdir(parents=True, exist_ok=True)
    h = DEFAULT_H[problem] if h is None else h
    records: list[dict] = []
    t0 = time.perf_counter()
    with Progress(TextColumn(f"synth {problem}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar:
        task = bar.add_task("synth", total=n_samples)
        if workers <= 1:
            for i in range(n_samples):
                records.append(synth_one(problem, i, seed, h, str(out), n_steps, random_domains))
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futs = [pool.submit(synth_one, problem, i, seed, h, str(out), n_steps, random_domains)
                        for i in range(n_samples)]
                for fut in as_completed(futs):
                    records.append(fut.result())
                    bar.advance(task)
    records.sort(key=lambda r: r["index"])
    failed = [r for r in records if not r["ok"]]
    for r in failed:
        log.warning("sample %d skipped: %s", r["index"], r["reason"])
    ok = [r for r in records if r["ok"]]
    summary = {"problem": problem, "requested": n_samples, "written": len(ok), "failed": len(failed),
               "seed": seed, "h": h, "workers": workers, "random_domains": random_domains,
               "seconds": round(time.perf_counter() - t0, 3),
               "mean_nodes": float(np.mean([r["n_nodes"] for r in ok])) if ok else 0.0,
               "failures": [{"index": r["index"], "reason": r["reason"]} for r in failed]}
    _write_json(out / "synth_summary.json", summary)
    if failed:
        _write_json(out / "rejects.jsonl", [{"index": r["index"], "reason": r["reason"]} for r in failed])
    return summary


def main(argv: list[str] | None = None) -> int:
    """Generate PDE samples (scikit-fem on random triangle meshes with holes) as npz, in parallel."""
    p = argparse.ArgumentParser(prog="linmix-physics synth",
                                description="Generate PDE samples (scikit-fem on random triangle meshes) as npz.")
    p.add_argument("--problem", required=True, choices=["darcy", "heat", "elasticity", "flow"])
    p.add_argument("--samples", type=at_least(1), required=True, help="number of samples to attempt (>= 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=at_least(0), default=0, help="base seed (>= 0); sample i uses (seed, i)")
    p.add_argument("--h", type=positive_float, default=None, help="target mesh edge length > 0 (default per problem)")
    p.add_argument("--steps", type=at_least(1), default=None, help="time steps per trajectory (transient problems)")
    p.add_argument("--workers", type=at_least(1), default=min(2, os.cpu_count() or 1), help="parallel processes (>= 1)")
    p.add_argument("--random-domains", action="store_true",
                   help="darcy: a new random domain per sample (default: one domain per seed, all samples share it)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("skfem").setLevel(logging.WARNING)  # not one line per assembly / solve of every time step
    s = synthesize(a.problem, a.samples, a.out, a.seed, a.h, a.workers, a.steps, random_domains=a.random_domains)
    print(f"{s['problem']}: requested {s['requested']}, written {s['written']}, failed {s['failed']} "
          f"(mean {s['mean_nodes']:.0f} nodes, {s['seconds']:.1f} s) -> {a.out}")
    return 0 if s["written"] > 0 else 1

"""Benchmark: FHIR bulk NDJSON -> MEDS ingestion (fast path) vs a per-resource ``fhir.resources.R4B`` validation pass.

For each size (resources), a synthetic cohort is written (``linmix.apps.ehr.synth``, NDJSON), then

* ``ingest``: ``linmix-ehr ingest`` in a fresh subprocess, single core (``POLARS_MAX_THREADS=1``,
  ``OMP_NUM_THREADS=1``, no worker processes); we record wall time, CPU time (user+sys, from ``wait4``), the CPU
  time of the ``ingest()`` call and of its phases (read / resolve / write), and peak RSS (``ru_maxrss``);
  ``--repeat N`` runs it N times and keeps the run with the least CPU (the machine may be shared);
* ``validate``: ``get_fhir_model_class(type).model_validate_json(line)`` for every line of the same files, or for a
  subsample of ``--validate-sample`` lines (the first lines of each file, in proportion to its size) when larger;
  rate = validated lines / CPU seconds, also per resource type.

Writes ``benchmarks/results/ehr_ingest.{md,json,png}`` (``--out`` to change). Usage::

    python benchmarks/ehr/ingest.py --sizes 10000 100000 1000000 --validate-sample 20000 --repeat 3

Numbers depend on the machine's load; the md file records the load average at the start and end. The bar is
per core, so the rate that counts is resources per CPU second of the ``ingest()`` call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RES_PER_PATIENT = 19.95  # measured mean of the synthetic cohort (seed 0)


def run_ingest(src: Path, out: Path, workers: int) -> dict:
    env = dict(os.environ, POLARS_MAX_THREADS="1" if workers <= 1 else os.environ.get("POLARS_MAX_THREADS", ""),
               OMP_NUM_THREADS="1")
    env = {k: v for k, v in env.items() if v != ""}
    # CPU of the call = this process + its reaped worker processes (os.times children fields)
    code = ("import json, os, time; from linmix.apps.ehr.ingest import ingest; c = sum(os.times()[:4]); "
            "t = time.perf_counter(); "
            f"r = ingest([{str(src)!r}], {str(out)!r}, overwrite=True, workers={workers}); "
            "print(json.dumps([r.total['read'], sum(os.times()[:4]) - c, time.perf_counter() - t, r.cpu_s]))")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out_text = proc.stdout.read().decode()
    proc.stdout.close()
    if status != 0:
        raise RuntimeError(f"ingest failed ({status})")
    n, call_cpu, call_wall, phases = json.loads(out_text.strip().splitlines()[-1])
    cpu = ru.ru_utime + ru.ru_stime  # whole process incl. interpreter start and imports (and children)
    return {"resources": n, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": ru.ru_maxrss / 1024,
            "res_per_s_wall": n / wall, "res_per_cpu_s_process": n / cpu, "call_cpu_s": call_cpu,
            "call_wall_s": call_wall, "res_per_cpu_s": n / call_cpu, "phase_cpu_s": phases}


def run_validation(src: Path, sample: int, repeat: int = 1) -> dict:
    """Per-resource ``model_validate_json`` over a size-proportional sample of every file; CPU s per type = the least
    of ``repeat`` passes (the same best-of rule as the ingest runs, so a noisy machine does not favour either side)."""
    import orjson
    from fhir.resources.R4B import get_fhir_model_class

    files = sorted(src.glob("*.ndjson"))
    sizes = {f: f.stat().st_size for f in files}
    total = sum(sizes.values())
    per_type: dict[str, list[float]] = {}
    n_all, cpu_all, lines_all = 0, 0.0, 0
    for f in files:
        with open(f, "rb") as fh:
            lines = fh.readlines()
        lines_all += len(lines)
        k = len(lines) if sample <= 0 else max(50, int(sample * sizes[f] / total))
        lines = lines[:k]
        rtype = orjson.loads(lines[0])["resourceType"]
        model = get_fhir_model_class(rtype)
        model.model_validate_json(lines[0])  # schema build outside the timing
        dt = float("inf")
        for _ in range(max(1, repeat)):
            c = time.process_time()
            for line in lines:
                model.model_validate_json(line)
            dt = min(dt, time.process_time() - c)
        per_type[rtype] = [len(lines), dt]
        n_all += len(lines)
        cpu_all += dt
    return {"validated": n_all, "of": lines_all, "cpu_s": cpu_all, "res_per_cpu_s": n_all / cpu_all,
            "per_type_res_per_cpu_s": {t: n / dt for t, (n, dt) in sorted(per_type.items())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="approximate numbers of resources")
    ap.add_argument("--validate-sample", type=int, default=20_000,
                    help="max lines validated per size (0 = all lines)")
    ap.add_argument("--workers", type=int, default=0, help="ingest worker processes (0 = single core)")
    ap.add_argument("--repeat", type=int, default=1, help="ingest runs (and validation passes) per size; the least CPU is kept")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the cohorts (default: a temp dir)")
    a = ap.parse_args(argv)
    from linmix.apps.ehr.synth import synthesize

    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="ehr_ingest_bench_"))
    load = os.getloadavg()
    rows = []
    try:
        for size in a.sizes:
            n_pat = max(1, round(size / RES_PER_PATIENT))
            src = work / f"fhir_{n_pat}"
            t0 = time.perf_counter()
            if not (src / "oracle.parquet").exists():
                synthesize(n_pat, src, fmt="ndjson", seed=0)
            synth_s = time.perf_counter() - t0
            runs = [run_ingest(src, work / f"meds_{n_pat}", a.workers) for _ in range(max(1, a.repeat))]
            ing = min(runs, key=lambda r: r["call_cpu_s"])
            ing["all_call_cpu_s"] = [r["call_cpu_s"] for r in runs]
            val = run_validation(src, a.validate_sample, a.repeat)
            row = {"target": size, "patients": n_pat, "synth_s": synth_s, "bytes": sum(
                f.stat().st_size for f in src.glob("*.ndjson")), **{f"ingest_{k}": v for k, v in ing.items()},
                **{f"validate_{k}": v for k, v in val.items()}}
            row["speedup_vs_validation"] = ing["res_per_cpu_s"] / val["res_per_cpu_s"]
            rows.append(row)
            print(f"{ing['resources']:,} resources: ingest() {ing['res_per_cpu_s']:,.0f} res/CPU-s "
                  f"({ing['resources'] / ing['call_wall_s']:,.0f} res/s wall), peak RSS {ing['peak_rss_mb']:,.0f} MB; "
                  f"R4B validation {val['res_per_cpu_s']:,.0f} res/CPU-s; ratio {row['speedup_vs_validation']:.1f}x",
                  flush=True)
            shutil.rmtree(work / f"meds_{n_pat}", ignore_errors=True)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    (a.out / "ehr_ingest.json").write_text(json.dumps({"loadavg_at_start": load, "loadavg_at_end": load_end,
                                                       "command": " ".join(sys.argv), "rows": rows}, indent=1))
    lines = [
        "# FHIR NDJSON -> MEDS ingestion vs per-resource fhir.resources.R4B validation",
        "",
        f"`python benchmarks/ehr/ingest.py --sizes {' '.join(map(str, a.sizes))} --validate-sample "
        f"{a.validate_sample} --workers {a.workers} --repeat {a.repeat}`; {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} at start, {load_end[0]:.1f} at end (a shared machine inflates CPU time: rates are lower "
        "bounds). Ingest runs single-core (POLARS_MAX_THREADS=1) in a subprocess, best of "
        f"{a.repeat} by CPU; the validation pass is timed per type, also best of {a.repeat}; res/CPU-s = resources per CPU second, i.e. per core; 'process' counts the whole "
        "subprocess (interpreter start, imports), 'ingest()' only the call; phases = CPU s of read / resolve / "
        "write inside ingest().",
        "",
        "| resources | MB | process wall s | process res/CPU-s | ingest() res/CPU-s | ingest() res/s wall "
        "| phases CPU s | peak RSS MB | validated (of) | R4B validation res/CPU-s | ingest() / validation |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['ingest_resources']:,} | {r['bytes'] / 1e6:.0f} | {r['ingest_wall_s']:.1f} | "
                     f"{r['ingest_res_per_cpu_s_process']:,.0f} | {r['ingest_res_per_cpu_s']:,.0f} | "
                     f"{r['ingest_resources'] / r['ingest_call_wall_s']:,.0f} | "
                     f"{' / '.join(f'{v:.2f}' for v in r['ingest_phase_cpu_s'].values())} | "
                     f"{r['ingest_peak_rss_mb']:,.0f} | {r['validate_validated']:,} ({r['validate_of']:,}) | "
                     f"{r['validate_res_per_cpu_s']:,.0f} | {r['speedup_vs_validation']:.1f}x |")
    if rows:
        pt = rows[-1]["validate_per_type_res_per_cpu_s"]
        lines += ["", "R4B validation per type (res/CPU-s, largest size): "
                  + ", ".join(f"{t} {v:,.0f}" for t, v in pt.items()),
                  "", "ingest() CPU s of every run (the table keeps the least): " + "; ".join(
                      f"{r['ingest_resources']:,}: " + ", ".join(f"{c:.2f}" for c in r["ingest_all_call_cpu_s"])
                      for r in rows),
                  "", "Target bars: >= 100k res/s per core; >= 25x the validation pass; peak RSS <= 1.5 GB at 1M."]
    (a.out / "ehr_ingest.md").write_text("\n".join(lines) + "\n")
    _plot(rows, a.out / "ehr_ingest.png")
    print("\n".join(lines))
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    n = [r["ingest_resources"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(n, [r["ingest_res_per_cpu_s"] for r in rows], "o-", label="ingest (msgspec + polars), per core")
    ax1.plot(n, [r["validate_res_per_cpu_s"] for r in rows], "s-", label="fhir.resources R4B validation")
    ax1.axhline(100_000, color="gray", ls="--", lw=1, label="bar: 100k res/s per core")
    ax1.set(xscale="log", yscale="log", xlabel="resources", ylabel="resources / CPU second",
            title="throughput")
    ax1.legend(fontsize=8)
    ax2.plot(n, [r["ingest_peak_rss_mb"] for r in rows], "o-")
    ax2.axhline(1536, color="gray", ls="--", lw=1, label="bar: 1.5 GB")
    ax2.set(xscale="log", xlabel="resources", ylabel="peak RSS (MB)", title="ingest peak memory")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

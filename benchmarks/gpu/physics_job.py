"""Physics GPU job: PhysGTO on steady Darcy through the app's own CLI, time-boxed, weights + metrics to ``APP_OUT``.

Called by ``benchmarks/gpu/physics.sh`` with the contract's environment: ``ACCEL`` (gpu | cpu), ``BUDGET_S`` (s from
the job's start until everything is written), ``APP_OUT`` (what comes back), ``WORK`` (scratch), ``NCPU``;
``JOB_T0`` (unix s at the job's start, set by physics.sh). Phases, each timed in ``APP_OUT/physics_job.log``:

1. unpack ``gpu_pack/physics/darcy_gpu.npz`` (1,250 Darcy samples, see ``pack_physics.py``) into ``WORK/darcy``;
2. ``linmix-physics fit -c configs/physics/gto_darcy_gpu.yaml -c WORK/fit.yaml``: the overrides set the data folder,
   ``--trainer.accelerator=$ACCEL``, CSV logs in ``APP_OUT/logs``, the shared :class:`linmix.shared.lightning.TimeBudget`
   callback, whose wall-clock cosine schedule ends ``TEST_RESERVE_S`` before the budget, whatever the (shared) GPU's
   speed, and writes ``APP_OUT/ckpt/last.ckpt`` (weights only, atomically) every 45 s and at the end, and
   :class:`linmix.apps.physics.callbacks.EpochLog`: one line per epoch (steps/s, graphs/s, loss, val rel-L2) to
   ``APP_OUT/physics_fit.log`` and ``APP_OUT/curve.jsonl``;
3. ``linmix-physics test`` of that checkpoint on the 200-mesh test split (same device): ``APP_OUT/gpu_test.json``;
4. ``APP_OUT/physics_summary.json``: device, budget, phase times, epochs, steps, final metrics.

With ``ACCEL=cpu`` (rehearsal) it trains on 3 batches of 4 meshes per epoch, checkpoints every 20 s and tests 1
batch; the schedule is the same.
Exit status: 0 on success, 2 when the pack is missing, 3 when fit produced no checkpoint, 4 when test failed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from joblog import JobLog, write_json

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from linmix.apps.physics.cli import main; sys.exit(main())"
CONFIG = "configs/physics/gto_darcy_gpu.yaml"


def env(name: str, default: str | None = None) -> str:
    v = os.environ.get(name, default)
    if v is None:
        raise SystemExit(f"physics job: environment variable {name} is required")
    return v


ACCEL, BUDGET, T0 = env("ACCEL", "gpu"), float(env("BUDGET_S", "480")), float(env("JOB_T0", str(time.time())))
OUT, WORK, NCPU = Path(env("APP_OUT")), Path(env("WORK")), int(env("NCPU", "3"))
GPU = ACCEL != "cpu"
# test subprocess: imports + loading 1,250 samples (~60 s on this loaded 2-core CPU, far less there) + 200 meshes
TEST_RESERVE_S = 60.0 if GPU else 150.0
say = JobLog(OUT / "physics_job.log", T0)


def run(cmd: list, timeout: float, name: str) -> int:
    """Run ``cmd`` (stdout/stderr to APP_OUT/<name>.out); kill it after ``timeout`` s. Returns its status."""
    say(f"{name}: {' '.join(cmd[3:])} (timeout {timeout:.0f} s)")
    t = time.time()
    with open(OUT / f"{name}.out", "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            rc = p.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 15)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
            rc = 124
    say(f"{name}: exit {rc} after {time.time() - t:.1f} s")
    return rc


def yaml_dump(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1))  # JSON is YAML


def device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    summary = {"accel": ACCEL, "budget_s": BUDGET, "ncpu": NCPU, "config": CONFIG, "phases": {}}
    say(f"physics job: ACCEL={ACCEL} BUDGET_S={BUDGET:.0f} NCPU={NCPU} python {sys.version.split()[0]}")
    summary.update(device_info())
    say(f"device: {summary}")
    pack = ROOT / "gpu_pack/physics/darcy_gpu.npz"
    if not pack.exists():
        say(f"FAILED: {pack} is missing (make it with: .venv/bin/python benchmarks/gpu/pack_physics.py pack)")
        return 2
    t = time.time()
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu.pack_physics import unpack  # noqa: E402

    data = WORK / "darcy"
    n = unpack(data, pack)
    summary["phases"]["unpack_s"] = round(time.time() - t, 1)
    say(f"unpacked {n} samples in {summary['phases']['unpack_s']} s")

    fit_deadline = T0 + BUDGET - TEST_RESERVE_S
    trainer = {"accelerator": ACCEL, "devices": 1, "max_epochs": 100000, "enable_checkpointing": False,
               "enable_progress_bar": False, "default_root_dir": str(WORK / "root"),
               "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                          "init_args": {"save_dir": str(OUT / "logs"), "name": "gto_darcy_gpu"}},
               "callbacks": [{"class_path": "linmix.shared.lightning.TimeBudget",
                              "init_args": {"deadline": fit_deadline, "reserve_s": 3.0, "warmup_steps": 100,
                                            "min_lr_ratio": 0.01, "stop_at": "epoch",
                                            "ckpt_path": str(OUT / "ckpt/last.ckpt"),
                                            "ckpt_every_s": 45.0 if GPU else 20.0, "matmul_precision": "high"}},
                             {"class_path": "linmix.apps.physics.callbacks.EpochLog",
                              "init_args": {"log_path": str(OUT / "physics_fit.log"),
                                            "curve_path": str(OUT / "curve.jsonl")}}]}
    if not GPU:
        trainer.update({"limit_train_batches": 3, "limit_val_batches": 1, "check_val_every_n_epoch": 1})
    workers = max(0, min(2, NCPU - 1))
    data_args = {"data_dir": str(data), "num_workers": workers, **({} if GPU else {"batch_size": 4})}
    yaml_dump({"data": data_args, "trainer": trainer}, WORK / "fit.yaml")
    py = [sys.executable, "-c", CLI]
    t = time.time()
    rc = run(py + ["fit", "-c", CONFIG, "-c", str(WORK / "fit.yaml")], fit_deadline - time.time() + 25, "fit")
    summary["phases"]["fit_s"] = round(time.time() - t, 1)
    summary["fit_rc"] = rc
    curve = [json.loads(x) for x in (OUT / "curve.jsonl").read_text().splitlines()] if (OUT / "curve.jsonl").exists() else []
    if curve:
        last = curve[-1]
        summary.update({"epochs": last["epoch"] + 1, "steps": last["step"], "train_s": last["elapsed_s"],
                        "median_steps_per_s": sorted(c["steps_per_s"] for c in curve)[len(curve) // 2],
                        "median_graphs_per_s": sorted(c["graphs_per_s"] for c in curve)[len(curve) // 2]})
        vals = [c for c in curve if "val/rel_l2" in c]
        if vals:
            summary["last_val_rel_l2"] = vals[-1]["val/rel_l2"]
    write_json(OUT / "physics_summary.json", summary)
    ckpt = OUT / "ckpt/last.ckpt"
    if not ckpt.exists():
        say(f"FAILED: fit exited {rc} and wrote no checkpoint; see {OUT / 'fit.out'}")
        return 3

    test = {"accelerator": ACCEL, "devices": 1, "enable_progress_bar": False, "default_root_dir": str(WORK / "root"),
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                       "init_args": {"save_dir": str(WORK / "test_logs"), "name": "gpu_test", "version": 0}}}
    if not GPU:
        test["limit_test_batches"] = 1
    yaml_dump({"data": {"data_dir": str(data), **({} if GPU else {"batch_size": 4})}, "trainer": test},
              WORK / "test.yaml")
    t = time.time()
    rc = run(py + ["test", "-c", CONFIG, "-c", str(WORK / "test.yaml"), f"--ckpt_path={ckpt}"],
             T0 + BUDGET - time.time() - 5, "test")
    summary["phases"]["test_s"] = round(time.time() - t, 1)
    metrics = WORK / "test_logs/gpu_test/version_0/metrics.csv"
    if rc != 0 or not metrics.exists():
        say(f"FAILED: test exited {rc}; see {OUT / 'test.out'}")
        write_json(OUT / "physics_summary.json", summary)
        return 4
    with open(metrics) as fh:
        rows = list(csv.DictReader(fh))
    res = {k: float(v) for r in rows for k, v in r.items() if k.startswith("test/") and v not in ("", None)}
    res["n_test_batches_limited"] = not GPU
    res["n_meshes"] = 200 if GPU else 4  # the first n meshes of the (unshuffled) test split
    write_json(OUT / "gpu_test.json", res)
    summary["gpu_test"] = res
    summary["phases"]["total_s"] = round(time.time() - T0, 1)
    write_json(OUT / "physics_summary.json", summary)
    say(f"done: test rel L2 {res.get('test/rel_l2')}; total {summary['phases']['total_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

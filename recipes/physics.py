"""Physics quality recipe: PhysGTO on steady Darcy (PhysGTO's task1 recipe) through ``linmix-physics fit``, time-boxed.

    python recipes/physics.py --budget 600                                       # on a CUDA machine
    python recipes/physics.py --smoke --accel cpu --budget 90 --out /tmp/physics_smoke   # rehearsal on a CPU

1. Data: the 1,250 Darcy samples ``configs/physics/gto_darcy_gpu.yaml`` describes (seed 0, h = 0.1, one shared domain
   with holes), made with the app's own solver (``linmix.apps.physics.pde.synth.synthesize``, ``--workers`` processes)
   into ``--data`` unless it already holds them.
2. ``linmix-physics fit -c configs/physics/gto_darcy_gpu.yaml -c <out>/fit.yaml``: the second file sets the data
   folder, the accelerator, CSV logs under ``<out>/logs`` and two callbacks: the shared
   :class:`linmix.shared.lightning.TimeBudget` (a cosine over the wall-clock time that ends ``--test-reserve-s``
   before the budget, whatever the device's speed; a weights-only ``<out>/model.ckpt`` every 45 s and at the end)
   and :class:`linmix.apps.physics.callbacks.EpochLog` (``fit.log``, ``curve.jsonl``: steps/s, graphs/s, loss and
   validation relative L2 per epoch).
3. ``linmix-physics test`` of ``model.ckpt`` on the 200-mesh test split, on the same device: ``device_test.json``.

``--out`` also gets ``log.txt`` and ``run.json`` (device, phases, epochs, steps, metrics). Score the weights on CPU
afterwards with ``recipes/eval_physics.py --from <out>``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Log, base_parser, device_info, resolve_common, write_json  # noqa: E402

T0 = time.time()
CONFIG = "configs/physics/gto_darcy_gpu.yaml"
CLI = "import sys; from linmix.apps.physics.cli import main; sys.exit(main())"
DATA = {"problem": "darcy", "n_samples": 1250, "h": 0.1, "seed": 0}  # what CONFIG's data section describes


def make_data(folder: Path, n_samples: int, workers: int, log) -> dict:
    """Synthesise ``n_samples`` Darcy samples of CONFIG into ``folder`` unless it already holds them."""
    from linmix.apps.physics.pde.synth import synthesize

    have = len(list(folder.glob("*.npz"))) if folder.is_dir() else 0
    if have >= n_samples:
        log(f"data: reusing {have} samples in {folder}")
        return {"folder": str(folder), "samples": have, "synth_s": 0.0}
    s = synthesize(DATA["problem"], n_samples, folder, seed=DATA["seed"], h=DATA["h"], workers=workers, progress=False)
    log(f"data: {s['written']} samples ({s['failed']} failed, mean {s['mean_nodes']:.0f} nodes) in "
        f"{s['seconds']:.0f} s on {workers} processes -> {folder}")
    return {"folder": str(folder), "samples": s["written"], "synth_s": round(s["seconds"], 1)}


def run(cmd: list[str], timeout: float, out: Path, name: str, log) -> int:
    """Run ``cmd`` from the repository root with its output in ``out/<name>.out``; stopped after ``timeout`` s."""
    log(f"{name}: {' '.join(cmd[3:])} (timeout {timeout:.0f} s)")
    t = time.time()
    with open(out / f"{name}.out", "w") as fh:
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
    log(f"{name}: exit {rc} after {time.time() - t:.1f} s")
    return rc


def main(argv=None) -> int:
    p = base_parser("physics", __doc__, budget_s=600.0)
    p.add_argument("--data", type=Path, default=None,
                   help="sample folder (default: runs/data/physics/darcy_gpu, the config's own)")
    p.add_argument("--test-reserve-s", type=float, default=None,
                   help="seconds kept for the device test (default: 60 on a GPU, 40 %% of the budget on a CPU)")
    args = resolve_common(p.parse_args(argv))
    gpu, out = args.accel == "gpu", args.out.resolve()
    n_samples = 40 if args.smoke else DATA["n_samples"]
    data = (args.data or ROOT / "runs" / "data" / "physics" / ("darcy_smoke" if args.smoke else "darcy_gpu")).resolve()
    reserve = args.test_reserve_s if args.test_reserve_s is not None else (60.0 if gpu else 0.4 * args.budget)
    log = Log(out / "log.txt", T0)
    res: dict = {"recipe": "recipes/physics.py", "argv": sys.argv[1:] if argv is None else list(argv),
                 "args": vars(args), "config": CONFIG, "device": device_info(args.accel), "phases": {}}
    log(f"physics recipe: {json.dumps(res['device'])}")
    res["data"] = make_data(data, n_samples, args.workers, log)
    write_json(out / "run.json", res)

    t_start = time.time()  # the budget starts with the data ready
    fit_deadline = t_start + args.budget - reserve
    work = out / "work"
    work.mkdir(exist_ok=True)
    trainer = {"accelerator": args.accel, "devices": 1, "max_epochs": 100000, "enable_checkpointing": False,
               "enable_progress_bar": False, "default_root_dir": str(work),
               "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                          "init_args": {"save_dir": str(out / "logs"), "name": "fit"}},
               "callbacks": [{"class_path": "linmix.shared.lightning.TimeBudget",
                              "init_args": {"deadline": fit_deadline, "reserve_s": 3.0, "warmup_steps": 100,
                                            "min_lr_ratio": 0.01, "stop_at": "epoch",
                                            "ckpt_path": str(out / "model.ckpt"),
                                            "ckpt_every_s": 45.0 if gpu else 20.0, "matmul_precision": "high"}},
                             {"class_path": "linmix.apps.physics.callbacks.EpochLog",
                              "init_args": {"log_path": str(out / "fit.log"), "curve_path": str(out / "curve.jsonl")}}]}
    small = {"batch_size": 4} if args.smoke else {}
    if args.smoke:
        trainer.update({"limit_train_batches": 3, "limit_val_batches": 1, "check_val_every_n_epoch": 1})
    data_args = {"data_dir": str(data), "n_samples": n_samples, "num_workers": max(0, min(4, args.workers - 1)), **small}
    (work / "fit.yaml").write_text(json.dumps({"data": data_args, "trainer": trainer}, indent=1))  # JSON is YAML
    py = [sys.executable, "-c", CLI]
    t = time.time()
    rc = run(py + ["fit", "-c", CONFIG, "-c", str(work / "fit.yaml")], fit_deadline - time.time() + 25, out, "fit", log)
    res["phases"]["fit_s"], res["fit_rc"] = round(time.time() - t, 1), rc
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()] if (out / "curve.jsonl").is_file() else []
    if curve:
        mid = len(curve) // 2
        res.update({"epochs": curve[-1]["epoch"] + 1, "steps": curve[-1]["step"], "train_s": curve[-1]["elapsed_s"],
                    "median_steps_per_s": sorted(c["steps_per_s"] for c in curve)[mid],
                    "median_graphs_per_s": sorted(c["graphs_per_s"] for c in curve)[mid]})
        vals = [c["val/rel_l2"] for c in curve if "val/rel_l2" in c]
        if vals:
            res["last_val_rel_l2"] = vals[-1]
    write_json(out / "run.json", res)
    if not (out / "model.ckpt").is_file():
        log(f"FAILED: fit exited {rc} and wrote no checkpoint; see {out / 'fit.out'}")
        return 3

    test = {"accelerator": args.accel, "devices": 1, "enable_progress_bar": False, "default_root_dir": str(work),
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                       "init_args": {"save_dir": str(work / "test_logs"), "name": "test", "version": 0}}}
    if args.smoke:
        test["limit_test_batches"] = 1
    (work / "test.yaml").write_text(json.dumps({"data": {"data_dir": str(data), **small}, "trainer": test}))
    t = time.time()
    rc = run(py + ["test", "-c", CONFIG, "-c", str(work / "test.yaml"), f"--ckpt_path={out / 'model.ckpt'}"],
             t_start + args.budget - time.time() + 30, out, "test", log)
    res["phases"]["test_s"] = round(time.time() - t, 1)
    metrics = work / "test_logs" / "test" / "version_0" / "metrics.csv"
    if rc != 0 or not metrics.is_file():
        log(f"FAILED: test exited {rc}; see {out / 'test.out'}")
        write_json(out / "run.json", res)
        return 4
    with open(metrics) as fh:
        scores = {k: float(v) for r in csv.DictReader(fh) for k, v in r.items() if k.startswith("test/") and v}
    scores["n_meshes"] = 4 if args.smoke else None  # None: the whole test split
    write_json(out / "device_test.json", scores)
    res["device_test"] = scores
    res["phases"]["total_s"] = round(time.time() - T0, 1)
    write_json(out / "run.json", res)
    log(f"done: device test rel L2 {scores.get('test/rel_l2')}; {res['phases']['total_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


"""Quality table: PhysGTO vs MeshGraphNets vs Transolver-style on each synthetic problem, same data, same epochs,
matched parameter budgets (~0.28-0.30 M), CPU training time.

Steady problems report test relative L2 (de-normalised, per channel then averaged); transient problems report the
relative L2 averaged over a full autoregressive rollout of every test trajectory (``--steps`` steps, 50 by default)
and at its last step. Data are synthesised once under ``runs/data/physics/bench_<problem>``.

    .venv/bin/python benchmarks/physics_quality.py --problems darcy heat elasticity --epochs 15

Writes runs/bench/physics_quality.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCHS = {
    "physgto": dict(d_model=48, n_layers=3, d_hidden=96, n_slots=16, n_heads=4),
    "mgn": dict(d_model=48, n_layers=5, d_hidden=96),
    "transolver": dict(d_model=96, n_layers=4, d_hidden=96, n_slots=16, n_heads=4),
}
DATA = {  # samples, mesh h, time steps
    "darcy": (160, 0.15, None), "heat": (40, 0.2, 50), "elasticity": (160, 0.1, None), "flow": (12, 0.08, 50),
}


def run(problem: str, arch: str, epochs: int, batch_size: int, data_dir: Path) -> dict:
    import pytorch_lightning as pl

    from apps.physics.data import PhysicsDataModule
    from apps.physics.lit_module import PhysicsLitModule

    pl.seed_everything(0, verbose=False)
    dm = PhysicsDataModule(problem=problem, data_dir=str(data_dir), batch_size=batch_size,
                           val_fraction=0.1, test_fraction=0.15)
    model = PhysicsLitModule(arch=arch, problem=problem, n_in=dm.n_in, n_out=dm.n_out, n_globals=dm.n_globals,
                             transient=dm.transient, lr=1e-3, warmup_steps=20, **ARCHS[arch])
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=epochs)
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.fit(model, datamodule=dm)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    return {"problem": problem, "arch": arch, "params": sum(p.numel() for p in model.parameters()),
            "epochs": epochs, "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
            "n_train": len(dm.train_set), "n_test": len(dm.test_set),
            "mean_nodes": round(sum(d.num_nodes for d in dm.train_set.items) / len(dm.train_set), 1),
            "rel_l2": float(res["test/rel_l2"]), "rel_l2_last": float(res.get("test/rel_l2_last", float("nan"))),
            "per_channel": {k.split("test/rel_l2_")[1]: float(v) for k, v in res.items()
                            if k.startswith("test/rel_l2_") and k not in ("test/rel_l2_last", "test/rel_l2_step1")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", nargs="+", default=["darcy", "heat", "elasticity"])
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples", type=int, default=None, help="override the per-problem sample count")
    p.add_argument("--steps", type=int, default=None, help="override trajectory length (transient)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from apps.physics.synth import synthesize

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "physics_quality.json"
    rows = json.loads(json_path.read_text())["rows"] if json_path.exists() else []
    for problem in a.problems:
        n, h, steps = DATA[problem]
        n, steps = a.samples or n, a.steps or steps
        data_dir = Path(f"runs/data/physics/bench_{problem}_{n}_{h}_{steps}")
        if not any(data_dir.glob("*.npz")):
            s = synthesize(problem, n, data_dir, seed=0, h=h, workers=2, n_steps=steps)
            print(f"synth {problem}: {s['written']} written, {s['failed']} failed, {s['seconds']:.0f} s", flush=True)
        for arch in a.archs:
            r = run(problem, arch, a.epochs, a.batch_size if problem in ("darcy", "elasticity") else 4, data_dir)
            r["steps"] = steps
            rows = [x for x in rows if not (x["problem"] == problem and x["arch"] == arch)] + [r]
            print(json.dumps(r), flush=True)
            json_path.write_text(json.dumps({"rows": rows, "load_avg": os.getloadavg()}, indent=2))
    lines = ["# Physics quality: relative L2 on held-out meshes (lower is better)", "",
             "Same data, same epochs, matched parameter budgets; CPU training time on a shared 2-core machine "
             f"(load average {os.getloadavg()[0]:.1f} at the end: times inflated). Transient: mean over a full "
             "rollout of every test trajectory, and at its last step.", "",
             "| problem | model | params | train meshes (mean nodes) | epochs | rel L2 | rel L2 last step | "
             "train CPU s | train wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["problem"], r["rel_l2"])):
        last = f"{r['rel_l2_last']:.4f}" if r["rel_l2_last"] == r["rel_l2_last"] else "-"
        lines.append(f"| {r['problem']} | {r['arch']} | {r['params'] / 1e3:.0f}k | {r['n_train']} ({r['mean_nodes']:.0f}) "
                     f"| {r['epochs']} | {r['rel_l2']:.4f} | {last} | {r['train_cpu_s']:.0f} | {r['train_wall_s']:.0f} |")
    best = {}
    for r in rows:
        if r["problem"] not in best or r["rel_l2"] < best[r["problem"]]["rel_l2"]:
            best[r["problem"]] = r
    lines += ["", "Best per problem: " + ", ".join(f"{k}: {v['arch']}" for k, v in sorted(best.items()))]
    (out / "physics_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

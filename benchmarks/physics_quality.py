"""Quality table: PhysGTO vs MeshGraphNets vs Transolver-style on each synthetic problem, same data, same epochs,
same optimiser and schedule, matched parameter budgets (~0.28 M), CPU training time (1 intra-op thread).

Steady problems report the test relative L2 (de-normalised, per channel, then averaged over channels and meshes);
transient problems report the relative L2 averaged over a full autoregressive rollout of every test trajectory
(``steps`` steps from the initial state, 50 by default, boundary values imposed) and at its last step. Data are
synthesised once under ``runs/data/physics/bench_<problem>_<samples>_<h>_<steps>`` (seeded, reproducible).

    .venv/bin/python benchmarks/physics_quality.py                       # all four problems, per-problem budgets
    .venv/bin/python benchmarks/physics_quality.py --problems darcy --epochs 40

Writes benchmarks/results/physics_quality.{md,json,png} (rows of earlier runs of other problems are kept, so
problems can be run one at a time) and each transient run's rollout curve under runs/bench/physics_rollout/.
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

ARCHS = {  # ~0.28 M parameters each on Darcy
    "physgto": dict(d_model=48, n_layers=3, d_hidden=96, n_slots=16, n_heads=4),
    "mgn": dict(d_model=48, n_layers=5, d_hidden=96),
    "transolver": dict(d_model=96, n_layers=4, d_hidden=96, n_slots=16, n_heads=4),
}
# samples, mesh edge length h, time steps, epochs, batch size, learning rate
DATA = {
    "darcy": dict(samples=500, h=0.15, steps=None, epochs=15, batch=8, lr=1e-3),
    "elasticity": dict(samples=300, h=0.1, steps=None, epochs=12, batch=8, lr=1e-3),
    "heat": dict(samples=60, h=0.2, steps=50, epochs=12, batch=2, lr=1e-3),
    "flow": dict(samples=20, h=0.1, steps=50, epochs=12, batch=2, lr=1e-3),
}


def run(problem: str, arch: str, cfg: dict, data_dir: Path, rollout_dir: Path) -> dict:
    import pytorch_lightning as pl

    from apps.physics.data import PhysicsDataModule
    from apps.physics.lit_module import PhysicsLitModule

    pl.seed_everything(0, verbose=False)
    dm = PhysicsDataModule(problem=problem, data_dir=str(data_dir), batch_size=cfg["batch"],
                           val_fraction=0.05, test_fraction=0.15)
    model = PhysicsLitModule(arch=arch, problem=problem, n_in=dm.n_in, n_out=dm.n_out, n_globals=dm.n_globals,
                             transient=dm.transient, lr=cfg["lr"], warmup_steps=20,
                             out_dir=str(rollout_dir / f"{problem}_{arch}"), **ARCHS[arch])
    trainer = pl.Trainer(max_epochs=cfg["epochs"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, gradient_clip_val=1.0)
    load0 = os.getloadavg()[0]
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.fit(model, datamodule=dm)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    return {"problem": problem, "arch": arch, "params": sum(p.numel() for p in model.parameters()),
            "epochs": cfg["epochs"], "batch_size": cfg["batch"], "lr": cfg["lr"], "train_cpu_s": round(cpu, 1),
            "train_wall_s": round(wall, 1), "load_avg_start": round(load0, 2),
            "load_avg_end": round(os.getloadavg()[0], 2), "n_train": len(dm.train_set), "n_test": len(dm.test_set),
            "mean_nodes": round(sum(d.num_nodes for d in dm.train_set.items) / len(dm.train_set), 1),
            "rel_l2": float(res["test/rel_l2"]), "rel_l2_last": float(res.get("test/rel_l2_last", float("nan"))),
            "rollout_curve": model.rollout_curve,
            "per_channel": {k.split("test/rel_l2_")[1]: float(v) for k, v in res.items()
                            if k.startswith("test/rel_l2_") and k not in ("test/rel_l2_last", "test/rel_l2_step1")}}


def write_report(rows: list, out: Path) -> None:
    problems = [p for p in DATA if any(r["problem"] == p for r in rows)]
    best = {p: min((r for r in rows if r["problem"] == p), key=lambda r: r["rel_l2"]) for p in problems}
    lines = ["# Physics quality: relative L2 on held-out meshes (lower is better)", "",
             "Same data, epochs, optimiser (AdamW, warm-up + cosine, grad clip 1) and matched parameter budgets per "
             "problem; CPU training on one intra-op thread of a shared 2-core machine (load average at start/end of "
             "each run in the table: wall times are inflated by the other jobs; CPU seconds are this process's own). "
             "Transient: relative L2 averaged over a full autoregressive rollout of every test trajectory from its "
             "initial state (boundary values imposed), and at the last step.", "",
             "Data (scikit-fem, `apps/physics/solvers.py`): " + "; ".join(
                 f"{p} {DATA[p]['samples']} samples at h = {DATA[p]['h']}" for p in problems) + ". Darcy: one "
             "random star domain with holes shared by all samples (as in the PhysGTO / NORM Darcy benchmark), "
             "log-normal permeability and source from smooth 6-mode random fields, u = 0 on a random 60-90 % outer "
             "arc, random inflow flux on the rest, impermeable holes.", "",
             "| problem | model | params | train / test meshes (mean nodes) | epochs | rel L2 | per channel | "
             "rel L2 last step | train CPU s | train wall s (load) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in problems:
        for r in sorted((r for r in rows if r["problem"] == p), key=lambda r: r["rel_l2"]):
            last = f"{r['rel_l2_last']:.4f}" if r["rel_l2_last"] == r["rel_l2_last"] else "-"
            chans = " ".join(f"{k} {v:.4f}" for k, v in r["per_channel"].items()) if len(r["per_channel"]) > 1 else "-"
            steps = f", {r['steps']} steps" if r.get("steps") else ""
            name = f"**{r['arch']}**" if r is best[p] else r["arch"]
            lines.append(f"| {p}{steps} | {name} | {r['params'] / 1e3:.0f}k | {r['n_train']} / {r['n_test']} "
                         f"({r['mean_nodes']:.0f}) | {r['epochs']} | {r['rel_l2']:.4f} | {chans} | {last} | "
                         f"{r['train_cpu_s']:.0f} | {r['train_wall_s']:.0f} ({r['load_avg_start']:.1f}/"
                         f"{r['load_avg_end']:.1f}) |")
    wins = sum(1 for p in problems if best[p]["arch"] == "physgto")
    lines += ["", "Best per problem: " + ", ".join(f"{p}: {best[p]['arch']}" for p in problems)
              + f" (PhysGTO best on {wins} of {len(problems)})."]
    (out / "physics_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    transient = [p for p in problems if any(r.get("rollout_curve") for r in rows if r["problem"] == p)]
    fig, axes = plt.subplots(1, 1 + len(transient), figsize=(4.5 * (1 + len(transient)), 3.6),
                             constrained_layout=True, squeeze=False)
    ax = axes[0, 0]
    archs = [a for a in ARCHS if any(r["arch"] == a for r in rows)]
    w = 0.8 / max(len(archs), 1)
    for i, a in enumerate(archs):
        vals = [next((r["rel_l2"] for r in rows if r["problem"] == p and r["arch"] == a), float("nan"))
                for p in problems]
        ax.bar([j + i * w for j in range(len(problems))], vals, w, label=a)
    ax.set_xticks([j + w * (len(archs) - 1) / 2 for j in range(len(problems))], problems)
    ax.set_yscale("log")
    ax.set_ylabel("test relative L2")
    ax.axhline(0.015, color="k", ls=":", lw=1, label="1.5 % (Darcy bar)")
    ax.legend(fontsize=8)
    for k, p in enumerate(transient, start=1):
        for r in rows:
            if r["problem"] == p and r.get("rollout_curve"):
                c = r["rollout_curve"]
                axes[0, k].plot(range(1, len(c) + 1), c, label=r["arch"])
        axes[0, k].set_title(f"{p}: rollout error")
        axes[0, k].set_xlabel("step")
        axes[0, k].set_ylabel("relative L2")
        axes[0, k].legend(fontsize=8)
    fig.savefig(out / "physics_quality.png", dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", nargs="+", default=list(DATA), choices=list(DATA))
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--epochs", type=int, default=None, help="override the per-problem epochs")
    p.add_argument("--samples", type=int, default=None, help="override the per-problem sample count")
    p.add_argument("--steps", type=int, default=None, help="override trajectory length (transient)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--report-only", action="store_true", help="re-render the md/png from the json, train nothing")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from apps.physics.synth import synthesize

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "physics_quality.json"
    rows = json.loads(json_path.read_text())["rows"] if json_path.exists() else []
    for problem in [] if a.report_only else a.problems:
        cfg = dict(DATA[problem])
        cfg.update({k: v for k, v in (("epochs", a.epochs), ("samples", a.samples)) if v})
        if a.steps and cfg["steps"]:
            cfg["steps"] = a.steps
        data_dir = Path(f"runs/data/physics/bench_{problem}_{cfg['samples']}_{cfg['h']}_{cfg['steps']}")
        if not any(data_dir.glob("*.npz")):
            s = synthesize(problem, cfg["samples"], data_dir, seed=0, h=cfg["h"], workers=1, n_steps=cfg["steps"])
            print(f"synth {problem}: {s['written']} written, {s['failed']} failed, {s['seconds']:.0f} s", flush=True)
        for arch in a.archs:
            r = run(problem, arch, cfg, data_dir, Path("runs/bench/physics_rollout"))
            r["steps"] = cfg["steps"]
            r["command"] = "python benchmarks/physics_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
            rows = [x for x in rows if not (x["problem"] == problem and x["arch"] == arch)] + [r]
            print(json.dumps({k: v for k, v in r.items() if k != "rollout_curve"}), flush=True)
            json_path.write_text(json.dumps({"rows": rows}, indent=1))
            write_report(rows, out)
    write_report(rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

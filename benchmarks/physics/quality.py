"""Quality table: PhysGTO vs MeshGraphNets vs Transolver-style on each synthetic problem, same data, same epochs,
same optimiser and schedule, matched parameter budgets (~0.28 M), CPU training time (1 intra-op thread).

Steady problems report the test relative L2 (de-normalised, per channel, then averaged over channels and meshes);
transient problems report the relative L2 averaged over a full autoregressive rollout of every test trajectory
(``steps`` steps from the initial state, 50 by default, boundary values imposed) and at its last step. Data are
synthesised once under ``runs/data/physics/bench_<problem>_<samples>_<h>_<steps>`` (seeded, reproducible).

    .venv/bin/python benchmarks/physics/quality.py                       # all four problems, per-problem budgets
    .venv/bin/python benchmarks/physics/quality.py --problems darcy --epochs 40
    .venv/bin/python benchmarks/physics/quality.py --problems heat --archs physgto --start-prob 0 --out /tmp/q  # a variant

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ARCHS = {  # ~0.28 M parameters each on Darcy
    "physgto": dict(d_model=48, n_layers=3, d_hidden=96, n_slots=16, n_heads=4),
    "mgn": dict(d_model=48, n_layers=5, d_hidden=96),
    "transolver": dict(d_model=96, n_layers=4, d_hidden=96, n_slots=16, n_heads=4),
}
# samples, mesh edge length h, time steps, epochs, batch size, learning rate; transient: start_prob, the probability
# that a training window starts at frame 0 (heat relaxes from its initial state: most of the change is in the first
# steps; flow starts from the Stokes flow at full inflow and the wake forms, lengthens and sheds over the whole 1 s, so
# its windows stay uniform, the field standard). Flow h = 0.05 (~715 nodes): at h = 0.07 the wake does not shed.
# Heat: 200 trajectories (160 / 10 / 30); with 60 (9 test trajectories) the ranking of the models changes with the seed.
DATA = {
    "darcy": dict(samples=500, h=0.15, steps=None, epochs=15, batch=8, lr=1e-3),
    "elasticity": dict(samples=300, h=0.1, steps=None, epochs=12, batch=8, lr=1e-3),
    "heat": dict(samples=200, h=0.2, steps=50, epochs=12, batch=2, lr=1e-3, start_prob=0.5),
    "flow": dict(samples=60, h=0.05, steps=50, epochs=12, batch=2, lr=1e-3, start_prob=0.0),
}


@torch.no_grad()
def one_step_errors(model, loader) -> tuple:
    """Teacher-forced one-step relative L2 over every step of every trajectory in ``loader`` (boundary values
    imposed): (model, holding u_t as u_{t+1}), each the mean over steps, graphs and channels."""
    from linmix.apps.physics.graph_ops import num_graphs
    from linmix.apps.physics.losses import node_mask, rel_l2

    model.eval()
    errs, holds = [], []
    for b in loader:
        g = num_graphs(b.batch)
        imposed = node_mask(b.node_type, model.spec.imposed_types).unsqueeze(1)
        dt = b.dt[b.batch]
        for k in range(b.fields.shape[0] - 1):
            pred = model.net(b.pos, model._feats(b, b.fields[k], k * dt), b.node_type, b.edge_index, b.batch)
            pred = torch.where(imposed, b.fields[k + 1], pred)
            errs.append(rel_l2(pred, b.fields[k + 1], b.batch, g).flatten())
            holds.append(rel_l2(b.fields[k], b.fields[k + 1], b.batch, g).flatten())
    return float(torch.cat(errs).mean()), float(torch.cat(holds).mean())


def hold_initial(loader) -> tuple:
    """Holding the initial state over the rollout: (mean relative L2 over steps 1..T-1, step-1 relative L2, the
    per-step curve as a list)."""
    from linmix.apps.physics.graph_ops import num_graphs
    from linmix.apps.physics.losses import rel_l2

    per_step = []
    for b in loader:
        g = num_graphs(b.batch)
        per_step.append(torch.stack([rel_l2(b.fields[0], b.fields[k], b.batch, g).mean(1)
                                     for k in range(1, b.fields.shape[0])]))  # (T-1, G)
    curve = torch.cat(per_step, dim=1).mean(1)
    return float(curve.mean()), float(curve[0]), curve.tolist()


def run(problem: str, arch: str, cfg: dict, data_dir: Path, rollout_dir: Path) -> dict:
    import pytorch_lightning as pl

    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.data import PhysicsDataModule
    from linmix.apps.physics.lit_module import PhysicsLitModule

    pl.seed_everything(cfg.get("seed", 0), verbose=False)
    dm = PhysicsDataModule(problem=problem, data_dir=str(data_dir), batch_size=cfg["batch"],
                           val_fraction=0.05, test_fraction=0.15)
    extra = {k: cfg[k] for k in ("start_prob", "noise_std", "horizon") if k in cfg}
    net = PhysicsConfig(arch=arch, n_in=dm.n_in, n_out=dm.n_out, n_globals=dm.n_globals, transient=dm.transient,
                        **ARCHS[arch])
    model = PhysicsLitModule(net=net, problem=problem, lr=cfg["lr"], warmup_steps=20, **extra,
                             out_dir=str(rollout_dir / f"{problem}_{arch}"))
    trainer = pl.Trainer(max_epochs=cfg["epochs"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, gradient_clip_val=1.0)
    load0 = os.getloadavg()[0]
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.fit(model, datamodule=dm)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    transient = {}
    if dm.transient:
        one, one_hold = one_step_errors(model, dm.test_dataloader())
        roll_hold, step1_hold, hold_curve = hold_initial(dm.test_dataloader())
        transient = {"rel_l2_step1": float(res["test/rel_l2_step1"]), "one_step": one, "one_step_hold": one_hold,
                     "rollout_hold": roll_hold, "step1_hold": step1_hold, "rollout_hold_curve": hold_curve,
                     "start_prob": model.start_prob,
                     "noise_std": model.noise_std, "horizon": model.horizon}
    return {**transient, "seed": cfg.get("seed", 0), "problem": problem, "arch": arch, "params": sum(p.numel() for p in model.parameters()),
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
             "Data (scikit-fem, `apps/physics/pde/solvers.py`): " + "; ".join(
                 f"{p} {DATA[p]['samples']} samples at h = {DATA[p]['h']}" for p in problems) + ". Darcy: one "
             "random star domain with holes shared by all samples (as in the PhysGTO / NORM Darcy benchmark), "
             "log-normal permeability and source from smooth 6-mode random fields, u = 0 on a random 60-90 % outer "
             "arc, random inflow flux on the rest, impermeable holes.", "",
             "Transient columns: `step 1` is the rollout's first step, `one-step` the teacher-forced one-step error "
             "averaged over every step (true u_t in, boundary values imposed); in brackets, the same for holding the "
             "state (u_{t+1} = u_t; for the rollout and step 1, holding the initial state).", "",
             "| problem | model | params | train / test meshes (mean nodes) | epochs | rel L2 | per channel | "
             "rel L2 last step | step 1 (hold) | one-step (hold) | train CPU s | train wall s (load) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in problems:
        for r in sorted((r for r in rows if r["problem"] == p), key=lambda r: r["rel_l2"]):
            last = f"{r['rel_l2_last']:.4f}" if r["rel_l2_last"] == r["rel_l2_last"] else "-"
            chans = " ".join(f"{k} {v:.4f}" for k, v in r["per_channel"].items()) if len(r["per_channel"]) > 1 else "-"
            steps = f", {r['steps']} steps" if r.get("steps") else ""
            name = f"**{r['arch']}**" if r is best[p] else r["arch"]
            s1 = f"{r['rel_l2_step1']:.4f} ({r['step1_hold']:.4f})" if "step1_hold" in r else "-"
            one = f"{r['one_step']:.4f} ({r['one_step_hold']:.4f})" if "one_step" in r else "-"
            hold = f" (hold {r['rollout_hold']:.4f})" if "rollout_hold" in r else ""
            lines.append(f"| {p}{steps} | {name} | {r['params'] / 1e3:.0f}k | {r['n_train']} / {r['n_test']} "
                         f"({r['mean_nodes']:.0f}) | {r['epochs']} | {r['rel_l2']:.4f}{hold} | {chans} | {last} | {s1} | {one} | "
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
        hold = next((r["rollout_hold_curve"] for r in rows if r["problem"] == p and r.get("rollout_hold_curve")), None)
        if hold:
            axes[0, k].plot(range(1, len(hold) + 1), hold, "k--", lw=1, label="hold initial state")
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
    p.add_argument("--start-prob", type=float, default=None, help="override the transient window start_prob")
    p.add_argument("--noise-std", type=float, default=None, help="override the transient input noise")
    p.add_argument("--horizon", type=int, default=None, help="override the transient training window")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--report-only", action="store_true", help="re-render the md/png from the json, train nothing")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from linmix.apps.physics.pde.synth import synthesize

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "physics_quality.json"
    rows = json.loads(json_path.read_text())["rows"] if json_path.exists() else []
    for problem in [] if a.report_only else a.problems:
        cfg = dict(DATA[problem])
        cfg.update({k: v for k, v in (("epochs", a.epochs), ("samples", a.samples)) if v})
        if cfg["steps"]:  # transient-only overrides
            cfg.update({k: v for k, v in (("start_prob", a.start_prob), ("noise_std", a.noise_std),
                                          ("horizon", a.horizon)) if v is not None})
        if a.seed is not None:
            cfg["seed"] = a.seed
        if a.steps and cfg["steps"]:
            cfg["steps"] = a.steps
        data_dir = Path(f"runs/data/physics/bench_{problem}_{cfg['samples']}_{cfg['h']}_{cfg['steps']}")
        if not any(data_dir.glob("*.npz")):
            s = synthesize(problem, cfg["samples"], data_dir, seed=0, h=cfg["h"], workers=1, n_steps=cfg["steps"])
            print(f"synth {problem}: {s['written']} written, {s['failed']} failed, {s['seconds']:.0f} s", flush=True)
        for arch in a.archs:
            r = run(problem, arch, cfg, data_dir, Path("runs/bench/physics_rollout"))
            r["steps"] = cfg["steps"]
            r["command"] = "python benchmarks/physics/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
            rows = [x for x in rows if not (x["problem"] == problem and x["arch"] == arch)] + [r]
            print(json.dumps({k: v for k, v in r.items() if not k.endswith("curve")}), flush=True)
            json_path.write_text(json.dumps({"rows": rows}, indent=1))
            write_report(rows, out)
    write_report(rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

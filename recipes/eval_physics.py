"""Score the physics recipe's PhysGTO (Darcy) on CPU with ``linmix-physics test``, and optionally publish it.

    python recipes/eval_physics.py --from runs/recipes/physics          # benchmarks/results/physics_gpu.{md,json,png}
    python recipes/eval_physics.py --from runs/recipes/physics --publish gto_darcy   # + models/physics/gto_darcy.*

Makes the run's Darcy samples here (the same synthesis, seed and mesh size: the same files, so the data module's
seeded split gives the same 200 test meshes) unless ``--data`` already holds them, runs ``linmix-physics test`` (the
app's LightningCLI, the recipe's config, accelerator cpu, fp32) on ``model.ckpt``, computes the relative L2 of every
test mesh, and writes the report: test relative L2 against the 1.5 % bar, the device's own test score beside the CPU
one, the training conditions from ``run.json``, the learning curve and truth / prediction / error on the median mesh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import ROOT, hardware, publish, read_json  # noqa: E402
from physics import CONFIG, DATA, make_data  # noqa: E402

BAR = 0.015


def cli_test(ckpt: Path, data_dir: Path, work: Path, batch_size: int | None):
    """``linmix-physics test`` in-process (the console script's LightningCLI); returns (metrics, cli)."""
    from linmix.apps.physics.cli import PhysicsCLI
    from linmix.apps.physics.data import PhysicsDataModule
    from linmix.apps.physics.lit_module import PhysicsLitModule

    args = ["test", "-c", str(ROOT / CONFIG), f"--data.data_dir={data_dir}", f"--ckpt_path={ckpt}",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={work}"]
    if batch_size:
        args.append(f"--data.batch_size={batch_size}")
    cli = PhysicsCLI(PhysicsLitModule, PhysicsDataModule, args=args, save_config_kwargs={"overwrite": True},
                     app="physics", seed_everything_default=0)
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}, cli


@torch.no_grad()
def per_mesh(cli) -> list[dict]:
    """Relative L2 and prediction of every test mesh (the test step's computation, one mesh at a time)."""
    from torch_geometric.data import Batch

    from linmix.apps.physics.losses import rel_l2

    model, ds = cli.model.eval(), cli.datamodule.test_set
    rows = []
    for i in range(len(ds)):
        d = ds[i]
        b = Batch.from_data_list([d])
        pred = model.net(b.pos, model._feats(b, None, None), b.node_type, b.edge_index, b.batch)
        rows.append({"name": d.name, "rel_l2": float(rel_l2(pred, b.fields[0], b.batch, 1).mean()),
                     "pred": pred[:, 0].numpy(), "true": d.fields[0, :, 0].numpy(), "pos": d.pos.numpy(),
                     "cells": d.cells.numpy()})
    return rows


def plot(path: Path, curve: list, sample: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2), constrained_layout=True)
    if curve:
        ax[0].plot([c["epoch"] + 1 for c in curve], [c["train_loss"] for c in curve], label="train rel L2 (epoch mean)")
        val = [(c["epoch"] + 1, c["val/rel_l2"]) for c in curve if "val/rel_l2" in c]
        if val:
            ax[0].plot(*zip(*val), "o-", ms=3, label="val rel L2")
        ax[0].axhline(BAR, color="k", ls=":", lw=1, label="1.5 % bar")
        ax[0].set(yscale="log", xlabel="epoch", title="learning curve (training device)")
        ax[0].legend(fontsize=8)
    tri = Triangulation(sample["pos"][:, 0], sample["pos"][:, 1], sample["cells"])
    lo, hi = float(min(sample["true"].min(), sample["pred"].min())), float(max(sample["true"].max(), sample["pred"].max()))
    err = sample["pred"] - sample["true"]
    m = float(np.abs(err).max()) or 1.0
    for a, vals, name, cmap, lim in ((ax[1], sample["true"], f"truth u ({sample['name']})", "viridis", (lo, hi)),
                                     (ax[2], sample["pred"], "PhysGTO u", "viridis", (lo, hi)),
                                     (ax[3], err, f"error (rel L2 {sample['rel_l2']:.4f})", "RdBu_r", (-m, m))):
        im = a.tripcolor(tri, vals, shading="gouraud", cmap=cmap, vmin=lim[0], vmax=lim[1])
        a.set_aspect("equal")
        a.set_title(name)
        a.set_xticks([])
        a.set_yticks([])
        fig.colorbar(im, ax=a, shrink=0.8)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src", type=Path, required=True, help="the recipe's --out folder")
    p.add_argument("--data", type=Path, default=None, help="sample folder here (default: the one the recipe used)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="physics_gpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "recipes" / "physics_eval", help="scratch folder")
    p.add_argument("--publish", metavar="NAME", help="also copy the weights to models/physics/NAME.ckpt with a card")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    src, job = a.src, read_json(a.src / "run.json")
    ckpt = src / "model.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"{ckpt} not found: the run wrote no checkpoint (see {src / 'log.txt'})")
    smoke = bool(job.get("args", {}).get("smoke"))
    data = a.data or ROOT / "runs" / "data" / "physics" / ("darcy_smoke" if smoke else "darcy_gpu")
    make_data(data, job.get("data", {}).get("samples", DATA["n_samples"]), workers=1, log=print)
    curve = [json.loads(x) for x in (src / "curve.jsonl").read_text().splitlines()] if (src / "curve.jsonl").is_file() else []
    dev_test = read_json(src / "device_test.json")
    t0 = time.perf_counter()
    metrics, cli = cli_test(ckpt, data, a.work, 4 if smoke else None)
    rows = per_mesh(cli)
    eval_s = time.perf_counter() - t0
    errs = np.array([r["rel_l2"] for r in rows])
    med = rows[int(np.argsort(errs)[len(errs) // 2])]
    cpu, gpu = metrics.get("test/rel_l2", float("nan")), dev_test.get("test/rel_l2")
    n_dev = int(dev_test.get("n_meshes") or len(rows))
    same = float(errs[:n_dev].mean())  # the meshes the device tested (the test loader is not shuffled)
    cmd = f"python recipes/eval_physics.py --from {src} --name {a.name}" + (f" --data {a.data}" if a.data else "")
    res = {"bar": BAR, "met": bool(cpu <= BAR), "cpu_test": metrics, "device_test": dev_test,
           "cpu_on_device_meshes": {"n": n_dev, "rel_l2": same, "abs_diff": None if gpu is None else abs(same - gpu)},
           "per_mesh": {"mean": float(errs.mean()), "median": float(np.median(errs)),
                        "p90": float(np.quantile(errs, 0.9)), "max": float(errs.max()), "n": len(errs)},
           "n_train": len(cli.datamodule.train_set), "n_val": len(cli.datamodule.val_set), "n_test": len(rows),
           "mean_nodes": float(np.mean([len(r["pos"]) for r in rows])),
           "params": sum(q.numel() for q in cli.model.parameters()), "training": job, "eval_cpu_s": round(eval_s, 1),
           "eval_command": cmd}
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / f"{a.name}.json").write_text(json.dumps(res, indent=1, default=str))
    hw = hardware(job.get("device", {}))
    table = ["| metric | value |", "|---|---|",
             f"| test rel L2, CPU ({len(rows)} meshes, mean {res['mean_nodes']:.0f} nodes) | **{cpu:.4f}** |",
             f"| bar | {BAR} ({'met' if res['met'] else 'not met'}) |",
             f"| test rel L2 on the training device / CPU on the same {n_dev} meshes | "
             f"{'-' if gpu is None else f'{gpu:.4f}'} / {same:.4f} |",
             f"| per-mesh rel L2 median / p90 / max | {res['per_mesh']['median']:.4f} / {res['per_mesh']['p90']:.4f} / "
             f"{res['per_mesh']['max']:.4f} |",
             f"| train / val / test meshes | {res['n_train']} / {res['n_val']} / {res['n_test']} |",
             f"| params | {res['params'] / 1e6:.2f} M |",
             f"| epochs / optimizer steps | {job.get('epochs')} / {job.get('steps')} |",
             f"| training wall s | {job.get('train_s')} (budget {job.get('args', {}).get('budget')} s) |",
             f"| median steps/s, graphs/s | {job.get('median_steps_per_s')}, {job.get('median_graphs_per_s')} |",
             f"| CPU eval wall s | {res['eval_cpu_s']} ({a.threads} thread) |"]
    lines = ["# Physics: PhysGTO on steady Darcy (bar: test relative L2 <= 1.5 %)", "",
             f"Trained by `python recipes/physics.py {' '.join(job.get('argv', []))}` (`linmix-physics fit -c {CONFIG}` "
             f"+ the wall-clock `TimeBudget` schedule) on {hw}; scored on CPU by `linmix-physics test` (fp32): `{cmd}`.",
             "", *table, "",
             "Data: Darcy samples from `linmix.apps.physics.pde.synth` (seed 0, h = 0.1, one shared random domain with holes, "
             "log-normal k and f, random Dirichlet arc and inflow flux), split by the data module (seed 0) 80 / 4 / 16 % "
             f"as in PhysGTO's task1 recipe. Figure: `{a.name}.png` (learning curve, median test mesh)."]
    (a.results / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    plot(a.results / f"{a.name}.png", curve, med, f"PhysGTO Darcy: test rel L2 {cpu:.4f} (bar {BAR})")
    print("\n".join(lines), flush=True)
    if a.publish:
        from linmix.apps.physics.lit_module import PhysicsLitModule

        card = (f"# {a.publish}: PhysGTO on steady Darcy flow\n\nLoad: `linmix-physics rollout --model {a.publish} "
                "--sample <darcy sample .npz>` (steady: one predicted field).\n\n## Metrics\n\n" + "\n".join(table)
                + f"\n\nMeasured by `{cmd}`.\n\n## Data, recipe, hardware\n\n- recipe: `python recipes/physics.py "
                f"{' '.join(job.get('argv', []))}`, config `{CONFIG}`\n- hardware: {hw}\n- data: {lines[-1][6:]}\n\n"
                "## Limits\n\nSteady Darcy on the recipe's domain family and mesh size (h = 0.1) only.\n")
        path = publish("physics", a.publish, ckpt, card, safe_globals=getattr(PhysicsLitModule, "checkpoint_globals", ()))
        print(f"published {path} and its card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

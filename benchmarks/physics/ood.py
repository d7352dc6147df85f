"""Out-of-distribution evaluation: PhysGTO, MeshGraphNets and the Transolver-style model trained on one family of
steady Darcy domains, tested on that family (in distribution) and on domain shapes, hole counts and mesh resolutions
never seen in training.

Training family: random star domains (`pde/geometry.py`), 1-2 holes, mesh edge length h = 0.15, a new domain per
sample; log-normal permeability / source and boundary arcs as in `solve_darcy`. Test sets (each generated from its
own seed, never trained on):

- ``in_dist``: the training family (the data module's held-out split)
- ``square``: square domains with corners (shape shift), 1-2 holes, h = 0.15
- ``holes_0``: star domains without holes; ``holes_4``: star domains with 4 holes tried (hole-count shift)
- ``h_fine``: h = 0.08 (about 3.5x the nodes); ``h_coarse``: h = 0.25 (resolution shift)

Metric: relative L2 of u per mesh (de-normalised), mean over the test meshes, as the app's ``test``.

    .venv/bin/python benchmarks/physics/ood.py --seeds 0 1         # defaults below; benchmarks/results/physics_ood.*
    .venv/bin/python benchmarks/physics/ood.py --train 60 --test 8 --epochs 2 --out /tmp/ood   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ARCHS = {  # the quality benchmark's sizes (~0.28 M parameters each on Darcy)
    "physgto": dict(d_model=48, n_layers=3, d_hidden=96, n_slots=16, n_heads=4),
    "mgn": dict(d_model=48, n_layers=5, d_hidden=96),
    "transolver": dict(d_model=96, n_layers=4, d_hidden=96, n_slots=16, n_heads=4),
}
TRAIN = dict(kind="star", n_holes=(1, 2), h=0.15)
SHIFTS = {  # name: (what shifts, generator parameters)
    "square": ("shape: square with corners", dict(kind="square", n_holes=(1, 2), h=0.15)),
    "holes_0": ("holes: none", dict(kind="star", n_holes=(0, 0), h=0.15)),
    "holes_4": ("holes: 4 tried", dict(kind="star", n_holes=(4, 4), h=0.15)),
    "h_fine": ("resolution: h 0.08", dict(kind="star", n_holes=(1, 2), h=0.08)),
    "h_coarse": ("resolution: h 0.25", dict(kind="star", n_holes=(1, 2), h=0.25)),
}


def count_holes(cells: np.ndarray) -> int:
    """Inner boundary loops of a triangle mesh: connected components of its boundary edges, minus the outline."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from linmix.apps.physics.pde.geometry import boundary_edges

    e = boundary_edges(cells)
    nodes, inv = np.unique(e, return_inverse=True)
    inv = inv.reshape(-1, 2)
    adj = coo_matrix((np.ones(len(inv)), (inv[:, 0], inv[:, 1])), shape=(len(nodes), len(nodes)))
    return int(connected_components(adj, directed=False)[0]) - 1


def generate(folder: Path, n: int, seed: int, kind: str, n_holes: tuple, h: float) -> dict:
    """``n`` Darcy samples, each on its own random domain, written to ``folder`` (skipped when already there)."""
    from linmix.apps.physics.pde.sample_io import load_sample, save_sample
    from linmix.apps.physics.pde.solvers import solve_darcy

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"darcy_{i:05d}.npz"
        if not path.exists():
            s = solve_darcy(np.random.default_rng([seed, i]), h=h, domain_seed=None, kind=kind, n_holes=n_holes)
            save_sample(path, s, "darcy")
    paths = sorted(folder.glob("*.npz"))[:n]
    samples = [load_sample(p) for p in paths]
    holes = [count_holes(s["cells"]) for s in samples]
    return {"n": len(paths), "mean_nodes": float(np.mean([len(s["pos"]) for s in samples])),
            "holes": f"{min(holes)}-{max(holes)}", "paths": paths}


@torch.no_grad()
def evaluate(model, paths: list, batch_size: int = 8) -> float:
    """Mean relative L2 over the meshes in ``paths`` (de-normalised u), as the app's steady test step."""
    from torch_geometric.loader import DataLoader

    from linmix.apps.physics.dataset import MeshFieldDataset

    model.eval()
    errs = [model._steady(b).mean(1) for b in DataLoader(MeshFieldDataset(paths), batch_size=batch_size)]
    return float(torch.cat(errs).mean())


def train(arch: str, data_dir: Path, epochs: int, batch: int, lr: float, seed: int):
    import pytorch_lightning as pl

    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.data import PhysicsDataModule
    from linmix.apps.physics.lit_module import PhysicsLitModule

    pl.seed_everything(seed, verbose=False)  # the training seed; the split is the same for every seed
    dm = PhysicsDataModule(problem="darcy", data_dir=str(data_dir), batch_size=batch, val_fraction=0.05,
                           test_fraction=0.15, seed=0)
    net = PhysicsConfig(arch=arch, n_in=dm.n_in, n_out=dm.n_out, n_globals=dm.n_globals, transient=False,
                        **ARCHS[arch])
    model = PhysicsLitModule(net=net, problem="darcy", lr=lr, warmup_steps=20)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         gradient_clip_val=1.0)
    c0, w0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()[0]
    trainer.fit(model, datamodule=dm)
    return model, dm, {"train_cpu_s": round(time.process_time() - c0, 1),
                       "train_wall_s": round(time.perf_counter() - w0, 1),
                       "load": f"{load0:.1f}/{os.getloadavg()[0]:.1f}",
                       "params": sum(p.numel() for p in model.parameters())}


def write_report(res: dict, out: Path) -> None:
    sets = res["sets"]
    cols = ["in_dist", *SHIFTS]
    lines = ["# Physics out of distribution: Darcy, trained on one domain family", "",
             "Relative L2 of u on held-out meshes (mean over meshes; lower is better). Training family: random star "
             "domains, 1-2 holes, h = 0.15, a new domain per sample. Each shift changes one thing and is generated "
             "from its own seed; no shifted mesh is trained on. Same data, epochs, optimiser (AdamW, warm-up + "
             "cosine, grad clip 1) for the three models, sizes of `benchmarks/physics/quality.py`. CPU, one torch "
             "thread on a shared 2-core machine: the errors do not depend on the load, the times do (load average at "
             "start/end); compare times only within one run.", "",
             "Commands: " + "; ".join(f"`{c}`" for c in res["commands"]) + f" ({res['date']})", "",
             "| test set | what changes | meshes | mean nodes | holes |", "|---|---|---|---|---|"]
    for c in cols:
        what = "nothing (training family, held-out meshes)" if c == "in_dist" else SHIFTS[c][0]
        s = sets[c]
        lines.append(f"| {c} | {what} | {s['n']} | {s['mean_nodes']:.0f} | {s['holes']} |")
    lines += ["", "| model | seed | params | " + " | ".join(cols) + " | worst shift / in-dist | train CPU s (wall, "
              "load) |", "|---|---|---|" + "---|" * (len(cols) + 2)]
    for arch in ARCHS:
        runs = sorted((r for r in res["runs"] if r["arch"] == arch), key=lambda r: r["seed"])
        if len(runs) > 1:
            runs = runs + [{"arch": arch, "seed": "mean", "params": runs[0]["params"],
                            "rel_l2": {c: float(np.mean([r["rel_l2"][c] for r in runs])) for c in cols}}]
        for r in runs:
            worst = max(r["rel_l2"][c] for c in SHIFTS) / r["rel_l2"]["in_dist"]
            cost = f"{r['train_cpu_s']:.0f} ({r['train_wall_s']:.0f}, {r['load']})" if "load" in r else "-"
            name = f"**{arch}**" if r["seed"] == "mean" else arch
            lines.append(f"| {name} | {r['seed']} | {r['params'] / 1e3:.0f}k | "
                         + " | ".join(f"{r['rel_l2'][c]:.4f}" for c in cols) + f" | {worst:.2f}x | {cost} |")
    n_tr, n_val, n_te = res["split"]
    lines += ["", f"Training family: {sets['train']['n']} meshes ({sets['train']['mean_nodes']:.0f} nodes mean), "
              f"split {n_tr} train / {n_val} validation (unused) / {n_te} in-distribution test (the same split for "
              f"every seed); {res['epochs']} epochs, batch {res['batch']}, lr {res['lr']}. Seeds are training seeds "
              "(initialisation, batch order) on the same data."]
    (out / "physics_ood.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    archs = [a for a in ARCHS if any(r["arch"] == a for r in res["runs"])]
    w = 0.8 / len(archs)
    for i, arch in enumerate(archs):
        vals = np.array([[r["rel_l2"][c] for c in cols] for r in res["runs"] if r["arch"] == arch])
        ax.bar([j + i * w for j in range(len(cols))], vals.mean(0), w, label=f"{arch} ({len(vals)} seeds)",
               yerr=(vals.mean(0) - vals.min(0), vals.max(0) - vals.mean(0)) if len(vals) > 1 else None, capsize=2)
    ax.set_xticks([j + w * (len(archs) - 1) / 2 for j in range(len(cols))], cols)
    ax.set_ylabel("relative L2 (Darcy u)")
    ax.set_title("trained on star domains, 1-2 holes, h 0.15")
    ax.legend(fontsize=8)
    fig.savefig(out / "physics_ood.png", dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=400, help="training-family samples (train / val / test split)")
    p.add_argument("--test", type=int, default=40, help="samples per shifted test set")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (runs of other seeds already in "
                   "the output json with the same sizes are kept)")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--data", default="runs/data/physics/ood", help="where the generated samples are kept")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sets = {"train": generate(data / f"train_{a.train}", a.train, 1000, **TRAIN)}
    for k, (name, (_, params)) in enumerate(SHIFTS.items()):
        sets[name] = generate(data / f"{name}_{a.test}", a.test, 2000 + k, **params)
    print(f"generated in {time.perf_counter() - t0:.0f} s", flush=True)
    command = "python benchmarks/physics/ood.py " + " ".join(sys.argv[1:] if argv is None else argv)
    config = {"train": a.train, "test": a.test, "epochs": a.epochs, "batch": a.batch, "lr": a.lr}
    json_path = out / "physics_ood.json"
    old = json.loads(json_path.read_text()) if json_path.exists() else {}
    keep = old.get("config") == config
    res = {"config": config, **{k: config[k] for k in ("epochs", "batch", "lr")},
           "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "commands": (old["commands"] if keep else []) + [command],
           "runs": [r for r in old.get("runs", []) if keep and not (r["seed"] in a.seeds and r["arch"] in a.archs)]}
    for seed in a.seeds:
        for arch in a.archs:
            model, dm, info = train(arch, sets["train"]["paths"][0].parent, a.epochs, a.batch, a.lr, seed)
            sets["in_dist"] = {"n": len(dm.test_set), "paths": dm.test_set.paths,
                               "mean_nodes": float(np.mean([d.num_nodes for d in dm.test_set.items])),
                               "holes": sets["train"]["holes"]}
            info.update(arch=arch, seed=seed, rel_l2={c: evaluate(model, sets[c]["paths"]) for c in ["in_dist", *SHIFTS]})
            res["runs"].append(info)
            res["split"] = [len(dm.train_set), len(dm.val_set), len(dm.test_set)]
            print(arch, json.dumps(info), flush=True)
            res["sets"] = {k: {kk: vv for kk, vv in v.items() if kk != "paths"} for k, v in sets.items()}
            json_path.write_text(json.dumps(res, indent=1))
    write_report(res, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

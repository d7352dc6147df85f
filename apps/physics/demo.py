"""``linmix-physics demo``: end to end at small size in a few minutes on 2 CPU cores.

synth a small Darcy set (scikit-fem) -> fit the ``tiny`` PhysGTO config -> test (relative L2) -> prediction / error
plots and an XDMF file for one test mesh -> TorchScript export with a round trip on two meshes of different sizes.
Then a small transient heat run (``--no-heat`` skips it) (rollout error over time). Writes ``summary.json`` (a flat list of
``{stage, metric, value, note}`` rows) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "physics"


def _run_problem(problem: str, out: Path, n_samples: int, h: float, epochs: int, rows: list, n_steps=None) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.data import PhysicsDataModule
    from linmix.apps.physics.export import export_operator
    from linmix.apps.physics.lit_module import PhysicsLitModule
    from linmix.apps.physics.pde.sample_io import load_sample
    from linmix.apps.physics.pde.synth import synthesize
    from linmix.apps.physics.rollout_tool import load_checkpoint, predict_sample, write_outputs

    t0 = time.perf_counter()
    data_dir = out / f"data_{problem}"
    s = synthesize(problem, n_samples, data_dir, seed=0, h=h, workers=min(2, os.cpu_count() or 1), n_steps=n_steps,
                   random_domains=True)
    rows += [{"stage": f"synth_{problem}", "metric": "samples_written", "value": s["written"],
              "note": f"{s['failed']} failed, mean {s['mean_nodes']:.0f} nodes, {s['seconds']:.1f} s"}]
    cfg = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    dm = PhysicsDataModule(problem=problem, data_dir=str(data_dir), batch_size=cfg["data"].get("batch_size", 4))
    train = {k: v for k, v in cfg["model"].items() if k != "net"}
    net = PhysicsConfig(**{**cfg["model"].get("net", {}), "n_in": dm.n_in, "n_out": dm.n_out,
                           "n_globals": dm.n_globals, "transient": dm.transient})
    model = PhysicsLitModule(net=net, problem=problem, **train)
    pl.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=out / f"ckpt_{problem}", save_last=True, monitor="val/rel_l2")
    trainer = pl.Trainer(max_epochs=epochs, logger=CSVLogger(out / "logs", name=problem), callbacks=[ckpt],
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=5)
    t1 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t1
    res = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)[0]
    rows += [{"stage": f"fit_{problem}", "metric": "train_seconds", "value": round(fit_s, 1),
              "note": f"tiny PhysGTO, {epochs} epochs, {len(dm.train_set)} train meshes"},
             {"stage": f"test_{problem}", "metric": "rel_l2", "value": float(res["test/rel_l2"]),
              "note": f"{len(dm.test_set)} test meshes" + (", full rollout" if dm.transient else "")}]
    if "test/rel_l2_last" in res:
        rows.append({"stage": f"test_{problem}", "metric": "rel_l2_last_step", "value": float(res["test/rel_l2_last"]),
                     "note": "error at the final rollout step"})
    lit = load_checkpoint(ckpt.best_model_path)
    sample = load_sample(dm.test_set.paths[0])
    pred, metrics = predict_sample(lit, sample)
    files = write_outputs(sample, pred, metrics, out / f"rollout_{problem}")
    rows.append({"stage": f"rollout_{problem}", "metric": "rel_l2", "value": metrics["rel_l2"],
                 "note": f"{dm.test_set.paths[0].name}: {len(files)} files (XDMF, VTU, PNG)"})
    paths = sorted(dm.test_set.paths + dm.val_set.paths, key=lambda p: p.name)
    samples = [load_sample(p) for p in paths]
    by_size = {len(x["pos"]): x for x in samples}
    pair = [by_size[k] for k in sorted(by_size)[:1] + sorted(by_size)[-1:]]
    (res,) = export_operator(lit, out / f"physgto_{problem}.pt", pair)
    rows.append({"stage": f"export_{problem}", "metric": "roundtrip_max_abs_diff", "value": res["max_abs_diff"],
                 "note": f"{Path(res['path']).name}, meshes of {[len(x['pos']) for x in pair]} nodes"})
    rows.append({"stage": f"total_{problem}", "metric": "seconds", "value": round(time.perf_counter() - t0, 1),
                 "note": ""})


def main(argv: list[str] | None = None) -> int:
    """Run the physics app end to end at small size (synth -> fit -> test -> plot -> export)."""
    p = argparse.ArgumentParser(prog="linmix-physics demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo/physics")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--no-heat", action="store_true", help="skip the small transient heat stage")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest for these small meshes on a shared 2-core machine)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list = []
    _run_problem("darcy", out, a.samples, 0.2, a.epochs, rows)
    if not a.no_heat:
        _run_problem("heat", out, max(8, a.samples // 3), 0.25, max(3, a.epochs // 3), rows, n_steps=20)
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(rows, fh, indent=2)
    os.replace(tmp, out / "summary.json")
    for r in rows:
        print(f"{r['stage']:<16} {r['metric']:<24} {r['value']:>10.4g}  {r['note']}")
    return 0

"""``linmix-physics rollout``: run a checkpoint on one sample, write an XDMF time series (meshio, XML data, opens in
ParaView), a VTU of the last frame, PNGs of truth / prediction / error on the mesh and ``rollout_metrics.json``.

Transient problems roll out autoregressively (``--steps``, default: all frames of the sample); steps beyond the
data run on the model alone (said in the log, no error reported for them). Steady problems predict the one field.
A checkpoint trained on another problem is refused with a message naming both problems' channels. A prediction that
turns NaN/inf is an error too (exit status 2): only ``rollout_metrics.json`` is written, with the first bad step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from linmix.apps.physics.pde.sample_io import PROBLEMS, SampleError, load_sample
from linmix.shared.argtypes import at_least
from linmix.shared.errors import UserError

log = logging.getLogger("linmix.physics.rollout")


def load_checkpoint(path: str | Path):
    from linmix.apps.physics.lit_module import PhysicsLitModule
    from linmix.shared.checkpoint import load_lit

    lit = load_lit(PhysicsLitModule, path, app="physics")
    lit.eval()
    return lit


def check_problem(lit, sample: dict, where: str = "sample") -> None:
    """:class:`SampleError` (a ``UserError``) naming both channel lists when ``sample`` is not of the checkpoint's
    problem or its channel names differ from the checkpoint's."""
    spec = lit.spec
    known = PROBLEMS.get(str(sample["problem"]))
    chans = tuple(sample["channels"]) if "channels" in sample else (known.channels if known else ())
    if sample["problem"] != spec.name or chans != tuple(spec.channels):
        raise SampleError(f"{where}: checkpoint was trained on {spec.name!r} (channels {tuple(spec.channels)}) but "
                          f"the sample is {sample['problem']!r} (channels {chans}); use a {spec.name} sample or a "
                          f"checkpoint trained on {sample['problem']!r}")


def first_non_finite(pred: np.ndarray) -> int | None:
    """Index of the first frame of ``pred`` (T', N, C) holding NaN/inf, or None."""
    bad = ~np.isfinite(pred).reshape(pred.shape[0], -1).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def predict_sample(lit, sample: dict, steps: int | None = None, where: str = "sample") -> tuple[np.ndarray, dict]:
    """Prediction (T', N, C) for ``sample`` and metrics {rel_l2_per_step, rel_l2, steps_beyond_data, channels,
    non_finite_from_step (first frame with NaN/inf in the prediction, or None)}."""
    import torch

    from linmix.apps.physics.dataset import to_graph
    from linmix.apps.physics.graph_ops import num_graphs
    from linmix.apps.physics.losses import rel_l2
    from linmix.apps.physics.rollout import node_features, rollout

    spec = lit.spec
    check_problem(lit, sample, where)
    if steps is not None and steps < 1:
        raise UserError(f"rollout steps must be >= 1, got {steps}")
    if steps is not None and not spec.transient:
        log.info("%s is steady: steps=%d is not used", spec.name, steps)
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([to_graph(sample)])
    g = num_graphs(batch.batch)
    with torch.no_grad():
        if spec.transient:
            T = batch.fields.shape[0]
            steps = T - 1 if steps is None else steps
            pred = rollout(lit.net, batch, steps, spec.imposed_types)
            n_known = min(steps, T - 1)
            errs = [rel_l2(pred[k], batch.fields[k], batch.batch, g).mean().item() for k in range(1, n_known + 1)]
            beyond = max(0, steps - (T - 1))
        else:
            feats = node_features(None, batch.inputs, batch.globals[batch.batch], None)
            pred = lit.net(batch.pos, feats, batch.node_type, batch.edge_index, batch.batch)[None]
            errs = [rel_l2(pred[0], batch.fields[0], batch.batch, g).mean().item()]
            beyond = 0
    pred = pred.numpy()
    metrics = {"rel_l2_per_step": errs, "rel_l2": float(np.mean(errs)) if errs else float("nan"),
               "steps_beyond_data": beyond, "channels": list(spec.channels),
               "non_finite_from_step": first_non_finite(pred)}
    return pred, metrics


def _json_safe(metrics: dict) -> dict:
    """``metrics`` with NaN/inf floats as None (strict JSON)."""
    def fix(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        return [fix(x) for x in v] if isinstance(v, list) else v

    return {k: fix(v) for k, v in metrics.items()}


def _write_metrics(metrics: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(_json_safe(metrics), fh, indent=2)
    os.replace(tmp, out / "rollout_metrics.json")
    return out / "rollout_metrics.json"


def write_outputs(sample: dict, pred: np.ndarray, metrics: dict, out: Path, max_pngs: int = 3) -> list[Path]:
    """XDMF series + last-frame VTU + PNGs + metrics json under ``out``; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import meshio
    from matplotlib.tri import Triangulation

    out.mkdir(parents=True, exist_ok=True)
    pos, cells, truth = sample["pos"], sample["cells"].astype(np.int64), sample["fields"]
    chans = metrics["channels"]
    dt = float(sample.get("dt", 0.0)) or 1.0
    written = []
    xdmf = out / "rollout.xdmf"
    with meshio.xdmf.TimeSeriesWriter(str(xdmf), data_format="XML") as w:
        w.write_points_cells(pos, [("triangle", cells)])
        for k in range(pred.shape[0]):
            data = {f"pred_{c}": pred[k, :, i] for i, c in enumerate(chans)}
            if k < truth.shape[0]:
                data.update({f"true_{c}": truth[k, :, i] for i, c in enumerate(chans)})
                data.update({f"err_{c}": pred[k, :, i] - truth[k, :, i] for i, c in enumerate(chans)})
            w.write_data(k * dt, point_data=data)
    written.append(xdmf)
    last = pred.shape[0] - 1
    pts3 = np.c_[pos, np.zeros(len(pos))]
    vtu_data = {f"pred_{c}": pred[last, :, i] for i, c in enumerate(chans)}
    if last < truth.shape[0]:
        vtu_data.update({f"true_{c}": truth[last, :, i] for i, c in enumerate(chans)})
    meshio.write(out / "last_frame.vtu", meshio.Mesh(pts3, [("triangle", cells)], point_data=vtu_data))
    written.append(out / "last_frame.vtu")
    tri = Triangulation(pos[:, 0], pos[:, 1], cells)
    frames = sorted({min(k, truth.shape[0] - 1, last) for k in np.linspace(1 if last > 0 else 0, last, max_pngs).astype(int)})
    for k in frames:
        for i, c in enumerate(chans):
            fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
            t, p = truth[k, :, i], pred[k, :, i]
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            emax = max(float(np.abs(p - t).max()), 1e-12)
            for ax, val, title, kw in ((axes[0], t, "truth", {"vmin": lo, "vmax": hi}),
                                       (axes[1], p, "prediction", {"vmin": lo, "vmax": hi}),
                                       (axes[2], p - t, "error", {"cmap": "coolwarm", "vmin": -emax, "vmax": emax})):
                im = ax.tripcolor(tri, val, shading="gouraud", **kw)
                ax.set_title(f"{title} {c}, step {k}")
                ax.set_aspect("equal")
                ax.axis("off")
                fig.colorbar(im, ax=ax, shrink=0.8)
            path = out / f"{c}_step{k:03d}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    if len(metrics["rel_l2_per_step"]) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
        ax.plot(np.arange(1, len(metrics["rel_l2_per_step"]) + 1), metrics["rel_l2_per_step"])
        ax.set_xlabel("rollout step")
        ax.set_ylabel("relative L2")
        fig.savefig(out / "rel_l2_vs_step.png", dpi=90)
        plt.close(fig)
        written.append(out / "rel_l2_vs_step.png")
    written.append(_write_metrics(metrics, out))
    return written


def main(argv: list[str] | None = None) -> int:
    """Roll a checkpoint out on one sample; write XDMF/VTU, PNGs and metrics."""
    from linmix.shared.models import add_checkpoint_args, checkpoint_path

    p = argparse.ArgumentParser(prog="linmix-physics rollout", description=__doc__.split("\n\n")[0])
    add_checkpoint_args(p, ckpt_help="Lightning checkpoint (.ckpt)")
    p.add_argument("--sample", required=True, help="sample .npz (from linmix-physics synth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=at_least(1), default=None,
                   help="rollout steps >= 1 (transient; default: all data frames)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is an existing file; give a folder")
    ckpt = checkpoint_path(a, app="physics")
    lit = load_checkpoint(ckpt)
    sample = load_sample(a.sample)
    pred, metrics = predict_sample(lit, sample, a.steps, where=a.sample)
    bad = metrics["non_finite_from_step"]
    if bad is not None or not np.isfinite(metrics["rel_l2"]):
        _write_metrics(metrics, out)
        if bad is not None:
            n_bad = int((~np.isfinite(pred[bad])).any(axis=-1).sum())
            what = (f"the prediction of {ckpt} on {a.sample} is NaN/inf from step {bad} on ({n_bad} of "
                    f"{pred.shape[1]} nodes)")
        else:
            what = f"the error of {ckpt} on {a.sample} overflows to NaN/inf (prediction values too large)"
        raise UserError(f"{what}: the checkpoint diverged or the sample lies far outside its training data; "
                        f"wrote only {out / 'rollout_metrics.json'}")
    files = write_outputs(sample, pred, metrics, out)
    print(f"rel-L2 {metrics['rel_l2']:.4g} over {len(metrics['rel_l2_per_step'])} step(s)"
          + (f"; {metrics['steps_beyond_data']} step(s) beyond the data" if metrics["steps_beyond_data"] else "")
          + f"; wrote {len(files)} files to {a.out}")
    return 0

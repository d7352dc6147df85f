"""Test-time evaluation: gAUC, calibration (reliability) table and plots of predicted CTR.

AUC and logloss themselves come from torchmetrics in the LightningModule; this file holds what torchmetrics
does not: group AUC (FuxiCTR ``gAUC``: per-group AUC weighted by group size, single-class groups skipped)
and the calibration plot + predicted-CTR histogram (matplotlib, Agg).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def group_auc(p: np.ndarray, y: np.ndarray, group: np.ndarray) -> float:
    """Size-weighted mean of per-group AUC over groups holding both classes (NaN if none)."""
    from sklearn.metrics import roc_auc_score

    order = np.argsort(group, kind="stable")
    g, p, y = group[order], p[order], y[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    total, weight = 0.0, 0
    for s, e in zip(starts, ends):
        ys = y[s:e]
        if ys.min() == ys.max():
            continue
        total += roc_auc_score(ys, p[s:e]) * (e - s)
        weight += e - s
    return total / weight if weight else float("nan")


def calibration_table(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict:
    """Quantile bins of predicted probability: mean prediction, observed CTR and count per bin; plus ECE."""
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    ece = 0.0
    for k in range(max(len(edges) - 1, 1)):
        m = b == k
        if not m.any():
            continue
        mp, my = float(p[m].mean()), float(y[m].mean())
        rows.append({"pred": mp, "obs": my, "n": int(m.sum())})
        ece += m.mean() * abs(mp - my)
    return {"bins": rows, "ece": float(ece), "mean_pred": float(p.mean()), "ctr": float(y.mean())}


def plot_calibration(p: np.ndarray, y: np.ndarray, out: str | Path, title: str = "") -> Path:
    """Reliability diagram (left) and predicted-CTR histogram by label (right) -> PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab = calibration_table(p, y)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["pred"] for r in tab["bins"]]
    ys = [r["obs"] for r in tab["bins"]]
    hi = max(max(xs + ys, default=1.0), 1e-3) * 1.05
    ax[0].plot([0, hi], [0, hi], "k--", lw=1, label="perfect")
    ax[0].plot(xs, ys, "o-", label=f"model (ECE {tab['ece']:.4f})")
    ax[0].set(xlabel="mean predicted CTR (quantile bin)", ylabel="observed CTR", title=f"calibration {title}")
    ax[0].legend()
    bins = np.linspace(0, 1, 51)
    ax[1].hist(p[y == 0], bins=bins, alpha=0.6, label="y=0", density=True)
    ax[1].hist(p[y == 1], bins=bins, alpha=0.6, label="y=1", density=True)
    ax[1].axvline(float(y.mean()), color="k", ls="--", lw=1, label=f"CTR {y.mean():.3f}")
    ax[1].set(xlabel="predicted CTR", ylabel="density", title="predicted CTR histogram")
    ax[1].legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out

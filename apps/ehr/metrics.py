"""Per-task binary metrics (torchmetrics, on probabilities) and ROC / PR plots (matplotlib, Agg).

AUROC and AUPRC use the predicted probabilities (Odyssey computes AUPRC on hard predictions and AUROC on argmax
predictions, which discards the ranking); F1 thresholds the probability at 0.5.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision_recall_curve,
    binary_roc,
)


def task_metrics(prob: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPRC, F1@0.5, prevalence and count for one task. prob, label: (N,). AUROC/AUPRC are NaN when one
    class is absent."""
    y = label.long()
    both = bool(y.min() != y.max()) if len(y) else False
    nan = float("nan")
    return {
        "auroc": float(binary_auroc(prob, y)) if both else nan,
        "auprc": float(binary_average_precision(prob, y)) if both else nan,
        "f1": float(binary_f1_score(prob, y, threshold=0.5)) if len(y) else nan,
        "prevalence": float(y.float().mean()) if len(y) else nan,
        "n": float(len(y)),
    }


def all_task_metrics(prob: torch.Tensor, label: torch.Tensor, task: torch.Tensor,
                     names: list[str]) -> dict[str, dict[str, float]]:
    """{task name: task_metrics} over the datapoints of each task (task: (N,) index into ``names``)."""
    return {name: task_metrics(prob[task == i], label[task == i]) for i, name in enumerate(names)}


def plot_curves(prob: torch.Tensor, label: torch.Tensor, task: torch.Tensor, names: list[str], out_dir: str | Path,
                title: str = "EHRMamba") -> list[Path]:
    """Write ``roc.png`` and ``pr.png`` (one curve per task with both classes) under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_roc, ax_roc = plt.subplots(figsize=(5, 5))
    fig_pr, ax_pr = plt.subplots(figsize=(5, 5))
    for i, name in enumerate(names):
        p, y = prob[task == i], label[task == i].long()
        if len(y) == 0 or y.min() == y.max():
            continue
        fpr, tpr, _ = binary_roc(p, y)
        prec, rec, _ = binary_precision_recall_curve(p, y)
        ax_roc.plot(fpr, tpr, label=f"{name} ({float(binary_auroc(p, y)):.3f})")
        ax_pr.plot(rec, prec, label=f"{name} ({float(binary_average_precision(p, y)):.3f})")
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC (AUROC)")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"{title}: PR (AUPRC)")
    paths = []
    for fig, ax, name in ((fig_roc, ax_roc, "roc.png"), (fig_pr, ax_pr, "pr.png")):
        ax.legend(fontsize=7, loc="lower right" if name == "roc.png" else "upper right")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths

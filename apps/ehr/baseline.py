"""Bag-of-codes + age baseline on the same datapoints and splits as EHRMamba (the paper's XGBoost row).

Features per datapoint (the patient's sequence cut at the task's prediction_time, not truncated): counts of every
vocabulary token (events, binned labs, interval tokens), number of visits and age in years at the cut. One scikit-learn
``HistGradientBoostingClassifier`` per task, fitted on the train split, early-stopped on an internal 10 % hold-out, scored
on held_out with the same metrics as the model (``metrics.task_metrics``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.data import EHRDataModule, FinetuneDataset
from linmix.apps.ehr.metrics import task_metrics

STRUCTURE = (S.PAD, S.CLS, S.VS, S.VE, S.REG, S.MASK)


def features(ds: FinetuneDataset, vocab_size: int) -> np.ndarray:
    """(N, vocab_size + 2) float32: token counts, visits, age at the cut."""
    x = np.zeros((len(ds), vocab_size + 2), dtype=np.float32)
    for i in range(len(ds)):
        seq = ds.cut(i)
        np.add.at(x[i], seq["tokens"], 1.0)
        x[i, vocab_size] = float((seq["token_type"] == S.TYPE_VS).sum())
        x[i, vocab_size + 1] = float(seq["age"][-1])
    x[:, list(STRUCTURE)] = 0.0
    return x


def run_baseline(dm: EHRDataModule, max_iter: int = 200, seed: int = 0) -> dict[str, dict]:
    """Fit per task on train, evaluate on held_out: {task: metrics + "probability", "label" arrays}."""
    dm.setup("fit")
    train, test = dm.datasets["train"], dm.datasets["held_out"]
    if not isinstance(train, FinetuneDataset):
        raise ValueError("the baseline needs a finetune-objective data module")
    xtr, xte = features(train, dm.vocab_size), features(test, dm.vocab_size)
    used = np.flatnonzero(xtr.any(axis=0))  # drop never-seen tokens (most of a padded vocabulary)
    xtr, xte = xtr[:, used], xte[:, used]
    out = {}
    for t, name in enumerate(dm.task_names):
        tr, te = train.task == t, test.task == t
        ytr, yte = train.label[tr], test.label[te]
        if len(np.unique(ytr)) < 2 or te.sum() == 0:
            continue
        clf = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.05, early_stopping=True,
                                             validation_fraction=0.1, random_state=seed)
        clf.fit(xtr[tr], ytr)
        prob = clf.predict_proba(xte[te])[:, 1]
        metrics = task_metrics(torch.as_tensor(prob, dtype=torch.float32), torch.as_tensor(yte))
        out[name] = {**metrics, "probability": prob, "label": yte}
    return out

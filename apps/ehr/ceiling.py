"""Diagnostic: how much of the oracle AUROC is recoverable from the model's (binned) input?

    .venv/bin/python -m linmix.apps.ehr.ceiling runs/bench/ehr_quality_20000     # a finished benchmarks/ehr/quality.py run

Per task, a logistic regression on hand-made features of each datapoint's cut input (recency-weighted mean lab bin per
lab code, weights 0.5^(visits after), as the generator's risk; token counts; age, visits and days at the cut) is fitted
on train and scored on held_out, next to the oracle (the generator's true probability) on the same datapoints. It also
checks that condition inputs are whole sequences (their cut at the last discharge drops nothing). Prints one dict.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl


def features(ds, lab_ids: dict[int, str], labs: list[str], vocab_size: int) -> np.ndarray:
    """(N, 2 * n_labs + vocab_size + 3): recency-weighted mean bin (-2..2) and weight per lab, counts, age/visits/days."""
    rows = []
    for i in range(len(ds)):
        s = ds.cut(i)
        tok, vo = s["tokens"], s["visit_order"]
        nv = max(int(vo.max()), 1)
        f = np.zeros(len(labs) * 2 + vocab_size + 3)
        for t, v in zip(tok, vo, strict=True):
            name = lab_ids.get(int(t))
            if name:
                base, q = name.rsplit("//Q", 1)
                j, w = labs.index(base), 0.5 ** (nv - v)
                f[2 * j] += w * (int(q) - 3)
                f[2 * j + 1] += w
        for j in range(len(labs)):
            if f[2 * j + 1]:
                f[2 * j] /= f[2 * j + 1]
        np.add.at(f[len(labs) * 2:len(labs) * 2 + vocab_size], tok, 1.0)
        f[-3], f[-2], f[-1] = s["age"][-1], nv, s["time"][-1]
        rows.append(f)
    return np.array(rows)


def main(argv=None) -> int:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from linmix.apps.ehr.data import EHRDataModule

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder with fhir/ (oracle.parquet), meds/ and cache/")
    p.add_argument("--vocab-size", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = args.run
    dm = EHRDataModule(objective="finetune", meds_dir=f"{root}/meds", cache_dir=f"{root}/cache",
                       vocab_size=args.vocab_size, max_len=512)
    dm.setup("fit")
    lab_ids = {i: t for i, t in enumerate(dm.vocab.tokens) if t.startswith("LOINC//") and "//Q" in t}
    labs = sorted({t.rsplit("//Q", 1)[0] for t in lab_ids.values()})
    tr, te = dm.datasets["train"], dm.datasets["held_out"]
    xtr, xte = features(tr, lab_ids, labs, args.vocab_size), features(te, lab_ids, labs, args.vocab_size)
    sc = StandardScaler().fit(xtr)
    xtr, xte = sc.transform(xtr), sc.transform(xte)
    oracle = pl.read_parquet(f"{root}/fhir/oracle.parquet").join(
        pl.read_parquet(f"{root}/meds/metadata/subject_map.parquet"), on="patient_id")
    res = {}
    for t, name in enumerate(dm.task_names):
        a, b = tr.task == t, te.task == t
        prob = LogisticRegression(max_iter=2000, C=1.0).fit(xtr[a], tr.label[a]).predict_proba(xte[b])[:, 1]
        sub = pl.DataFrame({"subject_id": te.subject[b]}).join(oracle.filter(pl.col("task") == name),
                                                              on="subject_id", how="left")
        res[name] = (round(roc_auc_score(te.label[b], prob), 3),
                     round(roc_auc_score(te.label[b], sub["probability"].to_numpy()), 3))
    print("task: (LR on binned recency features, oracle) held-out AUROC", res)
    full = dict(enumerate(len(x) for x in te.seqs["tokens"].to_list()))
    cond = [i for i in range(len(te)) if dm.task_names[te.task[i]].startswith("cond_")]
    print("condition inputs == whole sequence:", all(len(te.cut(i)["tokens"]) == full[int(te.rows[i])] for i in cond))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

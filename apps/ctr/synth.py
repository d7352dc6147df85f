"""Synthetic click log with a known click probability (``linmix-ctr synth``).

Rows have ``n_cat`` categorical fields ``c0..`` with long-tailed (Zipf) category frequencies and ``n_num``
count-like numeric fields ``n0..`` (log-normal integers, a few missing). The click logit is

    f(x) = bias + sum_f w_f[x_f] + sum_{S in planted sets} a_|S| * z_S(x),   z_S = sum_r prod_{f in S} V_f[x_f, r]

over planted 2nd-, 3rd- and 4th-order field sets (each ``z_S`` scaled to unit variance), with numeric fields
entering through a smooth function of ln(1 + x). Unobserved noise eps ~ N(0, noise^2) is added, so the
true probability is p(x) = E_eps sigmoid(f(x) + eps) (Gauss-Hermite, 24 nodes); labels ~ Bernoulli(p(x)).
``p_true`` is saved with every row so that tests report the Bayes-optimal AUC and logloss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class SynthConfig:
    """Generator settings (defaults = the configs' and demo's default data)."""

    n_rows: int = 300_000
    n_cat: int = 10
    n_num: int = 3
    max_cardinality: int = 30
    min_cardinality: int = 4
    zipf: float = 1.05
    rank: int = 2
    n_pairs: int = 6
    n_triples: int = 3
    n_quads: int = 1
    first_order: float = 0.35
    a2: float = 0.45
    a3: float = 0.4
    a4: float = 0.4
    noise: float = 0.5
    bias: float = -1.3
    missing_rate: float = 0.02
    seed: int = 0


def _gauss_hermite_sigmoid(f: np.ndarray, sd: float, n: int = 24) -> np.ndarray:
    """E[sigmoid(f + eps)], eps ~ N(0, sd^2), by Gauss-Hermite quadrature."""
    if sd <= 0:
        return 1.0 / (1.0 + np.exp(-f))
    x, w = np.polynomial.hermite.hermgauss(n)
    z = f[:, None] + math.sqrt(2.0) * sd * x[None, :]
    return (1.0 / (1.0 + np.exp(-z))) @ (w / math.sqrt(math.pi))


def generate(cfg: SynthConfig) -> pl.DataFrame:
    """Return a DataFrame with ``label``, ``p_true``, ``c*`` (String) and ``n*`` (Float64, null = missing)."""
    rng = np.random.default_rng(cfg.seed)
    n, F = cfg.n_rows, cfg.n_cat + cfg.n_num
    cards = np.geomspace(cfg.max_cardinality, cfg.min_cardinality, cfg.n_cat).round().astype(int)
    codes, latents, first = [], [], np.zeros(n)
    for k in cards:  # categorical: Zipf frequencies over a shuffled id space
        p = 1.0 / np.arange(1, k + 1) ** cfg.zipf
        c = rng.choice(k, size=n, p=p / p.sum())
        codes.append(c)
        latents.append(rng.normal(0, 1, (k, cfg.rank))[c])
        first += cfg.first_order * rng.normal(0, 1, k)[c]
    nums = []
    for _ in range(cfg.n_num):  # count-like: floor(exp(N(2, 1.2))) - 1
        x = np.maximum(np.floor(np.exp(rng.normal(2.0, 1.2, n))) - 1, 0)
        g = np.tanh(np.log1p(x) - 2.0)
        latents.append(g[:, None] * rng.normal(0, 1, (1, cfg.rank)))
        first += cfg.first_order * g * rng.normal()
        nums.append(x)
    logit = cfg.bias + first
    fields = np.arange(F)
    for order, count, amp in ((2, cfg.n_pairs, cfg.a2), (3, cfg.n_triples, cfg.a3), (4, cfg.n_quads, cfg.a4)):
        for _ in range(count):
            S = rng.choice(fields, size=order, replace=False)
            z = np.prod(np.stack([latents[f] for f in S]), axis=0).sum(1)
            logit += amp * (z - z.mean()) / (z.std() + 1e-12)
    p = _gauss_hermite_sigmoid(logit, cfg.noise)
    y = (rng.random(n) < p).astype(np.int8)
    cols: dict[str, object] = {"label": y, "p_true": p}
    ids = [rng.choice(2**31, size=k, replace=False) for k in cards]
    for j, c in enumerate(codes):
        toks = pl.Series([f"{i:08x}" for i in ids[j]], dtype=pl.String).gather(c)
        miss = pl.Series(rng.random(n) < cfg.missing_rate)
        cols[f"c{j}"] = pl.select(pl.when(miss).then(None).otherwise(toks)).to_series()
    for j, x in enumerate(nums):
        miss = rng.random(n) < cfg.missing_rate
        cols[f"n{j}"] = pl.Series(np.where(miss, np.nan, x)).fill_nan(None)
    return pl.DataFrame(cols)


def synth_schema_dict(cfg: SynthConfig, fmt: str = "parquet") -> dict:
    fields = [{"name": f"c{j}"} for j in range(cfg.n_cat)]
    fields += [{"name": f"n{j}", "type": "numeric", "numeric": "bucket"} for j in range(cfg.n_num)]
    return {"format": fmt, "label": "label", "group": "c0", "min_count": 2, "passthrough": ["p_true"],
            "fields": fields}


def bayes_metrics(p: np.ndarray, y: np.ndarray) -> dict:
    """AUC and logloss of the true probability (the Bayes-optimal predictor)."""
    from sklearn.metrics import log_loss, roc_auc_score

    return {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}


def write_synth(out: str | Path, cfg: SynthConfig, fmt: str = "parquet") -> dict:
    """Generate, split 80/10/10 and write ``{train,val,test}.{parquet|csv}``, ``schema.yaml``, ``meta.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = generate(cfg)
    n_tr = int(SPLIT_FRACTIONS[0] * cfg.n_rows)
    n_va = int(SPLIT_FRACTIONS[1] * cfg.n_rows)
    parts = {"train": df.slice(0, n_tr), "val": df.slice(n_tr, n_va), "test": df.slice(n_tr + n_va)}
    meta = {"config": asdict(cfg), "format": fmt, "splits": {}}
    for name, part in parts.items():
        path = out / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        if fmt == "parquet":
            part.write_parquet(tmp)
        else:
            part.write_csv(tmp)
        os.replace(tmp, path)
        meta["splits"][name] = {"rows": part.height, "ctr": float(part["label"].mean()),
                                "bayes": bayes_metrics(part["p_true"].to_numpy(), part["label"].to_numpy())}
    (out / "schema.yaml").write_text(yaml.safe_dump(synth_schema_dict(cfg, fmt), sort_keys=False))
    tmp = out / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / "meta.json")
    return meta


def synth_main(argv: list[str] | None = None) -> int:
    """Write a synthetic click log (planted 2nd-4th order interactions) with its true click probability."""
    ap = argparse.ArgumentParser(prog="linmix-ctr synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/ctr/data/synth", help="output folder")
    ap.add_argument("--rows", type=int, default=SynthConfig.n_rows, help="total rows (split 80/10/10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--noise", type=float, default=SynthConfig.noise, help="std of the unobserved logit noise")
    a = ap.parse_args(argv)
    meta = write_synth(a.out, SynthConfig(n_rows=a.rows, seed=a.seed, noise=a.noise), a.format)
    for s, m in meta["splits"].items():
        print(f"{s:5s} rows {m['rows']:>9,}  ctr {m['ctr']:.4f}  Bayes AUC {m['bayes']['auc']:.4f}  "
              f"logloss {m['bayes']['logloss']:.4f}")
    print(f"wrote {a.out}")
    return 0

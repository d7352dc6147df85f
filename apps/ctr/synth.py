"""Synthetic click log with a known click probability (``linmix-ctr synth``).

Rows have ``n_cat`` categorical fields ``c0..`` with long-tailed (Zipf) category frequencies and ``n_num``
count-like numeric fields ``n0..`` (log-normal integers, a few missing). The click logit is

    f(x) = bias + sum_f w_f[x_f] + sum_{S in planted sets} a_|S| * z_S(x),   z_S = sum_r prod_{f in S} V_f[x_f, r]

over planted 2nd-, 3rd- and 4th-order field sets (each ``z_S`` standardised), with numeric fields entering
through g(x) = tanh(ln(1 + x) - 2). Unobserved noise eps ~ N(0, noise^2) is added, so the true probability is
p(x) = E_eps sigmoid(f(x) + eps) (Gauss-Hermite, 24 nodes); labels ~ Bernoulli(p(x)).

Missing values (``missing_rate`` per field) are part of the observed row: with ``missing_in_process`` (default)
a missing field enters f through its own state (own first-order weight and latent row, as "missing" is an
informative value in real logs), so ``p_true`` = P(click | the row as the model sees it) and the saved
Bayes AUC/logloss is attainable. With ``missing_in_process=False`` f uses the hidden value
of a field that is then blanked, so ``p_true`` knows values no model sees; ``observed_probability`` gives the
attainable ceiling there (hidden values integrated out by Monte Carlo).
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

from linmix.shared.argtypes import at_least, non_negative_float

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class SynthConfig:
    """Generator settings (defaults = the configs' and demo's default data)."""

    n_rows: int = 2_000_000
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
    missing_in_process: bool = True
    seed: int = 0


def _gauss_hermite_sigmoid(f: np.ndarray, sd: float, n: int = 24) -> np.ndarray:
    """E[sigmoid(f + eps)], eps ~ N(0, sd^2), by Gauss-Hermite quadrature."""
    if sd <= 0:
        return 1.0 / (1.0 + np.exp(-f))
    x, w = np.polynomial.hermite.hermgauss(n)
    z = f[:, None] + math.sqrt(2.0) * sd * x[None, :]
    return (1.0 / (1.0 + np.exp(-z))) @ (w / math.sqrt(math.pi))


def _numeric_g(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.log1p(x) - 2.0)


class ClickProcess:
    """The planted click model: per-field tables and interaction sets, drawn once from the seed.

    Categorical field j has codes 0..k_j-1 plus code k_j = missing; numeric field j has g(x) in (-1, 1) and
    its own missing state (weight and latent row). ``logit(codes, nums, miss)``: codes (N, n_cat) int,
    nums (N, n_num) float counts, miss (N, F) bool (F = n_cat + n_num) -> f (N,) without the noise.
    """

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        F = cfg.n_cat + cfg.n_num
        self.cards = np.geomspace(cfg.max_cardinality, cfg.min_cardinality, cfg.n_cat).round().astype(int)
        self.freq = []
        for k in self.cards:
            p = 1.0 / np.arange(1, k + 1) ** cfg.zipf
            self.freq.append(p / p.sum())
        self.lat = [rng.normal(0, 1, (k + 1, cfg.rank)) for k in self.cards]  # last row: missing state
        self.w = [cfg.first_order * rng.normal(0, 1, k + 1) for k in self.cards]
        self.num_dir = rng.normal(0, 1, (cfg.n_num, cfg.rank))
        self.num_w = cfg.first_order * rng.normal(0, 1, cfg.n_num)
        self.num_miss_lat = rng.normal(0, 1, (cfg.n_num, cfg.rank)) * 0.6
        self.num_miss_w = cfg.first_order * rng.normal(0, 1, cfg.n_num) * 0.6
        self.sets = []
        for order, count, amp in ((2, cfg.n_pairs, cfg.a2), (3, cfg.n_triples, cfg.a3), (4, cfg.n_quads, cfg.a4)):
            for _ in range(count):
                self.sets.append((rng.choice(F, size=order, replace=False), amp))
        self.norm = [(0.0, 1.0)] * len(self.sets)

    def sample_fields(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        codes = np.stack([rng.choice(k, size=n, p=p) for k, p in zip(self.cards, self.freq)], 1)
        nums = np.stack([np.maximum(np.floor(np.exp(rng.normal(2.0, 1.2, n))) - 1, 0)
                         for _ in range(self.cfg.n_num)], 1) if self.cfg.n_num else np.zeros((n, 0))
        return codes, nums

    def _terms(self, codes: np.ndarray, nums: np.ndarray, miss: np.ndarray):
        nc = self.cfg.n_cat
        first = np.zeros(len(codes))
        lats = []
        for j, k in enumerate(self.cards):
            c = np.where(miss[:, j], k, codes[:, j])
            first += self.w[j][c]
            lats.append(self.lat[j][c])
        for j in range(self.cfg.n_num):
            m = miss[:, nc + j]
            g = _numeric_g(nums[:, j])
            first += np.where(m, self.num_miss_w[j], self.num_w[j] * g)
            lats.append(np.where(m[:, None], self.num_miss_lat[j][None], g[:, None] * self.num_dir[j][None]))
        zs = [np.prod(np.stack([lats[f] for f in S]), axis=0).sum(1) for S, _ in self.sets]
        return first, zs

    def fit_norm(self, codes, nums, miss) -> None:
        """Standardise each interaction term on the generated sample (fixed afterwards)."""
        _, zs = self._terms(codes, nums, miss)
        self.norm = [(float(z.mean()), float(z.std() + 1e-12)) for z in zs]

    def logit(self, codes, nums, miss) -> np.ndarray:
        first, zs = self._terms(codes, nums, miss)
        f = self.cfg.bias + first
        for z, (_fields, amp), (mu, sd) in zip(zs, self.sets, self.norm):
            f = f + amp * (z - mu) / sd
        return f


def _simulate(cfg: SynthConfig):
    rng = np.random.default_rng(cfg.seed)
    proc = ClickProcess(cfg, rng)
    codes, nums = proc.sample_fields(cfg.n_rows, rng)
    miss = rng.random((cfg.n_rows, cfg.n_cat + cfg.n_num)) < cfg.missing_rate
    process_miss = miss if cfg.missing_in_process else np.zeros_like(miss)
    proc.fit_norm(codes, nums, process_miss)
    p = _gauss_hermite_sigmoid(proc.logit(codes, nums, process_miss), cfg.noise)
    y = (rng.random(cfg.n_rows) < p).astype(np.int8)
    ids = [rng.choice(2**31, size=k, replace=False) for k in proc.cards]
    return proc, codes, nums, miss, p, y, ids


def generate(cfg: SynthConfig) -> pl.DataFrame:
    """Return a DataFrame with ``label``, ``p_true``, ``c*`` (String) and ``n*`` (Float64, null = missing)."""
    _, codes, nums, miss, p, y, ids = _simulate(cfg)
    cols: dict[str, object] = {"label": y, "p_true": p}
    for j in range(cfg.n_cat):
        toks = pl.Series([f"{i:08x}" for i in ids[j]], dtype=pl.String).gather(codes[:, j])
        cols[f"c{j}"] = pl.select(pl.when(pl.Series(miss[:, j])).then(None).otherwise(toks)).to_series()
    for j in range(cfg.n_num):
        cols[f"n{j}"] = pl.Series(np.where(miss[:, cfg.n_cat + j], np.nan, nums[:, j])).fill_nan(None)
    return pl.DataFrame(cols)


def observed_probability(cfg: SynthConfig, rows: slice, draws: int = 64, seed: int = 1) -> np.ndarray:
    """P(click | observed row) for ``rows`` of the log: hidden values of missing fields integrated out by Monte
    Carlo (``draws`` samples from the fields' marginals). Equals ``p_true`` when ``missing_in_process``."""
    proc, codes, nums, miss, p, _, _ = _simulate(cfg)
    if cfg.missing_in_process:
        return p[rows]
    codes, nums, miss = codes[rows], nums[rows], miss[rows]
    rng = np.random.default_rng(seed)
    acc = np.zeros(len(codes))
    none = np.zeros_like(miss)
    for _ in range(draws):
        c2, n2 = proc.sample_fields(len(codes), rng)
        c = np.where(miss[:, :cfg.n_cat], c2, codes)
        x = np.where(miss[:, cfg.n_cat:], n2, nums)
        acc += _gauss_hermite_sigmoid(proc.logit(c, x, none), cfg.noise)
    return acc / draws


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
    ap.add_argument("--rows", type=at_least(10), default=SynthConfig.n_rows, help="total rows (split 80/10/10)")
    ap.add_argument("--seed", type=at_least(0), default=0)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--noise", type=non_negative_float, default=SynthConfig.noise, help="std of the unobserved logit noise")
    a = ap.parse_args(argv)
    meta = write_synth(a.out, SynthConfig(n_rows=a.rows, seed=a.seed, noise=a.noise), a.format)
    for s, m in meta["splits"].items():
        print(f"{s:5s} rows {m['rows']:>9,}  ctr {m['ctr']:.4f}  Bayes AUC {m['bayes']['auc']:.4f}  "
              f"logloss {m['bayes']['logloss']:.4f}")
    print(f"wrote {a.out}")
    return 0

"""Incremental EHR scoring vs full recompute: time to score a patient after appending one visit of new tokens.

    .venv/bin/python benchmarks/ehr/incremental.py [--lengths 256 1024 2048] [--chunk 16] [--repeats 3]

Incremental = ``IncrementalScorer.append`` (Mamba ``forward_state`` over the new tokens from the saved state, then the
trailing task token); recompute = the full prompted forward over history + new tokens. Both give the same probability
(checked here and in tests/ehr/test_ehr_predict.py). Writes ``runs/bench/ehr_incremental.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.model import EHRMamba, EHRMambaConfig
from linmix.apps.ehr.predict import IncrementalScorer


def fake_history(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"tokens": rng.integers(40, 500, n), "token_type": rng.integers(5, 8, n),
              "age": (60 + np.arange(n) / 500).astype(np.float32), "time": np.cumsum(rng.random(n)).astype(np.float32),
              "visit_order": np.minimum(np.arange(n) // 20 + 1, 500), "visit_segment": rng.integers(1, 3, n),
              "abs_time": np.arange(n)}
    arrays["tokens"][0], arrays["token_type"][0] = S.CLS, S.TYPE_CLS
    return arrays


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--chunk", type=int, default=16, help="new tokens appended (about one visit)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = EHRMambaConfig(vocab_size=512, d_model=64, n_layers=4, d_state=32, dropout=0.0)
    scorer = IncrementalScorer(EHRMamba(cfg), [25])
    rows = []
    for n in args.lengths:
        arrays = fake_history(n + args.chunk)
        hist = {k: v[:n] for k, v in arrays.items()}
        new = {k: v[n:] for k, v in arrays.items()}
        inc_t, full_t = [], []
        for _ in range(args.repeats):
            scorer.start("p", 0, hist)
            t = time.perf_counter()
            inc = scorer.append("p", new)
            inc_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            full = scorer.recompute(0, arrays)
            full_t.append(time.perf_counter() - t)
        assert abs(inc - full) < 1e-4, (n, inc, full)
        rows.append((n, min(inc_t) * 1e3, min(full_t) * 1e3, abs(inc - full)))
        print(f"history {n:5d} + {args.chunk}: incremental {rows[-1][1]:8.1f} ms, recompute {rows[-1][2]:8.1f} ms, "
              f"speedup {rows[-1][2] / rows[-1][1]:5.1f}x, |diff| {rows[-1][3]:.1e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# EHR incremental scoring (+{args.chunk} tokens), EHRMamba d_model 64 x 4 layers, CPU, best of "
          f"{args.repeats} (minimum, the least disturbed by other load)", "", "| history tokens | incremental ms | full recompute ms | speedup | abs diff |",
          "|---|---|---|---|---|"]
    md += [f"| {n} | {a:.1f} | {b:.1f} | {b / a:.1f}x | {d:.1e} |" for n, a, b, d in rows]
    (out / "ehr_incremental.md").write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r[0] for r in rows], [r[2] for r in rows], "o-", label="full recompute")
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label=f"incremental (+{args.chunk} tokens)")
    ax.set(xlabel="history tokens", ylabel="ms per score", title="EHRMamba incremental scoring", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ehr_incremental.png", dpi=110)
    print(f"wrote {out / 'ehr_incremental.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

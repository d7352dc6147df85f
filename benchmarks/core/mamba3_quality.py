"""Mamba3 vs Mamba2 vs the hybrid at (nearly) equal parameters on the LM smoke app's character corpus.

The tiny mixer LM (``linmix.apps.lm``: embedding -> MixerStack -> tied head) on its built-in additions corpus
(``"417+38=455;"``), trained with AdamW for a fixed number of steps per (mixer, seed); reported: validation bits per
character (cross-entropy / ln 2 on held-out windows from another corpus seed), parameters and wall time. ``d_model``
is chosen per mixer so the parameter counts match within a few percent (the mixers differ in projection sizes).

    OMP_NUM_THREADS=1 python benchmarks/core/mamba3_quality.py --steps 200 --seeds 0 1 --kinds mamba2 mamba3 hybrid \
        --out benchmarks/results

Writes ``mamba3_quality.{json,md}``. A small CPU experiment: it shows how the mixers compare at this size and budget,
nothing beyond.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

# kind -> (mixer, d_model, mixer_cfg): widths picked so the parameter counts agree within a few percent
CONFIGS = {
    "mamba2": ("mamba2", 64, {}),
    "mamba3": ("mamba3", 64, {}),
    "mamba3_mimo": ("mamba3", 60, {"is_mimo": True, "mimo_rank": 4, "chunk_size": 16}),
    "hybrid": ("hybrid", 68, {"layout": "interleave", "attn_every": 2}),
}


def run(kind: str, seed: int, steps: int, seq_len: int, batch: int, n_layers: int, d_state: int, lr: float) -> dict:
    import torch
    import torch.nn.functional as F

    from linmix.apps.lm.data import LMDataModule
    from linmix.apps.lm.model import MixerLM, MixerLMConfig

    mixer, d_model, cfg = CONFIGS[kind]
    dm = LMDataModule(seq_len=seq_len, batch_size=batch, n_train=steps * batch // 4, n_val=128, seed=0)
    dm.setup()
    torch.manual_seed(seed)
    net = MixerLM(MixerLMConfig(vocab_size=dm.vocab_size, d_model=d_model, n_layers=n_layers, mixer=mixer,
                                n_heads=4, d_state=d_state, mixer_cfg=dict(cfg, backend="torch")))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    xs, ys = dm.train_set.tensors
    t0 = time.perf_counter()
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, xs.size(0), (batch,), generator=gen)
        logits = net(xs[idx])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ys[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    net.eval()
    vx, vy = dm.val_set.tensors
    with torch.no_grad():
        logits = net(vx)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), vy.reshape(-1)).item()
    return {"kind": kind, "seed": seed, "params": sum(p.numel() for p in net.parameters()), "d_model": d_model,
            "val_bpc": nll / math.log(2), "train_s": train_s, "final_train_loss": loss.item()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    rows = []
    for seed in a.seeds:
        for kind in a.kinds:
            r = run(kind, seed, a.steps, a.seq_len, a.batch, a.n_layers, a.d_state, a.lr)
            print(json.dumps(r), flush=True)
            rows.append(r)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "mamba3_quality.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, out / "mamba3_quality.json")
    cmd = ("python benchmarks/core/mamba3_quality.py --steps {steps} --seeds {seeds} --kinds {kinds} --n-layers "
           "{n_layers} --d-state {d_state} --batch {batch} --seq-len {seq_len} --lr {lr}").format(
        steps=a.steps, seeds=" ".join(map(str, a.seeds)), kinds=" ".join(a.kinds), n_layers=a.n_layers,
        d_state=a.d_state, batch=a.batch, seq_len=a.seq_len, lr=a.lr)
    md = [f"Measured with `{cmd}` (CPU, {a.threads} thread(s), shared machine: times are indicative only).", "",
          "| mixer | params | val bits/char (seeds) | mean | train s (mean) |", "|---|---|---|---|---|"]
    for kind in a.kinds:
        rs = [r for r in rows if r["kind"] == kind]
        bpc = [r["val_bpc"] for r in rs]
        md.append(f"| {kind} ({CONFIGS[kind][0]}, {CONFIGS[kind][2] or 'defaults'}) | {rs[0]['params']:,} | "
                  + ", ".join(f"{v:.3f}" for v in bpc) + f" | {sum(bpc) / len(bpc):.3f} | "
                  f"{sum(r['train_s'] for r in rs) / len(rs):.0f} |")
    tmp = out / "mamba3_quality.md.tmp"
    tmp.write_text("\n".join(md) + "\n")
    os.replace(tmp, out / "mamba3_quality.md")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Mamba3 vs Mamba2 vs the hybrid at (nearly) equal parameters on the LM smoke app's character corpus.

The tiny mixer LM (``linmix.apps.lm``: embedding -> MixerStack -> tied head) on its built-in additions corpus
(``"417+38=455;"``), trained with AdamW for a fixed number of steps per (mixer, seed); reported: validation bits per
character (cross-entropy / ln 2 on held-out windows from another corpus seed), parameters and wall time. ``d_model``
is chosen per mixer so the parameter counts match within a few percent (the mixers differ in projection sizes).

    OMP_NUM_THREADS=1 python benchmarks/core/mamba3_quality.py --steps 200 --seeds 0 1 --kinds mamba2 mamba3 hybrid \
        --out benchmarks/results

Writes ``mamba3_quality.{json,md}``. A small CPU experiment: it shows how the mixers compare at this size and budget,
nothing beyond.

Equal CPU time instead of equal steps (``--cpu-seconds S``): each run trains until the CPU time of the process spent in
its training steps (``time.process_time()`` deltas around each step, evaluation excluded) reaches ``S``; the one-cycle
learning rate follows the fraction of ``S`` spent instead of the step count. CPU time, not wall time, so that other
jobs on a shared machine do not shorten a run. Writes ``mamba3_quality_cpu.{json,md}`` with the steps each run did and
its CPU seconds per step:

    OMP_NUM_THREADS=1 python benchmarks/core/mamba3_quality.py --cpu-seconds 150 --seeds 0 1 \
        --kinds mamba2 mamba3 hybrid --threads 1 --out benchmarks/results
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


def one_cycle(frac: float, max_lr: float, pct_start: float = 0.1, div: float = 25.0, final_div: float = 1e4) -> float:
    """``torch.optim.lr_scheduler.OneCycleLR``'s cosine schedule (two phases, its defaults) at training fraction
    ``frac`` in [0, 1]: the budget mode's schedule over the CPU budget spent."""
    start, end = max_lr / div, max_lr / div / final_div
    if frac < pct_start:
        a, b, pct = start, max_lr, frac / pct_start
    else:
        a, b, pct = max_lr, end, min(1.0, (frac - pct_start) / (1.0 - pct_start))
    return b + (a - b) / 2.0 * (1.0 + math.cos(math.pi * pct))


def run(kind: str, seed: int, steps: int, seq_len: int, batch: int, n_layers: int, d_state: int, lr: float,
        cpu_seconds: float = 0.0, n_train: int = 4096) -> dict:
    """One training run: ``steps`` steps, or (``cpu_seconds`` > 0) as many as fit in that much training CPU time."""
    import torch
    import torch.nn.functional as F

    from linmix.apps.lm.data import LMDataModule
    from linmix.apps.lm.model import MixerLM, MixerLMConfig

    mixer, d_model, cfg = CONFIGS[kind]
    budget = cpu_seconds > 0
    dm = LMDataModule(seq_len=seq_len, batch_size=batch, n_train=n_train if budget else steps * batch // 4, n_val=128,
                      seed=0)
    dm.setup()
    torch.manual_seed(seed)
    net = MixerLM(MixerLMConfig(vocab_size=dm.vocab_size, d_model=d_model, n_layers=n_layers, mixer=mixer,
                                n_heads=4, d_state=d_state, mixer_cfg=dict(cfg, backend="torch")))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = None if budget else torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    xs, ys = dm.train_set.tensors
    t0 = time.perf_counter()
    cpu, done = 0.0, 0
    net.train()
    while (cpu < cpu_seconds) if budget else (done < steps):
        c0 = time.process_time()
        if budget:
            for group in opt.param_groups:
                group["lr"] = one_cycle(cpu / cpu_seconds, lr)
        idx = torch.randint(0, xs.size(0), (batch,), generator=gen)
        logits = net(xs[idx])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ys[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
        cpu += time.process_time() - c0
        done += 1
    train_s = time.perf_counter() - t0
    net.eval()
    vx, vy = dm.val_set.tensors
    with torch.no_grad():
        logits = net(vx)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), vy.reshape(-1)).item()
    return {"kind": kind, "seed": seed, "params": sum(p.numel() for p in net.parameters()), "d_model": d_model,
            "val_bpc": nll / math.log(2), "train_s": train_s, "final_train_loss": loss.item(), "steps": done,
            "train_cpu_s": cpu, "cpu_s_per_step": cpu / done}


def _table(a: argparse.Namespace, rows: list) -> list:
    """The markdown lines of the results table."""
    budget = a.cpu_seconds > 0
    extra = " | steps (seeds) | CPU s / step (mean) |" if budget else " |"
    md = [f"| mixer | params | val bits/char (seeds) | mean | train s (mean){extra}",
          "|---|---|---|---|---|" + ("---|---|" if budget else "")]
    for kind in a.kinds:
        rs = [r for r in rows if r["kind"] == kind]
        bpc = [r["val_bpc"] for r in rs]
        line = (f"| {kind} ({CONFIGS[kind][0]}, {CONFIGS[kind][2] or 'defaults'}) | {rs[0]['params']:,} | "
                + ", ".join(f"{v:.3f}" for v in bpc) + f" | {sum(bpc) / len(bpc):.3f} | "
                f"{sum(r['train_s'] for r in rs) / len(rs):.0f} |")
        if budget:
            line += (" " + ", ".join(str(r["steps"]) for r in rs)
                     + f" | {sum(r['cpu_s_per_step'] for r in rs) / len(rs):.3f} |")
        md.append(line)
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--cpu-seconds", type=float, default=0.0,
                    help="train each run for this much CPU time in its training steps instead of --steps steps")
    ap.add_argument("--n-train", type=int, default=4096, help="training windows in --cpu-seconds mode")
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
    budget = a.cpu_seconds > 0
    rows = []
    for seed in a.seeds:
        for kind in a.kinds:
            r = run(kind, seed, a.steps, a.seq_len, a.batch, a.n_layers, a.d_state, a.lr, a.cpu_seconds, a.n_train)
            print(json.dumps(r), flush=True)
            rows.append(r)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "mamba3_quality_cpu" if budget else "mamba3_quality"
    tmp = out / f"{name}.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, out / f"{name}.json")
    length = f"--cpu-seconds {a.cpu_seconds:g} --n-train {a.n_train}" if budget else f"--steps {a.steps}"
    cmd = ("python benchmarks/core/mamba3_quality.py {length} --seeds {seeds} --kinds {kinds} --n-layers "
           "{n_layers} --d-state {d_state} --batch {batch} --seq-len {seq_len} --lr {lr} --threads {threads}").format(
        length=length, seeds=" ".join(map(str, a.seeds)), kinds=" ".join(a.kinds), n_layers=a.n_layers,
        d_state=a.d_state, batch=a.batch, seq_len=a.seq_len, lr=a.lr, threads=a.threads)
    md = [f"Measured with `{cmd}` (CPU, {a.threads} thread(s), shared machine: wall times are indicative only).", ""]
    md += _table(a, rows)
    tmp = out / f"{name}.md.tmp"
    tmp.write_text("\n".join(md) + "\n")
    os.replace(tmp, out / f"{name}.md")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

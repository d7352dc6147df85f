"""Speech speed/memory bar: real-time factor and peak memory of the paper Conv-TasNet vs torchaudio's, side by side.

Time: both models in one process with interleaved calls (background load hits both alike), min over repeats.
Memory: each model's forward alone in its own process (peak RSS).  Models: ours (``linmix.apps.speech.model.ConvTasNet``,
paper defaults N=512 L=16 B=128 H=512 Sc=128 P=3 X=8 R=3, sigmoid mask) and ``torchaudio.models.ConvTasNet`` of the
same size (4,984,881 parameters each), same random 8 kHz input, batch 1, ``inference_mode``, 1 thread and all
threads.  Then ``separate`` on a long 8 kHz file (default 10 minutes) with the paper model,
measuring wall time and peak RSS.  Target bars: our time <= 1.0x torchaudio's; the long file under 2 GB peak.
Writes ``runs/bench/speech_rtf.{md,json,png}``.

    python benchmarks/speech/rtf.py --seconds 4 --repeats 3 --long-minutes 10
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _build(kind: str):
    """(net, prep) for "ours" (paper defaults) or "torchaudio" (same sizes); prep maps (B, T) to the model's input."""
    if kind == "ours":
        sys.path.insert(0, str(ROOT))
        from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig

        return ConvTasNet(ConvTasNetConfig()).eval(), lambda x: x
    import torchaudio

    return torchaudio.models.ConvTasNet(num_sources=2).eval(), lambda x: x.unsqueeze(1)  # wants (B, 1, T)


def child_time(threads: int, seconds: float, repeats: int) -> list:
    """Both models in one process, calls interleaved (ours, theirs, ours, ...) so background load hits both alike."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nets = {k: _build(k) for k in ("ours", "torchaudio")}
    x = torch.randn(1, int(seconds * 8000)) * 0.1
    times = {k: [] for k in nets}
    with torch.inference_mode():
        for net, prep in nets.values():
            net(prep(x))  # warm-up
        for _ in range(repeats):
            for k, (net, prep) in nets.items():
                t0 = time.perf_counter()
                y = net(prep(x))
                times[k].append(time.perf_counter() - t0)
                assert y.shape[-1] == x.shape[-1]
    return [{"model": k, "threads": threads, "seconds": seconds, "params": sum(p.numel() for p in nets[k][0].parameters()),
             "time_s": min(v), "rtf": min(v) / seconds} for k, v in times.items()]  # fmt: skip


def child_memory(kind: str, threads: int, seconds: float) -> dict:
    """Peak RSS of one forward pass of one model, alone in its process."""
    import torch

    torch.set_num_threads(threads)
    net, prep = _build(kind)
    x = torch.randn(1, int(seconds * 8000)) * 0.1
    base = _peak_mb()
    with torch.inference_mode():
        net(prep(x))
    return {"peak_mb": _peak_mb(), "base_mb": base}


def child_long(minutes: float, threads: int, chunk_s: float) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from linmix.apps.speech.audio import write_audio
    from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig
    from linmix.apps.speech.separate import separate_file

    tmp = ROOT / "runs" / "bench" / "speech_long"
    n = int(minutes * 60 * 8000)
    rng = np.random.default_rng(0)
    t = np.arange(n) / 8000
    x = 0.2 * np.sin(2 * np.pi * 200 * t) * np.sin(2 * np.pi * 0.7 * t) + 0.05 * rng.standard_normal(n)
    path = write_audio(tmp / "long_mixture.wav", x.astype(np.float32), 8000)
    del x, t
    net = ConvTasNet(ConvTasNetConfig()).eval()
    base = _peak_mb()
    t0 = time.perf_counter()
    separate_file(net, path, tmp / "out" / path.stem, 8000, 2, chunk_s=chunk_s, overlap_s=1.0)
    wall = time.perf_counter() - t0
    return {"model": "ours: separate (paper config)", "threads": threads, "seconds": minutes * 60,
            "params": sum(p.numel() for p in net.parameters()), "time_s": wall, "rtf": wall / (minutes * 60),
            "peak_mb": _peak_mb(), "base_mb": base}  # fmt: skip


def spawn(args: list) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0, help="input length for the model comparison")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    p.add_argument("--long-minutes", type=float, default=10.0, help="length of the long-file run (0: skip)")
    p.add_argument("--chunk-s", type=float, default=8.0)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        if a.child[0] == "long":
            print(json.dumps(child_long(float(a.child[1]), int(a.child[2]), float(a.child[3]))))
        elif a.child[0] == "time":
            print(json.dumps(child_time(int(a.child[1]), float(a.child[2]), int(a.child[3]))))
        else:
            print(json.dumps(child_memory(a.child[0], int(a.child[1]), float(a.child[2]))))
        return 0
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    rows = []
    for th in a.threads:
        timed = spawn(["--child", "time", str(th), str(a.seconds), str(a.repeats)])
        for r in timed:
            r.update(spawn(["--child", r["model"], str(th), str(a.seconds)]))
            rows.append(r)
            print(json.dumps(r), flush=True)
    if a.long_minutes > 0:
        rows.append(spawn(["--child", "long", str(a.long_minutes), str(max(a.threads)), str(a.chunk_s)]))
        print(json.dumps(rows[-1]), flush=True)
    (out / "speech_rtf.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Conv-TasNet speed and memory (paper config, CPU, batch 1, 8 kHz)", "",
             f"Machine: {os.cpu_count()} CPU cores, load average {load[0]:.1f} at start and {os.getloadavg()[0]:.1f} at "
             "end (other jobs on the cores inflate the timings; both models run interleaved in one process).", "",
             "| model | threads | audio (s) | params | time (s) | RTF | peak RSS (MB) | RSS before run (MB) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {r['seconds']:.0f} | {r['params']:,} | {r['time_s']:.2f} | "
                     f"{r['rtf']:.3f} | {r['peak_mb']:.0f} | {r['base_mb']:.0f} |")  # fmt: skip
    lines.append("")
    for th in a.threads:
        ours = next(r for r in rows if r["model"] == "ours" and r["threads"] == th)
        ta = next(r for r in rows if r["model"] == "torchaudio" and r["threads"] == th)
        ratio = ours["time_s"] / ta["time_s"]
        lines.append(f"- {th} thread(s): ours / torchaudio time = {ratio:.3f} ({'meets' if ratio <= 1.0 else 'misses'} "
                     f"the <= 1.0x bar)")  # fmt: skip
    long = [r for r in rows if r["model"].startswith("ours: separate")]
    if long:
        ok = "meets" if long[0]["peak_mb"] < 2048 else "misses"
        lines.append(
            f"- separate, {a.long_minutes:g}-minute file: peak RSS {long[0]['peak_mb']:.0f} MB ({ok} the < 2 GB bar)"
        )
    (out / "speech_rtf.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    cmp = [r for r in rows if r["model"] in ("ours", "torchaudio")]
    labels = [f"{r['model']}\n{r['threads']} thr" for r in cmp]
    axes[0].bar(labels, [r["rtf"] for r in cmp], color=["C0" if r["model"] == "ours" else "C1" for r in cmp])
    axes[0].set_ylabel(f"real-time factor ({a.seconds:g} s input)")
    axes[1].bar([f"{r['model']}\n{r['threads']} thr" for r in rows], [r["peak_mb"] for r in rows], color="C2")
    axes[1].axhline(2048, color="grey", ls="--")
    axes[1].set_ylabel("peak RSS (MB)")
    axes[1].tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "speech_rtf.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

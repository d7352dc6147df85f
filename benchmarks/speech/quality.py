"""Speech quality bar: SI-SNRi / SDRi per shipped config on the synthetic two-speaker test set, with CPU train time.

Runs ``linmix-speech fit`` (step budget from the config, a wall-time cap as a guard) then ``linmix-speech test`` on
every test mixture for each config, through the real CLI, on the same espeak-ng corpus (dev/test voices unseen in
training).  Writes ``<out>/speech_quality.{md,json,png}`` (table + learning curves: dev SI-SNRi vs optimiser steps)
and ``<out>/speech_quality_<config>_test.csv`` (per-utterance metrics).  Target bar: the default recipe
(convtasnet_synth) reaches >= 10 dB SI-SNRi; the Mamba2 separator is reported beside the TCN.

    python benchmarks/speech/quality.py --configs convtasnet_synth mamba_synth --minutes 38 13
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, log, loads):
    """Run a CLI command, appending its output to ``log``; samples the 1-minute load average every 30 s."""
    t0 = time.time()
    done = threading.Event()

    def sample():
        while not done.wait(30):
            loads.append(os.getloadavg()[0])

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        finally:
            done.set()
    return time.time() - t0


def curve(metrics_csv: Path) -> list[tuple[int, float]]:
    """(optimiser step, dev SI-SNRi dB) at each validation run of a fit."""
    rows = list(csv.DictReader(open(metrics_csv)))
    return [(int(r["step"]) + 1, float(r["val/si_snri"])) for r in rows if r.get("val/si_snri")]


def _pairs(bd: dict | None) -> str:
    """'same / different (n / n)' SI-SNRi of a test summary's breakdown (:func:`linmix.apps.speech.metrics.group_breakdown`)."""
    if not bd:
        return "-"
    cells = [bd["same_group"], bd["different_groups"]]
    means = " / ".join("-" if c["mean"] is None else f"{c['mean']:.2f}" for c in cells)
    return f"{means} ({cells[0]['n']} / {cells[1]['n']})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["convtasnet_synth", "mamba_synth"])
    p.add_argument("--minutes", type=float, nargs="+", default=[60.0],
                   help="wall-time cap on training per config (one, or one each); the config's max_steps decides")  # fmt: skip
    p.add_argument("--data-root", default="data/speech/synth")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (OMP_NUM_THREADS)")
    p.add_argument("--extra", nargs="*", default=[], help="extra CLI overrides for every fit, e.g. --trainer.max_steps=200")
    p.add_argument("--merge", default=None, help="an earlier speech_quality.json whose other configs join the table")
    a = p.parse_args(argv)
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    exe = [str(Path(sys.executable).parent / "linmix-speech")]
    rows = []
    caps = a.minutes * len(a.configs) if len(a.minutes) == 1 else a.minutes
    for cfg, minutes in zip(a.configs, caps, strict=True):
        save = out / "speech_quality" / cfg
        log = out / "speech_quality" / f"{cfg}.log"
        save.mkdir(parents=True, exist_ok=True)
        common = ["-c", f"configs/speech/{cfg}.yaml", f"--data.root={a.data_root}",
                  f"--trainer.logger.init_args.save_dir={save}", "--trainer.enable_progress_bar=false"]  # fmt: skip
        mm = int(minutes)
        ss = int(round((minutes - mm) * 60))
        loads: list[float] = []
        fit_s = run(exe + ["fit", *common, f"--trainer.max_time=00:{mm // 60:02d}:{mm % 60:02d}:{ss:02d}", *a.extra],
                    log, loads)  # fmt: skip
        vdir = max(save.glob("lightning_logs/version_*"), key=os.path.getmtime)
        ckpt = vdir / "checkpoints" / "last.ckpt"
        metrics = list(csv.DictReader(open(vdir / "metrics.csv")))
        steps = max(int(r["step"]) for r in metrics if r.get("step")) + 1
        val = curve(vdir / "metrics.csv")
        test_loads: list[float] = []
        test_s = run(exe + ["test", *common, "--data.limit_eval=null", f"--ckpt_path={ckpt}"], log, test_loads)
        tdir = max(save.glob("lightning_logs/version_*"), key=os.path.getmtime)
        summary = json.loads((tdir / "test_summary.json").read_text())
        shutil.copyfile(tdir / "test_results.csv", out / f"speech_quality_{cfg}_test.csv")
        import torch

        params = sum(v.numel() for k, v in torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"].items()
                     if k.startswith("net."))  # fmt: skip
        rows.append({"config": cfg, "params": params, "train_min": fit_s / 60, "steps": steps,
                     "s_per_step": fit_s / max(steps, 1), "load_avg_mean": sum(loads) / max(len(loads), 1),
                     "val_curve": val, "test_si_snri": summary["si_snri_mean"], "test_si_snri_median": summary["si_snri_median"],
                     "test_sdri": summary["sdri_mean"], "n_test": summary["n_utterances"], "test_s": test_s,
                     "test_breakdown": summary.get("si_snri_breakdown"),
                     "threads": a.threads, "ckpt": str(ckpt.relative_to(ROOT))})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    if a.merge:  # rows of configs not re-run here come first, from the earlier run
        rows = [r for r in json.loads(Path(a.merge).read_text()) if r["config"] not in a.configs] + rows
    (out / "speech_quality.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Speech separation quality (synthetic espeak-ng Libri2Mix-layout test set, unseen voices)", "",
             f"CPU, {os.cpu_count()} cores shared with other jobs, 1 torch thread; "
             "load average sampled every 30 s during training (times inflated by that load).", "",
             "| config | params | steps | train (min, CPU) | s/step | load avg | test SI-SNRi (dB) | median | "
             "test SDRi (dB) | n test | same-variant / different-variant pairs (n) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['config']} | {r['params']:,} | {r['steps']} | {r['train_min']:.1f} | {r['s_per_step']:.2f} | "
                     f"{r['load_avg_mean']:.1f} | {r['test_si_snri']:.2f} | {r['test_si_snri_median']:.2f} | "
                     f"{r['test_sdri']:.2f} | {r['n_test']} | {_pairs(r.get('test_breakdown'))} |")  # fmt: skip
    lines += ["", "Learning curves (dev SI-SNRi in dB at optimiser step, first 50 dev mixtures):", ""]
    for r in rows:
        lines.append(f"- {r['config']}: " + ", ".join(f"{s}: {v:.2f}" for s, v in r["val_curve"]))
    bar = next((r for r in rows if r["config"] == "convtasnet_synth"), None)
    if bar:
        ok = "meets" if bar["test_si_snri"] >= 10 else "does NOT meet"
        lines += ["", f"Bar: default recipe >= 10 dB SI-SNRi: {bar['test_si_snri']:.2f} dB, {ok} the bar."]
    (out / "speech_quality.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if r["val_curve"]:
            s, v = zip(*r["val_curve"], strict=True)
            ax.plot(s, v, marker="o", label=f"{r['config']} (test {r['test_si_snri']:.1f} dB)")
    ax.axhline(10, color="grey", ls="--", label="bar 10 dB")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("dev SI-SNRi (dB)")
    ax.set_title("Conv-TasNet on CPU: dev SI-SNRi vs steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "speech_quality.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

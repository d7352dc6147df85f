"""Speech quality bar: SI-SNRi / SDRi per shipped config on the synthetic two-speaker test set, with CPU train time.

Runs ``linmix-speech fit`` (time-capped) then ``linmix-speech test`` for each config through the real CLI, on the same
espeak-ng corpus, and writes ``runs/bench/speech_quality.{md,json,png}``.  Bar (issue 5): the default recipe
(convtasnet_synth) reaches >= 10 dB SI-SNRi; the Mamba2 separator is reported beside the TCN.

    python benchmarks/speech_quality.py --minutes 20 --configs convtasnet_synth mamba_synth
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, log):
    t0 = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.time() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["convtasnet_synth", "mamba_synth"])
    p.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[20.0],
        help="training time cap per config (one, or one each)",
    )
    p.add_argument("--data-root", default="data/speech/synth")
    p.add_argument("--out", default="runs/bench")
    p.add_argument(
        "--extra", nargs="*", default=[], help="extra CLI overrides for every fit, e.g. --data.batch_size=4"
    )
    a = p.parse_args(argv)
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
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
        fit_s = run(exe + ["fit", *common, f"--trainer.max_time=00:00:{mm:02d}:{ss:02d}", *a.extra], log)
        vdir = max(save.glob("lightning_logs/version_*"), key=os.path.getmtime)
        ckpt = vdir / "checkpoints" / "last.ckpt"
        metrics = list(csv.DictReader(open(vdir / "metrics.csv")))
        steps = max(int(r["step"]) for r in metrics if r.get("step"))
        epochs = max(int(r["epoch"]) for r in metrics if r.get("epoch")) + 1
        val = [float(r["val/si_snri"]) for r in metrics if r.get("val/si_snri")]
        test_s = run(exe + ["test", *common, f"--ckpt_path={ckpt}"], log)
        tdir = max(save.glob("lightning_logs/version_*"), key=os.path.getmtime)
        summary = json.loads((tdir / "test_summary.json").read_text())
        import torch

        params = sum(
            v.numel()
            for k, v in torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"].items()
        )
        rows.append({"config": cfg, "params": params, "train_min": fit_s / 60, "steps": steps, "epochs": epochs,
                     "val_si_snri_curve": val, "test_si_snri": summary["si_snri_mean"], "test_sdri": summary["sdri_mean"],
                     "n_test": summary["n_utterances"], "test_s": test_s, "ckpt": str(ckpt.relative_to(ROOT))})  # fmt: skip
        print(json.dumps(rows[-1]))
    (out / "speech_quality.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Speech separation quality (synthetic espeak-ng Libri2Mix-layout test set, unseen speakers)", "",
             f"CPU, {os.cpu_count()} cores shared with other jobs; training capped at {caps} min per config.", "",
             "| config | params | train (min, CPU) | steps | epochs | test SI-SNRi (dB) | test SDRi (dB) | n test |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['config']} | {r['params']:,} | {r['train_min']:.1f} | {r['steps']} | {r['epochs']} | "
                     f"{r['test_si_snri']:.2f} | {r['test_sdri']:.2f} | {r['n_test']} |")  # fmt: skip
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
        ax.plot(
            range(1, len(r["val_si_snri_curve"]) + 1), r["val_si_snri_curve"], marker="o", label=r["config"]
        )
    ax.axhline(10, color="grey", ls="--", label="bar 10 dB")
    ax.set_xlabel("validation run (epoch)")
    ax.set_ylabel("dev SI-SNRi (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "speech_quality.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

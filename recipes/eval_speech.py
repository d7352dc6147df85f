"""Score the speech recipe's models on CPU with ``linmix-speech test``, and optionally publish one.

    python recipes/eval_speech.py --from runs/recipes/speech          # benchmarks/results/speech_gpu.{md,json,png}
    python recipes/eval_speech.py --from runs/recipes/speech --publish convtasnet_synth   # + models/speech/<name>.*

For every ``<config>/model.ckpt`` of the run: ``linmix-speech test -c configs/speech/<config>.yaml --ckpt_path ...``
on CPU (the app's evaluation: SI-SNRi and BSS-eval SDRi per whole utterance) on the corpus's test split rendered here
(``--data``; made if missing: the recipe's plan, seed 0, 160 speakers, 100 test mixtures of voices unseen in
training). espeak-ng renders the same plan a few samples longer or shorter on another machine, so the device's test
of the same weights (``device_test_results.csv``) is close to, not equal to, the CPU one; the report gives the
per-utterance difference. Writes the table (bar: the default recipe's model >= 10 dB SI-SNRi), the training
conditions from ``run.json`` and the learning curves (dev SI-SNRi vs step).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, hardware, publish, read_json  # noqa: E402

BAR_CFG, BAR_DB = "convtasnet_synth_gpu", 10.0
CLI = "import sys; from linmix.apps.speech.cli import main; sys.exit(main())"
META = "Libri2Mix/wav8k/min/metadata"


def rows_of(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path))) if path.is_file() else []


def cpu_test(cfg: str, ckpt: Path, root: Path, limit, threads: int, save: Path) -> tuple[dict, Path, float]:
    """``linmix-speech test`` on CPU in a subprocess; returns (summary, per-utterance CSV, seconds)."""
    if save.exists():
        shutil.rmtree(save)
    cmd = [sys.executable, "-c", CLI, "test", "-c", f"configs/speech/{cfg}.yaml", f"--ckpt_path={ckpt}",
           "--trainer.accelerator=cpu", "--trainer.devices=1", f"--data.root={root}", "--data.synthesize=false",
           "--data.num_workers=0", f"--data.limit_eval={limit or 'null'}", f"--trainer.logger.init_args.save_dir={save}",
           "--trainer.enable_progress_bar=false", f"--data.rejects_dir={save / 'rejects'}"]
    t = time.time()
    save.mkdir(parents=True)
    with open(save / "test.log", "w") as log:
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, stdout=log,
                       stderr=subprocess.STDOUT)
    vdir = max(save.glob("lightning_logs/version_*"), key=os.path.getmtime)
    return json.loads((vdir / "test_summary.json").read_text()), vdir / "test_results.csv", time.time() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src", type=Path, required=True, help="the recipe's --out folder")
    p.add_argument("--data", type=Path, default=None,
                   help="corpus whose test split is scored, made here if missing (default: runs/recipes/data/speech_test)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N test mixtures (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="speech_gpu")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "recipes" / "speech_eval")
    p.add_argument("--publish", metavar="NAME", help="also copy one model to models/speech/NAME.ckpt with a card")
    p.add_argument("--publish-config", default=BAR_CFG, help="which config's model --publish copies")
    a = p.parse_args(argv)
    src, job = a.src, read_json(a.src / "run.json")
    cmd = (f"python recipes/eval_speech.py --from {src} --name {a.name}" + (f" --data {a.data}" if a.data else "")
           + (f" --limit {a.limit}" if a.limit else ""))
    a.data = a.data or ROOT / "runs" / "recipes" / "data" / "speech_test"
    if not (a.data / META / "mixture_test_mix_clean.csv").is_file():
        from linmix.apps.speech.synth import generate

        generate(str(a.data), 2, {"test": 100}, n_speakers=160, seed=0, progress=False)
    cfgs = sorted(c.parent.name for c in src.glob("*/model.ckpt"))
    if not cfgs:
        raise SystemExit(f"no <config>/model.ckpt under {src}")
    import torch

    out, rows = a.results, []
    out.mkdir(parents=True, exist_ok=True)
    for cfg in cfgs:
        ck = torch.load(src / cfg / "model.ckpt", map_location="cpu", weights_only=True)
        summ, res_csv, secs = cpu_test(cfg, src / cfg / "model.ckpt", a.data, a.limit, a.threads, a.work / cfg)
        shutil.copyfile(res_csv, out / f"{a.name}_{cfg}_test.csv")
        metrics = rows_of(max(src.glob(f"{cfg}/lightning_logs/version_*/metrics.csv"), key=os.path.getmtime,
                              default=src / cfg / "none"))
        row = {"config": cfg, "params": sum(v.numel() for k, v in ck["state_dict"].items() if k.startswith("net.")),
               "step": int(ck.get("global_step", -1)), "fit": job.get("fits", {}).get(cfg, {}), "cpu_test": summ,
               "cpu_test_s": round(secs, 1), "val_curve": [(int(r["step"]) + 1, float(r["val/si_snri"]))
                                                          for r in metrics if r.get("val/si_snri")]}
        dev = {r["mixture_ID"]: float(r["si_snri"]) for r in rows_of(src / cfg / "device_test_results.csv")}
        diffs = [abs(float(r["si_snri"]) - dev[r["mixture_ID"]]) for r in rows_of(res_csv) if r["mixture_ID"] in dev]
        if diffs:
            row["device_test"] = read_json(src / cfg / "device_test_summary.json")
            row["device_vs_cpu"] = {"n": len(diffs), "max_abs_diff_db": max(diffs), "mean_abs_diff_db": sum(diffs) / len(diffs)}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "val_curve"}), flush=True)
    (out / f"{a.name}.json").write_text(json.dumps({"job": job, "data": str(a.data), "limit": a.limit, "rows": rows},
                                                   indent=2, default=str))
    syn = job.get("corpus", {})
    table = ["| config | params | steps | steps/s | samples/s | test SI-SNRi mean (dB) | median | test SDRi mean (dB) | "
             "device test SI-SNRi | max abs diff CPU vs device (dB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, t = r["fit"], r["cpu_test"]
        dv, dd = r.get("device_test", {}).get("si_snri_mean"), r.get("device_vs_cpu", {}).get("max_abs_diff_db")
        table.append(f"| {r['config']} | {r['params']:,} | {r['step']} | {f.get('steps_per_s', '?')} | "
                     f"{f.get('samples_per_s', '?')} | **{t['si_snri_mean']:.2f}** | {t['si_snri_median']:.2f} | "
                     f"{t.get('sdri_mean', float('nan')):.2f} | {'' if dv is None else f'{dv:.2f}'} | "
                     f"{'' if dd is None else f'{dd:.3f}'} |")
    conditions = (f"Training: `python recipes/speech.py {' '.join(job.get('argv', []))}` on "
                  f"{hardware(job.get('device', {}))}, budget {job.get('args', {}).get('budget')} s, the configs side "
                  f"by side with a wall-clock cosine schedule (`linmix.shared.lightning.TimeBudget`). Corpus: "
                  f"{syn.get('counts')} mixtures ({syn.get('hours')} hours), seed 0, 160 speakers, dev/test voices "
                  "unseen in training.")
    lines = ["# Speech separation: recipe-trained models scored on CPU", "", conditions, "",
             f"Scored: `linmix-speech test` on CPU ({a.threads} thread), {rows[0]['cpu_test']['n_utterances']} test "
             f"mixtures of `{a.data}` (whole utterances): `{cmd}`.", "", *table, "",
             "Learning curves (dev SI-SNRi in dB at optimiser step):", ""]
    lines += [f"- {r['config']}: " + ", ".join(f"{s}: {v:.2f}" for s, v in r["val_curve"]) for r in rows]
    bar = next((r for r in rows if r["config"] == BAR_CFG), None)
    if bar:
        v = bar["cpu_test"]["si_snri_mean"]
        lines += ["", f"Bar (the default recipe's model >= {BAR_DB:g} dB SI-SNRi on the synthetic test set): {BAR_CFG} "
                  f"{v:.2f} dB: {'met' if v >= BAR_DB else 'not met'}."]
    (out / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if r["val_curve"]:
            ax.plot(*zip(*r["val_curve"]), marker="o", label=f"{r['config']} (test {r['cpu_test']['si_snri_mean']:.1f} dB)")
    ax.axhline(BAR_DB, color="grey", ls="--", label=f"bar {BAR_DB:g} dB")
    ax.set(xlabel="optimiser step", ylabel="dev SI-SNRi (dB)", title="dev SI-SNRi while training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{a.name}.png", dpi=100)
    print("\n".join(lines), flush=True)
    if a.publish:
        from linmix.apps.speech.lit_module import SpeechLitModule

        chosen = next((r for r in rows if r["config"] == a.publish_config), None)
        if chosen is None:
            raise SystemExit(f"--publish-config {a.publish_config}: no such model in {src} (have {cfgs})")
        card = (f"# {a.publish}: two-speaker separation, `configs/speech/{a.publish_config}.yaml`\n\n"
                f"Load: `linmix-speech separate mix.wav --model {a.publish} --out-dir out/` (8 kHz model; any input "
                f"rate is resampled). {chosen['params']:,} parameters, {chosen['step']} optimiser steps.\n\n"
                f"## Metrics\n\n{table[0]}\n{table[1]}\n{table[2 + rows.index(chosen)]}\n\nMeasured by `{cmd}`.\n\n"
                f"## Data, recipe, hardware\n\n{conditions}\n\n## Limits\n\nTrained on synthetic espeak-ng speech "
                "(clean two-speaker mixtures, 8 kHz); real recordings, noise and reverberation are outside it.\n")
        path = publish("speech", a.publish, src / a.publish_config / "model.ckpt", card,
                       safe_globals=SpeechLitModule.checkpoint_globals)
        print(f"published {path} and its card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

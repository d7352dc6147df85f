"""Mamba2 vs Mamba3 vs the hybrid as EHRMamba's backbone, at equal CPU time, on the EHR quality recipe.

Each (mixer, seed) runs ``recipes/ehr.py`` on one synthetic cohort (made once) with the same sizes and the same wall
budget (pretraining then multitask prompted finetuning; the recipe sizes its steps by measured time, so a slower mixer
trains fewer steps), and reports the held-out mean AUROC over the tasks, parameters and steps:

    OMP_NUM_THREADS=2 python benchmarks/core/mamba3_ehr.py --patients 2000 --budget 120 --seeds 0 1 \\
        --out benchmarks/results

Writes ``mamba3_ehr.{json,md}``. A small CPU experiment at one size and budget; it says nothing beyond that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = ["--d-model", "64", "--n-layers", "2", "--d-state", "32", "--batch-size", "64", "--max-len", "256",
         "--vocab-size", "256", "--val-every-s", "20", "--reserve-s", "20", "--warmup-steps", "5"]


def run_one(kind: str, seed: int, a, work: Path) -> dict:
    out = work / f"{kind}_{seed}"
    cmd = [sys.executable, str(ROOT / "recipes" / "ehr.py"), "--accel", "cpu", "--patients", str(a.patients),
           "--budget", str(a.budget), "--data", str(work / "cohort"), "--out", str(out), "--mixer", kind,
           "--train-seed", str(seed), *SIZES]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    run = json.loads((out / "run.json").read_text())
    auroc = [v["auroc"] for v in run["held_out_device"].values() if v["auroc"] == v["auroc"]]
    return {"mixer": kind, "seed": seed, "parameters": run["parameters"], "mean_auroc": sum(auroc) / len(auroc),
            "tasks": len(auroc), "pretrain_steps": run["phases"]["pretrain"]["steps"],
            "finetune_steps": run["phases"]["finetune"]["steps"], "wall_s": run["total_wall_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds per (mixer, seed) run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--kinds", nargs="+", default=["mamba2", "mamba3", "hybrid"])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "mamba3_ehr")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    a = ap.parse_args(argv)
    rows = [run_one(k, s, a, a.work) for k in a.kinds for s in a.seeds]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "mamba3_ehr.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                       "rows": rows}, indent=1))
    lines = ["# EHRMamba backbone: Mamba2 vs Mamba3 vs hybrid at equal CPU time", "",
             f"Recipe `recipes/ehr.py` (pretrain + MPF finetune), {a.patients} synthetic patients, {a.budget:.0f} s "
             f"per run on a 2-core CPU, sizes `{' '.join(SIZES)}`. Mean held-out AUROC over the tasks.", "",
             "| mixer | seed | parameters | pretrain steps | finetune steps | mean AUROC |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['mixer']} | {r['seed']} | {r['parameters']:,} | {r['pretrain_steps']} | {r['finetune_steps']} | "
              f"{r['mean_auroc']:.4f} |" for r in rows]
    lines += ["", "| mixer | mean AUROC (mean of seeds) |", "|---|---|"]
    for k in a.kinds:
        v = [r["mean_auroc"] for r in rows if r["mixer"] == k]
        lines.append(f"| {k} | {sum(v) / len(v):.4f} |")
    lines += ["", "Command: `OMP_NUM_THREADS=2 python benchmarks/core/mamba3_ehr.py --patients "
              f"{a.patients} --budget {a.budget:.0f} --seeds {' '.join(map(str, a.seeds))} --out benchmarks/results`"]
    (a.out / "mamba3_ehr.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

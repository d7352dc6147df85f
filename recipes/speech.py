"""Speech quality recipe: render the espeak-ng corpus, train the GPU configs side by side, test each on the device.

    python recipes/speech.py --budget 600                                          # on a CUDA machine
    python recipes/speech.py --configs convtasnet_synth_gpu mamba_synth_gpu        # two separators on one GPU
    python recipes/speech.py --smoke --accel cpu --budget 90 --out /tmp/speech_smoke   # rehearsal on a CPU

1. Corpus: ``linmix.apps.speech.synth.generate`` (the generator behind ``linmix-speech synth``) over ``--workers``
   processes into ``--data``: seed 0, 160 speakers, dev/test voices unseen in training, 100 dev and 100 test
   mixtures and as many training mixtures (up to ``--train-mixtures``) as ``--synth-s`` seconds allow. Every
   mixture is planned before any is rendered, so any worker count and any stop give the same mixtures (a prefix).
   An existing complete corpus in ``--data`` is reused.
2. ``linmix-speech fit -c configs/speech/<config>.yaml`` for every ``--configs`` entry at the same time (they share
   the device), each with a second ``-c`` file that gives the config's ``TimeBudget`` callback an absolute deadline
   (its cosine schedule ends there, whatever the device's speed) and writes the weights-only
   ``<out>/<config>/model.ckpt`` every 60 s and at the end; logs and ``metrics.csv`` under ``<out>/<config>/``.
3. ``linmix-speech test`` of each ``model.ckpt`` on the corpus's 100 test mixtures, on the same device:
   ``<out>/<config>/device_test_summary.json`` and ``device_test_results.csv`` (SI-SNRi and SDRi per mixture).

``--out`` also gets ``log.txt`` (progress every 30 s: steps, steps/s, samples/s, last dev SI-SNRi) and ``run.json``.
Score the weights on CPU afterwards with ``recipes/eval_speech.py --from <out>``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Log, base_parser, device_info, resolve_common, write_json  # noqa: E402

T0 = time.time()
CLI = "import sys; from linmix.apps.speech.cli import main; sys.exit(main())"
META = "Libri2Mix/wav8k/min/metadata"
SUBSETS = ("train-100", "dev", "test")


def corpus(root: Path, n_train: int, seconds: float, workers: int, log) -> dict:
    """Render (or reuse) the corpus under ``root``; returns the mixture counts and hours per subset."""
    from linmix.apps.speech.synth import generate

    t = time.time()
    if all((root / META / f"mixture_{s}_mix_clean.csv").is_file() for s in SUBSETS):
        log(f"corpus: reusing {root}")
    else:
        generate(str(root), 2, {"dev": 100, "test": 100, "train-100": n_train}, n_speakers=160, seed=0,
                 progress=False, workers=workers, deadline=time.time() + seconds)
    counts, hours = {}, {}
    for s in SUBSETS:
        rows = list(csv.DictReader(open(root / META / f"mixture_{s}_mix_clean.csv")))
        counts[s], hours[s] = len(rows), round(sum(int(r["length"]) for r in rows) / 8000 / 3600, 2)
    log(f"corpus: {counts} mixtures, {hours} hours, {time.time() - t:.0f} s on {workers} processes -> {root}")
    return {"root": str(root), "counts": counts, "hours": hours, "seconds": round(time.time() - t, 1)}


def budget_yaml(cfg: str, deadline: float, ckpt: Path, path: Path) -> Path:
    """The config's callbacks with ``TimeBudget(deadline=..., ckpt_path=...)`` (a second ``-c`` for ``fit``)."""
    import yaml

    callbacks = yaml.safe_load(open(ROOT / "configs" / "speech" / f"{cfg}.yaml"))["trainer"]["callbacks"]
    for cb in callbacks:
        if cb["class_path"].endswith("TimeBudget"):
            cb.setdefault("init_args", {}).update({"deadline": deadline, "ckpt_path": str(ckpt)})
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def metrics_csv(run: Path) -> Path | None:
    found = sorted(run.glob("lightning_logs/version_*/metrics.csv"), key=os.path.getmtime)
    return found[-1] if found else None


def progress(run: Path, started: float, batch: int, seg_s: float) -> dict:
    """Steps, rates and the last dev SI-SNRi from a fit's ``metrics.csv``."""
    path = metrics_csv(run)
    if path is None:
        return {}
    rows = list(csv.DictReader(open(path)))
    steps = max((int(r["step"]) + 1 for r in rows if r.get("step")), default=0)
    val = [(int(r["step"]) + 1, float(r["val/si_snri"])) for r in rows if r.get("val/si_snri")]
    wall = time.time() - started
    return {"steps": steps, "wall_s": round(wall, 1), "steps_per_s": round(steps / wall, 2),
            "samples_per_s": round(steps * batch / wall, 1), "audio_s_per_s": round(steps * batch * seg_s / wall, 1),
            "last_val_si_snri": val[-1] if val else None}


def main(argv=None) -> int:
    p = base_parser("speech", __doc__, budget_s=600.0)
    p.add_argument("--configs", nargs="+", default=["convtasnet_synth_gpu"],
                   help="configs/speech/<name>.yaml to train side by side (the *_gpu ones use TimeBudget)")
    p.add_argument("--data", type=Path, default=None, help="corpus folder (default: runs/recipes/data/speech_synth)")
    p.add_argument("--train-mixtures", type=int, default=20000)
    p.add_argument("--synth-s", type=float, default=120.0, help="seconds for rendering the training mixtures")
    p.add_argument("--test-reserve-s", type=float, default=None,
                   help="seconds kept for the device tests (default: 70 on a GPU, 30 %% of the budget on a CPU)")
    args = resolve_common(p.parse_args(argv))
    import yaml

    gpu, out = args.accel == "gpu", args.out.resolve()
    if args.smoke:
        args.train_mixtures, args.synth_s = min(args.train_mixtures, 40), min(args.synth_s, 20.0)
    data = (args.data or ROOT / "runs" / "recipes" / "data" / ("speech_smoke" if args.smoke else "speech_synth")).resolve()
    log = Log(out / "log.txt", T0)
    res: dict = {"recipe": "recipes/speech.py", "argv": sys.argv[1:] if argv is None else list(argv), "args": vars(args),
                 "device": device_info(args.accel), "phases": {}}
    log(f"speech recipe: {json.dumps(res['device'])}")
    res["corpus"] = syn = corpus(data, args.train_mixtures, args.synth_s, args.workers, log)
    write_json(out / "run.json", res)

    t_start = time.time()  # the budget starts with the corpus ready
    reserve = args.test_reserve_s if args.test_reserve_s is not None else (70.0 if gpu else 0.3 * args.budget)
    fit_end = t_start + args.budget - reserve
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    base = [f"--trainer.accelerator={args.accel}", "--trainer.devices=1", f"--data.root={data}",
            "--data.synthesize=false", "--trainer.enable_progress_bar=false"]
    tiny = ["--data.batch_size=2", "--data.segment_s=1.0", "--data.num_workers=1", "--data.limit_eval=3",
            "--trainer.val_check_interval=10", "--model.warmup_steps=5", "--trainer.log_every_n_steps=5"]
    procs, shapes, logs = {}, {}, {}
    for cfg in args.configs:
        run = out / cfg
        run.mkdir(parents=True, exist_ok=True)
        d = yaml.safe_load(open(ROOT / "configs" / "speech" / f"{cfg}.yaml"))["data"]
        shapes[cfg] = (2, 1.0) if args.smoke else (d["batch_size"], d["segment_s"])
        cmd = [sys.executable, "-c", CLI, "fit", "-c", f"configs/speech/{cfg}.yaml", "-c",
               str(budget_yaml(cfg, fit_end, run / "model.ckpt", run / "budget.yaml")), *base, *(tiny if args.smoke else []),
               f"--data.synth_n_train={syn['counts']['train-100']}", f"--trainer.logger.init_args.save_dir={run}",
               f"--data.rejects_dir={run / 'rejects'}"]
        logs[cfg] = open(run / "fit.log", "w")
        procs[cfg] = subprocess.Popen(cmd, env=env, stdout=logs[cfg], stderr=subprocess.STDOUT, cwd=ROOT)
    log(f"fit: started {args.configs}; schedules end at t={fit_end - T0:.0f} s")
    last = 0.0
    while any(p.poll() is None for p in procs.values()):
        time.sleep(2)
        if time.time() - last >= 30:
            last = time.time()
            for cfg in args.configs:
                log(f"{cfg}: {json.dumps(progress(out / cfg, t_start, *shapes[cfg]))}")
        if time.time() > fit_end + 20:  # TimeBudget stops at fit_end; this is the guard
            for cfg, p in procs.items():
                if p.poll() is None:
                    log(f"{cfg}: past the deadline, SIGINT")
                    p.send_signal(signal.SIGINT)
            for p in procs.values():
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    res["fits"] = {}
    for cfg, p in procs.items():
        logs[cfg].close()
        res["fits"][cfg] = {"rc": p.returncode, **progress(out / cfg, t_start, *shapes[cfg])}
        log(f"{cfg}: fit done {json.dumps(res['fits'][cfg])}")
    res["phases"]["fit_end_s"] = round(time.time() - T0, 1)
    write_json(out / "run.json", res)

    tests = {}
    for cfg in args.configs:
        ck = out / cfg / "model.ckpt"
        if not ck.is_file():
            log(f"{cfg}: no model.ckpt (see {out / cfg / 'fit.log'})")
            continue
        cmd = [sys.executable, "-c", CLI, "test", "-c", f"configs/speech/{cfg}.yaml", f"--ckpt_path={ck}", *base,
               f"--trainer.logger.init_args.save_dir={out / cfg / 'test'}", "--data.num_workers=2",
               f"--data.limit_eval={3 if args.smoke else 'null'}", f"--data.rejects_dir={out / cfg / 'rejects'}"]
        tests[cfg] = subprocess.Popen(cmd, env=env, stdout=open(out / cfg / "test.log", "w"), stderr=subprocess.STDOUT,
                                      cwd=ROOT)
    for cfg, p in tests.items():
        try:
            p.wait(timeout=max(10.0, t_start + args.budget + 60 - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        found = sorted((out / cfg / "test").glob("lightning_logs/version_*/test_summary.json"), key=os.path.getmtime)
        if not found:
            log(f"{cfg}: device test failed (rc {p.returncode}, see {out / cfg / 'test.log'})")
            continue
        for name in ("test_summary.json", "test_results.csv"):
            shutil.copyfile(found[-1].parent / name, out / cfg / f"device_{name}")
        s = json.loads(found[-1].read_text())
        res["fits"][cfg]["device_test"] = {k: s.get(k) for k in ("si_snri_mean", "sdri_mean", "n_utterances")}
        log(f"{cfg}: device test SI-SNRi {s.get('si_snri_mean', float('nan')):.2f} dB, SDRi "
            f"{s.get('sdri_mean', float('nan')):.2f} dB over {s.get('n_utterances')} mixtures")
    res["phases"]["end_s"] = round(time.time() - T0, 1)
    write_json(out / "run.json", res)
    ok = all((out / c / "model.ckpt").is_file() for c in args.configs)
    log("done" if ok else "FAILED: a config wrote no model.ckpt")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

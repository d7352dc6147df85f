"""Speech GPU job (called by ``benchmarks/gpu/speech.sh``): synth corpus -> three concurrent fits -> device test.

Environment (contract of ``benchmarks/gpu/device_run.sh``): ``ACCEL`` gpu|cpu, ``BUDGET_S`` seconds until everything
that must come back is written, ``APP_OUT`` what comes back, ``WORK`` scratch, ``NCPU`` cores.

1. ``linmix.apps.speech.synth.generate`` renders the espeak-ng corpus (same plan as ``data/speech/synth``: seed 0, 160
   speakers, dev/test voices unseen in training; 100 dev, 100 test, as many training mixtures as ``SYNTH_S`` seconds
   allow up to 20000) over ``NCPU`` processes.
2. ``linmix-speech fit`` (LightningCLI, shipped YAMLs) for ``convtasnet_synth_gpu`` (the default recipe's model),
   ``convtasnet_synth_gpu_sp`` (the same with speed-perturbed training sources) and ``mamba_synth_gpu`` at the same
   time (``SPEECH_CONFIGS`` to change the list, e.g. adding ``convtasnet_paper_synth_gpu``: 1,339 steps
   of it gave 5.47 dB, far from what one 8-minute job can train), each with ``--trainer.max_time`` set so training ends
   inside the budget (the YAMLs' ``TimeBudget`` callback turns it into a wall-time cosine schedule).
3. Every ~30 s the latest weights-only snapshot of each run is copied into ``APP_OUT/<config>/model.ckpt``
   (atomically; the paper model's weights as float16 to fit the 15 MiB limit) with its ``metrics.csv``, and a
   progress line (steps, steps/s, samples/s) goes to ``APP_OUT/speech_job.log``.
4. ``linmix-speech test`` of each snapshot on all 100 test mixtures: the local test split packed by
   ``benchmarks/gpu/pack_speech.py`` into ``gpu_pack/speech/synth_test`` when present (the exact audio that
   ``benchmarks/gpu/eval_speech.py`` scores afterwards on CPU: a per-utterance cross-check), else the device's own.

With ``ACCEL=cpu`` (rehearsal) everything is scaled down (tiny corpus, batch 2 x 1 s, few validation mixtures).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from joblog import JobLog, write_json

ROOT = Path(__file__).resolve().parents[2]
T0 = time.time()
ACCEL = os.environ.get("ACCEL", "cpu")
BUDGET = float(os.environ.get("BUDGET_S", "480"))
OUT = Path(os.environ.get("APP_OUT", "/tmp/speech_out"))
WORK = Path(os.environ.get("WORK", "/tmp/speech_work"))
NCPU = int(os.environ.get("NCPU", "2"))
GPU = ACCEL == "gpu"
CONFIGS = tuple(os.environ.get("SPEECH_CONFIGS", "convtasnet_synth_gpu convtasnet_synth_gpu_sp mamba_synth_gpu").split())
HALF = {"convtasnet_paper_synth_gpu"}  # weights sent back as float16 (5M parameters: 20 MB in float32)
PRELUDE = ("import torch, sys; torch.set_float32_matmul_precision('high'); "
           "from linmix.apps.speech.cli import main; sys.exit(main())")  # fmt: skip
LOG = OUT / "speech_job.log"
say = JobLog(LOG, T0)


def left() -> float:
    return BUDGET - (time.time() - T0)


def hhmmss(seconds: float) -> str:
    s = max(int(seconds), 10)
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def device_info() -> dict:
    """Versions and the GPU (from nvidia-smi: no CUDA context here, the synth pool forks from this process)."""
    import torch

    info = {"torch": torch.__version__, "python": sys.version.split()[0], "accel": ACCEL, "ncpu": NCPU,
            "budget_s": BUDGET}  # fmt: skip
    if GPU:
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20).stdout.strip()  # fmt: skip
            info["gpu"] = q.splitlines()[0] if q else "?"
        except (OSError, subprocess.TimeoutExpired) as err:
            info["gpu"] = f"? ({err})"
    return info


def synth(root: Path, seconds: float) -> dict:
    from linmix.apps.speech.synth import generate

    n_max = 20000 if GPU else 40
    t = time.time()
    counts = {"dev": 100, "test": 100, "train-100": n_max}
    done = generate(str(root), 2, counts, n_speakers=160, seed=0, progress=False, workers=NCPU,
                    deadline=time.time() + seconds)  # fmt: skip
    dt = time.time() - t
    meta = root / "Libri2Mix/wav8k/min/metadata"
    hours = {}
    for sub in ("train-100", "dev", "test"):
        rows = (meta / f"mixture_{sub}_mix_clean.csv").read_text().splitlines()[1:]
        hours[sub] = sum(int(r.rsplit(",", 1)[1]) for r in rows) / 8000 / 3600
    say(f"synth: {done} mixtures in {dt:.1f} s ({sum(done.values()) / dt:.1f} mixtures/s on {NCPU} processes); "
        f"audio hours {json.dumps({k: round(v, 2) for k, v in hours.items()})}")  # fmt: skip
    shutil.copyfile(meta / "mixture_test_mix_clean.csv", OUT / "device_test_metadata.csv")
    return {"counts": done, "seconds": dt, "hours": hours}


def deadline_yaml(cfg: str, deadline: float) -> Path:
    """A second config for ``fit``: the YAML's callbacks with ``TimeBudget(deadline=deadline)``."""
    import yaml

    callbacks = yaml.safe_load(open(ROOT / f"configs/speech/{cfg}.yaml"))["trainer"]["callbacks"]
    for cb in callbacks:
        if cb["class_path"].endswith("TimeBudget"):
            cb.setdefault("init_args", {})["deadline"] = deadline
    path = WORK / f"{cfg}.deadline.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def fit_cmd(cfg: str, data_root: Path, n_train: int, max_time: str, deadline: float) -> list[str]:
    cmd = [sys.executable, "-c", PRELUDE, "fit", "-c", f"configs/speech/{cfg}.yaml", "-c",
           str(deadline_yaml(cfg, deadline)), f"--trainer.accelerator={ACCEL}",
           "--trainer.devices=1", f"--data.root={data_root}", f"--data.synth_n_train={n_train}",
           f"--trainer.max_time={max_time}", f"--trainer.logger.init_args.save_dir={WORK / 'runs' / cfg}",
           "--trainer.enable_progress_bar=false", f"--data.rejects_dir={WORK / 'rejects' / cfg}"]  # fmt: skip
    if not GPU:  # rehearsal: tiny steps, few validation mixtures
        cmd += ["--data.batch_size=2", "--data.segment_s=1.0", "--data.num_workers=1", "--data.limit_eval=3",
                "--trainer.val_check_interval=10", "--model.warmup_steps=5", "--trainer.log_every_n_steps=5"]  # fmt: skip
    return cmd


def version_dir(cfg: str) -> Path | None:
    dirs = sorted((WORK / "runs" / cfg / "lightning_logs").glob("version_*"), key=os.path.getmtime)
    return dirs[-1] if dirs else None


def export(cfg: str) -> dict:
    """Copy the newest snapshot (weights only; float16 for HALF) and the metrics of one run into APP_OUT/<cfg>."""
    import torch

    vdir = version_dir(cfg)
    if vdir is None:
        return {}
    dst = OUT / cfg
    dst.mkdir(parents=True, exist_ok=True)
    for src in (vdir / "metrics.csv", vdir / "hparams.yaml", WORK / f"{cfg}.fit.log"):
        if src.is_file():
            name = "fit.log" if src.suffix == ".log" else src.name
            shutil.copyfile(src, dst / (name + ".tmp"))
            os.replace(dst / (name + ".tmp"), dst / name)
    snap = vdir / "checkpoints" / "snapshot.ckpt"
    info = {"version_dir": str(vdir)}
    if snap.is_file() and snap.stat().st_mtime > getattr(export, "seen", {}).get(cfg, 0):
        try:
            ck = torch.load(snap, map_location="cpu", weights_only=True)
        except Exception as err:  # written while we read: next round
            say(f"{cfg}: snapshot not readable yet ({err})")
            return info
        if cfg in HALF:
            ck["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
        ck.pop("optimizer_states", None)
        ck.pop("lr_schedulers", None)
        torch.save(ck, dst / "model.ckpt.tmp")
        os.replace(dst / "model.ckpt.tmp", dst / "model.ckpt")
        export.seen = {**getattr(export, "seen", {}), cfg: snap.stat().st_mtime}
        export.steps = {**getattr(export, "steps", {}), cfg: int(ck.get("global_step", -1))}
    if cfg in getattr(export, "steps", {}):
        info["exported_step"] = export.steps[cfg]
    return info


_RATE: dict = {}  # cfg -> (steps, time) at the previous progress line


def progress(cfg: str, started: float, batch: int, seg_s: float) -> dict:
    vdir = version_dir(cfg)
    if vdir is None or not (vdir / "metrics.csv").is_file():
        return {}
    import csv

    rows = list(csv.DictReader(open(vdir / "metrics.csv")))
    steps = max((int(r["step"]) + 1 for r in rows if r.get("step")), default=0)
    val = [(int(r["step"]) + 1, float(r["val/si_snri"])) for r in rows if r.get("val/si_snri")]
    now = time.time()
    wall = now - started
    prev = _RATE.get(cfg)
    recent = (steps - prev[0]) / (now - prev[1]) if prev and now > prev[1] else None
    _RATE[cfg] = (steps, now)
    return {"steps": steps, "wall_s": round(wall, 1), "steps_per_s": round(steps / wall, 2),
            "recent_steps_per_s": None if recent is None else round(recent, 2),
            "samples_per_s": round(steps * batch / wall, 1), "audio_s_per_s": round(steps * batch * seg_s / wall, 1),
            "last_val_si_snri": val[-1] if val else None}  # fmt: skip


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "LINMIX_BACKEND": "torch", "PYTHONPATH": str(ROOT) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}  # fmt: skip
    summary: dict = {"device": device_info(), "phases": {}}
    say(f"start: {json.dumps(summary['device'])}")
    data_root = WORK / "synth"
    synth_s = min(75.0, 0.16 * BUDGET) if GPU else min(20.0, 0.1 * BUDGET)
    summary["synth"] = syn = synth(data_root, synth_s)
    summary["phases"]["synth_s"] = round(time.time() - T0, 1)
    write_json(OUT / "summary.json", summary, indent=2)

    test_reserve = 70.0 if GPU else 0.3 * BUDGET  # device test + final copy
    fit_end = T0 + BUDGET - test_reserve
    # TimeBudget stops training at fit_end (its cosine ends there); max_time (counted from train start) is a guard.
    max_time = hhmmss(fit_end - time.time())
    procs, logs, started = {}, {}, time.time()
    for cfg in CONFIGS:
        logs[cfg] = open(WORK / f"{cfg}.fit.log", "w")
        procs[cfg] = subprocess.Popen(fit_cmd(cfg, data_root, syn["counts"]["train-100"], max_time, fit_end), env=env,
                                      stdout=logs[cfg], stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    say(f"fit: started {list(CONFIGS)} with max_time {max_time} (fits must end by t={fit_end - T0:.0f} s)")
    import yaml

    shapes = {}
    for cfg in CONFIGS:
        d = yaml.safe_load(open(ROOT / f"configs/speech/{cfg}.yaml"))["data"]
        shapes[cfg] = (d["batch_size"], d["segment_s"]) if GPU else (2, 1.0)
    packed = ROOT / "gpu_pack/speech/synth_test"
    test_root = packed if (packed / "Libri2Mix/wav8k/min/metadata/mixture_test_mix_clean.csv").is_file() else data_root
    summary["device_test_root"] = str(test_root)
    say(f"device tests will use {'the packed local test split' if test_root == packed else 'the device-generated test split'}"
        f" ({test_root})")
    fits, tests = {}, {}

    def finish_fit(cfg: str) -> None:
        """Record a finished fit, export its final weights and start its device test (all 100 test mixtures)."""
        logs[cfg].close()
        fits[cfg] = {"rc": procs[cfg].returncode, **export(cfg), **progress(cfg, started, *shapes[cfg])}
        say(f"{cfg}: fit done: {json.dumps(fits[cfg])}")
        ck = OUT / cfg / "model.ckpt"
        if not ck.is_file() or left() < 25:
            return
        cmd = [sys.executable, "-c", PRELUDE, "test", "-c", f"configs/speech/{cfg}.yaml", f"--ckpt_path={ck}",
               f"--trainer.accelerator={ACCEL}", "--trainer.devices=1", f"--data.root={test_root}",
               "--data.synthesize=false", f"--trainer.logger.init_args.save_dir={WORK / 'test' / cfg}",
               "--trainer.enable_progress_bar=false", "--data.num_workers=2",
               f"--data.limit_eval={'null' if GPU else 3}", f"--data.rejects_dir={WORK / 'rejects' / cfg}"]  # fmt: skip
        tests[cfg] = (subprocess.Popen(cmd, env=env, stdout=open(WORK / f"{cfg}.test.log", "w"),
                                       stderr=subprocess.STDOUT, cwd=ROOT), time.time())  # fmt: skip

    last_export = 0.0
    while len(fits) < len(CONFIGS):
        time.sleep(2)
        for cfg, p in procs.items():
            if cfg not in fits and p.poll() is not None:
                finish_fit(cfg)
        if time.time() - last_export >= 30:
            last_export = time.time()
            for cfg in CONFIGS:
                if cfg not in fits:
                    export(cfg)
                    say(f"{cfg}: {json.dumps(progress(cfg, started, *shapes[cfg]))}")
        if time.time() > fit_end + 20:
            for cfg, p in procs.items():
                if p.poll() is None:
                    say(f"{cfg}: past the fit deadline: SIGINT")
                    p.send_signal(signal.SIGINT)
            for cfg, p in procs.items():
                try:
                    p.wait(timeout=max(3.0, min(10.0, left() - 20)))
                except subprocess.TimeoutExpired:
                    say(f"{cfg}: still running after SIGINT: SIGKILL")
                    p.kill()
                    p.wait(timeout=10)
            for cfg in CONFIGS:
                if cfg not in fits:
                    finish_fit(cfg)
    summary["fits"] = fits
    summary["phases"]["fit_end_s"] = round(time.time() - T0, 1)
    write_json(OUT / "summary.json", summary, indent=2)

    for cfg, (p, t) in tests.items():
        try:
            p.wait(timeout=max(1.0, left() - 8))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            say(f"{cfg}: device test timed out")
            continue
        dirs = sorted((WORK / "test" / cfg / "lightning_logs").glob("version_*"), key=os.path.getmtime)
        if dirs and (dirs[-1] / "test_summary.json").is_file():
            for name in ("test_summary.json", "test_results.csv"):
                shutil.copyfile(dirs[-1] / name, OUT / cfg / f"device_{name}")
            res = json.loads((dirs[-1] / "test_summary.json").read_text())
            say(f"{cfg}: device test ({time.time() - t:.0f} s): SI-SNRi {res.get('si_snri_mean', float('nan')):.2f} "
                f"dB, SDRi {res.get('sdri_mean', float('nan')):.2f} dB over {res.get('n_utterances')} mixtures")
        else:
            say(f"{cfg}: device test failed rc={p.returncode} (see {cfg}/test.log)")
        shutil.copyfile(WORK / f"{cfg}.test.log", OUT / cfg / "test.log")
    summary["phases"]["end_s"] = round(time.time() - T0, 1)
    write_json(OUT / "summary.json", summary, indent=2)
    ok = (OUT / "convtasnet_synth_gpu" / "model.ckpt").is_file()
    say("done" if ok else "FAILED: no convtasnet_synth_gpu checkpoint came out (see the fit logs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

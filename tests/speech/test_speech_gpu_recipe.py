"""Pieces of the GPU recipe: the shared wall-time schedule + snapshots (TimeBudget) in a speech fit, and parallel
synthesis."""

import csv
import time
from pathlib import Path

import torch

from linmix.apps.speech.cli import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "speech" / "tiny.yaml")


def test_time_budget_stops_at_the_deadline_and_leaves_a_snapshot(synth_root, tmp_path):
    cfg = tmp_path / "deadline.yaml"
    cfg.write_text(
        "trainer:\n  callbacks:\n    - class_path: linmix.shared.lightning.TimeBudget\n"
        f"      init_args: {{ckpt_every_s: 0, deadline: {time.time() + 4.0}}}\n"
    )
    t = time.time()
    assert main(["fit", "-c", TINY, "-c", str(cfg), f"--data.root={synth_root}", "--data.synthesize=false",
                 f"--data.rejects_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
                 "--trainer.enable_progress_bar=false", "--trainer.max_epochs=10000", "--trainer.limit_train_batches=2",
                 "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1"]) == 0  # fmt: skip
    assert time.time() - t < 60  # stopped by the deadline, not by 10000 epochs
    snap = next(tmp_path.glob("lightning_logs/version_*/checkpoints/snapshot.ckpt"))
    ck = torch.load(snap, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in ck and ck["global_step"] > 0 and "hyper_parameters" in ck
    rows = list(csv.DictReader(open(next(tmp_path.glob("lightning_logs/version_*/metrics.csv")))))
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert lrs and lrs[-1] < max(lrs)  # the cosine went down with the clock


def test_parallel_synth_same_plan(tmp_path):
    """Workers render the same mixtures (IDs, speakers, sentences) in the same order; a deadline gives a prefix."""
    from linmix.apps.speech.synth import generate

    counts = {"train-100": 6, "test": 2}
    generate(str(tmp_path / "a"), 2, counts, n_speakers=16, seed=0, progress=False)
    generate(str(tmp_path / "b"), 2, counts, n_speakers=16, seed=0, progress=False, workers=2)
    done = generate(str(tmp_path / "c"), 2, counts, n_speakers=16, seed=0, progress=False, deadline=0.0)
    meta = "Libri2Mix/wav8k/min/metadata/mixture_train-100_mix_clean.csv"
    ids = [[r["mixture_ID"] for r in csv.DictReader(open(tmp_path / d / meta))] for d in "abc"]
    assert ids[0] == ids[1] and len(ids[0]) == 6
    assert done["train-100"] == 1 and ids[2] == ids[0][:1]

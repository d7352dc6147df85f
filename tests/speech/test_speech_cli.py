"""The real console entry point: fit (tiny.yaml) -> test (CSV + summary) -> export (round trip) -> separate."""

import csv
import json
from pathlib import Path

import pytest
import torch

from linmix.apps.speech.cli import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "speech" / "tiny.yaml")


def test_fit_test_export_separate_through_cli(synth_root, tmp_path):
    common = ["-c", TINY, f"--data.root={synth_root}", "--data.synthesize=false", f"--data.rejects_dir={tmp_path}",
              f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"]  # fmt: skip
    assert main(["fit", *common, "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]) == 0
    ckpt = next(tmp_path.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    metrics = list(csv.DictReader(open(next(tmp_path.glob("lightning_logs/version_*/metrics.csv")))))
    assert any(r.get("val/si_snri") for r in metrics)

    assert main(["test", *common, f"--ckpt_path={ckpt}"]) == 0
    res = max(tmp_path.glob("lightning_logs/version_*"), key=lambda p: int(p.name.split("_")[1]))
    rows = list(csv.DictReader(open(res / "test_results.csv")))
    assert len(rows) == 2 and {"mixture_ID", "si_snri", "sdri"} <= set(rows[0])
    summary = json.loads((res / "test_summary.json").read_text())
    assert summary["n_utterances"] == 2
    assert summary["si_snri_mean"] == pytest.approx(sum(float(r["si_snri"]) for r in rows) / 2, abs=1e-6)
    bd = summary["si_snri_breakdown"]  # every mixture in exactly one pair cell, in a group cell per distinct group
    assert bd["same_group"]["n"] + bd["different_groups"]["n"] == 2
    assert sum(c["n"] for c in bd["by_group"].values()) == sum(len(set(r["groups"].split("+"))) for r in rows)

    exported = tmp_path / "model.pt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(exported)]) == 0
    from linmix.shared.export import load_torchscript

    net, config = load_torchscript(exported)
    assert config["n_src"] == 2 and config["sample_rate"] == 8000 and config["n_filters"] == 32
    for t in (777, 1601):  # waveform in, sources out, any length
        assert net(torch.randn(1, t)).shape == (1, 2, t)

    mix = next((synth_root / "Libri2Mix" / "wav8k" / "min" / "test" / "mix_clean").glob("*.wav"))
    out = tmp_path / "sep"
    assert main(["separate", str(mix), "--ckpt", str(ckpt), "--out-dir", str(out), "--plot"]) == 0
    assert {p.name for p in (out / mix.stem).iterdir()} == {"s1.wav", "s2.wav", "spectrogram.png"}


def test_help_lists_tools(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for tool in ("synth", "separate", "export", "demo"):
        assert tool in text

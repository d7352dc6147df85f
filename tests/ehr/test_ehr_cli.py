"""The real ``linmix-ehr`` CLI end to end on a hand-built MEDS folder: pretrain -> finetune from it -> test -> export
-> incremental score, with configs/ehr/tiny.yaml."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from linmix.apps.ehr.cli import main
from linmix.shared.export import load_torchscript

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "ehr" / "tiny.yaml")
_spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__).with_name("test_ehr_seq_fixture.py"))
FX = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FX)


def last_ckpt(root: Path, version: int) -> Path:
    return root / "runs" / "ehr" / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt"


def test_cli_pretrain_finetune_test_export_score(tmp_path, monkeypatch, capsys):
    from meds_evaluation.evaluate import evaluate_binary_classification

    monkeypatch.chdir(tmp_path)
    meds = FX.write_meds(tmp_path / "meds", 60)
    common = [TINY, "--data.meds_dir", str(meds), "--data.cache_dir", str(tmp_path / "cache")]
    assert main(["fit", "-c", *common, "--data.objective", "pretrain", "--trainer.max_steps", "1"]) == 0
    ckpts = sorted((tmp_path / "runs" / "ehr").rglob("last.ckpt"))
    assert len(ckpts) == 1
    pre = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert pre["hyper_parameters"]["objective"] == "pretrain"
    assert main(["fit", "-c", *common, "--model.pretrained", str(ckpts[0]), "--trainer.max_steps", "2"]) == 0
    fine = sorted((tmp_path / "runs" / "ehr").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    assert fine != ckpts[0]
    state = torch.load(fine, map_location="cpu", weights_only=True)
    assert state["ehr_tasks"]["names"][:3] == ["mortality", "los", "readmission"] and state["ehr_tasks"]["vocab"]
    assert main(["test", "-c", *common, "--ckpt_path", str(fine)]) == 0
    results = sorted((tmp_path / "runs" / "ehr").rglob("test_metrics.json"))
    assert results, "test must write per-task metrics"
    metrics = json.loads(results[-1].read_text())
    assert set(metrics) == set(state["ehr_tasks"]["names"])
    assert all(set(m) >= {"auroc", "auprc", "f1"} for m in metrics.values())
    assert (results[-1].parent / "roc.png").exists() and (results[-1].parent / "pr.png").exists()
    preds = tmp_path / "preds"
    assert main(["predict", "-c", *common, "--ckpt_path", str(fine), "--predictions.output", str(preds)]) == 0
    files = sorted(preds.glob("*.parquet"))
    assert {f.stem for f in files} <= set(state["ehr_tasks"]["names"]) and files
    held = pl.read_parquet(meds / "metadata" / "subject_splits.parquet").filter(pl.col("split") == "held_out")
    compared = 0
    for f in files:  # the MEDS prediction schema, scored by meds-evaluation as by `linmix-ehr test`
        df = pl.read_parquet(f)
        assert df.columns == ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_value",
                              "predicted_boolean_probability"]
        assert set(df["subject_id"]) <= set(held["subject_id"]) and df["predicted_boolean_probability"].is_between(0, 1).all()
        assert df.height == df.unique(["subject_id"]).height == metrics[f.stem]["n"]  # every datapoint written
        if df["boolean_value"].n_unique() == 2:
            result = evaluate_binary_classification(df)["samples_equally_weighted"]
            assert result["roc_auc_score"] == pytest.approx(metrics[f.stem]["auroc"], abs=1e-6), f.stem
            compared += 1
    assert compared >= 1
    assert not list(preds.glob(".*tmp*"))  # atomic: no temporary file left
    assert main(["predict", "-c", *common, "--ckpt_path", str(fine), "--predictions.output", str(preds / "x.parquet")]) == 2
    assert "give a folder" in capsys.readouterr().err
    # one task of the checkpoint (not its first): data task index 0 is mapped to the checkpoint's readout and name
    task = files[-1].stem
    assert task != state["ehr_tasks"]["names"][0]
    one = tmp_path / "preds_one"
    assert main(["predict", "-c", *common, "--ckpt_path", str(fine), "--data.tasks", f"[{task}]",
                 "--predictions.output", str(one)]) == 0
    assert [f.name for f in one.glob("*.parquet")] == [f"{task}.parquet"]
    alone = pl.read_parquet(one / f"{task}.parquet").join(pl.read_parquet(files[-1]), on=["subject_id", "prediction_time"])
    assert alone.height == pl.read_parquet(files[-1]).height  # other batches, so equal up to float rounding
    assert (alone["predicted_boolean_probability"] - alone["predicted_boolean_probability_right"]).abs().max() < 1e-5
    # a task the checkpoint was not finetuned on (from a labels folder) is refused by name
    foo = tmp_path / "my_labels" / "foo"
    foo.mkdir(parents=True)
    shutil.copy(next((tmp_path / "cache").glob("*/labels/mortality/0.parquet")), foo / "0.parquet")
    assert main(["predict", "-c", *common, "--ckpt_path", str(fine), "--data.labels_dir", str(foo.parent),
                 "--data.builtin_tasks", "false", "--predictions.output", str(tmp_path / "preds_foo")]) == 2
    assert "not finetuned on task(s) ['foo']" in capsys.readouterr().err
    out = tmp_path / "model.pt"
    assert main(["export", "--ckpt", str(fine), "--out", str(out), "--lengths", "9", "33", "--format", "torchscript"]) == 0
    module, config = load_torchscript(out)
    assert config["tasks"] == state["ehr_tasks"]["names"] and config["net"]["d_model"] == 32
    scores = tmp_path / "scores.parquet"
    assert main(["score", "--ckpt", str(fine), "--meds", str(meds), "--task", "los", "--limit", "3", "--out", str(scores)]) == 0
    df = pl.read_parquet(scores)
    assert df.height >= df["subject_id"].n_unique() >= 1 and df["predicted_boolean_probability"].is_between(0, 1).all()
    assert df.columns == ["subject_id", "prediction_time", "predicted_boolean_value", "predicted_boolean_probability"]
    # at the labels' prediction times, incremental scores equal `predict`'s (same cut, no truncation at this size)
    labels = next((tmp_path / "cache").glob("*/labels"))
    assert main(["score", "--ckpt", str(fine), "--meds", str(meds), "--task", task, "--labels", str(labels),
                 "--out", str(scores)]) == 0
    both = pl.read_parquet(scores).join(pl.read_parquet(files[-1]), on=["subject_id", "prediction_time"])
    assert both.height == pl.read_parquet(files[-1]).height and (both["boolean_value"] == both["boolean_value_right"]).all()
    assert (both["predicted_boolean_probability"] - both["predicted_boolean_probability_right"]).abs().max() < 1e-5


def test_cli_help_and_errors(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for tool in ("synth", "ingest", "export", "demo", "score", "fit", "test"):
        assert tool in out
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", "/nonexistent.ckpt"])
    assert "not found" in capsys.readouterr().err

"""``linmix-ehr`` under DDP, 2 gloo processes on CPU, through the console script: fit (with validation), predict and
(slow) test. Each rank trains on a disjoint half of every epoch, and the 2-process validation / test metrics and
predictions equal a single-process evaluation of the same checkpoint on the same data."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from linmix.apps.ehr.cli import main
from linmix.apps.ehr.data import EHRDataModule

TESTS = Path(__file__).resolve().parents[1]
TINY = str(TESTS.parent / "configs" / "ehr" / "tiny.yaml")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _load("ehr_meds_fixture", TESTS / "ehr" / "test_ehr_seq_fixture.py")
SO = _load("linmix_tests_scaleout", TESTS / "scaleout.py")
pytestmark = pytest.mark.skipif(not shutil.which(str(SO.exe("ehr"))),
                                reason="console script not installed (pip install -e .)")
QUIET = [*SO.QUIET, "--trainer.accelerator", "cpu"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One 2-process fit of one epoch on 60 patients; the single-process steps per epoch from the data module."""
    root = tmp_path_factory.mktemp("ehr_ddp")
    meds = FX.write_meds(root / "meds", 60)
    common = ["-c", TINY, "--data.meds_dir", str(meds), "--data.cache_dir", str(root / "cache"),
              "--trainer.limit_val_batches", "1.0"]
    dm = EHRDataModule(meds_dir=str(meds), cache_dir=str(root / "cache"), vocab_size=256, max_len=256, batch_size=16)
    dm.prepare_data()  # the cache the runs share
    dm.setup("fit")
    SO.run_ddp("ehr", ["fit", *common, "--trainer.max_steps", "-1", "--trainer.max_epochs", "1",
                       "--trainer.num_sanity_val_steps", "0"], root)
    (fit_dir,) = SO.versions(root / "runs" / "ehr")
    return {"root": root, "meds": meds, "common": common, "dm": dm, "fit_dir": fit_dir,
            "ckpt": fit_dir / "checkpoints" / "last.ckpt"}


def test_ddp_fit_halves_the_epoch_and_validates_like_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    dm = fitted["dm"]
    n_train, steps_1 = len(dm.datasets["train"]), len(dm.train_dataloader())
    steps_2 = torch.load(fitted["ckpt"], map_location="cpu", weights_only=True)["global_step"]
    assert steps_2 == math.ceil((n_train // 2) / 16)  # each rank a disjoint half of the epoch
    assert abs(2 * steps_2 - steps_1) <= 2, (steps_1, steps_2)  # half the single-process steps, within one batch
    assert main(["validate", *fitted["common"], *QUIET, "--ckpt_path", str(fitted["ckpt"])]) == 0
    one = SO.metrics(SO.versions(fitted["root"] / "runs" / "ehr")[-1])
    # loss, mean AUROC and AUROC / AUPRC / F1 of every task: the 2-process values within 1e-6
    assert SO.assert_close_metrics(SO.metrics(fitted["fit_dir"]), one, "val/") >= 16


def test_ddp_predict_writes_each_datapoint_once_as_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    ckpt, common = str(fitted["ckpt"]), fitted["common"]
    ddp_out, one_out = fitted["root"] / "ddp_preds", fitted["root"] / "one_preds"
    SO.run_ddp("ehr", ["predict", *common, "--ckpt_path", ckpt, "--predictions.output", str(ddp_out)], fitted["root"])
    assert main(["predict", *common, *QUIET, "--ckpt_path", ckpt, "--predictions.output", str(one_out)]) == 0
    key = ["subject_id", "task", "prediction_time"]

    def read(folder):  # one MEDS prediction file per task
        return pl.concat([pl.read_parquet(f).with_columns(pl.lit(f.stem).alias("task"))
                          for f in sorted(folder.glob("*.parquet"))]).sort(key)

    ddp, one = read(ddp_out), read(one_out)
    assert ddp.height == one.height == ddp.unique(key).height == len(fitted["dm"].datasets["held_out"])
    assert ddp.select(key).equals(one.select(key)) and ddp["boolean_value"].equals(one["boolean_value"])
    prob = "predicted_boolean_probability"
    assert (ddp[prob] - one[prob]).abs().max() <= 1e-6


@pytest.mark.slow
def test_ddp_test_metrics_equal_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    ckpt, common, logs = str(fitted["ckpt"]), fitted["common"], fitted["root"] / "runs" / "ehr"
    SO.run_ddp("ehr", ["test", *common, "--ckpt_path", ckpt], fitted["root"])
    ddp = json.loads((SO.versions(logs)[-1] / "test_metrics.json").read_text())
    assert main(["test", *common, *QUIET, "--ckpt_path", ckpt]) == 0
    one = json.loads((SO.versions(logs)[-1] / "test_metrics.json").read_text())
    assert set(ddp) == set(one) and len(one) >= 5
    for task, m in one.items():
        SO.assert_close_metrics(ddp[task], m, "")  # auroc, auprc, f1, prevalence, n
    assert sum(int(m["n"]) for m in one.values()) == len(fitted["dm"].datasets["held_out"])


@pytest.mark.parametrize("objective", ["pretrain", "finetune"])
@pytest.mark.parametrize("tie", [True, False])
def test_every_trainable_parameter_is_in_the_loss(objective, tie):
    """DDP all-reduces a gradient for every trainable parameter: the head an objective does not train is frozen."""
    import warnings

    from linmix.apps.ehr.lit_module import INPUTS, EHRLitModule
    from linmix.apps.ehr.model import EHRMambaConfig

    cfg = EHRMambaConfig(vocab_size=50, d_model=16, n_layers=1, d_state=8, n_heads=2, dropout=0.0, d_time=8,
                         max_visits=16, tie_embeddings=tie, n_tasks=3)
    lit = EHRLitModule(net=cfg, objective=objective)
    g = torch.Generator().manual_seed(0)
    b, n = 3, 12
    batch = dict(zip(INPUTS, [torch.randint(7, 50, (b, n), generator=g), torch.randint(1, 9, (b, n), generator=g),
                              50 + 10 * torch.rand(b, n, generator=g), torch.cumsum(torch.rand(b, n, generator=g), 1),
                              torch.randint(0, 16, (b, n), generator=g), torch.randint(0, 3, (b, n), generator=g)],
                     strict=True))
    batch |= {"lengths": torch.tensor([12, 9, 5]), "task": torch.tensor([0, 2, 1]),
              "task_token": torch.tensor([3, 4, 5]), "label": torch.tensor([1.0, 0.0, 1.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        lit._step(batch, "train").backward()
    trainable = {k: p for k, p in lit.named_parameters() if p.requires_grad}
    assert trainable and [k for k, p in trainable.items() if p.grad is None] == []
    frozen = {k for k, p in lit.named_parameters() if not p.requires_grad}
    want = {"net.cls_head.1.weight", "net.cls_head.1.bias"} if objective == "pretrain" else set()
    if not tie and objective == "finetune":
        want = {"net.lm_head.weight"}
    assert frozen == want


@pytest.mark.slow
def test_ddp_pretraining_fit_and_predict(fitted, monkeypatch):
    """Pretraining (the task head frozen, so no parameter is outside the loss): a 2-process fit finishes and predict
    writes one next-token row per held-out patient."""
    monkeypatch.chdir(fitted["root"])
    common = [*fitted["common"], "--data.objective", "pretrain"]
    SO.run_ddp("ehr", ["fit", *common, "--trainer.max_steps", "2"], fitted["root"])
    ckpt = SO.versions(fitted["root"] / "runs" / "ehr")[-1] / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 2
    out = fitted["root"] / "pretrain_preds"
    SO.run_ddp("ehr", ["predict", *common, "--ckpt_path", str(ckpt), "--predictions.output", str(out)], fitted["root"])
    df = pl.read_parquet(out / "next_token.parquet")
    held = pl.read_parquet(fitted["meds"] / "metadata" / "subject_splits.parquet")
    held = held.filter(pl.col("split") == "held_out")
    assert df.columns == ["subject_id", "next_token", "probability"]
    assert sorted(df["subject_id"].to_list()) == sorted(held["subject_id"].to_list())  # each patient once

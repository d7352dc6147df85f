"""End to end through the real CLI: synth -> fit tiny -> test -> predict -> export -> serve raw rows (TorchScript
with the encoder; ONNX Runtime with the exported pure-numpy featurizer, the README's snippet verbatim)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from linmix.apps.ctr.cli import main
from linmix.apps.ctr.synth import ClickProcess, SynthConfig, generate, observed_probability, synth_main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "ctr" / "tiny.yaml")


def test_synth_saves_true_probability(tmp_path):
    assert synth_main(["--out", str(tmp_path), "--rows", "4000", "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    df = pl.read_parquet(tmp_path / "train.parquet")
    assert df.height == 3200 and meta["splits"]["test"]["rows"] == 400
    p = df["p_true"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert abs(df["label"].mean() - p.mean()) < 0.03  # labels are Bernoulli(p_true)
    assert 0.6 < meta["splits"]["train"]["bayes"]["auc"] < 0.99
    counts = df["c0"].value_counts()["count"].to_numpy()
    assert counts.max() > 8 * np.median(counts)  # long-tailed categories
    a, b = generate(SynthConfig(n_rows=500, seed=1)), generate(SynthConfig(n_rows=500, seed=1))
    assert a.equals(b)


def test_synth_p_true_depends_only_on_the_observed_row():
    """A missing field enters the click process as its own state: its hidden value does not move p_true."""
    cfg = SynthConfig(n_rows=2000, seed=2)
    proc = ClickProcess(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    codes, nums = proc.sample_fields(2000, rng)
    miss = rng.random((2000, cfg.n_cat + cfg.n_num)) < 0.3
    proc.fit_norm(codes, nums, miss)
    codes2, nums2 = proc.sample_fields(2000, rng)  # other hidden values behind the same missing mask
    c = np.where(miss[:, :cfg.n_cat], codes2, codes)
    x = np.where(miss[:, cfg.n_cat:], nums2, nums)
    np.testing.assert_allclose(proc.logit(c, x, miss), proc.logit(codes, nums, miss))
    assert not np.allclose(proc.logit(c, x, 0 * miss), proc.logit(codes, nums, 0 * miss))  # would leak
    old = SynthConfig(n_rows=600, seed=2, missing_in_process=False)
    p_obs = observed_probability(old, slice(0, 600), draws=8)
    df = generate(old)
    hidden = df.select(pl.any_horizontal(pl.all().exclude("label", "p_true").is_null())).to_series().to_numpy()
    assert np.allclose(p_obs[~hidden], df["p_true"].to_numpy()[~hidden])  # complete rows: the same
    assert not np.allclose(p_obs[hidden], df["p_true"].to_numpy()[hidden])  # rows with a hidden value differ


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctr_cli")
    common = ["-c", TINY, "--data.data_dir", str(d / "data"), "--data.synth_rows", "3000",
              "--trainer.default_root_dir", str(d / "run"), "--model.out_dir", str(d / "out"),
              "--trainer.logger.init_args.save_dir", str(d / "run")]
    assert main(["fit", *common, "--trainer.max_epochs", "1"]) == 0
    ckpts = sorted((d / "run").rglob("last.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    return d, common, ckpts[0]


def test_fit_test_predict_through_cli(fitted):
    d, common, ckpt = fitted
    rec = json.loads((ckpt.parents[1] / "data_order.jsonl").read_text().splitlines()[0])
    assert (rec["epoch"], rec["seed"], rec["batches"], rec["streaming"]) == (0, 0, 5, False)  # 2,400 rows / 512
    assert main(["test", *common, "--ckpt_path", str(ckpt)]) == 0
    m = json.loads((d / "out" / "test_metrics.json").read_text())
    for k in ("auc", "logloss", "gauc", "ece", "bayes_auc", "bayes_logloss"):
        assert np.isfinite(m[k]), k
    assert m["bayes_auc"] > m["auc"] - 0.02  # the true probability is (near) the ceiling
    assert (d / "out" / "calibration.png").stat().st_size > 1000
    assert main(["predict", *common, "--ckpt_path", str(ckpt)]) == 0
    pred = pl.read_parquet(d / "out" / "predictions.parquet")
    assert pred.height == 300 and pred["p"].is_between(0, 1).all()
    rep = json.loads((d / "data" / "encoded" / "report.json").read_text())
    for s in rep["splits"].values():
        assert s["read"] == s["written"] + s["rejected"]


def test_ckpt_path_keeps_the_output_folder_and_names_replaced_settings(fitted, capsys):
    d, common, ckpt = fitted
    capsys.readouterr()
    assert main(["test", *common, "--ckpt_path", str(ckpt), "--model.out_dir", str(d / "elsewhere"),
                 "--model.net.d_model", "6"]) == 0
    assert (d / "elsewhere" / "test_metrics.json").is_file()  # an output folder does not change the network
    err = capsys.readouterr().err
    assert "the checkpoint's values replace: model.net.d_model: 6 -> 8" in err and "out_dir" not in err


def test_export_roundtrip_and_serving_raw_rows(fitted, capsys):
    d, _, ckpt = fitted
    assert main(["export", "--ckpt", str(ckpt), "--out", str(d / "export"), "--format", "torchscript"]) == 0
    ex = json.loads((d / "export" / "export.json").read_text())
    assert ex["roundtrip_max_abs_diff"] < 1e-5 and ex["batch_sizes"] == [3, 257]
    from linmix.apps.ctr.encoder import FeatureEncoder
    from linmix.apps.ctr.lit_module import CTRLitModule
    from linmix.shared.export import load_torchscript

    enc = FeatureEncoder.load(d / "export" / "vocab.json")
    raw = pl.read_parquet(d / "data" / "test.parquet").head(7)
    a = enc.encode_serving(raw)
    model, cfg = load_torchscript(d / "export" / "model.ts")
    assert cfg["fields"][:2] == ["c0", "c1"]
    lit = CTRLitModule.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    with torch.no_grad():
        want = torch.sigmoid(lit.net(torch.from_numpy(a["idx"]), torch.from_numpy(a["val"])))
    got = model(torch.from_numpy(a["idx"]), torch.from_numpy(a["val"]), None)
    torch.testing.assert_close(got, want)
    bad = raw.with_columns(pl.lit(float("nan")).alias("n1"))
    with pytest.raises(ValueError, match="field n1: NaN/inf"):
        enc.encode_serving(bad)


def test_featurizer_equals_encoder_and_readme_snippet_serves_raw_rows(fitted, tmp_path):
    """Export the fitted FCN to ONNX, then run the README snippet (onnxruntime + numpy + the folder) on raw rows."""
    from linmix.apps.ctr.encoder import FeatureEncoder
    from linmix.apps.ctr.featurize import Featurizer
    from linmix.apps.ctr.lit_module import CTRLitModule

    data, _, ckpt = fitted
    d = tmp_path
    export = d / "runs" / "ctr" / "export"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(export), "--format", "onnx"]) == 0
    assert sorted(p.name for p in export.iterdir()) == ["export.json", "featurize.py", "model.onnx", "vocab.json"]

    raw = pl.read_parquet(data / "data" / "test.parquet").head(40).drop("label", "p_true")
    rows = raw.to_dicts()
    rows[0]["c1"], rows[1]["n0"], rows[2]["c2"] = "never-seen", None, ""  # OOV, missing numeric, empty category
    enc = FeatureEncoder.load(export / "vocab.json")
    want = enc.encode_serving(pl.DataFrame(rows, schema=raw.schema))
    got = Featurizer(str(export / "vocab.json"))(rows)
    np.testing.assert_array_equal(got["idx"], want["idx"])
    np.testing.assert_array_equal(got["val"], want["val"])
    with pytest.raises(ValueError, match="n1: NaN/inf"):
        Featurizer(str(export / "vocab.json"))([{**rows[0], "n1": float("nan")}])

    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    readme = (ROOT / "apps" / "ctr" / "README.md").read_text()
    snippet = re.search(r"<!-- serving-example -->\n```python\n(.*?)```\n<!-- /serving-example -->", readme, re.S)[1]
    assert len([ln for ln in snippet.splitlines() if ln.strip()]) <= 11
    probe = "\nassert 'torch' not in sys.modules and not any(m.startswith('linmix') for m in sys.modules)\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", snippet + probe], cwd=d, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    prob = np.loadtxt(d / "prob.txt")
    lit = CTRLitModule.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    with torch.no_grad():
        eager = torch.sigmoid(lit.net(torch.from_numpy(want["idx"]), torch.from_numpy(want["val"]))).numpy()
    assert prob.shape == (40,) and np.abs(prob - eager).max() <= 1e-5

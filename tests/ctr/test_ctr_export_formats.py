"""CTR export in three formats (TorchScript, torch.export, ONNX Runtime) equals eager at two batch sizes, for FCN and
the baselines; the pure-numpy featurizer equals the encoder; the README's serving snippet runs on a real export."""

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

from linmix.apps.ctr.export import FILES, example_inputs, export_net
from linmix.apps.ctr.model import CTRNet, CTRNetConfig
from linmix.shared.export import load_runner

ROOT = Path(__file__).resolve().parents[2]


def _net(arch: str, seq: bool = False) -> CTRNet:
    torch.manual_seed(0)
    cfg = CTRNetConfig(arch=arch, field_sizes=(5, 7, 4, 9), seq_sizes=(6,) if seq else (), d_model=4, hidden=(8,),
                       n_layers=2, n_linear_layers=2)
    return CTRNet(cfg).eval()


@pytest.mark.parametrize(("arch", "seq"), [
    ("fcn", False),
    pytest.param("dcnv2", True, marks=pytest.mark.slow),
    pytest.param("dnn", False, marks=pytest.mark.slow),
    pytest.param("lr", False, marks=pytest.mark.slow),
])
def test_every_format_equals_eager_at_two_batch_sizes(arch, seq, tmp_path):
    net = _net(arch, seq)
    results = export_net(net, tmp_path, {"arch": arch}, batch_sizes=(1, 300))
    assert [r["format"] for r in results] == list(FILES)
    assert all(r["max_abs_diff"] <= 1e-5 for r in results), results
    cfg = net.cfg
    args = example_inputs(cfg.field_sizes, cfg.seq_sizes, 64, seed=5)
    want = torch.sigmoid(net(*args if seq else (*args, None)))
    for fmt, name in FILES.items():
        got = load_runner(tmp_path / name, fmt)(*args)
        got = got[0] if isinstance(got, list) else got
        assert (got - want).abs().max().item() <= 1e-5, fmt
    # the traced formats take no value checks, but an out-of-range index still fails in ONNX Runtime
    bad = (args[0].clone(), *args[1:])
    bad[0][0, 0] = 1000
    with pytest.raises(Exception, match="(?i)out of bounds|indices"):
        load_runner(tmp_path / "model.onnx", "onnx")(*bad)


def test_featurizer_equals_encoder_and_readme_snippet_serves_raw_rows(tmp_path):
    """Fit a tiny FCN on synthetic data, export it, then run the README snippet (onnxruntime + numpy + the folder)."""
    from linmix.apps.ctr.cli import main
    from linmix.apps.ctr.encoder import FeatureEncoder
    from linmix.apps.ctr.featurize import Featurizer
    from linmix.apps.ctr.lit_module import CTRLitModule

    d = tmp_path
    assert main(["fit", "-c", str(ROOT / "configs/ctr/tiny.yaml"), "--data.data_dir", str(d / "data"),
                 "--data.synth_rows", "2000", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(d / "run"),
                 "--model.out_dir", str(d / "out"), "--trainer.logger.init_args.save_dir", str(d / "run")]) == 0
    ckpt = sorted((d / "run").rglob("last.ckpt"))[0]
    export = d / "runs" / "ctr" / "export"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(export), "--format", "onnx"]) == 0
    assert sorted(p.name for p in export.iterdir()) == ["export.json", "featurize.py", "model.onnx", "vocab.json"]

    raw = pl.read_parquet(d / "data" / "test.parquet").head(40).drop("label", "p_true")
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

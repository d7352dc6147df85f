"""The pure pieces of benchmarks/ctr/fuxictr.py (no FuxiCTR needed); the FuxiCTR round trip is slow and skipped
without its venv ($FUXICTR_PYTHON, made by benchmarks/ctr/fuxictr_env.sh)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "ctr"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load("fuxictr")
VOCAB = [33, 27, 22, 18, 15, 13, 11, 9, 8, 7, 54, 53, 54]  # the 1M-row synthetic log's field sizes


@pytest.mark.parametrize("model", ["fcn", "dcnv2"])
def test_linmix_nets_have_the_counted_parameters_and_fuxictr_vocabularies_stay_within_one_percent(model):
    from linmix.apps.ctr.model import CTRNet, CTRNetConfig

    net = _load("fuxictr_linmix").NETS[model][1]
    n = sum(p.numel() for p in CTRNet(CTRNetConfig(field_sizes=tuple(VOCAB), d_model=16, **net)).parameters())
    assert n == bench.expected_params(model, VOCAB)
    fx = bench.expected_params(model, [v - 1 for v in VOCAB])  # FuxiCTR: pad + OOV, no separate missing row
    assert 0 < bench.param_gap(n, fx) < bench.BARS["param_gap"]
    assert bench.param_gap(n, bench.expected_params(model, [2 * v for v in VOCAB])) > bench.BARS["param_gap"]
    assert bench.param_gap(n, bench.expected_params(model, VOCAB, hidden=(256, 128))) > bench.BARS["param_gap"] \
        if model == "dcnv2" else bench.expected_params(model, VOCAB, n_layers=3) < n


def test_metrics_are_recomputed_from_predictions_and_refuse_misaligned_arrays():
    y = np.array([0, 0, 1, 1, 0, 1], float)
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    m = bench.test_metrics(p, y)
    assert m["auc"] == pytest.approx(8 / 9) and m["rows"] == 6
    assert m["logloss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert bench.test_metrics(np.array([0.0, 1.0]), np.array([1.0, 0.0]))["logloss"] == pytest.approx(-np.log(1e-7))
    with pytest.raises(ValueError):
        bench.test_metrics(p[:-1], y)


def _run(lib, model, threads, auc, train, infer, fwd=None, params=1000):
    return {"lib": lib, "model": model, "threads": threads, "auc": auc, "logloss": 0.5, "train_rows_per_s": train,
            "infer_rows_per_s": infer, "forward_rows_per_s": fwd or infer, "epochs": 1, "params": params,
            "flops_per_row": 1e6}


def test_summary_takes_medians_and_applies_every_bar():
    runs = [_run("linmix", "fcn", 1, a, t, i) for a, t, i in [(0.800, 300, 90), (0.801, 100, 30), (0.802, 200, 60)]]
    runs += [_run("fuxictr", "fcn", 1, a, 100, 50, 80, 1005) for a in (0.7995, 0.7990, 0.8000)]
    (row,) = bench.summarise(runs, {"1": {"fcn": 0.1}})  # 0.1 GFLOP/s
    assert row["linmix"]["auc"] == pytest.approx(0.801) and row["linmix"]["train_rows_per_s"] == 200
    assert row["auc_gap"] == pytest.approx(0.0015) and row["train_ratio"] == pytest.approx(2.0)
    assert row["infer_ratio"] == pytest.approx(1.2) and row["gemm_pct"] == pytest.approx(60.0)
    assert row["pass"] == {"auc": True, "params": True, "train": True, "infer": True, "gemm": True,
                           "onnx_infer": False, "onnx_gemm": False}  # no ONNX Runtime timing in these runs
    for r, ox in zip(runs[:3], (75, 25, 50)):
        r["onnx_rows_per_s"] = ox  # median 50: 1.0x FuxiCTR's predict, 50% of the GEMM rate
    (row,) = bench.summarise(runs, {"1": {"fcn": 0.1}})
    assert row["onnx_ratio"] == pytest.approx(1.0) and row["onnx_gemm_pct"] == pytest.approx(50.0)
    assert row["pass"]["onnx_infer"] and not row["pass"]["onnx_gemm"]
    runs[0]["train_rows_per_s"] = runs[2]["train_rows_per_s"] = 150  # median 150 -> 1.5x
    runs[3]["auc"] = runs[4]["auc"] = 0.79  # gap 0.011
    (row,) = bench.summarise(runs, {})
    assert not row["pass"]["train"] and not row["pass"]["auc"] and not row["pass"]["gemm"]
    assert "FAIL" in "\n".join(bench.markdown([row], {"args": {"rows": 10, "d_model": 16, "batch": 4, "lr": 1e-3,
                                                               "epochs": 1, "patience": 2}, "cpu": "cpu",
                                                      "load_start": [0], "load_end": [0], "command": "c"}))


def test_each_linmix_precision_gets_its_own_row_against_the_same_fuxictr_runs():
    runs = [_run("linmix", "dcnv2", 2, 0.830, 300, 90) | {"rep": 0}]  # written before runs carried a precision
    runs += [_run("linmix", "dcnv2", 2, a, t, i) | {"precision": "bf16-mixed"}
             for a, t, i in [(0.829, 500, 80), (0.827, 420, 30)]]
    runs += [_run("fuxictr", "dcnv2", 2, a, 200, 50) for a in (0.831, 0.829, 0.830)]
    full, mixed = bench.summarise(runs, {})
    assert (full["precision"], mixed["precision"]) == ("32-true", "bf16-mixed")
    assert full["linmix"]["n"] == 1 and mixed["linmix"]["n"] == 2 and full["fuxictr"] == mixed["fuxictr"]
    assert full["train_ratio"] == pytest.approx(1.5) and mixed["train_ratio"] == pytest.approx(2.3)
    assert mixed["auc_gap"] == pytest.approx(-0.002) and mixed["pass"]["train"] and not full["pass"]["train"]
    for row in (full, mixed):  # inference (the float32 serving path): the median of all three linmix runs
        assert row["linmix"]["infer_rows_per_s"] == 80 and row["linmix"]["n_serving"] == 3
    text = "\n".join(bench.markdown([full, mixed], {"args": {"rows": 10, "d_model": 16, "batch": 4, "lr": 1e-3,
                                                               "epochs": 1, "patience": 2}, "cpu": "cpu",
                                                      "load_start": [0], "load_end": [0], "command": "c"}))
    assert "| DCNV2 bf16-mixed | 2 |" in text and "| DCNV2 | 2 |" in text


def test_gemm_share_is_rows_times_flops_over_the_measured_rate():
    assert bench.gemm_pct(30_000, 2e6, 100.0) == pytest.approx(60.0)


def test_fuxictr_feature_columns_follow_the_linmix_schema():
    cols = _load("fuxictr_runner").feature_cols({"fields": [{"name": "c0"}, {"name": "c1", "type": "categorical"},
                                                            {"name": "n0", "type": "numeric", "numeric": "bucket"}]})
    assert cols[0]["name"] == ["c0", "c1"] and cols[0]["dtype"] == "str"
    assert cols[1]["name"] == ["n0"] and cols[1]["preprocess"] == "convert_to_bucket" and cols[1]["fill_na"] < 0


FUXI = os.environ.get("FUXICTR_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not FUXI or not Path(FUXI).is_file(), reason="no FuxiCTR venv ($FUXICTR_PYTHON)")
def test_quick_side_by_side_runs_both_libraries(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "fuxictr.py"), "--quick", "--fuxictr-python", FUXI,
                        "--models", "dcnv2", "--work", str(tmp_path / "w"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "ctr_fuxictr.json").read_text())["rows"]
    assert rows[0]["pass"]["params"] and 0.5 < rows[0]["fuxictr"]["auc"] < 1

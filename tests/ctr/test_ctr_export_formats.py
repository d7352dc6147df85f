"""CTR export in three formats (TorchScript, torch.export, ONNX Runtime) equals eager at two batch sizes, for FCN and
the baselines (the featurizer and the README's serving snippet: tests/ctr/test_ctr_cli.py)."""

from __future__ import annotations

from pathlib import Path

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

"""torch.export (.pt2) and ONNX (dynamo exporter, run by ONNX Runtime) beside TorchScript: the shared API, the
export-only code paths against the eager ones, and every app's network at two input sizes (max abs diff <= 1e-5)."""

from __future__ import annotations

import argparse

import pytest
import torch

from linmix.shared import MIXERS, MixerStack
from linmix.shared.argtypes import chosen_formats, export_format_list
from linmix.shared.errors import UserError
from linmix.shared.export import FORMATS, export_formats, format_paths, load_runner, parse_formats
from linmix.shared.export_program import load_onnx, load_program
from linmix.shared.ssd import ssd_chunked, ssd_padded

TOL = 1e-5


def test_format_selection_and_paths(tmp_path):
    assert parse_formats(None) == FORMATS == ("torchscript", "export", "onnx")
    assert parse_formats(["onnx,torchscript"]) == ("torchscript", "onnx")
    assert chosen_formats([("export",), ("onnx", "export")]) == ("export", "onnx")
    with pytest.raises(UserError, match="unknown format tflite"):
        parse_formats("onnx,tflite")
    with pytest.raises(argparse.ArgumentTypeError):
        export_format_list(",")
    p = format_paths(tmp_path / "m.pt", FORMATS)
    assert [q.name for q in p.values()] == ["m.pt", "m.pt2", "m.onnx"]
    assert format_paths(tmp_path / "m.ts", ["torchscript"])["torchscript"].name == "m.ts"
    assert format_paths(tmp_path / "m.onnx", FORMATS)["torchscript"].name == "m.pt"


@pytest.mark.parametrize("length", [1, 5, 63, 64, 65, 200])
def test_ssd_padded_equals_the_segmented_scan(length):
    """The export path (one padded segment, gathers) equals the eager one (segments of 32, chunks of 16)."""
    g = torch.Generator().manual_seed(length)
    b, h, p, n = 2, 4, 3, 5
    x = torch.randn(b, length, h, p, generator=g)
    dt = torch.rand(b, length, h, generator=g) * 0.5
    A = -torch.rand(b, h, generator=g) - 0.1
    Bm, Cm = torch.randn(b, length, 2, n, generator=g), torch.randn(b, length, 2, n, generator=g)
    s0 = torch.randn(b, h, p, n, generator=g)
    y0, st0 = ssd_chunked(x, dt, A, Bm, Cm, chunk_size=16, segment_len=32, initial_state=s0)
    y1, st1 = ssd_padded(x, dt, A, Bm, Cm, chunk_size=16, initial_state=s0)
    torch.testing.assert_close(y1, y0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st1, st0, atol=1e-5, rtol=1e-5)


def test_conv_tasnet_padding_formula_unchanged():
    """The right padding is written with a modulo (provably >= 0 for torch.export): the old ceil-division value."""
    for stride in (4, 8, 32):
        for t in range(1, 200):
            n_frames = (t + stride - 1) // stride + 1
            assert stride + (-t) % stride == (n_frames + 1) * stride - t - stride


def _mixer_check(kind, tmp_path, formats):
    torch.manual_seed(0)
    cfg = {"segment_len": 16} if kind in ("mamba2", "bimamba2") else None
    net = MixerStack(16, 1, mixer=kind, n_heads=2, d_state=8, chunk_size=8, backend="torch", mixer_cfg=cfg).eval()
    paths = format_paths(tmp_path / f"{kind}.pt", formats)
    res = export_formats(net, paths, {"mixer": kind}, [(torch.randn(2, 13, 16),), (torch.randn(3, 70, 16),)],
                         example=(torch.randn(2, 40, 16),), dims=[{0: "batch", 1: "length"}], input_names=["x"],
                         output_names=["y"])
    assert all(r["max_abs_diff"] <= TOL for r in res), res
    return paths


@pytest.mark.slow
def test_mamba2_stack_program_and_onnx_keep_config_and_lengths(tmp_path):
    """Mamba2 with segments of 16 (eager: a loop over segments) against the exported one-segment program."""
    paths = _mixer_check("mamba2", tmp_path, ("export", "onnx"))
    assert load_program(paths["export"])[1] == {"mixer": "mamba2"}
    sess, cfg = load_onnx(paths["onnx"])
    assert cfg == {"mixer": "mamba2"} and sess.get_inputs()[0].name == "x"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file
    x = torch.randn(1, 1, 16)  # batch 1, length 1: below the example's sizes
    net_out = load_runner(paths["onnx"], "onnx")(x)[0]
    assert net_out.shape == (1, 1, 16)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in MIXERS if k != "mamba2"])
def test_every_mixer_exports_with_dynamic_length(kind, tmp_path):
    _mixer_check(kind, tmp_path, ("export", "onnx"))


@pytest.mark.slow
def test_ehr_scorer_all_formats_two_lengths(tmp_path):
    from linmix.apps.ehr.export import export_scorer
    from linmix.apps.ehr.model import EHRMamba, EHRMambaConfig, EHRMambaScorer

    torch.manual_seed(0)
    cfg = EHRMambaConfig(vocab_size=50, d_model=32, n_layers=2, d_state=16, dropout=0.0, d_time=8, max_visits=16)
    scorer = EHRMambaScorer(EHRMamba(cfg), [3, 4]).eval()
    res = export_scorer(scorer, tmp_path / "ehr.pt", {"tasks": ["a", "b"]}, lengths=(24, 150))
    assert [r["format"] for r in res] == list(FORMATS) and all(r["max_abs_diff"] <= TOL for r in res), res
    assert load_program(tmp_path / "ehr.pt2")[1]["dynamic"] == {"batch": 0, "length": 1}


@pytest.mark.slow
@pytest.mark.parametrize("separator", ["tcn", "mamba_causal", "bimamba"])
def test_speech_separator_all_formats_two_lengths(separator, tmp_path):
    from linmix.apps.speech.export import export_separator_formats
    from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig

    torch.manual_seed(0)
    kw = dict(n_filters=32, bottleneck=8, hidden=16, skip=8, n_blocks=3, n_repeats=2)
    if separator != "tcn":
        kw.update(separator="mamba", causal=separator == "mamba_causal", d_model=16, n_layers=2, d_state=8)
    res = export_separator_formats(ConvTasNet(ConvTasNetConfig(**kw)).eval(), str(tmp_path / "s.pt"), 8000)
    assert all(r["max_abs_diff"] <= TOL for r in res), res
    assert load_onnx(tmp_path / "s.onnx")[1]["sample_rate"] == 8000


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["physgto", "mgn", "transolver"])
def test_physics_operator_all_formats_two_node_counts(arch, tmp_path):
    from linmix.apps.physics.config import PhysicsConfig
    from linmix.apps.physics.lit_module import build_net
    from linmix.apps.physics.operator import FieldOperator

    torch.manual_seed(0)
    cfg = PhysicsConfig(arch=arch, n_in=1, n_out=1, n_globals=1, transient=False, d_model=32, n_layers=2, n_heads=4,
                        n_slots=8, d_hidden=32, n_freq=3, dropout=0.0)
    net = FieldOperator(build_net(cfg), cfg=cfg).eval()

    def mesh(n, seed):
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(n, 2, generator=g), torch.randn(n, 2, generator=g), torch.randint(0, 3, (n,), generator=g),
                torch.randint(0, n, (2, 4 * n), generator=g))
    res = export_formats(net, format_paths(tmp_path / "op.pt", FORMATS), {"arch": arch}, [mesh(37, 1), mesh(120, 2)],
                         example=mesh(60, 0), dims=[{0: "nodes"}, {0: "nodes"}, {0: "nodes"}, {1: "edges"}],
                         input_names=["pos", "feats", "node_type", "edge_index"], output_names=["fields"])
    assert all(r["max_abs_diff"] <= TOL for r in res), res


@pytest.mark.slow
def test_lm_all_formats(tmp_path):
    from linmix.apps.lm.model import MixerLM, MixerLMConfig
    from linmix.apps.lm.tools import export_net

    torch.manual_seed(0)
    net = MixerLM(MixerLMConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_state=8)).eval()
    res = export_net(net, tmp_path / "lm.pt", {"app": "lm"})
    assert all(r["max_abs_diff"] <= TOL for r in res), res

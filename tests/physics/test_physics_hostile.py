"""Hostile-input catalogue for the physics tools: every bad sample file, flag or checkpoint is refused before a model
runs, with one message naming the file, the array and what is expected (exit status 2, no traceback), and nothing is
written or changed. Tiny hand-made meshes (6 or 8 nodes) and an untrained tiny checkpoint keep each case fast."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_samples import (  # the helpers beside this file
    ARRAY_CASES,
    FILE_CASES,
    ROOT,
    _arrays,
    _file_case,
    _save_ckpt,
    _set,
    _sha,
    _write,
)

from linmix.apps.physics.cli import main
from linmix.apps.physics.data import PhysicsDataModule
from linmix.apps.physics.pde.sample_io import SampleError, load_sample
from linmix.apps.physics.pde.synth import synthesize
from linmix.shared.errors import UserError


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {"darcy": _save_ckpt(root / "darcy.ckpt", "darcy"),
            "darcy_nan": _save_ckpt(root / "nan.ckpt", "darcy", True),
            "heat_nan": _save_ckpt(root / "heat_nan.ckpt", "heat", True)}


def _refused(capsys, argv: list, pattern: str) -> str:
    """Run the console entry point: exit status 2, one ``error:`` message matching ``pattern``, no traceback."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"linmix-physics {argv[0]}: error: " in err
    assert re.search(pattern, err), err
    assert "Traceback" not in err and "allow_pickle" not in err
    return err


def test_base_samples_are_accepted_unchanged(tmp_path, ckpts, capsys):
    for problem in ("darcy", "heat", "elasticity"):
        raw = _arrays(problem)
        d = load_sample(_write(tmp_path / f"{problem}.npz", raw))
        for k in ("pos", "cells", "node_type", "inputs", "globals", "fields"):
            np.testing.assert_array_equal(d[k], raw[k])
    raw = {**_arrays("darcy"), "cells": _arrays("darcy")["cells"].astype(np.float64),
           "pos": _arrays("darcy")["pos"].astype(np.float64)}  # integer-valued float cells (a MATLAB export) are fine
    d = load_sample(_write(tmp_path / "float_cells.npz", raw))
    assert d["cells"].dtype == np.int64 and d["pos"].dtype == np.float64
    np.testing.assert_array_equal(d["cells"], raw["cells"])
    np.testing.assert_array_equal(d["pos"], raw["pos"])
    out = tmp_path / "out"
    assert main(["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(tmp_path / "float_cells.npz"),
                 "--out", str(out)]) == 0
    assert json.loads((out / "rollout_metrics.json").read_text())["non_finite_from_step"] is None


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_bad_array_is_refused_by_rollout(case, tmp_path, ckpts, capsys):
    problem, mutate, pattern = ARRAY_CASES[case]
    path = _write(tmp_path / f"{case}.npz", mutate(_arrays(problem)))
    before = _sha(path)
    with pytest.raises(SampleError, match=pattern):
        load_sample(path)
    out = tmp_path / "out"
    err = _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(path), "--out", str(out)],
                   pattern)
    assert str(path) in err  # the message names the file
    assert _sha(path) == before and not out.exists()  # nothing changed, nothing written


@pytest.mark.parametrize("kind", sorted(FILE_CASES))
def test_file_that_is_no_npz_sample_is_refused(kind, tmp_path, ckpts, capsys):
    path = tmp_path / "missing.npz" if kind == "missing" else _file_case(kind, tmp_path)
    before = _sha(path)
    out = tmp_path / "out"
    err = _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(path), "--out", str(out)],
                   FILE_CASES[kind])
    assert str(path) in err and "allow_pickle=True" not in err
    assert _sha(path) == before and not out.exists()


def test_sample_of_another_problem_names_both_channel_lists(tmp_path, ckpts, capsys):
    path = _write(tmp_path / "plate.npz", _arrays("elasticity"))
    pattern = (r"plate\.npz: checkpoint was trained on 'darcy' \(channels \('u',\)\) but the sample is 'elasticity' "
               r"\(channels \('u_x', 'u_y', 'von_mises'\)\)")
    _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(path), "--out", str(tmp_path / "o")],
             pattern)
    other = _write(tmp_path / "plate2.npz", _arrays("elasticity", nx=4))
    pt = tmp_path / "op.pt"
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(pt), "--sample", str(path),
                      "--sample", str(other)], pattern)
    assert not (tmp_path / "o").exists() and not pt.exists()


@pytest.mark.parametrize("which,step", [("darcy_nan", 0), ("heat_nan", 1)])
def test_non_finite_prediction_is_an_error(which, step, tmp_path, ckpts, capsys):
    problem = which.split("_")[0]
    sample = _write(tmp_path / "s.npz", _arrays(problem))
    out = tmp_path / "out"
    _refused(capsys, ["rollout", "--ckpt", str(ckpts[which]), "--sample", str(sample), "--out", str(out)],
             rf"the prediction of .* on .*s\.npz is NaN/inf from step {step} on \(\d+ of 6 nodes\): the checkpoint "
             r"diverged .*wrote only .*rollout_metrics\.json")
    metrics = json.loads((out / "rollout_metrics.json").read_text())  # strict JSON: NaN written as null
    assert metrics["non_finite_from_step"] == step and metrics["rel_l2"] is None
    assert sorted(p.name for p in out.iterdir()) == ["rollout_metrics.json"]  # no XDMF / PNG of a broken prediction


def test_export_refuses_non_finite_model_and_single_mesh(tmp_path, ckpts, capsys):
    a = _write(tmp_path / "a.npz", _arrays("darcy", nx=3))
    b = _write(tmp_path / "b.npz", _arrays("darcy", nx=4))
    pt = tmp_path / "op.pt"
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy_nan"]), "--out", str(pt), "--sample", str(a),
                      "--sample", str(b)], r"prediction on .*a\.npz holds 6 NaN/inf values .*nothing exported")
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(pt), "--sample", str(a)],
             r"needs two meshes of different sizes, got 1 sample\(s\) with node counts \[6\]")
    _refused(capsys, ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(tmp_path), "--sample", str(a),
                      "--sample", str(b)], r"--out .* is a folder")
    assert not pt.exists()
    ok = ["export", "--ckpt", str(ckpts["darcy"]), "--out", str(pt), "--sample", str(a), "--sample", str(b),
          "--format", "torchscript"]
    assert main(ok) == 0 and pt.is_file()  # the same two samples with a finite checkpoint export fine


SYNTH = ["synth", "--problem", "darcy", "--samples", "2"]
ROLLOUT = ["rollout", "--ckpt", "x.ckpt", "--sample", "s.npz"]


@pytest.mark.parametrize("argv,pattern", [
    (["synth", "--problem", "darcy", "--samples", "-3"], r"argument --samples: must be an integer >= 1, got -3"),
    (["synth", "--problem", "darcy", "--samples", "0"], r"argument --samples: must be an integer >= 1, got 0"),
    (["synth", "--problem", "darcy", "--samples", "2.5"], r"argument --samples: must be an integer >= 1, got '2\.5'"),
    ([*SYNTH, "--h", "0"], r"argument --h: must be a finite number > 0, got 0"),
    ([*SYNTH, "--h", "-0.1"], r"argument --h: must be a finite number > 0"),
    ([*SYNTH, "--h", "nan"], r"argument --h: must be a finite number > 0"),
    ([*SYNTH, "--workers", "-1"], r"argument --workers: must be an integer >= 1"),
    ([*SYNTH, "--workers", "0"], r"argument --workers: must be an integer >= 1"),
    ([*SYNTH, "--seed", "-1"], r"argument --seed: must be an integer >= 0"),
    (["synth", "--problem", "heat", "--samples", "2", "--steps", "0"], r"argument --steps: must be an integer >= 1"),
    ([*ROLLOUT, "--steps", "-1"], r"argument --steps: must be an integer >= 1"),
    ([*ROLLOUT, "--steps", "0"], r"argument --steps: must be an integer >= 1"),
])
def test_numeric_flags_are_checked_at_parse_time(argv, pattern, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(pattern, err), err
    assert f"linmix-physics {argv[0]}: error: " in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("kwargs,pattern", [
    ({"n_samples": -3}, r"n_samples must be an integer >= 1, got -3"), ({"h": 0.0}, r"mesh size h must be .* got 0\.0"),
    ({"workers": -1}, r"workers must be an integer >= 1"), ({"seed": -2}, r"seed must be an integer >= 0"),
    ({"problem": "navier"}, r"unknown problem 'navier'")])
def test_synthesize_refuses_bad_arguments(kwargs, pattern, tmp_path):
    args = {"problem": "darcy", "n_samples": 2, "out": tmp_path / "out", **kwargs}
    with pytest.raises(UserError, match=pattern):
        synthesize(**args, progress=False)
    assert not (tmp_path / "out").exists()


def test_data_folder_keeps_bad_files_and_reports_each(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    good = [_write(folder / f"good_{i}.npz", _arrays("darcy", nx=3 + i)) for i in range(3)]
    bad = [_write(folder / f"bad_{c}.npz", ARRAY_CASES[c][1](_arrays(ARRAY_CASES[c][0])))
           for c in ("cells_fractional", "pos_complex", "fields_nan", "dt_nan", "channels_of_other_problem")]
    bad += [_file_case(k, folder) for k in ("pickle", "object_array", "text")]
    before = {p: _sha(p) for p in good + bad}
    dm = PhysicsDataModule(problem="darcy", data_dir=str(folder), batch_size=2)
    with caplog.at_level(logging.WARNING, logger="linmix.physics.data"):
        dm.setup("fit")
    rejects = [json.loads(x) for x in (folder / "rejects_scan.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in rejects) == sorted(str(p) for p in bad)
    assert all(r["reason"].startswith(r["file"]) and "allow_pickle" not in r["reason"] for r in rejects)
    assert f"found {len(good) + len(bad)} sample files, using 3, skipped {len(bad)} as unusable (listed in" \
        in caplog.text
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 3
    assert {p: _sha(p) for p in good + bad} == before  # nothing changed or deleted
    item = {d.name: d for d in dm.train_set.items + dm.val_set.items + dm.test_set.items}["good_0"]
    np.testing.assert_array_equal(item.fields.numpy(), _arrays("darcy", nx=3)["fields"])
    # a read-only data folder: the bad files are still skipped and counted, the log says the list was not written
    import linmix.apps.physics.data as data_mod

    def no_write(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data_mod.tempfile, "mkstemp", no_write)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="linmix.physics.data"):
        PhysicsDataModule(problem="darcy", data_dir=str(folder), batch_size=2).setup("fit")
    assert "skipped 8 as unusable (list not written: " in caplog.text and "Permission denied" in caplog.text


def test_data_folder_without_usable_samples_is_a_user_error(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "a.npz", _set("node_type", 1, 9)(_arrays("darcy")))
    pattern = r"no usable darcy samples: 1 \*\.npz found, 1 rejected \(listed in .*\); first: .*a\.npz: node_type values"
    with pytest.raises(UserError, match=pattern):
        PhysicsDataModule(problem="darcy", data_dir=str(folder)).setup("fit")
    monkeypatch.chdir(tmp_path)  # the fit command, end to end: status 2, the bad file named, nothing written into it
    before = _sha(folder / "a.npz")
    _refused(capsys, ["fit", "-c", str(ROOT / "configs/physics/tiny.yaml"), "--data.data_dir", str(folder),
                      "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
                      "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")], pattern)
    assert _sha(folder / "a.npz") == before
    with pytest.raises(UserError, match=r"does not exist or is not a folder"):
        PhysicsDataModule(problem="darcy", data_dir=str(tmp_path / "nowhere")).setup("fit")


def test_rollout_out_that_is_a_file_is_refused(tmp_path, ckpts, capsys):
    sample = _write(tmp_path / "s.npz", _arrays("darcy"))
    out = tmp_path / "out.txt"
    out.write_text("keep")
    _refused(capsys, ["rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(sample), "--out", str(out)],
             r"--out .*out\.txt is an existing file")
    assert out.read_text() == "keep"


def test_console_script_prints_one_line_and_exits_2(tmp_path, ckpts):
    """The installed ``linmix-physics`` script itself (one process start, the other cases run in-process)."""
    script = Path(sys.executable).parent / "linmix-physics"
    if not script.exists():
        pytest.skip("console script not installed")
    evil = _file_case("pickle", tmp_path)
    res = subprocess.run([str(script), "rollout", "--ckpt", str(ckpts["darcy"]), "--sample", str(evil), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "allow_pickle" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"linmix-physics rollout: error: {evil} is a Python pickle")
    assert not (tmp_path / "o").exists()

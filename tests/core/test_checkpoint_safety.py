"""No console script runs code from a checkpoint a user hands it, and a wrong file gets one clear line.

The hostile checkpoint is a real Lightning-shaped ``.ckpt`` whose pickle holds an object with a ``__reduce__`` that
would write a marker file when unpickled with plain ``pickle``/``torch.load(weights_only=False)``. Every loader of
every console script (tools with ``--ckpt``, ``--model.pretrained``, and LightningCLI's ``--ckpt_path``) is fed it;
the marker must never appear and the command must exit 2 with a message, not a traceback.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from linmix.shared.checkpoint import read_checkpoint
from linmix.shared.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: harmless, but it is code run from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "CODE_RAN"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"net.w": torch.zeros(2)}, "hyper_parameters": {"x": _Payload(marker)},
                "pytorch-lightning_version": "2.6.0"}, path)
    # the payload is live: plain unpickling runs it (so the tests below would catch a weights_only=False loader)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def _main(app: str):
    return importlib.import_module(f"linmix.apps.{app}.cli").main


def _wav(tmp_path: Path) -> Path:
    p = tmp_path / "in.wav"
    sf.write(p, np.zeros(800, dtype=np.float32), 8000)
    return p


def _tool_cases(tmp_path: Path, ckpt: Path) -> list[tuple[str, list[str]]]:
    out = tmp_path / "out"
    meds = tmp_path / "meds"
    meds.mkdir(exist_ok=True)
    return [
        ("speech", ["separate", str(_wav(tmp_path)), "--ckpt", str(ckpt), "--out-dir", str(out / "sep")]),
        ("speech", ["export", "--ckpt", str(ckpt), "--out", str(out / "s.pt")]),
        ("ctr", ["export", "--ckpt", str(ckpt), "--out", str(out / "ctr")]),
        ("lm", ["export", "--ckpt", str(ckpt), "--out", str(out / "lm.pt")]),
        ("ehr", ["export", "--ckpt", str(ckpt), "--out", str(out / "ehr.pt")]),
        ("ehr", ["score", "--ckpt", str(ckpt), "--meds", str(meds), "--out", str(out / "scores.parquet")]),
        ("physics", ["export", "--ckpt", str(ckpt), "--out", str(out / "op.pt")]),
        ("physics", ["rollout", "--ckpt", str(ckpt), "--sample", str(tmp_path / "s.npz"), "--out", str(out / "r")]),
    ]


@pytest.mark.parametrize("case", range(8))
def test_tools_never_unpickle_code(case: int, evil, tmp_path: Path, capsys) -> None:
    ckpt, marker = evil
    app, argv = _tool_cases(tmp_path, ckpt)[case]
    rc = _main(app)(argv)
    err = capsys.readouterr().err
    assert not marker.exists(), f"linmix-{app} {argv[0]} ran code from the checkpoint"
    assert rc == 2, err
    assert "does not load" in err and "Traceback" not in err
    assert "weights_only" not in err and "allow_pickle" not in err  # never advise unsafe loading


@pytest.mark.parametrize("app", ["ctr", "ehr", "lm", "physics", "speech"])
def test_ckpt_path_never_unpickles_code(app: str, evil, tmp_path: Path, capsys, monkeypatch) -> None:
    ckpt, marker = evil
    monkeypatch.chdir(tmp_path)
    rc = _main(app)(["test", "-c", str(ROOT / f"configs/{app}/tiny.yaml"), f"--ckpt_path={ckpt}"])
    err = capsys.readouterr().err
    assert not marker.exists(), f"linmix-{app} test --ckpt_path ran code from the checkpoint"
    assert rc == 2 and "does not load" in err and "Traceback" not in err


def test_pretrained_never_unpickles_code(evil, tmp_path: Path) -> None:
    from linmix.apps.ehr.lit_module import EHRLitModule

    ckpt, marker = evil
    with pytest.raises(UserError, match="does not load"):
        EHRLitModule().load_pretrained(str(ckpt))
    assert not marker.exists()


def test_wrong_files_get_one_clear_line(tmp_path: Path) -> None:
    ts = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), ts)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    other = tmp_path / "ctr.ckpt"
    torch.save({"state_dict": {}, "linmix": {"app": "ctr"}}, other)
    cases = {ts: "is a TorchScript export", text: "is not a checkpoint", plain: "not a Lightning checkpoint",
             other: "is a linmix-ctr checkpoint", tmp_path / "missing.ckpt": "no such file", tmp_path: "is a folder"}
    for path, words in cases.items():
        with pytest.raises(UserError, match=words) as e:
            read_checkpoint(path, app="speech")
        assert "linmix-speech needs a Lightning checkpoint" in str(e.value)


def test_another_apps_checkpoint_named_by_console_script(tmp_path: Path, capsys) -> None:
    other = tmp_path / "ctr.ckpt"
    torch.save({"state_dict": {}, "linmix": {"app": "ctr"}}, other)
    rc = _main("speech")(["export", "--ckpt", str(other), "--out", str(tmp_path / "s.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a linmix-ctr checkpoint; linmix-speech needs" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(os.environ, "LINMIX_DEBUG", "0")
    argv = ["export", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "s.pt")]
    assert _main("speech")([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err

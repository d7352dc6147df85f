"""One error contract across console scripts: a user's mistake is one ``error:`` line and exit status 2, no
traceback (flags checked at parse time, data folders and checkpoints named)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("ehr", ["synth", "--patients", "-3", "--out", "{tmp}/x"], "--patients: must be an integer >= 1"),
    ("ehr", ["synth", "--patients", "ten", "--out", "{tmp}/x"], "must be an integer >= 1, got 'ten'"),
    ("ehr", ["ingest", "{tmp}/missing", "--out", "{tmp}/m"], "input not found"),
    ("ehr", ["ingest", "{tmp}", "--out", "{tmp}/m", "--workers", "-1"], "--workers: must be an integer >= 0"),
    ("ehr", ["fit", "-c", "{root}/configs/ehr/tiny.yaml", "--data.meds_dir", "{tmp}/none",
             "--trainer.default_root_dir", "{tmp}/runs"], "no MEDS shards under"),
    ("ctr", ["encode", "--format", "libfm", "--libfm-fields", "0", "--train", "{tmp}/a", "--out", "{tmp}/e"],
     "--libfm-fields: must be an integer >= 1"),
    ("ctr", ["encode", "--format", "criteo", "--min-count", "-1", "--train", "{tmp}/a", "--out", "{tmp}/e"],
     "--min-count: must be an integer >= 1"),
    ("ctr", ["synth", "--rows", "-5", "--out", "{tmp}/s"], "--rows: must be an integer >= 10"),
    ("ctr", ["synth", "--noise", "-1", "--out", "{tmp}/s"], "--noise: must be a finite number >= 0"),
    ("ctr", ["encode", "--format", "schema", "--schema", "{tmp}/missing.yaml", "--train", "{tmp}/a", "--out",
             "{tmp}/e"], "schema file"),
    ("physics", ["synth", "--problem", "darcy", "--samples", "0", "--out", "{tmp}/p"], "--samples: must be"),
    ("speech", ["export", "--ckpt", "{tmp}", "--out", "{tmp}/s.pt"], "is a folder"),
    ("lm", ["export", "--ckpt", "{tmp}/missing.ckpt", "--out", "{tmp}/l.pt"], "no such file"),
]


@pytest.mark.parametrize("app, argv, words", CASES, ids=[f"{c[0]}-{c[1][0]}-{i}" for i, c in enumerate(CASES)])
def test_user_error_is_one_line_and_exit_2(app, argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").write_text("1\t2\n")
    argv = [a.format(tmp=tmp_path, root=ROOT) for a in argv]
    main = importlib.import_module(f"linmix.apps.{app}.cli").main
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own exit for a flag it refuses
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert words in err and "Traceback" not in err, err

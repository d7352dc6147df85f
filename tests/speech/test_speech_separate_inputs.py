"""``linmix-speech separate`` never writes into its inputs, never lets one result overwrite another, reads every
audio format soundfile reads, and its summary equals what is on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from linmix.apps.speech.separate import main as separate_main

SR = 8000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from linmix.apps.speech.export import export_separator
    from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig

    net = ConvTasNet(ConvTasNetConfig(n_filters=16, bottleneck=8, hidden=16, skip=8, n_blocks=2, n_repeats=1))
    path = tmp_path_factory.mktemp("m") / "m.pt"
    export_separator(net, str(path), SR)
    return str(path)


def _audio(path, seed=0, fmt=None):
    x = np.random.default_rng(seed).normal(0, 0.1, 1600).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR, format=fmt)
    return path


def _exit_status(main, argv) -> int:
    """The console entry point's exit status (argparse exits itself for a flag it refuses)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _run(args, model, capsys):
    rc = separate_main([*args, "--ckpt", model, "--chunk-s", "0.2"])
    return rc, capsys.readouterr()


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_dir_in_an_input_folder_is_refused(tmp_path, model, capsys, where):
    inp = tmp_path / "in"
    _audio(inp / "a.wav")
    out = inp if where == "same" else inp / "sep"
    with pytest.raises(Exception) as e:
        separate_main([str(inp), "--ckpt", model, "--out-dir", str(out)])
    assert "inside the input folder" in str(e.value)
    assert sorted(p.name for p in inp.rglob("*")) == ["a.wav"]  # nothing written among the inputs


def test_same_stems_never_overwrite_each_other(tmp_path, model, capsys):
    a, b = _audio(tmp_path / "a" / "x.wav", 1), _audio(tmp_path / "b" / "x.wav", 2)
    c = _audio(tmp_path / "x.flac", 3)
    out = tmp_path / "out"
    rc, _ = _run([str(a), str(b), str(c), "--out-dir", str(out)], model, capsys)
    assert rc == 0
    summary = json.loads((out / "separate_summary.json").read_text())
    dests = list(summary["outputs"].values())
    assert len(set(dests)) == 3 and summary["written"] == 3
    firsts = [sf.read(f"{d}/s1.wav")[0] for d in dests]
    assert not np.allclose(firsts[0], firsts[1]) and not np.allclose(firsts[1], firsts[2])  # three results kept


def test_same_file_twice_is_separated_once_and_counted(tmp_path, model, capsys):
    a = _audio(tmp_path / "in" / "a.wav")
    out = tmp_path / "out"
    rc, cap = _run([str(a), str(tmp_path / "in"), str(a), "--out-dir", str(out)], model, capsys)
    summary = json.loads((out / "separate_summary.json").read_text())
    assert rc == 0 and (summary["read"], summary["written"], summary["duplicates"]) == (3, 1, 2)
    assert summary["read"] == summary["written"] + summary["rejected"] + summary["duplicates"]
    assert "duplicate" in cap.out


def test_folders_pick_up_every_soundfile_format_and_list_the_rest(tmp_path, model, capsys):
    inp = tmp_path / "in"
    _audio(inp / "a.wav")
    _audio(inp / "b.mp3", fmt="MP3")
    _audio(inp / "c.ogg", fmt="OGG")
    _audio(inp / "d.AIFF", fmt="AIFF")
    (inp / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    rc, _ = _run([str(inp), "--out-dir", str(out)], model, capsys)
    summary = json.loads((out / "separate_summary.json").read_text())
    assert rc == 0 and summary["written"] == 4 and summary["rejected"] == 0
    assert summary["skipped_not_audio"] == [str(inp / "notes.txt")]
    on_disk = sorted(p.parent.name for p in out.rglob("s1.wav"))
    assert len(on_disk) == summary["written"] == len(summary["outputs"])  # the summary is what is on disk


@pytest.mark.parametrize("flags, words", [(["--chunk-s", "0"], "--chunk-s: must be a finite number > 0, got 0"),
                                          (["--chunk-s", "-1"], "--chunk-s: must be a finite number > 0, got -1"),
                                          (["--chunk-s", "1", "--overlap-s", "0.6"], "at most half of --chunk-s"),
                                          (["--overlap-s", "-0.5"], "--overlap-s must be"),
                                          (["--threads", "-2"], "--threads: must be an integer >= 0, got -2")])
def test_numeric_flags_checked_before_any_work(tmp_path, model, capsys, flags, words):
    from linmix.apps.speech.cli import main

    a = _audio(tmp_path / "a.wav")
    rc = _exit_status(main, ["separate", str(a), "--ckpt", model, "--out-dir", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _bad_inputs(tmp_path):
    """(path, words expected in its rejects.csv reason) for files a user could plausibly hand over."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "text.wav").write_text("RIFF but not really")
    (d / "zero.flac").write_bytes(b"")
    sf.write(d / "silent.wav", np.zeros(800, dtype=np.float32), SR)
    sf.write(d / "nan.wav", np.full(800, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    sf.write(d / "inf.wav", np.full(800, np.inf, dtype=np.float32), SR, subtype="FLOAT")
    sf.write(d / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    (d / "notes.mp3").write_text("an mp3 extension on a text file")
    return [(d / "text.wav", "not a readable audio file"), (d / "zero.flac", "not a readable audio file"),
            (d / "silent.wav", "all-silent"), (d / "nan.wav", "NaN or infinite"), (d / "inf.wav", "NaN or infinite"),
            (d / "empty.wav", "empty audio"), (d / "notes.mp3", "not a readable audio file"),
            (tmp_path / "missing.wav", "no such file")]


@pytest.mark.parametrize("case", range(8))
def test_each_bad_file_is_rejected_with_its_reason_and_counted(tmp_path, model, capsys, case):
    path, words = _bad_inputs(tmp_path)[case]
    good = _audio(tmp_path / "good.wav")
    out = tmp_path / "out"
    rc, _ = _run([str(good), str(path), "--out-dir", str(out)], model, capsys)
    summary = json.loads((out / "separate_summary.json").read_text())
    assert rc == 0 and (summary["read"], summary["written"], summary["rejected"]) == (2, 1, 1)
    rejects = (out / "rejects.csv").read_text()
    assert str(path) in rejects and words in rejects
    assert sorted(p.name for p in out.iterdir()) == ["good", "rejects.csv", "separate_summary.json"]


def test_only_bad_files_exit_nonzero_with_nothing_written(tmp_path, model, capsys):
    path, _ = _bad_inputs(tmp_path)[0]
    out = tmp_path / "out"
    rc, _ = _run([str(path), "--out-dir", str(out)], model, capsys)
    assert rc == 1 and json.loads((out / "separate_summary.json").read_text())["written"] == 0


def test_stereo_and_other_rates_come_back_at_the_input_rate_and_length(tmp_path, model, capsys):
    x = np.random.default_rng(0).normal(0, 0.1, (4410, 2)).astype(np.float32)
    sf.write(tmp_path / "st.wav", x, 44100, subtype="PCM_24")
    out = tmp_path / "out"
    rc, _ = _run([str(tmp_path / "st.wav"), "--out-dir", str(out)], model, capsys)
    y, sr = sf.read(out / "st" / "s1.wav")
    assert rc == 0 and sr == 44100 and len(y) == 4410


@pytest.mark.parametrize("flags, words", [(["--n-src", "1"], "--n-src: must be an integer >= 2, got 1"),
                                          (["--n-train", "-3"], "--n-train: must be an integer >= 0, got -3"),
                                          (["--workers", "0"], "--workers: must be an integer >= 1, got 0"),
                                          (["--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
                                          (["--sample-rates", "44100"], "--sample-rates: invalid choice: 44100")])
def test_synth_flags_checked_before_any_work(tmp_path, capsys, flags, words):
    from linmix.apps.speech.cli import main

    rc = _exit_status(main, ["synth", "--out", str(tmp_path / "corpus"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err and not (tmp_path / "corpus").exists()


def test_fit_on_a_folder_without_librimix_is_one_line(tmp_path, capsys):
    from linmix.apps.speech.cli import main

    root = Path(__file__).resolve().parents[2]
    rc = main(["fit", "-c", str(root / "configs/speech/convtasnet_libri2mix.yaml"), "--data.root",
               str(tmp_path / "nothing"), "--trainer.default_root_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "point data.root at the folder holding Libri2Mix" in err and "Traceback" not in err

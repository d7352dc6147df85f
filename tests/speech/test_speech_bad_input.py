"""Bad speech input: every bad input gives a clear message; a batch run skips, reports and counts bad files."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from linmix.apps.speech.audio import AudioError, read_audio
from linmix.apps.speech.separate import main as separate_main

SR = 8000


def _wav(path, x, sr=SR):
    sf.write(path, x, sr)
    return path


def _speechlike(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (
        0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(n)
    ).astype(np.float32)


def test_unreadable_and_non_audio_files(tmp_path):
    txt = tmp_path / "notes.wav"
    txt.write_text("this is not audio")
    with pytest.raises(AudioError, match="not a readable audio file"):
        read_audio(txt, SR)
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "missing.wav", SR)
    trunc = _wav(tmp_path / "trunc.wav", _speechlike(800))
    trunc.write_bytes(trunc.read_bytes()[:30])  # header cut short
    with pytest.raises(AudioError):
        read_audio(trunc, SR)


def test_empty_and_all_silent_audio(tmp_path):
    with pytest.raises(AudioError, match="empty audio"):
        read_audio(_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32)), SR)
    silent = _wav(tmp_path / "silent.wav", np.zeros(4000, dtype=np.float32))
    with pytest.raises(AudioError, match="all-silent"):
        read_audio(silent, SR)
    x, _ = read_audio(silent, SR, allow_silent=True)
    assert x.shape == (4000,)


def test_stereo_is_downmixed_and_logged(tmp_path, caplog):
    left, right = _speechlike(1000, 1), _speechlike(1000, 2)
    path = _wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1))
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        x, info = read_audio(path, SR)
    assert "2 channels downmixed to mono" in caplog.text and info.channels == 2
    np.testing.assert_allclose(x.numpy(), (left + right) / 2, atol=1e-4)


def test_other_sample_rate_is_resampled_and_logged(tmp_path, caplog):
    path = _wav(tmp_path / "sr16k.wav", _speechlike(16000), sr=16000)
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        x, info = read_audio(path, SR)
    assert "resampled 16000 Hz -> 8000 Hz" in caplog.text
    assert info.sample_rate == 16000 and x.shape == (8000,)


def test_clipped_input_is_flagged(tmp_path, caplog):
    x = np.clip(3 * _speechlike(4000), -1, 1)
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        _, info = read_audio(_wav(tmp_path / "clipped.wav", x), SR)
    assert any("clipped input" in n for n in info.notes) and "clipped input" in caplog.text


def test_nan_samples_rejected(tmp_path):
    x = _speechlike(1000)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        read_audio(_wav(tmp_path / "nan.wav", x.astype(np.float32)) if False else _float_wav(tmp_path, x), SR)


def _float_wav(tmp_path, x):
    p = tmp_path / "nan.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    return p


def test_batch_separate_skips_reports_and_counts_bad_files(tmp_path, caplog):
    from linmix.apps.speech.export import export_separator
    from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig

    net = ConvTasNet(ConvTasNetConfig(n_filters=16, bottleneck=8, hidden=16, skip=8, n_blocks=2, n_repeats=1))
    model = tmp_path / "m.pt"
    export_separator(net, str(model), SR)
    inp = tmp_path / "in"
    inp.mkdir()
    _wav(inp / "a_good.wav", _speechlike(3000))
    _wav(inp / "b_stereo44k.wav", np.stack([_speechlike(5000), _speechlike(5000, 3)], 1), sr=44100)
    (inp / "c_broken.wav").write_text("garbage")
    _wav(inp / "d_silent.wav", np.zeros(2000, dtype=np.float32))
    _wav(inp / "e_empty.wav", np.zeros(0, dtype=np.float32))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        rc = separate_main([str(inp), "--ckpt", str(model), "--out-dir", str(out), "--chunk-s", "0.2"])
    assert rc == 0
    summary = json.loads((out / "separate_summary.json").read_text())
    assert {k: summary[k] for k in ("read", "written", "rejected", "duplicates", "sample_rate", "n_src")} == {
        "read": 5, "written": 2, "rejected": 3, "duplicates": 0, "sample_rate": SR, "n_src": 2}
    rejects = (out / "rejects.csv").read_text()
    assert "c_broken.wav" in rejects and "all-silent" in rejects and "empty audio" in rejects
    y, sr = sf.read(out / "b_stereo44k" / "s1.wav")
    assert sr == 44100 and len(y) == 5000  # written back at the input's rate and length
    assert (out / "a_good" / "s2.wav").is_file()
    assert torch.isfinite(torch.as_tensor(y)).all()

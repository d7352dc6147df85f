"""Audio I/O: soundfile reading with checks, mono downmix, torchaudio resampling, atomic writing.

``torchaudio.load`` needs torchcodec + FFmpeg in torchaudio >= 2.9, so all file I/O goes through soundfile;
``torchaudio.functional.resample`` does the rate conversion.  Shapes: T samples, C channels.  torch and torchaudio are
imported by the functions that return tensors, so writing audio (``linmix-speech synth``) runs without them.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    import torch

log = logging.getLogger("linmix.speech")

SILENCE_PEAK = 1e-5  # peak below this (about -100 dBFS) counts as all-silent
CLIP_LEVEL = 0.999  # |x| at or above this is a clipped sample
CLIP_FRACTION = 1e-3  # warn when more than 0.1 % of samples are clipped


class AudioError(ValueError):
    """A file that cannot be used as audio input; the message says which file and why."""


@dataclass
class AudioInfo:
    """What ``read_audio`` did to a file: original rate/channels and the notes it logged."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    notes: list[str] = field(default_factory=list)


def resample(x: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """(..., T) at orig_sr -> (..., T') at new_sr (torchaudio windowed-sinc); identity when equal."""
    if orig_sr == new_sr:
        return x
    import torchaudio

    return torchaudio.functional.resample(x, orig_sr, new_sr)


def read_audio(
    path: Union[str, Path],
    sample_rate: int,
    *,
    allow_silent: bool = False,
    quiet: bool = False,
) -> tuple[torch.Tensor, AudioInfo]:
    """Read a file as float32 mono at ``sample_rate``: (T,) tensor and an ``AudioInfo``.

    Raises ``AudioError`` for missing, unreadable or non-audio files, empty audio and (unless ``allow_silent``)
    all-silent audio.  Stereo/multichannel input is averaged to mono, another rate is resampled, and clipping is
    detected; each of these is logged (``quiet`` turns the log lines off but they stay in ``info.notes``).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: not a readable audio file ({type(err).__name__}: {err})") from err
    info = AudioInfo(str(path), int(sr), int(data.shape[1]), int(data.shape[0]))
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")

    def note(msg: str) -> None:
        info.notes.append(msg)
        if not quiet:
            log.warning("%s: %s", path, msg)

    if data.shape[1] > 1:
        note(f"{data.shape[1]} channels downmixed to mono (channel mean)")
    mono = data.mean(axis=1)
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK and not allow_silent:
        raise AudioError(f"{path}: all-silent audio (peak {peak:.2e} < {SILENCE_PEAK:.0e})")
    clipped = float((np.abs(data) >= CLIP_LEVEL).mean())
    if clipped > CLIP_FRACTION:
        note(f"clipped input: {100 * clipped:.2f} % of samples at full scale; separation quality will suffer")
    x = torch.from_numpy(np.ascontiguousarray(mono))
    if sr != sample_rate:
        note(f"resampled {sr} Hz -> {sample_rate} Hz")
        x = resample(x, int(sr), sample_rate)
    return x, info


def write_audio(path: Union[str, Path], x: Union[torch.Tensor, np.ndarray], sample_rate: int) -> Path:
    """Write mono (T,) float audio as 16-bit PCM wav atomically (tmp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; never import it just to check
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix=f".{path.stem}.", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(x, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def speed_change(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` (T,) ``factor`` times faster by linear interpolation: ~T/factor samples; F0 and formants scale by
    ``factor`` together (speed perturbation of training sources).  factor 1 returns ``x`` unchanged."""
    if factor == 1.0 or len(x) < 2:
        return x
    t = np.arange(int(np.floor((len(x) - 1) / factor)) + 1) * factor
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def read_span(path: Path, sample_rate: int, start: int, n: int | None) -> torch.Tensor:
    """Mono samples [start, start+n) of ``path`` at ``sample_rate`` (T,) (whole file if n is None); a partial read when
    the file's rate is ``sample_rate`` (training's hot path: one open for the rate check, seek and read), else the
    whole file read, resampled and cut."""
    import torch

    if n is not None:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate == sample_rate:
                f.seek(min(start, f.frames))
                return torch.from_numpy(f.read(n, dtype="float32", always_2d=True).mean(axis=1))
    x, _ = read_audio(path, sample_rate, allow_silent=True, quiet=True)
    return x if n is None else x[start : start + n]


def read_perturbed(path: Path, sample_rate: int, start: int, n: int, factor: float) -> np.ndarray:
    """At most ``n`` samples (fewer at the file's end) of ``path`` from ``start``, played ``factor`` times faster
    (:func:`speed_change`): reads the ``ceil(n * factor) + 1`` samples that many output samples need."""
    need = int(np.ceil(n * factor)) + 1
    return speed_change(read_span(path, sample_rate, start, need).numpy(), factor)[:n]

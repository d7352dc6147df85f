"""``linmix-speech separate IN... --ckpt C | --model NAME --out-dir D``: separate files of any rate and length.

Long inputs are cut into overlapping chunks (``--chunk-s``, ``--overlap-s``); each chunk's sources are put in the
order of what is already written by the best permutation of their correlation on the overlap (asteroid's
``LambdaOverlapAdd(reorder_chunks=True)`` idea), then cross-faded with linear ramps.  Model memory is bounded by
the chunk length; each chunk's sources are first scaled to sum to that chunk's mixture (least squares), so
their levels agree across chunks; the file itself is held in memory once (S+1 float32 copies: 10 min at 8 kHz = 58 MB).
Loudness: SI-SNR training leaves the scale free, so the sources are scaled by the least-squares gains that make
their sum best match the mixture (mixture consistency), then lowered together if they would clip.
Outputs: ``D/<stem>/s1.wav ... sS.wav`` (16-bit, at the input's rate), ``--plot`` ``D/<stem>/spectrogram.png``,
``D/separate_summary.json`` (read = written + rejected) and ``D/rejects.csv`` for files that could not be used.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from linmix.shared.argtypes import at_least, positive_float
from linmix.shared.errors import UserError

from .audio import AudioError, read_audio, resample, write_audio

if TYPE_CHECKING:  # torch loads when a file is separated, not for --help
    import torch

log = logging.getLogger("linmix.speech")
AUDIO_EXT = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".w64",
             ".rf64", ".wv", ".voc", ".sd2", ".mat", ".pvf", ".xi", ".htk", ".sds", ".avr", ".nist", ".sph", ".ircam",
             ".sf", ".paf", ".svx", ".mpc2k")
Net = Callable[["torch.Tensor"], "torch.Tensor"]


def load_separator(path: str) -> tuple[Net, int, int]:
    """A Lightning checkpoint (.ckpt) or an exported TorchScript file -> (net (B, T) -> (B, S, T), sample rate, S)."""
    path = str(path)
    if path.endswith(".ckpt"):
        from linmix.shared.checkpoint import load_lit_checkpoint

        from .lit_module import SpeechLitModule

        lit, ckpt = load_lit_checkpoint(SpeechLitModule, path, app="speech")
        sr = int(ckpt.get("datamodule_hyper_parameters", {}).get("sample_rate", 8000))
        net = lit.net.eval()
        return net, sr, net.n_src
    from linmix.shared.export import load_torchscript

    net, config = load_torchscript(path)
    net.eval()
    return net, int(config.get("sample_rate", 8000)), int(config["n_src"])


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (S, T), b (S, T) -> (S, S) normalised correlation, [i, j] = corr(a_i, b_j)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    num = a @ b.T
    return num / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1).unsqueeze(0) + 1e-8)


def separate_long(net: Net, x: torch.Tensor, n_src: int, chunk: int, overlap: int) -> torch.Tensor:
    """x (T,) -> (S, T) by chunked overlap-add with consistent source order across chunks."""
    import torch

    with torch.inference_mode():
        return _separate_long(net, x, n_src, chunk, overlap)


def _separate_long(net: Net, x: torch.Tensor, n_src: int, chunk: int, overlap: int) -> torch.Tensor:
    import torch

    from .losses import best_permutation

    t = x.shape[-1]
    if t <= chunk:
        return net(x.unsqueeze(0))[0]
    overlap = min(overlap, chunk // 2)
    hop = chunk - overlap
    starts = list(range(0, t - chunk, hop)) + [t - chunk]
    out = torch.zeros(n_src, t)
    weight = torch.zeros(t)
    for i, s in enumerate(starts):
        seg = x[s : s + chunk]
        # Per-chunk mixture consistency: SI-SNR leaves each chunk's scale free; fit it to the chunk's mixture.
        est = match_loudness(net(seg.unsqueeze(0))[0], seg, peak=None)  # (S, chunk)
        w = torch.ones(chunk)
        if i > 0:
            prev_end = starts[i - 1] + chunk
            ov = prev_end - s  # overlap with what is written (>= overlap for the last, end-aligned chunk)
            done = out[:, s:prev_end] / weight[s:prev_end].clamp_min(1e-8)
            perm = best_permutation(_correlation(est[:, :ov], done).abs().unsqueeze(0))[0]
            est = est[perm]
            ramp = min(ov, chunk)
            w[:ramp] = torch.linspace(0, 1, ramp + 2)[1:-1]
        if i < len(starts) - 1:
            ramp = min(overlap, chunk)
            w[chunk - ramp :] = torch.minimum(w[chunk - ramp :], torch.linspace(1, 0, ramp + 2)[1:-1])
        out[:, s : s + chunk] += est * w
        weight[s : s + chunk] += w
    return out / weight.clamp_min(1e-8)


def match_loudness(est: torch.Tensor, mix: torch.Tensor, peak: Optional[float] = 0.99) -> torch.Tensor:
    """est (S, T), mix (T,) -> est scaled by the least-squares gains g minimising ||mix - sum_i g_i est_i||.

    With ``peak``, the result is lowered as a whole if its peak would exceed it (no clipping on write).
    """
    import torch

    e = est.double()
    gram = e @ e.T + 1e-9 * torch.eye(e.shape[0], dtype=e.dtype)
    g = torch.linalg.solve(gram, e @ mix.double())
    out = (e * g.unsqueeze(-1)).float()
    top = float(out.abs().max())
    return out * (peak / top) if peak is not None and top > peak else out


def plot_spectrograms(mix: torch.Tensor, est: torch.Tensor, sr: int, path: Path) -> Path:
    """PNG of the mixture and source spectrograms (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("mixture", mix)] + [(f"source {i + 1}", est[i]) for i in range(est.shape[0])]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.2 * len(rows)), sharex=True)
    for ax, (name, sig) in zip(axes, rows, strict=True):
        ax.specgram(sig.numpy(), NFFT=256, Fs=sr, noverlap=192, cmap="magma", vmin=-120)
        ax.set_ylabel(f"{name}\nHz")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def separate_file(
    net: Net,
    path: Path,
    dest: Path,
    sr: int,
    n_src: int,
    chunk_s: float = 8.0,
    overlap_s: float = 1.0,
    plot: bool = False,
    keep_model_rate: bool = False,
) -> list[Path]:
    """Separate one file into ``dest/s{i}.wav``; raises AudioError for unusable input."""
    import torch

    x, info = read_audio(path, sr)
    est = separate_long(net, x, n_src, int(chunk_s * sr), int(overlap_s * sr))
    est = match_loudness(est, x)
    out_sr = sr if keep_model_rate else info.sample_rate
    written = []
    for i in range(n_src):
        y = est[i]
        if out_sr != sr:  # back to the input's rate and exact length
            y = resample(y, sr, out_sr)[: info.frames]
            y = torch.nn.functional.pad(y, (0, info.frames - y.shape[-1]))
        written.append(write_audio(dest / f"s{i + 1}.wav", y, out_sr))
    if plot:
        written.append(plot_spectrograms(x, est, sr, dest / "spectrogram.png"))
    return written


def _audio_extensions() -> set[str]:
    """Every extension soundfile (libsndfile) reads here, plus the usual aliases."""
    import soundfile as sf

    return set(AUDIO_EXT) | {"." + k.lower() for k in sf.available_formats() if k != "RAW"}  # RAW needs a header


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[Path], list[Path]]:
    """Files as given, folders expanded to their audio files (sorted) -> (files, duplicates, skipped).

    A file named twice (directly or through a folder) is kept once and listed in ``duplicates``; files in folders
    whose extension no audio reader here knows are listed in ``skipped``.
    """
    exts = _audio_extensions()
    files: list[Path] = []
    seen: set[Path] = set()
    dups: list[Path] = []
    skipped: list[Path] = []
    for item in inputs:
        p = Path(item)
        found = [p]
        if p.is_dir():
            entries = sorted(f for f in p.rglob("*") if f.is_file())
            found = [f for f in entries if f.suffix.lower() in exts]
            skipped += [f for f in entries if f.suffix.lower() not in exts]
        for f in found:
            key = f.resolve()
            if key in seen:
                dups.append(f)
            else:
                seen.add(key)
                files.append(f)
    return files, dups, skipped


def output_folders(files: list[Path], out_dir: Path) -> list[Path]:
    """One distinct output folder per input: ``<stem>``, or ``<stem>.<ext>`` / ``<stem>-<k>`` when stems collide."""
    stems = [f.stem for f in files]
    names: list[str] = []
    for f in files:
        name = f.stem if stems.count(f.stem) == 1 else f"{f.stem}{f.suffix}"
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return [out_dir / n for n in names]


def check_out_dir(out_dir: Path, inputs: list[str]) -> None:
    """Refuse an output folder that is, or is inside, an input folder (outputs could overwrite or be re-read)."""
    out = out_dir.resolve()
    for item in inputs:
        p = Path(item).resolve()
        if p.is_dir() and (out == p or p in out.parents):
            raise UserError(f"--out-dir {out_dir} is inside the input folder {item}: the separated files would be "
                            "written among the inputs; choose a folder outside it")
        if out == p:
            raise UserError(f"--out-dir {out_dir} is an input file")


def _check_args(a: argparse.Namespace) -> None:
    """The overlap's bound depends on the chunk (single-flag bounds are checked by argparse)."""
    if a.overlap_s is None:
        a.overlap_s = min(1.0, a.chunk_s / 2)
    elif not 0 <= a.overlap_s <= a.chunk_s / 2:
        raise UserError(f"--overlap-s must be >= 0 and at most half of --chunk-s ({a.chunk_s}), got {a.overlap_s}")


def main(argv: Optional[list[str]] = None) -> int:
    """separate audio files into one wav per source (chunked overlap-add, any rate/length)"""
    p = argparse.ArgumentParser(prog="linmix-speech separate", description=__doc__.split("\n\n")[0])
    from linmix.shared.models import add_checkpoint_args, checkpoint_path

    p.add_argument("inputs", nargs="+", help="audio files or folders")
    add_checkpoint_args(p, ckpt_help="Lightning .ckpt or TorchScript file from `linmix-speech export`")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--chunk-s", type=positive_float, default=8.0, help="chunk length in seconds (bounds model memory)")
    p.add_argument("--overlap-s", type=float, default=None,
                   help="overlap between chunks in seconds, at most half a chunk (default: 1 s or half a chunk)")
    p.add_argument("--plot", action="store_true", help="write a spectrogram PNG per file")
    p.add_argument(
        "--keep-model-rate", action="store_true", help="write at the model's rate, not the input's"
    )
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0: torch default)")
    a = p.parse_args(argv)
    _check_args(a)
    out_dir = Path(a.out_dir)
    check_out_dir(out_dir, a.inputs)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    net, sr, n_src = load_separator(checkpoint_path(a, app="speech"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files, dups, skipped = expand_inputs(a.inputs)
    for f in skipped:
        log.warning("skipped %s: not an audio format this reader knows", f)
    ok, rejects, outputs = [], [], {}
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("separating", total=len(files))
        for f, dest in zip(files, output_folders(files, out_dir)):
            try:
                separate_file(net, f, dest, sr, n_src, a.chunk_s, a.overlap_s, a.plot, a.keep_model_rate)
                ok.append(str(f))
                outputs[str(f)] = str(dest)
            except AudioError as err:
                log.error("skipped: %s", err)
                rejects.append((str(f), str(err)))
            bar.advance(task)
    tmp = out_dir / "rejects.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        w.writerows(rejects)
    os.replace(tmp, out_dir / "rejects.csv")
    summary = {
        "read": len(files) + len(dups),
        "written": len(ok),
        "rejected": len(rejects),
        "duplicates": len(dups),
        "skipped_not_audio": [str(f) for f in skipped],
        "outputs": outputs,
        "sample_rate": sr,
        "n_src": n_src,
    }
    tmp = out_dir / "separate_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out_dir / "separate_summary.json")
    extra = f", {len(dups)} duplicate(s) separated once" if dups else ""
    extra += f", {len(skipped)} non-audio file(s) skipped" if skipped else ""
    print(f"separated {len(ok)} of {len(files)} files into {out_dir} ({len(rejects)} rejected, see rejects.csv"
          f"{extra})")
    return 0 if ok or not files else 1

"""Why is test SI-SNRi below dev?  Per-utterance scores of trained checkpoints broken down by voice and mixture traits.

    .venv/bin/python benchmarks/speech/voice_gap.py --ckpt NAME=PATH [NAME=PATH ...] [--splits dev test heldout]
        [--data-root data/speech/synth] [--heldout-root /tmp/speech4/heldout] [--out benchmarks/results]

For each checkpoint (weights + hyper_parameters, e.g. the speech recipe's ``model.ckpt``) and split, every mixture is
separated whole (batch of one, CPU) and scored with uPIT SI-SNRi (mixture and per source; the app's ``si_snr``).
Traits per mixture, read from the mixture ID (``<accent>-<variant>-p<pitch>-r<rate>-<index>`` per speaker) and the
source files: the two espeak-ng variants and accents, same-variant / same-accent / same-gender pair, measured F0 of
each source (median of voiced 40 ms frames, autocorrelation 60-400 Hz) and their distance in semitones, level
difference (RMS, dB), overlap (fraction of 20 ms frames where both sources are within 35 dB of their loudest
frame), length (s).  ``heldout`` is a split of fresh mixtures of TRAINING voices (new pairs, sentences, levels),
generated once by ``linmix.apps.speech.synth.generate`` with subset name "heldout" (its own RNG stream, same speaker
pools): the seen-voice reference.  Writes ``<prefix>.md`` (tables; default prefix
``speech_voice_gap``) and per-utterance ``<prefix>_<name>_<split>.csv``.  Nothing is tuned here; it only reads.
"""

import argparse
import csv
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from linmix.apps.speech.data import read_librimix_csv  # noqa: E402
from linmix.apps.speech.losses import pairwise_si_snr, si_snr  # noqa: E402
from linmix.apps.speech.model import ConvTasNet, ConvTasNetConfig  # noqa: E402

SPK = re.compile(r"^(?P<acc>.+)-(?P<var>[^-]+)-p(?P<p>\d+)-r(?P<r>\d+)-(?P<i>\d{5})$")
# espeak-ng voices/!v files that declare "gender female" (the rest are male or undeclared, male-sounding)
FEMALE = {"f1", "f2", "f3", "f4", "f5", "Annie", "anika", "belinda", "grandma", "linda", "steph"}


def f0_median(x: np.ndarray, sr: int) -> float:
    """Median F0 (Hz) of voiced 40 ms frames (hop 10 ms; normalised autocorrelation peak > 0.5 in 60-400 Hz)."""
    n, hop = int(0.04 * sr), int(0.01 * sr)
    if len(x) < n:
        return float("nan")
    fr = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    fr = fr - fr.mean(1, keepdims=True)
    e = (fr**2).sum(1)
    fr = fr[e > e.max() * 0.01]
    spec = np.fft.rfft(fr, 2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]
    ac = ac / (ac[:, :1] + 1e-12)
    lo, hi = int(sr / 400), int(sr / 60)
    lag = ac[:, lo:hi].argmax(1) + lo
    peak = ac[np.arange(len(ac)), lag]
    f0 = sr / lag[peak > 0.5]
    return float(np.median(f0)) if f0.size else float("nan")


def traits(mid: str, srcs: np.ndarray, sr: int) -> dict:
    a, b = (SPK.match(s).groupdict() for s in mid.split("_"))
    f0 = [f0_median(s, sr) for s in srcs]
    rms = [np.sqrt(np.mean(s**2)) + 1e-12 for s in srcs]
    hop = int(0.02 * sr)
    act = []
    for s in srcs:
        e = np.add.reduceat(s**2, np.arange(0, len(s), hop))
        act.append(e > e.max() * 10 ** (-3.5))
    return {
        "var1": a["var"], "var2": b["var"], "acc1": a["acc"], "acc2": b["acc"],
        "same_var": int(a["var"] == b["var"]), "same_acc": int(a["acc"] == b["acc"]),
        "genders": "".join(sorted("F" if v in FEMALE else "M" for v in (a["var"], b["var"]))),
        "f0_1": f0[0], "f0_2": f0[1], "f0_dist_st": abs(12 * np.log2(f0[0] / f0[1])),
        "level_diff_db": abs(20 * np.log10(rms[0] / rms[1])),
        "overlap": float(np.mean(act[0] & act[1])), "length_s": srcs.shape[1] / sr,
    }  # fmt: skip


def load_net(path: str) -> ConvTasNet:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ck["hyper_parameters"]["net"]
    net = ConvTasNet(cfg if isinstance(cfg, ConvTasNetConfig) else ConvTasNetConfig(**cfg))
    net.load_state_dict({k[4:]: v for k, v in ck["state_dict"].items() if k.startswith("net.")})
    return net.eval()


def score(net: ConvTasNet, recs, sr: int) -> list[dict]:
    import soundfile as sf

    rows = []
    for rec in recs:
        mix = sf.read(str(rec.mix_path), dtype="float32")[0]
        srcs = np.stack([sf.read(str(p), dtype="float32")[0] for p in rec.source_paths])
        t = min(len(mix), srcs.shape[1])
        mix, srcs = mix[:t], srcs[:, :t]
        with torch.inference_mode():
            est = net(torch.from_numpy(mix)[None])[0]
        ref = torch.from_numpy(srcs)
        pw = pairwise_si_snr(est[None], ref[None])[0]  # (S_est, S_ref)
        best = max(((0, 1), (1, 0)), key=lambda p: float(pw[p[0], 0] + pw[p[1], 1]))
        per = [float(pw[best[k], k]) for k in range(2)]
        base = si_snr(torch.from_numpy(mix)[None].expand(2, -1), ref).tolist()
        row = {"mixture_ID": rec.mixture_id, "si_snri": float(np.mean(per) - np.mean(base)),
               "si_snri_1": per[0] - base[0], "si_snri_2": per[1] - base[1], **traits(rec.mixture_id, srcs, sr)}  # fmt: skip
        rows.append(row)
    return rows


def bucket_table(rows_by: dict[str, list[dict]], key, labels) -> list[str]:
    """Markdown rows: mean SI-SNRi (n) per bucket for each split."""
    out = []
    for lab, pred in labels:
        cells = []
        for rows in rows_by.values():
            v = [r["si_snri"] for r in rows if pred(r[key] if isinstance(key, str) else key(r))]
            cells.append(f"{np.mean(v):.2f} ({len(v)})" if v else "-")
        out.append(f"| {lab} | " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", required=True, help="NAME=PATH of a checkpoint with hyper_parameters")
    p.add_argument("--splits", nargs="+", default=["dev", "test", "heldout"])
    p.add_argument("--data-root", default="data/speech/synth")
    p.add_argument("--heldout-root", default="/tmp/speech4/heldout")
    p.add_argument("--n-heldout", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--prefix", default="speech_voice_gap", help="names of the outputs: <prefix>.md, <prefix>_<name>_<split>.csv")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sr = 8000
    meta = {}
    for split in a.splits:
        root = Path(a.heldout_root if split == "heldout" else a.data_root)
        csv_path = root / "Libri2Mix/wav8k/min/metadata" / f"mixture_{split}_mix_clean.csv"
        if split == "heldout" and not csv_path.is_file():
            from linmix.apps.speech.synth import generate

            t = time.time()
            generate(str(root), 2, {"heldout": a.n_heldout}, n_speakers=160, seed=0, progress=False)
            print(f"heldout: {a.n_heldout} train-voice mixtures generated in {time.time() - t:.0f} s", flush=True)
        meta[split] = read_librimix_csv(csv_path, 2)[0]
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    md = ["# Dev/test gap of the speech models: per-utterance SI-SNRi by voice and mixture traits", "",
          f"`.venv/bin/python benchmarks/speech/voice_gap.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
          "(CPU, 1 thread; whole utterances; uPIT SI-SNRi as `linmix-speech test`). Cells: mean SI-SNRi dB (n).",
          ""]  # fmt: skip
    for spec in a.ckpt:
        name, path = spec.split("=", 1)
        net = load_net(path)
        by: dict[str, list[dict]] = {}
        for split in a.splits:
            t = time.time()
            by[split] = score(net, meta[split], sr)
            print(f"{name} {split}: {np.mean([r['si_snri'] for r in by[split]]):.2f} dB over {len(by[split])} "
                  f"({time.time() - t:.0f} s)", flush=True)  # fmt: skip
            with open(out / f"{a.prefix}_{name}_{split}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(by[split][0]))
                w.writeheader()
                w.writerows(by[split])
        hdr = "| | " + " | ".join(a.splits) + " |"
        md += [f"## {name} (`{path}`)", "", hdr, "|---" * (len(a.splits) + 1) + "|"]
        md += bucket_table(by, "si_snri", [("all", lambda v: True)])
        md += bucket_table(by, "same_var", [("same variant", lambda v: v == 1), ("different variants", lambda v: v == 0)])
        md += bucket_table(by, "same_acc", [("same accent", lambda v: v == 1), ("different accents", lambda v: v == 0)])
        md += bucket_table(by, "genders", [(f"genders {g}", lambda v, g=g: v == g) for g in ("FF", "FM", "MM")])
        md += bucket_table(by, "f0_dist_st", [("F0 distance < 2 st", lambda v: v < 2), ("2-5 st", lambda v: 2 <= v < 5),
                                               ("5-10 st", lambda v: 5 <= v < 10), (">= 10 st", lambda v: v >= 10)])  # fmt: skip
        md += bucket_table(by, "level_diff_db", [("level diff < 2 dB", lambda v: v < 2), ("2-4 dB", lambda v: 2 <= v < 4),
                                                  (">= 4 dB", lambda v: v >= 4)])  # fmt: skip
        md += bucket_table(by, "overlap", [("overlap < 0.85", lambda v: v < 0.85), ("overlap >= 0.85", lambda v: v >= 0.85)])
        md += bucket_table(by, "length_s", [("length < 2.5 s", lambda v: v < 2.5), ("2.5-3.5 s", lambda v: 2.5 <= v < 3.5),
                                             (">= 3.5 s", lambda v: v >= 3.5)])  # fmt: skip
        md += ["", "Per voice variant (per-source SI-SNRi, dB, n sources; F0 median Hz):", ""]
        for split, rows in by.items():
            per: dict[str, list] = {}
            for r in rows:
                for k in (1, 2):
                    per.setdefault(r[f"var{k}"], []).append((r[f"si_snri_{k}"], r[f"f0_{k}"]))
            cells = [f"{v} {np.mean([x[0] for x in s]):.2f} ({len(s)}, {np.nanmedian([x[1] for x in s]):.0f} Hz)"
                     for v, s in sorted(per.items(), key=lambda kv: np.mean([x[0] for x in kv[1]]))]  # fmt: skip
            md.append(f"- {split}: " + "; ".join(cells[:12]) + ("; ..." if len(cells) > 12 else ""))
        md += ["", "Trait means per split (same_var, same_acc, F0 distance st, level diff dB, overlap, length s):", ""]
        for split, rows in by.items():
            m = [np.nanmean([r[k] for r in rows]) for k in ("same_var", "same_acc", "f0_dist_st", "level_diff_db",
                                                               "overlap", "length_s")]  # fmt: skip
            md.append(f"- {split}: " + ", ".join(f"{x:.3f}" for x in m))
        md.append("")
    (out / f"{a.prefix}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``linmix-speech synth``: an espeak-ng speech corpus mixed LibriMix-style into the LibriMix folder layout.

Writes ``<out>/Libri{S}Mix/wav{8k,16k}/{min,max}/{train-100,dev,test}/{mix_clean,mix_both,s1..sS,noise}/<ID>.wav`` and
``<out>/Libri{S}Mix/wav{..}/{mode}/metadata/mixture_{subset}_{mix_clean|mix_both}.csv`` with LibriMix's columns
(``mixture_ID, mixture_path, source_1_path, ..., [noise_path,] length``; paths relative to ``wav{..}/{mode}``,
length in samples), so ``SpeechDataModule`` reads it exactly like LibriMix.

Speakers are espeak-ng voice+variant pairs with their own pitch, pitch range and rate; the pool is split by variant
(timbre) so dev and test speakers are unseen voices (as LibriMix's dev/test speakers are unseen in training).
Mixing follows LibriMix: each source gets a random level (RMS, U(-33, -25) dBFS, RMS standing in for LUFS), noise
U(-38, -30) dBFS; "min" truncates to the shortest source, "max" zero-pads to the longest; a mixture that would clip
is scaled down to a 0.9 peak (sources alike).
"""

import argparse
import csv
import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from linmix.shared.argtypes import at_least

from .audio import write_audio
from .espeak import BASE_VOICES, VARIANTS, EspeakSynth

SUBSETS = ("train-100", "dev", "test")
WORDS = (
    "the a one two three red green blue small large quick slow happy quiet bright dark old new warm cold "
    "cat dog bird fish horse river mountain city garden window table kitchen morning evening winter summer "
    "teacher doctor farmer captain student driver singer painter sailor builder "
    "runs walks jumps sings reads writes opens closes finds keeps brings carries watches follows builds paints "
    "over under near behind across through around before after during without with from into "
    "today tomorrow yesterday always never often sometimes slowly quickly carefully loudly softly "
    "letter music story answer question number picture paper money water coffee bread apple orange "
    "seven eight nine ten twenty hundred thousand first second last every many few several"
).split()


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: espeak-ng voice ("lang+variant"), base pitch 0-99, pitch range, rate (words/min)."""

    voice: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def speaker_id(self) -> str:
        return f"{self.voice.replace('+', '-')}-p{self.pitch}-r{self.rate}"


def make_speakers(rng: np.random.Generator, n: int, variants: Sequence[str] = VARIANTS) -> list[Speaker]:
    """n distinct speakers over voices x ``variants`` with random pitch (20-80), range (20-90), rate (130-210)."""
    combos = [f"{v}+{var}" for v in BASE_VOICES for var in variants]
    rng.shuffle(combos)
    return [
        Speaker(
            combos[i % len(combos)],
            int(rng.integers(20, 81)),
            int(rng.integers(20, 91)),
            int(rng.integers(130, 211)),
        )
        for i in range(n)
    ]


def speaker_pools(rng: np.random.Generator, n_speakers: int, n_src: int) -> dict[str, list[Speaker]]:
    """Disjoint speaker pools: 1/8 of the speakers each for dev and test, the rest for train-100.

    The split is by espeak-ng variant (the voice timbre: formants, breathiness, tone), not only by speaker: dev and
    test speakers use variants never heard in training (1/8 of the variants each), so "unseen speakers" means unseen
    voices, not a seen voice at another pitch or accent.
    """
    variants = list(VARIANTS)
    rng.shuffle(variants)
    n_var = max(1, len(variants) // 8)
    n_hold = max(n_src, n_speakers // 8)
    return {
        "dev": make_speakers(rng, n_hold, variants[:n_var]),
        "test": make_speakers(rng, n_hold, variants[n_var : 2 * n_var]),
        "train-100": make_speakers(rng, max(n_src, n_speakers - 2 * n_hold), variants[2 * n_var :]),
    }


def random_sentence(rng: np.random.Generator, n_min: int = 6, n_max: int = 14) -> str:
    """A random word sequence (no grammar needed for separation training)."""
    n = int(rng.integers(n_min, n_max + 1))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=n))


def speak(speaker: Speaker, text: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Synthesise one utterance at ``sample_rate``: per-utterance jitter of pitch (+-5) and rate (+-10 %); (T,)."""
    synth = EspeakSynth.get()
    pitch = int(np.clip(speaker.pitch + rng.integers(-5, 6), 0, 99))
    rate = int(speaker.rate * rng.uniform(0.9, 1.1))
    wav = synth.synth(text, speaker.voice, pitch=pitch, rate=rate, pitch_range=speaker.pitch_range)
    nz = np.flatnonzero(np.abs(wav) > 1e-3)  # trim leading/trailing silence
    if nz.size:
        wav = wav[max(nz[0] - 200, 0) : nz[-1] + 200]
    # Polyphase resampling (scipy): 10x faster than torchaudio's sinc kernel for 22050 -> 8000 (= 160/441).
    # Imported here, not at the top: `synth --help` answers without scipy.signal.
    from scipy.signal import resample_poly

    g = math.gcd(synth.sample_rate, sample_rate)
    return resample_poly(wav, sample_rate // g, synth.sample_rate // g).astype(np.float32)


def make_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Slowly modulated low-passed noise (a stand-in for WHAM! ambience), unit RMS, (T,)."""
    from scipy.signal import lfilter

    white = rng.standard_normal(n).astype(np.float32)
    alpha = float(np.exp(-2 * np.pi * rng.uniform(300, 3000) / sample_rate))  # one-pole low-pass cut-off
    out = lfilter([1 - alpha], [1, -alpha], white).astype(np.float32)
    env = 1.0 + 0.5 * np.sin(
        2 * np.pi * rng.uniform(0.1, 1.0) * np.arange(n) / sample_rate + rng.uniform(0, 6.3)
    )
    out = out * env
    return (out / (np.sqrt(np.mean(out**2)) + 1e-9)).astype(np.float32)


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * (10 ** (dbfs / 20) / (np.sqrt(np.mean(x**2)) + 1e-9))


def mix(
    sources: Sequence[np.ndarray], rng: np.random.Generator, mode: str, noise: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """LibriMix-style mix -> (sources (S x (T,)), noise (T,), mix_clean (T,), mix_both (T,))."""
    n = min(len(s) for s in sources) if mode == "min" else max(len(s) for s in sources)
    srcs = []
    for s in sources:
        s = set_level(s, rng.uniform(-33, -25))
        srcs.append(s[:n] if len(s) >= n else np.pad(s, (0, n - len(s))))
    nz = set_level(noise[:n], rng.uniform(-38, -30))
    clean = np.sum(srcs, axis=0)
    both = clean + nz
    peak = max(np.abs(both).max(), np.abs(clean).max(), max(np.abs(s).max() for s in srcs), np.abs(nz).max())
    if peak > 0.9:  # LibriMix renormalises to avoid clipping; one gain for all parts keeps the mixture exact
        g = 0.9 / peak
        srcs, nz, clean, both = [s * g for s in srcs], nz * g, clean * g, both * g
    return srcs, nz, clean, both


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _render(job: tuple) -> list[tuple[int, str, list]]:
    """Synthesise, mix and write one planned mixture; returns its metadata rows as (rate, mode, type, row).

    Uses only the planned values and RNGs seeded from ``jitter_seed``, so the output does not depend on which process
    renders it or in which order (sequential and parallel generation write identical files).
    """
    root, subset, spk, texts, mix_id, jitter_seed, sample_rates, modes, types = job
    n_src = len(spk)
    rows = []
    for sr in sample_rates:
        utt_rng = np.random.default_rng(jitter_seed)  # same speech at every rate
        utts = [speak(s, t, sr, utt_rng) for s, t in zip(spk, texts, strict=True)]
        noise = make_noise(utt_rng, max(len(u) for u in utts), sr)
        for mode in modes:
            level_rng = np.random.default_rng([jitter_seed, 1])
            srcs, nz, clean, both = mix(utts, level_rng, mode, noise)
            sdir = root / f"wav{sr // 1000}k" / mode / subset
            rel = [f"{subset}/s{k + 1}/{mix_id}.wav" for k in range(n_src)]
            for k, s in enumerate(srcs):
                write_audio(sdir / f"s{k + 1}" / f"{mix_id}.wav", s, sr)
            for typ in types:
                if typ == "mix_clean":
                    write_audio(sdir / "mix_clean" / f"{mix_id}.wav", clean, sr)
                    row = [mix_id, f"{subset}/mix_clean/{mix_id}.wav", *rel, len(clean)]
                elif typ == "mix_both":
                    write_audio(sdir / "noise" / f"{mix_id}.wav", nz, sr)
                    write_audio(sdir / "mix_both" / f"{mix_id}.wav", both, sr)
                    row = [mix_id, f"{subset}/mix_both/{mix_id}.wav", *rel, f"{subset}/noise/{mix_id}.wav", len(both)]
                else:
                    raise ValueError(f"unknown mixture type {typ!r} (mix_clean, mix_both)")
                rows.append((sr, mode, typ, row))
    return rows


def generate(
    out: str,
    n_src: int = 2,
    counts: dict[str, int] = None,
    sample_rates: Sequence[int] = (8000,),
    modes: Sequence[str] = ("min",),
    types: Sequence[str] = ("mix_clean",),
    n_speakers: int = 120,
    seed: int = 0,
    progress: bool = True,
    workers: int = 1,
    deadline: Optional[float] = None,
) -> dict[str, int]:
    """Generate the corpus; returns mixtures written per subset.  Metadata CSVs are written last (completion mark).

    ``workers`` > 1 renders mixtures in that many processes (identical output: every mixture is planned in order from
    the subset's RNG first).  ``deadline`` (a ``time.time()`` value) stops a subset early: its CSV then lists the
    first mixtures finished in plan order, a prefix of what an unlimited run writes (the count is returned).
    """
    counts = counts or {"train-100": 200, "dev": 40, "test": 40}
    rng = np.random.default_rng(seed)
    pools = speaker_pools(rng, n_speakers, n_src)  # dev/test voices unseen in training
    root = Path(out) / f"Libri{n_src}Mix"
    written: dict[str, int] = {}
    from rich.progress import Progress

    pool_ctx = None
    if workers > 1:
        import multiprocessing as mp

        pool_ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers)
    total = sum(counts.values())
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"synth Libri{n_src}Mix", total=total)
            for subset, count in counts.items():
                pool = pools.get(subset, pools["train-100"])
                srng = np.random.default_rng([seed, SUBSETS.index(subset) if subset in SUBSETS else 99])
                jobs = []
                for i in range(count):  # the plan: drawn in order from srng, as the sequential loop always did
                    spk = [pool[j] for j in srng.choice(len(pool), size=n_src, replace=False)]
                    texts = [random_sentence(srng) for _ in spk]
                    mix_id = "_".join(f"{s.speaker_id}-{i:05d}" for s in spk)
                    jitter_seed = int(srng.integers(2**31))
                    jobs.append((root, subset, spk, texts, mix_id, jitter_seed, sample_rates, modes, types))
                results = pool_ctx.imap(_render, jobs, chunksize=4) if pool_ctx else map(_render, jobs)
                rows: dict[tuple[int, str, str], list[list]] = {}
                done = 0
                for res in results:
                    for sr, mode, typ, row in res:
                        rows.setdefault((sr, mode, typ), []).append(row)
                    done += 1
                    bar.advance(task)
                    if deadline is not None and time.time() > deadline:
                        break
                for (sr, mode, typ), r in rows.items():
                    meta = root / f"wav{sr // 1000}k" / mode / "metadata"
                    meta.mkdir(parents=True, exist_ok=True)
                    header = ["mixture_ID", "mixture_path"] + [f"source_{k + 1}_path" for k in range(n_src)]
                    header += ["noise_path"] if typ == "mix_both" else []
                    _write_csv(meta / f"mixture_{subset}_{typ}.csv", header + ["length"], r)
                written[subset] = done
    finally:
        if pool_ctx is not None:
            pool_ctx.terminate()
            pool_ctx.join()
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="linmix-speech synth",
        description="Generate an espeak-ng two/three-speaker corpus in the LibriMix layout (no download).",
    )
    p.add_argument("--out", default="data/speech/synth", help="output root; Libri{S}Mix/ is created inside")
    p.add_argument("--n-src", type=at_least(2), default=2, help="speakers per mixture")
    p.add_argument("--n-train", type=at_least(0), default=1000, help="mixtures in train-100")
    p.add_argument("--n-dev", type=at_least(0), default=100)
    p.add_argument("--n-test", type=at_least(0), default=100)
    p.add_argument(
        "--n-speakers", type=at_least(2), default=160, help="speaker pool (1/8 each held out for dev and test)"
    )
    p.add_argument("--sample-rates", type=int, nargs="+", default=[8000], choices=[8000, 16000],
                   help="8000 and/or 16000 (LibriMix's rates)")
    p.add_argument("--modes", nargs="+", default=["min"], choices=["min", "max"])
    p.add_argument("--types", nargs="+", default=["mix_clean"], choices=["mix_clean", "mix_both"])
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--workers", type=at_least(1), default=1, help="processes rendering mixtures (same output for any value)")
    a = p.parse_args(argv)
    counts = {"train-100": a.n_train, "dev": a.n_dev, "test": a.n_test}
    done = generate(a.out, a.n_src, counts, a.sample_rates, a.modes, a.types, a.n_speakers, a.seed,
                    workers=a.workers)
    print(f"wrote {done} mixtures under {Path(a.out) / f'Libri{a.n_src}Mix'}")
    return 0

"""Dynamic mixing: fresh training mixtures drawn on the fly from the corpus's single-speaker sources.

SpeechBrain's and asteroid's wsj0-2mix/LibriMix recipes remix the training sources every epoch ("dynamic mixing")
instead of replaying the fixed list of pairs: each item is two (or S) utterances of different speakers, each a
random crop, each at a random level, summed.  On top of that this module can

- pair speakers of the same *group* (for the espeak-ng corpus: the voice variant, i.e. the timbre) with a chosen
  probability: the fixed synthetic training list pairs two speakers of the same variant in ~3 % of mixtures, the
  held-out splits (20 speakers over 5 variants) in ~20 %, and same-timbre pairs are the hardest case;
- speed-perturb each source (resampling by a factor U(1-s, 1+s), which shifts F0 and formants together, like a
  different vocal-tract length: more timbres than the corpus has).

Sources come from the training metadata (``source_k_path`` of every mixture; speakers parsed from the mixture ID,
see :func:`source_speakers`).  Randomness comes from torch's global RNG (one draw per item, with the item index, seeds
a numpy Generator), so ``seed_everything`` makes a run reproducible and every epoch (and every DataLoader worker, and
every DDP rank, whose indices differ) draws new mixtures.
Items: ``{"mix": (T,), "sources": (S, T), "id": str}`` with ``mix == sources.sum(0)`` exactly; amplitudes in
[-1, 1] (a mixture that would exceed a 0.9 peak is scaled down, sources alike).
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from .audio import read_perturbed
from .records import MixtureRecord

# linmix-speech synth speaker IDs: <accent>-<variant>-p<pitch>-r<rate>, followed by -<mixture index>
_SYNTH = re.compile(r"^(?P<spk>(?P<acc>.+)-(?P<var>[^-]+)-p\d+-r\d+)-\d{5}$")
# LibriSpeech utterance IDs (LibriMix): <speaker>-<chapter>-<utterance>
_LIBRI = re.compile(r"^(?P<spk>\d+)-\d+-\d+$")


@dataclass(frozen=True)
class SourceRecord:
    """One single-speaker training utterance: file, speaker key, group key (synth: voice variant; else speaker)."""

    path: Path
    speaker: str
    group: str


def source_speakers(mixture_id: str, n_src: int) -> list[tuple[str, str]]:
    """(speaker, group) per source from a LibriMix-style mixture ID ``<utt1>_<utt2>[_...]``.

    synth IDs give speaker = accent-variant-pitch-rate and group = variant; LibriSpeech IDs give the speaker number
    for both; anything else (wsj0-2mix names, which hold levels too) falls back to one speaker per utterance.
    """
    parts = mixture_id.split("_")
    if len(parts) != n_src:
        return [(f"{mixture_id}#{k}", f"{mixture_id}#{k}") for k in range(n_src)]
    out = []
    for p in parts:
        m = _SYNTH.match(p)
        if m:
            out.append((m["spk"], m["var"]))
            continue
        m = _LIBRI.match(p)
        out.append((m["spk"], m["spk"]) if m else (p, p))
    return out


def sources_from_records(records: list[MixtureRecord]) -> list[SourceRecord]:
    """Every source file of the training mixtures with its speaker and group."""
    out = []
    for rec in records:
        for path, (spk, grp) in zip(rec.source_paths, source_speakers(rec.mixture_id, len(rec.source_paths)), strict=True):
            out.append(SourceRecord(Path(path), spk, grp))
    return out


class DynamicMixDataset(Dataset):
    """``epoch_size`` fresh mixtures per epoch from single-speaker ``sources`` (see the module docstring).

    Args:
        sources: the utterances to mix (files at ``sample_rate``; other rates are rejected).
        sample_rate: Hz.  segment: samples per item (T).  n_src: S speakers per mixture (all different).
        epoch_size: items per epoch (e.g. the number of fixed training mixtures, so epochs mean the same).
        same_group_p: probability that all S speakers share a group (voice variant); otherwise all groups differ.
            None: speakers drawn uniformly, whatever their groups (the natural rate of the pool).
        speed: speed perturbation half-width s: each source is resampled by U(1-s, 1+s) (0: off).
        level_db: (lo, hi) RMS level of each source in dBFS, uniform (LibriMix/synth: -33..-25).
    """

    def __init__(
        self,
        sources: list[SourceRecord],
        sample_rate: int,
        segment: int,
        n_src: int = 2,
        epoch_size: int = 1000,
        same_group_p: Optional[float] = None,
        speed: float = 0.0,
        level_db: tuple[float, float] = (-33.0, -25.0),
    ) -> None:
        by_spk: dict[str, list[SourceRecord]] = {}
        for s in sources:
            by_spk.setdefault(s.speaker, []).append(s)
        if len(by_spk) < n_src:
            raise ValueError(f"dynamic mixing needs >= {n_src} speakers, the training list has {len(by_spk)}")
        if same_group_p is not None and not 0.0 <= same_group_p <= 1.0:
            raise ValueError(f"same_group_p must be in [0, 1] or None, got {same_group_p}")
        if not 0.0 <= speed < 0.5:
            raise ValueError(f"speed perturbation half-width must be in [0, 0.5), got {speed}")
        self.speakers = sorted(by_spk)
        self.utts = [by_spk[s] for s in self.speakers]
        self.group_of = [self.utts[i][0].group for i in range(len(self.speakers))]
        groups: dict[str, list[int]] = {}
        for i, g in enumerate(self.group_of):
            groups.setdefault(g, []).append(i)
        self.groups = groups
        self.shared = [g for g, members in groups.items() if len(members) >= n_src]  # groups able to fill a mixture
        self.sample_rate, self.segment, self.n_src = sample_rate, segment, n_src
        self.epoch_size, self.same_group_p, self.speed, self.level_db = epoch_size, same_group_p, speed, level_db
        self._n_frames: dict[Path, int] = {}

    def __len__(self) -> int:
        return self.epoch_size

    def _pick_speakers(self, rng: np.random.Generator) -> list[int]:
        n = self.n_src
        p = self.same_group_p
        if p is None:
            return [int(i) for i in rng.choice(len(self.speakers), size=n, replace=False)]
        if self.shared and rng.random() < p:
            members = self.groups[self.shared[int(rng.integers(len(self.shared)))]]
            return [members[int(i)] for i in rng.choice(len(members), size=n, replace=False)]
        names = list(self.groups)
        if len(names) < n:  # cannot make an all-different-groups mixture: fall back to uniform speakers
            return [int(i) for i in rng.choice(len(self.speakers), size=n, replace=False)]
        gs = rng.choice(len(names), size=n, replace=False)
        return [self.groups[names[g]][int(rng.integers(len(self.groups[names[g]])))] for g in gs]

    def _frames(self, path: Path) -> int:
        """Samples in a source file: its header is read (and its rate checked) once per file and worker, so a crop
        opens its file once."""
        n = self._n_frames.get(path)
        if n is None:
            info = sf.info(str(path))
            if info.samplerate != self.sample_rate:
                raise ValueError(f"{path}: {info.samplerate} Hz, dynamic mixing expects {self.sample_rate} Hz files")
            n = self._n_frames[path] = info.frames
        return n

    def _crop(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        """A random crop of ``segment`` samples after speed perturbation; shorter files are placed at a random offset."""
        factor = rng.uniform(1 - self.speed, 1 + self.speed) if self.speed > 0 else 1.0
        start = int(rng.integers(0, max(self._frames(path) - int(np.ceil(self.segment * factor)) - 1, 0) + 1))
        x = read_perturbed(path, self.sample_rate, start, self.segment, factor)
        if len(x) < self.segment:
            off = int(rng.integers(0, self.segment - len(x) + 1))
            x = np.pad(x, (off, self.segment - len(x) - off))
        return x

    def __getitem__(self, i: int) -> dict[str, object]:
        # one draw of torch's RNG and the item index seed the item: DDP ranks share torch's seed but not indices
        # (linmix.shared.sharding), so each rank mixes its own items
        rng = np.random.default_rng([int(torch.randint(0, 2**62, (1,))), i])
        spk = self._pick_speakers(rng)
        srcs, names = [], []
        for s in spk:
            utt = self.utts[s][int(rng.integers(len(self.utts[s])))]
            x = self._crop(utt.path, rng)
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
            if rms > 0:
                x = x * (10 ** (rng.uniform(*self.level_db) / 20) / rms)
            srcs.append(x)
            names.append(f"{utt.path.parent.name}/{utt.path.stem}")
        sources = np.stack(srcs).astype(np.float32)
        peak = float(np.abs(sources.sum(0)).max(initial=0.0))
        peak = max(peak, float(np.abs(sources).max(initial=0.0)))
        if peak > 0.9:
            sources *= 0.9 / peak
        sources_t = torch.from_numpy(sources)
        return {"mix": sources_t.sum(0), "sources": sources_t, "id": "dm:" + "+".join(names)}

"""LibriMix / wsj0-2mix data: metadata and folder readers, datasets, and the LightningDataModule.

LibriMix: ``<root>/Libri{S}Mix/wav{8k,16k}/{min,max}/metadata/mixture_<subset>_mix_{clean,both}.csv`` with columns
``mixture_ID, mixture_path, source_1_path, ..., length`` (absolute paths in real LibriMix, relative to
``wav{..}/{mode}`` in ``linmix-speech synth`` output; absolute paths from another machine are re-rooted at their
``wav8k/min``-style suffix).  wsj0-2mix / WHAM!: ``<root>/{tr,cv,tt}/{mix|mix_clean,s1,s2[,s3]}/*.wav`` with ``root`` the
``.../2speakers/wav8k/min`` folder.  Training items are random fixed-length segments; evaluation items are whole
utterances (batch of one).  Items: ``{"mix": (T,), "sources": (S, T), "id": str}``.
"""

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytorch_lightning as pl
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from linmix.shared.errors import UserError
from linmix.shared.sharding import EvalShardSampler, eval_batch_size, shard_of, train_share

from .audio import AudioError, read_perturbed, read_span
from .records import MixtureRecord

log = logging.getLogger("linmix.speech")

WSJ_ALIASES = {"train-100": "tr", "train-360": "tr", "dev": "cv", "test": "tt"}


class DatasetError(UserError, ValueError):
    """A data folder or metadata file that cannot be read as the configured corpus (the message says what to fix)."""


@dataclass
class Reject:
    """A record set aside: where it came from and why."""

    where: str
    mixture_id: str
    path: str
    reason: str


def resolve_path(value: str, base: Path) -> Path:
    """A metadata path: relative to ``base``; absolute if it exists; else re-rooted at its ``wav*k/<mode>`` suffix."""
    p = Path(value)
    if not p.is_absolute():
        return base / p
    if p.exists():
        return p
    parts = p.parts
    for i, part in enumerate(parts[:-1]):
        if (
            part.startswith("wav")
            and part.endswith("k")
            and i + 1 < len(parts)
            and parts[i + 1] in ("min", "max")
        ):
            moved = base.joinpath(*parts[i + 2 :])
            if moved.exists():
                return moved
    return p


def read_librimix_csv(csv_path: Path, n_src: int) -> tuple[list[MixtureRecord], list[Reject]]:
    """Parse a LibriMix ``mixture_*.csv``; rows naming a missing file or lacking columns are rejected, not fatal."""
    base = csv_path.parent.parent  # wav8k/min
    records: list[MixtureRecord] = []
    rejects: list[Reject] = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = ["mixture_ID", "mixture_path"] + [f"source_{k + 1}_path" for k in range(n_src)]
        missing_cols = [c for c in need if c not in (reader.fieldnames or [])]
        if missing_cols:
            raise DatasetError(
                f"{csv_path}: missing columns {missing_cols} for {n_src} sources (has {reader.fieldnames})"
            )
        for line, row in enumerate(reader, start=2):
            where = f"{csv_path}:{line}"
            mid = row.get("mixture_ID") or f"line{line}"
            paths = (
                [resolve_path(row[c], base) for c in need[1:]] if all(row.get(c) for c in need[1:]) else None
            )
            if paths is None:
                rejects.append(Reject(where, mid, "", "empty path field"))
                continue
            gone = [p for p in paths if not p.is_file()]
            if gone:
                rejects.append(
                    Reject(where, mid, str(gone[0]), f"missing file ({len(gone)} of {len(paths)})")
                )
                continue
            try:
                length = int(float(row.get("length") or -1))
            except ValueError:
                length = -1
            records.append(MixtureRecord(mid, paths[0], paths[1:], length))
    return records, rejects


def scan_wsj0mix(split_dir: Path, n_src: int) -> tuple[list[MixtureRecord], list[Reject]]:
    """List a wsj0-mix / WHAM! split folder (``mix`` or ``mix_clean``, ``s1..sS``) matched by file name."""
    mix_dir = next((split_dir / d for d in ("mix", "mix_clean") if (split_dir / d).is_dir()), None)
    if mix_dir is None:
        raise DatasetError(
            f"{split_dir}: no mix/ or mix_clean/ folder (wsj0-2mix layout tr|cv|tt/mix, s1, s2)"
        )
    records, rejects = [], []
    for mix in sorted(mix_dir.glob("*.wav")):
        srcs = [split_dir / f"s{k + 1}" / mix.name for k in range(n_src)]
        gone = [p for p in srcs if not p.is_file()]
        if gone:
            rejects.append(Reject(str(mix), mix.stem, str(gone[0]), "missing source file"))
            continue
        records.append(MixtureRecord(mix.stem, mix, srcs))
    return records, rejects


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    """Quarantine list as CSV (where, mixture_ID, path, reason), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["where", "mixture_ID", "path", "reason"])
        w.writerows([[r.where, r.mixture_id, r.path, r.reason] for r in rejects])
    os.replace(tmp, path)


class MixtureDataset(Dataset):
    """Mixtures with their sources.  ``segment`` samples: random crops (zero-padded when shorter); None: whole files.

    A file that fails to read is logged, recorded in ``self.rejects`` and replaced by the next item.
    ``speed`` > 0 (training crops only): each source is speed-perturbed by its own factor U(1-speed, 1+speed) from the
    same start and the mixture is rebuilt as their sum (the fixed pairs, new timbres).
    """

    def __init__(
        self, records: list[MixtureRecord], sample_rate: int, segment: Optional[int] = None, speed: float = 0.0
    ):
        if not records:
            raise DatasetError("no usable mixtures (see the rejects file for why)")
        self.records = records
        self.sample_rate = sample_rate
        self.segment = segment
        self.speed = speed
        self.rejects: list[Reject] = []

    def __len__(self) -> int:
        return len(self.records)

    def _length(self, rec: MixtureRecord) -> int:
        info = sf.info(str(rec.mix_path))
        return int(info.frames * self.sample_rate / info.samplerate)

    def load(self, rec: MixtureRecord) -> dict[str, object]:
        n = self.segment
        start = 0
        if n is not None:
            length = rec.length if rec.length > 0 else self._length(rec)
            # torch's RNG: seeded per DataLoader worker and by seed_everything (a Python Random would repeat per worker)
            start = int(torch.randint(0, max(length - n, 0) + 1, (1,)))
        if n is not None and self.speed > 0:
            factors = (1 + self.speed * (2 * torch.rand(len(rec.source_paths)) - 1)).tolist()
            srcs = [torch.from_numpy(read_perturbed(p, self.sample_rate, start, n, f))
                    for p, f in zip(rec.source_paths, factors, strict=True)]  # fmt: skip
            srcs = [torch.nn.functional.pad(s[:n], (0, n - len(s[:n]))) for s in srcs]
            return {"mix": torch.stack(srcs).sum(0), "sources": torch.stack(srcs), "id": rec.mixture_id}
        mix = read_span(rec.mix_path, self.sample_rate, start, n)
        srcs = [read_span(p, self.sample_rate, start, n) for p in rec.source_paths]
        t = n if n is not None else min([len(mix)] + [len(s) for s in srcs])
        mix = torch.nn.functional.pad(mix[:t], (0, t - len(mix[:t])))
        sources = torch.stack([torch.nn.functional.pad(s[:t], (0, t - len(s[:t]))) for s in srcs])
        return {"mix": mix, "sources": sources, "id": rec.mixture_id}

    def __getitem__(self, i: int) -> dict[str, object]:
        for k in range(len(self.records)):
            rec = self.records[(i + k) % len(self.records)]
            try:
                return self.load(rec)
            except (AudioError, RuntimeError, sf.LibsndfileError) as err:
                log.error("skipping %s: %s", rec.mixture_id, err)
                self.rejects.append(Reject(str(rec.mix_path), rec.mixture_id, str(rec.mix_path), str(err)))
        raise RuntimeError("every mixture in the dataset failed to load")


class SpeechDataModule(pl.LightningDataModule):
    """LibriMix or wsj0-2mix separation data; by default an espeak-ng LibriMix-layout corpus generated on first use.

    Args:
        root: LibriMix: the folder holding ``Libri{S}Mix``; wsj0mix: the ``.../{2,3}speakers/wav8k/min`` folder.
        layout: "librimix" (metadata CSVs) or "wsj0mix" (tr/cv/tt folders).
        n_src: S speakers per mixture (linked to ``model.net.n_src``).
        sample_rate: Hz; selects ``wav8k``/``wav16k`` and files at other rates are resampled.
        mode: LibriMix "min"/"max".  task: "clean" (mix_clean) or "both" (speech + noise).
        segment_s: training crop in seconds; shorter mixtures are zero-padded (count logged) or dropped.
        limit_eval: evaluate only the first n utterances of dev/test (None: all).
        synthesize: generate the espeak-ng corpus under ``root`` in ``prepare_data`` when its metadata is absent.
        synth_n_*: mixtures per subset for that corpus.  rejects_dir: where rejected records are listed.
        dynamic_mixing: train on fresh mixtures of the training list's sources drawn every item
            (``linmix.apps.speech.dynamic_mix``; as many items per epoch as the list has mixtures) instead of its fixed pairs.
        dm_same_group_p: with dynamic mixing, probability that both speakers share a group (synth corpus: the voice
            variant); None: uniform speakers.  dm_speed: speed perturbation half-width (0.1: factors 0.9-1.1; 0: off).
        speed_perturb: the same for the fixed pairs (without dynamic mixing): each source of a training crop gets
            its own factor and the mixture is rebuilt as their sum.
    """

    def __init__(
        self,
        root: str = "data/speech/synth",
        layout: Literal["librimix", "wsj0mix"] = "librimix",
        n_src: int = 2,
        sample_rate: int = 8000,
        mode: Literal["min", "max"] = "min",
        task: Literal["clean", "both"] = "clean",
        train_subset: str = "train-100",
        valid_subset: str = "dev",
        test_subset: str = "test",
        segment_s: float = 4.0,
        short_policy: Literal["pad", "drop"] = "pad",
        batch_size: int = 4,
        num_workers: int = 0,
        limit_eval: Optional[int] = None,
        synthesize: bool = True,
        synth_n_train: int = 1000,
        synth_n_valid: int = 100,
        synth_n_test: int = 100,
        synth_n_speakers: int = 160,
        seed: int = 0,
        rejects_dir: Optional[str] = "runs/speech/rejects",
        dynamic_mixing: bool = False,
        dm_same_group_p: Optional[float] = None,
        dm_speed: float = 0.0,
        speed_perturb: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.n_src = n_src
        self.sample_rate = sample_rate
        self.datasets: dict[str, MixtureDataset] = {}
        self.rejects: dict[str, list[Reject]] = {}

    @property
    def base_dir(self) -> Path:
        if self.hparams.layout == "wsj0mix":
            return self.root
        return self.root / f"Libri{self.n_src}Mix" / f"wav{self.sample_rate // 1000}k" / self.hparams.mode

    def csv_path(self, subset: str) -> Path:
        return self.base_dir / "metadata" / f"mixture_{subset}_mix_{self.hparams.task}.csv"

    def prepare_data(self) -> None:
        h = self.hparams
        if h.layout != "librimix" or not h.synthesize:
            return
        subsets = (h.train_subset, h.valid_subset, h.test_subset)
        if all(self.csv_path(s).is_file() for s in subsets):
            return
        from .synth import generate

        log.info("generating the espeak-ng corpus under %s", self.root)
        generate(
            str(self.root), self.n_src, {h.train_subset: h.synth_n_train, h.valid_subset: h.synth_n_valid,
                                         h.test_subset: h.synth_n_test},  # fmt: skip
            sample_rates=(self.sample_rate,), modes=(h.mode,), types=(f"mix_{h.task}",),
            n_speakers=h.synth_n_speakers, seed=h.seed,
        )  # fmt: skip

    def records(self, subset: str) -> list[MixtureRecord]:
        """Usable records of a subset; rejects are logged with a count and written to ``rejects_dir``."""
        h = self.hparams
        if h.layout == "wsj0mix":
            recs, rejects = scan_wsj0mix(self.root / WSJ_ALIASES.get(subset, subset), self.n_src)
        else:
            path = self.csv_path(subset)
            if not path.is_file():
                raise DatasetError(
                    f"{path} not found: point data.root at the folder holding Libri{self.n_src}Mix "
                    f"(or set data.synthesize=true for the synthetic corpus)"
                )
            recs, rejects = read_librimix_csv(path, self.n_src)
        if rejects:
            log.warning("%s: %d of %d mixtures rejected (first: %s: %s)", subset, len(rejects),
                        len(rejects) + len(recs), rejects[0].where, rejects[0].reason)  # fmt: skip
            if h.rejects_dir:
                write_rejects(Path(h.rejects_dir) / f"rejects_{subset}.csv", rejects)
        self.rejects[subset] = rejects
        return recs

    def setup(self, stage: Optional[str] = None) -> None:
        h = self.hparams
        segment = int(h.segment_s * self.sample_rate)
        if stage in (None, "fit") and "train" not in self.datasets:
            recs = self.records(h.train_subset)
            short = [r for r in recs if 0 < r.length < segment]
            if short:
                verb = "dropped" if h.short_policy == "drop" else "zero-padded"
                log.warning("%d of %d training mixtures are shorter than the %.2f s segment: %s",
                            len(short), len(recs), h.segment_s, verb)  # fmt: skip
                if h.short_policy == "drop":
                    recs = [r for r in recs if not 0 < r.length < segment]
            if h.dynamic_mixing:
                from .dynamic_mix import DynamicMixDataset, sources_from_records

                self.datasets["train"] = DynamicMixDataset(
                    sources_from_records(recs), self.sample_rate, segment, self.n_src, epoch_size=len(recs),
                    same_group_p=h.dm_same_group_p, speed=h.dm_speed,
                )  # fmt: skip
            else:
                self.datasets["train"] = MixtureDataset(recs, self.sample_rate, segment, speed=h.speed_perturb)
        for stage_name, subset in (("validate", h.valid_subset), ("test", h.test_subset)):
            key = "valid" if stage_name == "validate" else "test"
            wanted = stage in (None, stage_name) or (stage == "fit" and key == "valid")
            if wanted and key not in self.datasets:
                recs = self.records(subset)[: h.limit_eval] if h.limit_eval else self.records(subset)
                self.datasets[key] = MixtureDataset(recs, self.sample_rate, None)

    def _loader(self, key: str, train: bool) -> DataLoader:
        # each rank its own part (linmix.shared.sharding): training a disjoint equal share of every epoch's
        # permutation (seed + epoch), evaluation whole utterances dealt round robin, none repeated
        ds = self.datasets[key]
        rank, world = shard_of(self)
        if train:
            train_share(len(ds), world, "the training set")
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=self.hparams.seed,
                                         drop_last=True)  # fmt: skip
        else:
            eval_batch_size(len(ds), 1, world, f"the {key} set")  # refuses fewer utterances than ranks
            sampler = EvalShardSampler(len(ds), 1, num_replicas=world, rank=rank)
        bs = self.hparams.batch_size if train else 1  # whole utterances of varying length: batch of one
        return DataLoader(ds, batch_size=bs, sampler=sampler, num_workers=self.hparams.num_workers, drop_last=False,
                          persistent_workers=self.hparams.num_workers > 0)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

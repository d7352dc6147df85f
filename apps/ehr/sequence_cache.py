"""The on-disk cache of :mod:`linmix.apps.ehr.sequences`: one folder per (MEDS input bytes, settings) hash.

``<cache_dir>/<hash>/`` holds ``sequences.parquet``, ``vocab.json`` and ``stats.json`` (written atomically); the EHR
data module adds the task labels beside them. A change of any MEDS shard or split file, or of the settings (the code
dialect included), gives a new folder; :data:`CACHE_VERSION` changes when the sequence layout does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import polars as pl

from linmix.apps.ehr.dialect import dialect_key
from linmix.apps.ehr.meds import atomic_write, load_meds
from linmix.apps.ehr.sequences import SequenceSettings, build_sequences
from linmix.apps.ehr.vocab import Vocabulary

__all__ = ["CACHE_VERSION", "input_hash", "cached_sequences"]

CACHE_VERSION = 2


def input_hash(root: str | Path, settings: SequenceSettings) -> str:
    """sha256 over the MEDS shard and split files (relative path + bytes) and the settings."""
    root = Path(root)
    key = {"v": CACHE_VERSION, **asdict(settings)}
    key.pop("dialect")
    dk = dialect_key(settings.code_dialect)
    if dk is not None:  # the own preset leaves the settings' key as it is
        key["dialect"] = dk
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    files = sorted((root / "data").rglob("*.parquet")) + sorted((root / "metadata").glob("subject_splits.parquet"))
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def cached_sequences(meds_root: str | Path, cache_dir: str | Path, settings: SequenceSettings,
                     progress: bool = False) -> tuple[pl.DataFrame, Vocabulary, Path]:
    """``build_sequences`` once per (input hash, settings); later calls read ``<cache_dir>/<hash>/`` back.

    Returns (sequences, vocabulary, the cache folder). Files are written atomically; ``stats.json`` holds the counts.
    """
    folder = Path(cache_dir) / input_hash(meds_root, settings)
    seq_file, vocab_file = folder / "sequences.parquet", folder / "vocab.json"
    if seq_file.exists() and vocab_file.exists():
        return pl.read_parquet(seq_file), Vocabulary.from_json(vocab_file.read_text()), folder
    folder.mkdir(parents=True, exist_ok=True)
    seqs, vocab, stats = build_sequences(load_meds(meds_root), settings, progress=progress)
    atomic_write(folder / "stats.json", lambda p: p.write_text(json.dumps(asdict(stats), indent=1)))
    atomic_write(seq_file, lambda p: seqs.write_parquet(p))
    atomic_write(vocab_file, lambda p: p.write_text(vocab.to_json()))
    return seqs, vocab, folder

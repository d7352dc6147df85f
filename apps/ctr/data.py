"""CTRDataModule: click logs -> encoded cache -> batches sliced from tensors.

Default data is the synthetic log of ``linmix.apps.ctr.synth`` (generated in ``prepare_data`` when missing). Other
formats: ``criteo`` (TSV), ``avazu`` (CSV), ``libfm`` and ``schema`` (CSV/Parquet + a YAML schema). Encoding
(``linmix.apps.ctr.pipeline``) is cached under ``cache_dir`` and reused while the sources and schema are unchanged.
A batch is a dict ``idx`` (B, F) int64, ``val`` (B, F) float32, ``seq`` (B, S, L) int64, ``label`` (B,) float32,
plus ``group`` (B,) int64 and ``p_true`` (B,) float32 when the data has them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import polars as pl
import pytorch_lightning as pl_
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from linmix.apps.ctr.encoder import FeatureEncoder
from linmix.apps.ctr.pipeline import encode_dataset
from linmix.apps.ctr.schema import DataSchema, avazu_schema, criteo_schema, libfm_schema, load_schema
from linmix.apps.ctr.synth import SynthConfig, synth_schema_dict, write_synth
from linmix.shared.errors import UserError


class TensorBatches(Dataset):
    """Rows held as tensors; ``ds[list_of_rows]`` gathers a whole batch at once (no per-row collate)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.t = {k: torch.from_numpy(np.require(v, requirements=["C", "W"])) for k, v in arrays.items()}
        self.n = len(next(iter(self.t.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows) -> dict[str, torch.Tensor]:
        ix = torch.as_tensor(rows, dtype=torch.long)
        return {k: v.index_select(0, ix) for k, v in self.t.items()}


def batch_loader(ds: TensorBatches, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """DataLoader yielding whole batches gathered from tensors (``batch_size=None`` turns off collation)."""
    g = torch.Generator().manual_seed(seed)
    base = RandomSampler(ds, generator=g) if shuffle else SequentialSampler(ds)
    return DataLoader(ds, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None)


def train_seed() -> int:
    """The run's seed (``--seed_everything``; Lightning keeps it in ``PL_GLOBAL_SEED``), so that a seed sets the data
    order as well as the initialisation; 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


class CTRDataModule(pl_.LightningDataModule):
    """Click-log data module.

    Args:
        data_dir: folder of the synthetic data (``format=synth``) and default parent of the cache.
        format: ``synth``, ``criteo``, ``avazu``, ``libfm`` or ``schema``.
        train_path, val_path, test_path: source files (not used for ``synth``).
        predict_path: file scored by ``predict`` (default: the test split).
        schema_path: YAML schema for ``format=schema``.
        libfm_fields: pairs per line for ``format=libfm``.
        min_count: vocabulary threshold overriding the schema default.
        cache_dir: encoded cache (default ``<data_dir>/encoded``).
        batch_size: training rows per batch; eval_batch_size: rows per eval batch.
        synth_rows: rows of the synthetic log (80/10/10 split); synth_seed: its seed.
    """

    def __init__(self, data_dir: str = "runs/ctr/data/synth",
                 format: Literal["synth", "criteo", "avazu", "libfm", "schema"] = "synth",
                 train_path: Optional[str] = None, val_path: Optional[str] = None, test_path: Optional[str] = None,
                 predict_path: Optional[str] = None, schema_path: Optional[str] = None, libfm_fields: int = 10,
                 min_count: Optional[int] = None, cache_dir: Optional[str] = None, batch_size: int = 4096,
                 eval_batch_size: int = 16384, synth_rows: int = SynthConfig.n_rows, synth_seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.format = format
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "encoded"
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.encoder: Optional[FeatureEncoder] = None
        self.datasets: dict[str, TensorBatches] = {}
        self.report: dict = {}

    # ------------------------------------------------------------------ sources
    def schema(self) -> DataSchema:
        if self.format == "synth":
            sc = load_schema(self.data_dir / "schema.yaml")
        elif self.format == "criteo":
            sc = criteo_schema()
        elif self.format == "avazu":
            sc = avazu_schema()
        elif self.format == "libfm":
            sc = libfm_schema(self.hparams.libfm_fields)
        else:
            if not self.hparams.schema_path:
                raise ValueError("format=schema needs data.schema_path (a YAML schema)")
            sc = load_schema(self.hparams.schema_path)
        if self.hparams.min_count is not None:
            sc.min_count = self.hparams.min_count
        return sc

    def sources(self) -> dict[str, Path]:
        if self.format == "synth":
            ext = json.loads((self.data_dir / "meta.json").read_text())["format"]
            return {s: self.data_dir / f"{s}.{ext}" for s in ("train", "val", "test")}
        out = {}
        for split in ("train", "val", "test"):
            p = getattr(self.hparams, f"{split}_path")
            if p:
                out[split] = Path(p)
        if "train" not in out:
            raise ValueError(f"format={self.format} needs data.train_path (and val_path/test_path)")
        return out

    def _synth_ok(self) -> bool:
        meta = self.data_dir / "meta.json"
        if not meta.is_file():
            return False
        want = asdict(SynthConfig(n_rows=self.hparams.synth_rows, seed=self.hparams.synth_seed))
        return json.loads(meta.read_text())["config"] == want  # regenerate when any generator setting changed

    def prepare_data(self) -> None:
        """Generate the synthetic log if needed, then encode (cached) every split."""
        if self.format == "synth" and not self._synth_ok():
            write_synth(self.data_dir, SynthConfig(n_rows=self.hparams.synth_rows, seed=self.hparams.synth_seed))
        encode_dataset(self.sources(), self.schema(), self.cache_dir)

    # ------------------------------------------------------------------ loading
    def setup(self, stage: Optional[str] = None) -> None:
        if self.encoder is not None:
            return
        self.prepare_data()  # idempotent: returns the cached report at once
        self.report = json.loads((self.cache_dir / "report.json").read_text())
        self.encoder = FeatureEncoder.load(self.cache_dir / "vocab.json")
        for split in self.report["splits"]:
            df = pl.read_parquet(self.cache_dir / f"{split}.parquet")
            if split == "val" and stage in (None, "fit") and df.height and df["label"].n_unique() < 2:
                raise UserError(f"the validation split ({self.report['splits'][split]['source']}) holds only label "
                                f"{int(df['label'][0])} ({df.height:,} rows): AUC is undefined on it, and checkpoints "
                                "and early stopping are chosen on validation AUC; give a validation file with both "
                                "labels")
            self.datasets[split] = TensorBatches(self.encoder.arrays(df))
        pp = self.hparams.predict_path
        if pp:
            self.datasets["predict"] = self._encode_extra(Path(pp))

    def _encode_extra(self, path: Path) -> TensorBatches:
        """Encode another file with the fitted vocabularies (its rejects file lands in ``cache/predict``)."""
        out = self.cache_dir / "predict"
        encode_dataset({"predict": path}, self.encoder.schema, out, encoder=self.encoder)
        return TensorBatches(self.encoder.arrays(pl.read_parquet(out / "predict.parquet")))

    def _declared_schema(self) -> Optional[DataSchema]:
        """The schema as far as it is known without reading data (no generation, no encoding)."""
        try:
            if self.format == "synth" and not (self.data_dir / "schema.yaml").is_file():
                return DataSchema.from_dict(synth_schema_dict(SynthConfig()))
            return self.schema()
        except (OSError, ValueError):
            return None

    @property
    def n_fields(self) -> int:
        """Scalar field count (linked to the model at instantiation)."""
        sc = self._declared_schema()
        return len(sc.scalar_fields) if sc else 0

    @property
    def n_seq_fields(self) -> int:
        sc = self._declared_schema()
        return len(sc.sequence_fields) if sc else 0

    @property
    def field_sizes(self) -> list[int]:
        return list(self.report.get("field_sizes", []))

    @property
    def seq_sizes(self) -> list[int]:
        return list(self.report.get("seq_sizes", []))

    @property
    def vocab_path(self) -> str:
        return str(self.cache_dir / "vocab.json")

    def train_dataloader(self) -> DataLoader:
        return batch_loader(self.datasets["train"], self.batch_size, shuffle=True, seed=train_seed())

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.datasets["val"], self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self.datasets["test"], self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return batch_loader(self.datasets.get("predict", self.datasets["test"]), self.eval_batch_size, False)

"""CTRDataModule: click logs -> encoded cache -> batches sliced from tensors.

Default data is the synthetic log of ``linmix.apps.ctr.synth`` (generated in ``prepare_data`` when missing). Other
formats: ``criteo`` (TSV), ``avazu`` (CSV), ``libfm`` and ``schema`` (CSV/Parquet + a YAML schema). Encoding
(``linmix.apps.ctr.pipeline``) is cached under ``cache_dir`` and reused while the sources and schema are unchanged.
A batch is a dict ``idx`` (B, F) int64, ``val`` (B, F) float32, ``seq`` (B, S, L) int64, ``label`` (B,) float32,
``row`` (B,) int64 (the rows' ids in the split) and ``worker`` (), plus ``group`` (B,) int64 and ``p_true`` (B,)
float32 when the data has them.

Every split is read through :class:`~linmix.apps.ctr.stream.RowStream` (each row exactly once per epoch on every
DDP rank and DataLoader worker): from memory when the training split fits under ``stream_above_mb`` (or
``streaming: false``), else streamed from its Parquet shards (``streaming: true``). The training order is seeded by
``--seed_everything`` and the epoch, and recorded per epoch in ``<run folder>/data_order.jsonl``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import polars as pl
import pytorch_lightning as pl_
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from linmix.apps.ctr.encoder import FeatureEncoder
from linmix.apps.ctr.pipeline import encode_dataset
from linmix.apps.ctr.schema import DataSchema, avazu_schema, criteo_schema, libfm_schema, load_schema
from linmix.apps.ctr.shards import ROW_GROUP_ROWS, Manifest, load_manifest
from linmix.apps.ctr.stream import MemorySource, RowStream, ShardSource, StreamLoader
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
        streaming: ``true`` streams every split from its shards, ``false`` loads them into memory, ``auto`` streams
            when the training split would take more than ``stream_above_mb`` MB as tensors.
        shuffle_buffer: rows in the training shuffle buffer (default: all rows of a rank in memory, 131,072 when
            streaming); num_workers: DataLoader worker processes per rank.
        encode_workers: processes for encoding (parsing, counting and encoding in parallel; same result for any
            number); row_group_rows: rows per Parquet row group of the encoded shards.
    """

    def __init__(self, data_dir: str = "runs/ctr/data/synth",
                 format: Literal["synth", "criteo", "avazu", "libfm", "schema"] = "synth",
                 train_path: Optional[str] = None, val_path: Optional[str] = None, test_path: Optional[str] = None,
                 predict_path: Optional[str] = None, schema_path: Optional[str] = None, libfm_fields: int = 10,
                 min_count: Optional[int] = None, cache_dir: Optional[str] = None, batch_size: int = 4096,
                 eval_batch_size: int = 16384, synth_rows: int = SynthConfig.n_rows, synth_seed: int = 0,
                 streaming: Union[bool, Literal["auto"]] = "auto", stream_above_mb: float = 1024.0,
                 shuffle_buffer: Optional[int] = None, num_workers: int = 0, encode_workers: int = 1,
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.format = format
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "encoded"
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.encoder: Optional[FeatureEncoder] = None
        self.datasets: dict[str, TensorBatches] = {}  # in memory
        self.manifests: dict[str, Manifest] = {}
        self.streaming = False
        self.report: dict = {}
        self._train_loader: Optional[StreamLoader] = None
        self._order: dict = {}
        self._run_dir: Optional[Path] = None
        self._resume_state: Optional[dict] = None

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
        encode_dataset(self.sources(), self.schema(), self.cache_dir, workers=self.hparams.encode_workers,
                       row_group_rows=self.hparams.row_group_rows)

    # ------------------------------------------------------------------ loading
    def setup(self, stage: Optional[str] = None) -> None:
        # RowStream gives each DataLoader worker its own block of batches: the length Lightning warns about is exact
        warnings.filterwarnings("ignore", message=".*IterableDataset.* has .__len__. defined")
        if self.encoder is not None:
            return
        self.prepare_data()  # idempotent: returns the cached report at once
        self.report = json.loads((self.cache_dir / "report.json").read_text())
        self.encoder = FeatureEncoder.load(self.cache_dir / "vocab.json")
        cols = encoded_columns(self.encoder)
        for split in self.report["splits"]:
            self.manifests[split] = load_manifest(self.cache_dir, split, cols)
        if self.hparams.predict_path:
            out = self.cache_dir / "predict"
            encode_dataset({"predict": Path(self.hparams.predict_path)}, self.encoder.schema, out,
                           encoder=self.encoder, row_group_rows=self.hparams.row_group_rows)
            self.manifests["predict"] = load_manifest(out, "predict", cols)
        mode = self.hparams.streaming
        if mode not in (True, False, "auto"):
            raise UserError(f"data.streaming must be true, false or auto, not {mode!r}")
        mb = self.manifests["train"].rows * row_bytes(self.encoder) / 2**20 if "train" in self.manifests else 0.0
        self.streaming = bool(mode is True or (mode == "auto" and mb > self.hparams.stream_above_mb))
        val = self.manifests.get("val")
        if val is not None and stage in (None, "fit") and val.rows:
            n_labels = pl.scan_parquet([val.path(i) for i in range(len(val.shards))]).select(
                pl.col("label").n_unique()).collect().item()
            if n_labels < 2:
                first = pl.read_parquet(val.path(0), columns=["label"])["label"][0]
                raise UserError(f"the validation split ({self.report['splits']['val']['source']}) holds only label "
                                f"{int(first)} ({val.rows:,} rows): AUC is undefined on it, and checkpoints "
                                "and early stopping are chosen on validation AUC; give a validation file with both "
                                "labels")
        if not self.streaming:
            for split, man in self.manifests.items():  # shards in manifest order: row id = position
                df = pl.read_parquet([man.path(i) for i in range(len(man.shards))])
                self.datasets[split] = TensorBatches(self.encoder.arrays(df))

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

    # ------------------------------------------------------------------ loaders
    def _source(self, split: str):
        man = self.manifests[split]
        if self.streaming:
            return ShardSource(man, self.encoder)
        return MemorySource(self.datasets[split].t, man.units())

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._rank()
        ds = RowStream(self._source(split), batch_size=self.eval_batch_size, shuffle=False, rank=rank, world=world)
        return DataLoader(ds, batch_size=None, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        buf = self.hparams.shuffle_buffer
        if buf is None:
            buf = 131_072 if self.streaming else self.manifests["train"].rows
        ds = RowStream(self._source("train"), batch_size=self.batch_size, shuffle=True, seed=train_seed(),
                       buffer_rows=buf, rank=rank, world=world)
        t = self.trainer
        self._run_dir = Path(t.log_dir or t.default_root_dir) if t is not None else None  # (a collective in DDP)
        self._train_loader = StreamLoader(ds, num_workers=self.hparams.num_workers,
                                          epoch_fn=lambda: self.trainer.current_epoch if self.trainer else 0)
        if self._resume_state:
            self._train_loader.load_state_dict(self._resume_state)
        return self._train_loader

    def state_dict(self) -> dict:
        """The training stream's position (epoch, batches trained per worker, plan), saved in every checkpoint."""
        return {"stream": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_state = state_dict.get("stream")
        if self._resume_state and self._train_loader is not None:
            self._train_loader.load_state_dict(self._resume_state)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict" if "predict" in self.manifests else "test")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count trained batches (mid-epoch resume) and record the epoch's order (rank 0)."""
        t = self.trainer
        if t is None or not t.training or self._train_loader is None:
            return batch
        self._train_loader.consumed(batch)
        if t.is_global_zero:
            record_order(self, batch)
        return batch


def encoded_columns(enc: FeatureEncoder) -> list[str]:
    """The columns an encoded split holds for this vocabulary."""
    sc = enc.schema
    cols = ["label"]
    for f in sc.scalar_fields:
        cols.append(f"idx_{f.name}")
        v = enc.vocabs[f.name]
        if v.type == "normalize" or v.has_value:
            cols.append(f"val_{f.name}")
    cols += [f"seq_{f.name}" for f in sc.sequence_fields]
    cols += ["group"] if sc.group else []
    return cols + list(sc.passthrough)


def row_bytes(enc: FeatureEncoder) -> int:
    """Bytes per row as training tensors (idx int64, val float32, seq int64, label, group, passthrough)."""
    sc = enc.schema
    return (len(sc.scalar_fields) * 12 + len(sc.sequence_fields) * enc.seq_len * 8 + 4 + 8 * bool(sc.group)
            + 4 * len(sc.passthrough))


def record_order(dm: CTRDataModule, batch: dict) -> None:
    """Append the epoch's seed, batch count and a SHA-256 of its row ids to ``<log dir>/data_order.jsonl`` when the
    epoch's last batch is trained (rank 0's rows)."""
    import hashlib

    loader = dm._train_loader
    ds = loader.dataset
    o = dm._order
    if o.get("epoch") != ds.epoch:
        o.clear()
        o.update(epoch=ds.epoch, sha=hashlib.sha256(), batches=0, first=batch["row"][:8].tolist(),
                 resumed_after=sum(ds.skip.values()))
    o["sha"].update(batch["row"].cpu().numpy().tobytes())
    o["batches"] += 1
    if o["batches"] + o["resumed_after"] < len(loader):
        return
    rec = {"epoch": ds.epoch, "seed": ds.seed, "order_seed": [ds.seed, ds.epoch], "batches": o["batches"],
           "resumed_after_batches": o["resumed_after"], "first_rows": o["first"],
           "rows_sha256": o["sha"].hexdigest(), "streaming": dm.streaming, **loader.signature()}
    folder = dm._run_dir or Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data_order.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")

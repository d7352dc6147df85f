"""Encoded splits as Parquet shards: ``<split>.parquet/part-NNNNN.parquet`` plus ``<split>.manifest.json``.

A split is a folder of Parquet files (the folder reads as one table with ``pl.read_parquet(folder)``), each written
with row groups of at most ``row_group_rows`` rows, so that a reader can stream it one row group at a time. The
manifest beside the folder records, per shard, its file name, byte size, rows and row-group sizes, and the column
names and types of the encoded rows; a row's id is its position in the split (shards in manifest order).

:func:`load_manifest` checks the folder against the manifest before any training starts: every shard present, of
the recorded size, with a readable Parquet footer whose row groups and columns are the recorded ones, and the
columns the ones the vocabulary encodes. Each problem is a :class:`ShardError` (a ``UserError``) naming the shard.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from linmix.shared.errors import UserError

ROW_GROUP_ROWS = 16_384
REENCODE = "re-encode the split (linmix-ctr encode --force, or delete the cache folder)"


class ShardError(UserError):
    """A shard folder that does not match its manifest (missing, truncated or corrupt shard; wrong columns)."""


@dataclass
class Shard:
    """One Parquet file of a split: ``row_groups`` are the rows of each of its row groups."""

    file: str
    bytes: int
    rows: int
    row_groups: list[int] = field(default_factory=list)


@dataclass
class Manifest:
    """A split's shards in order; ``columns`` maps each encoded column to its Arrow type (as text)."""

    split: str
    rows: int
    columns: dict[str, str]
    shards: list[Shard]
    folder: str = ""

    def units(self) -> np.ndarray:
        """(U, 4) int64: ``shard, row_group, rows, first row id`` of every non-empty row group, in order."""
        out, row0 = [], 0
        for s, sh in enumerate(self.shards):
            for g, n in enumerate(sh.row_groups):
                if n:
                    out.append((s, g, n, row0))
                row0 += n
        return np.asarray(out, dtype=np.int64).reshape(-1, 4)

    def path(self, shard: int) -> Path:
        return Path(self.folder) / self.shards[shard].file

    def to_dict(self) -> dict:
        return {"split": self.split, "rows": self.rows, "columns": self.columns,
                "shards": [asdict(s) for s in self.shards]}


def split_folder(cache: str | Path, split: str) -> Path:
    return Path(cache) / f"{split}.parquet"


def manifest_path(cache: str | Path, split: str) -> Path:
    return Path(cache) / f"{split}.manifest.json"


def _describe(path: Path) -> Shard:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    return Shard(path.name, path.stat().st_size, md.num_rows, [md.row_group(i).num_rows for i in
                                                               range(md.num_row_groups)])


def publish_split(parts: list[Path], cache: str | Path, split: str) -> Manifest:
    """Move encoded ``parts`` (Parquet files, in order) into ``<split>.parquet/`` and write the manifest.

    The folder is built under a temporary name and swapped in (the old one removed after), the manifest written to a
    temporary file and ``os.replace``d, so a reader never sees a half-written split.
    """
    import pyarrow.parquet as pq

    cache = Path(cache)
    final, tmp = split_folder(cache, split), cache / f".{split}.parquet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = []
    for i, p in enumerate(parts):
        dst = tmp / f"part-{i:05d}.parquet"
        os.replace(p, dst)
        shards.append(_describe(dst))
    columns = ({f.name: str(f.type) for f in pq.ParquetFile(tmp / shards[0].file).schema_arrow} if shards else {})
    man = Manifest(split, sum(s.rows for s in shards), columns, shards)
    old = cache / f".{split}.parquet.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.is_dir():
        os.replace(final, old)
    elif final.exists():
        final.unlink()  # a single-file split from an older cache layout
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    mp = manifest_path(cache, split)
    mtmp = mp.with_suffix(".json.tmp")
    mtmp.write_text(json.dumps(man.to_dict(), indent=1))
    os.replace(mtmp, mp)
    man.folder = str(final)
    return man


def load_manifest(cache: str | Path, split: str, expect_columns: list[str] | None = None,
                  footers: bool = True) -> Manifest:
    """Read and check a split's manifest against its shard folder (see module docstring)."""
    import pyarrow.parquet as pq

    mp, folder = manifest_path(cache, split), split_folder(cache, split)
    if not mp.is_file() or not folder.is_dir():
        raise ShardError(f"{split}: no encoded shards at {folder} (manifest {mp.name} missing); {REENCODE}")
    try:
        d = json.loads(mp.read_text())
        man = Manifest(d["split"], int(d["rows"]), dict(d["columns"]), [Shard(**s) for s in d["shards"]],
                       str(folder))
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{mp}: unreadable manifest ({e}); {REENCODE}") from None
    if expect_columns is not None and man.shards:
        missing = [c for c in expect_columns if c not in man.columns]
        extra = [c for c in man.columns if c not in expect_columns]
        if missing or extra:
            raise ShardError(f"{folder}: the shards' columns do not match the vocabulary (vocab.json): missing "
                             f"{missing}, not in the vocabulary {extra}; the shards were encoded with another "
                             f"schema: {REENCODE}")
    if sum(s.rows for s in man.shards) != man.rows:
        raise ShardError(f"{mp}: shard rows do not add up to {man.rows:,}; {REENCODE}")
    for s in man.shards:
        p = folder / s.file
        if not p.is_file():
            raise ShardError(f"{split}: shard {p} is missing ({len(man.shards)} shards, {man.rows:,} rows in the "
                             f"manifest); {REENCODE}")
        size = p.stat().st_size
        if size != s.bytes:
            raise ShardError(f"{split}: shard {p} is {size:,} bytes, the manifest says {s.bytes:,} (truncated or "
                             f"rewritten); {REENCODE}")
        if not footers:
            continue
        try:
            pf = pq.ParquetFile(p)
        except Exception as e:  # noqa: BLE001 (pyarrow raises several types for a bad file)
            raise ShardError(f"{split}: shard {p} is not a readable Parquet file ({type(e).__name__}: {e}); "
                             f"{REENCODE}") from None
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        cols = {f.name: str(f.type) for f in pf.schema_arrow}
        if groups != s.row_groups or cols != man.columns:
            raise ShardError(f"{split}: shard {p} holds row groups {groups[:8]} and columns {list(cols)[:8]}, not "
                             f"the manifest's {s.row_groups[:8]} / {list(man.columns)[:8]}; {REENCODE}")
    return man


class ArrowFrame:
    """The part of a polars DataFrame's interface that ``FeatureEncoder.arrays`` uses, over a pyarrow Table:
    DataLoader workers read shards with pyarrow only (polars' thread pool is not safe to use after ``fork``)."""

    def __init__(self, table) -> None:
        self.t, self.height, self.columns = table, table.num_rows, table.column_names

    def __getitem__(self, name: str) -> ArrowColumn:
        return ArrowColumn(self.t.column(name))


#: Arrow primitive types (``str(type)``) read as a numpy view of their data buffer
_NUMPY_TYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
                "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "halffloat": np.float16,
                "float": np.float32, "double": np.float64}


def arrow_to_numpy(arr) -> np.ndarray:
    """A pyarrow Array as numpy, without pandas: a null-free primitive array is a read-only view of its data buffer
    (what ``Array.to_numpy`` gives too, but that goes through pyarrow's pandas conversion, which imports pandas when
    it is installed: ~40 MB in each process that reads shards); anything else falls back to ``to_numpy``."""
    dt = _NUMPY_TYPES.get(str(arr.type))
    if dt is None or arr.null_count:
        return arr.to_numpy(zero_copy_only=False)
    item = np.dtype(dt).itemsize
    return np.frombuffer(arr.buffers()[1], dtype=dt, count=len(arr), offset=arr.offset * item)


class ArrowColumn:
    def __init__(self, col) -> None:
        self.col = col

    def to_numpy(self) -> np.ndarray:
        import pyarrow as pa

        c = self.col.combine_chunks()
        if pa.types.is_fixed_size_list(c.type):  # seq_<f>: Array[Int32, L] -> (N, L)
            return arrow_to_numpy(c.flatten()).reshape(len(c), c.type.list_size)
        return arrow_to_numpy(c)


def read_rows(man: Manifest, shard: int, row_group: int, start: int, stop: int, columns: list[str]) -> ArrowFrame:
    """Rows ``start:stop`` of one row group (pyarrow only); a read failure names the shard."""
    import pyarrow.parquet as pq

    p = man.path(shard)
    try:
        t = pq.ParquetFile(p).read_row_group(row_group, columns=columns)
    except Exception as e:  # noqa: BLE001
        raise ShardError(f"{man.split}: shard {p} row group {row_group} cannot be read ({type(e).__name__}: {e}); "
                         f"{REENCODE}") from None
    if start or stop < t.num_rows:
        t = t.slice(start, stop - start)
    return ArrowFrame(t)

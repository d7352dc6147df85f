"""Batches for every DDP rank and DataLoader worker, each row exactly once per epoch, from shards or from memory.

An epoch's order (:func:`rank_plan`, :func:`worker_plan`) is a pure function of the split's row groups (the units of
:meth:`~linmix.apps.ctr.shards.Manifest.units`), the seed, the epoch, the rank and world size, the batch size, the
number of DataLoader workers and the shuffle buffer:

1. the row groups are permuted with ``default_rng([seed, epoch])`` (the same permutation on every rank);
2. the permuted rows are cut into ``world`` contiguous ranges of ``floor(N / world)`` or ``ceil(N / world)`` rows: rank
   ``r`` reads whole row groups plus at most two partial ones, and "more ranks than shards" needs nothing special;
3. every rank runs the same number of batches, ``ceil(ceil(N / world) / batch_size)``: full batches, then a shorter
   last one; where a rank has one row fewer and its last batch would be empty, its last two batches are
   ``batch_size - 1`` and ``1`` rows. Nothing is repeated and nothing dropped, so no rank waits for another;
4. a rank's batches are split into contiguous blocks, one per DataLoader worker (the loader interleaves them);
5. each worker reads its rows row group by row group into a buffer of ``buffer_rows`` rows, shuffles the buffer with
   ``default_rng([seed, epoch, rank, worker])`` once it is full and emits batches until half of it is left; the rest is
   shuffled and emitted at the end of the stream. A buffer as large as the rank's rows is a full permutation.

:class:`RowStream` runs that plan on a :class:`ShardSource` (Parquet row groups read one at a time: memory is the
buffer plus one row group) or a :class:`MemorySource` (tensors gathered by row id); the two give the same batches in
the same order for the same plan. Every batch carries ``row`` (its rows' ids in the split) and ``worker``.
Mid-epoch resume skips, per worker, the batches already trained (:class:`StreamLoader`): the granularity is one batch.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from linmix.shared.errors import UserError

Pieces = np.ndarray  # (P, 5) int64: shard, row_group, start, stop, first row id of the row group


def batches_per_rank(n_rows: int, world: int, batch_size: int) -> int:
    return math.ceil(math.ceil(n_rows / world) / batch_size) if n_rows else 0


def batch_sizes(n_rank: int, n_batches: int, batch_size: int) -> list[int]:
    """Sizes of a rank's ``n_batches`` batches holding its ``n_rank`` rows (see the module docstring, step 3)."""
    if n_batches == 0:
        return []
    sizes = [batch_size] * (n_batches - 1) + [n_rank - (n_batches - 1) * batch_size]
    if sizes[-1] == 0 and n_batches >= 2 and batch_size >= 2:
        sizes[-2], sizes[-1] = batch_size - 1, 1
    if min(sizes) <= 0:
        raise UserError(f"{n_rank:,} rows cannot fill {n_batches} batches of at most {batch_size} on this rank; "
                        "use fewer devices or a batch size of at least 2")
    return sizes


def slice_pieces(pieces: Pieces, lo: int, hi: int) -> Pieces:
    """Rows ``lo:hi`` of the concatenation of ``pieces``, as pieces."""
    n = pieces[:, 3] - pieces[:, 2]
    end = np.cumsum(n)
    begin = end - n
    keep = (end > lo) & (begin < hi)
    out = pieces[keep].copy()
    out[:, 2] += np.maximum(lo - begin[keep], 0)
    out[:, 3] -= np.maximum(end[keep] - hi, 0)
    return out


def rank_plan(units: np.ndarray, *, epoch: int, seed: int, shuffle: bool, rank: int, world: int,
              batch_size: int) -> tuple[Pieces, list[int]]:
    """This rank's rows (as pieces of row groups) and batch sizes for ``epoch``."""
    n_rows = int(units[:, 2].sum()) if len(units) else 0
    if world > n_rows:
        raise UserError(f"{world} processes but the split has {n_rows:,} rows: every process needs at least one row")
    order = np.random.default_rng([seed, epoch]).permutation(len(units)) if shuffle else np.arange(len(units))
    u = units[order]
    pieces = np.stack([u[:, 0], u[:, 1], np.zeros(len(u), np.int64), u[:, 2], u[:, 3]], 1).reshape(-1, 5)
    lo, hi = rank * n_rows // world, (rank + 1) * n_rows // world
    nb = batches_per_rank(n_rows, world, batch_size)
    return slice_pieces(pieces, lo, hi), batch_sizes(hi - lo, nb, batch_size)


def worker_plan(pieces: Pieces, sizes: list[int], worker: int, workers: int) -> tuple[Pieces, list[int]]:
    """A contiguous block of the rank's batches for one DataLoader worker."""
    nb = len(sizes)
    b0, b1 = worker * nb // workers, (worker + 1) * nb // workers
    first = int(sum(sizes[:b0]))
    return slice_pieces(pieces, first, first + int(sum(sizes[b0:b1]))), sizes[b0:b1]


def _cat(parts: list[dict]) -> dict:
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(buf: dict, ix) -> dict:
    return {k: v[ix] for k, v in buf.items()}


def buffered_batches(chunks: Iterator[dict], sizes: list[int], buffer_rows: int,
                     rng: Optional[np.random.Generator]) -> Iterator[dict]:
    """Batches of the given ``sizes`` from a stream of column dicts (``row`` among them); with ``rng`` shuffled in a
    buffer of ``buffer_rows`` rows (module docstring, step 5), without it in stream order."""
    parts, n, i = [], 0, 0
    keep = buffer_rows // 2
    for ch in chunks:
        if not len(ch["row"]):
            continue
        parts.append(ch)
        n += len(ch["row"])
        if rng is not None and n < max(buffer_rows, 1):
            continue
        buf = _cat(parts)
        if rng is not None:
            buf = _take(buf, rng.permutation(n))
        at = 0
        floor = keep if rng is not None else 0
        while i < len(sizes) and n - at - sizes[i] >= floor:
            yield _take(buf, slice(at, at + sizes[i]))
            at += sizes[i]
            i += 1
        parts = [_take(buf, slice(at, None))] if at < n else []
        n -= at
    if n:
        buf = _cat(parts)
        if rng is not None:
            buf = _take(buf, rng.permutation(n))
        at = 0
        while i < len(sizes):
            yield _take(buf, slice(at, at + sizes[i]))
            at += sizes[i]
            i += 1
        if at != n:
            raise RuntimeError(f"stream plan mismatch: {n - at} rows left after the last batch")
    if i != len(sizes):
        raise RuntimeError(f"stream plan mismatch: {len(sizes) - i} batches without rows")


class MemorySource:
    """Rows held as tensors (``idx``, ``val``, ``seq``, ``label``, ...), in split order; ``units`` as the shards'."""

    def __init__(self, tensors: dict[str, torch.Tensor], units: np.ndarray) -> None:
        self.t, self.units = tensors, units

    def chunks(self, pieces: Pieces) -> Iterator[dict]:
        for _, _, a, b, row0 in pieces:
            yield {"row": np.arange(row0 + a, row0 + b, dtype=np.int64)}

    def finish(self, b: dict) -> dict[str, torch.Tensor]:
        ix = torch.from_numpy(b["row"])
        out = {k: v.index_select(0, ix) for k, v in self.t.items()}
        out["row"] = ix
        return out


class ShardSource:
    """Rows read from a split's Parquet shards one row group at a time and encoded to arrays."""

    def __init__(self, manifest, encoder) -> None:
        self.man, self.encoder = manifest, encoder
        self.units = manifest.units()
        self.columns = list(manifest.columns)

    def chunks(self, pieces: Pieces) -> Iterator[dict]:
        from linmix.apps.ctr.shards import read_rows

        for s, g, a, b, row0 in pieces:
            arr = self.encoder.arrays(read_rows(self.man, int(s), int(g), int(a), int(b), self.columns))
            arr["row"] = np.arange(row0 + a, row0 + b, dtype=np.int64)
            yield arr

    def finish(self, b: dict) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.require(v, requirements=["C", "W"])) for k, v in b.items()}


class RowStream(IterableDataset):
    """Batches of one rank (module docstring). ``epoch`` and ``skip`` ({worker: batches}) are set before each
    iteration by :class:`StreamLoader`; ``len()`` is the rank's batch count."""

    def __init__(self, source, *, batch_size: int, shuffle: bool, seed: int = 0, buffer_rows: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.source, self.batch_size, self.shuffle, self.seed = source, batch_size, shuffle, seed
        self.buffer_rows, self.rank, self.world = buffer_rows, rank, world
        self.epoch = 0
        self.skip: dict[int, int] = {}
        self.n_rows = int(source.units[:, 2].sum()) if len(source.units) else 0

    def __len__(self) -> int:
        return batches_per_rank(self.n_rows, self.world, self.batch_size)

    def plan(self, worker: int = 0, workers: int = 1) -> tuple[Pieces, list[int]]:
        pieces, sizes = rank_plan(self.source.units, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle,
                                  rank=self.rank, world=self.world, batch_size=self.batch_size)
        return worker_plan(pieces, sizes, worker, workers)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        pieces, sizes = self.plan(w, nw)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, w]) if self.shuffle else None
        skip = self.skip.get(w, 0)
        for j, b in enumerate(buffered_batches(self.source.chunks(pieces), sizes, self.buffer_rows, rng)):
            if j < skip:
                continue
            out = self.source.finish(b)
            out["worker"] = torch.tensor(w)
            yield out


class StreamLoader(DataLoader):
    """The training loader: sets the stream's epoch (``epoch_fn()``) before each pass and keeps how many batches of
    each worker were trained (:meth:`consumed`), so that a checkpoint taken mid-epoch resumes after the last trained
    batch (``state_dict`` / ``load_state_dict``, carried by the data module's own state in the checkpoint)."""

    def __init__(self, dataset: RowStream, *, num_workers: int = 0, epoch_fn: Callable[[], int] = lambda: 0) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers)
        self.epoch_fn = epoch_fn
        self.trained: dict[int, int] = {}
        self._resume: Optional[dict] = None

    def signature(self) -> dict:
        ds = self.dataset
        return {"rows": ds.n_rows, "world": ds.world, "batch_size": ds.batch_size, "workers": self.num_workers,
                "buffer_rows": ds.buffer_rows, "seed": ds.seed, "shuffle": ds.shuffle}

    def __iter__(self):
        return self._epoch()

    def _epoch(self):
        """The pass starts at the first ``next()``: Lightning calls ``iter()`` before it restores a checkpoint's
        loops (to count the steps of the schedule), so the epoch and the resume point are read only then."""
        ds = self.dataset
        ds.epoch = int(self.epoch_fn())
        ds.skip, self._resume = (self._take_resume(ds.epoch), None)
        self.trained = dict(ds.skip)
        yield from DataLoader.__iter__(self)

    def _take_resume(self, epoch: int) -> dict[int, int]:
        r = self._resume
        if not r or r["epoch"] != epoch:
            return {}
        if r["plan"] != self.signature():
            raise UserError(f"resuming mid-epoch needs the data plan of the checkpoint {r['plan']}, not "
                            f"{self.signature()} (devices, batch size, workers, shuffle buffer, seed); resume with "
                            "the same settings or from an end-of-epoch checkpoint")
        return {int(k): int(v) for k, v in r["trained"].items()}

    def consumed(self, batch: dict) -> None:
        """Count a batch as trained (called for each training batch in the main process)."""
        w = int(batch["worker"]) if "worker" in batch else 0
        self.trained[w] = self.trained.get(w, 0) + 1

    def state_dict(self) -> dict:
        return {"epoch": int(self.dataset.epoch), "trained": {str(k): v for k, v in self.trained.items()},
                "plan": self.signature()}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

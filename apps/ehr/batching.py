"""Batching for the EHR data module: padding collate and length-aware samplers, sharded by rank.

``collate`` right-pads per-sequence arrays into the batch dict the LightningModule reads (B, L_max), in one masked
assignment per array (``collate_ref`` is the per-item reference it must equal); ``BucketSampler`` orders one rank's
share of every training epoch in shuffled length-bucketed batches, ``sorted_eval_sampler`` gives fixed
length-sorted evaluation batches, dealt to the ranks without repeats (``linmix.shared.sharding``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from linmix.shared.sharding import EvalShardSampler, eval_batch_size, train_share

_PAD_DTYPES = (("tokens", torch.long), ("token_type", torch.long), ("age", torch.float32), ("time", torch.float32),
               ("visit_order", torch.long), ("visit_segment", torch.long))
_NP = {torch.long: np.int64, torch.float32: np.float32}


def _scalars(items: list[dict], out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-item scalars: ``subject_id`` (B,) and, when present, ``prediction_time``, ``task``, ``task_token``, ``label``."""
    out["subject_id"] = torch.tensor([it["subject_id"] for it in items], dtype=torch.long)
    if "prediction_time" in items[0]:
        out["prediction_time"] = torch.tensor([it["prediction_time"] for it in items], dtype=torch.long)
    if "task" in items[0]:
        out["task"] = torch.tensor([it["task"] for it in items], dtype=torch.long)
        out["task_token"] = torch.tensor([it["task_token"] for it in items], dtype=torch.long)
        out["label"] = torch.tensor([it["label"] for it in items], dtype=torch.float32)
    return out


def collate(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Right-pad a list of per-sequence arrays to (B, L_max) tensors (PAD = 0), plus ``lengths`` (B,) and the scalars.

    Each array is filled at once: the items' values concatenated land, in row-major order, on the mask of real
    positions ``pos < length`` (B, L_max), which is where a per-item loop would put them (``collate_ref``).
    """
    lengths = np.fromiter((len(it["tokens"]) for it in items), dtype=np.int64, count=len(items))
    n = int(lengths.max()) if len(items) else 0
    keep = np.arange(n)[None, :] < lengths[:, None]  # (B, L_max)
    out: dict[str, torch.Tensor] = {}
    for key, dtype in _PAD_DTYPES:
        buf = np.zeros((len(items), n), dtype=_NP[dtype])
        if n:
            buf[keep] = np.concatenate([np.asarray(it[key]) for it in items])
        out[key] = torch.from_numpy(buf)
    out["lengths"] = torch.from_numpy(lengths)
    return _scalars(items, out)


def collate_ref(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Reference for ``collate``: the same batch, one item at a time."""
    n = max(len(it["tokens"]) for it in items)
    out: dict[str, torch.Tensor] = {}
    for key, dtype in _PAD_DTYPES:
        t = torch.zeros(len(items), n, dtype=dtype)
        for i, it in enumerate(items):
            t[i, : len(it[key])] = torch.as_tensor(it[key], dtype=dtype)
        out[key] = t
    out["lengths"] = torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long)
    return _scalars(items, out)


class BucketSampler(DistributedSampler):
    """Training order of one rank, in shuffled batches of similar length: every epoch a new permutation of all items
    (``seed + epoch``; Lightning calls ``set_epoch``), of which this rank takes its own ``len(lengths) // world``
    (disjoint across ranks, the same count on each, so every rank runs the same number of batches; the
    ``len(lengths) % world`` left over, fewer than ``world``, sit out that epoch); then each window of
    ``window * batch_size`` of them is sorted by length and cut into batches, and the batches are shuffled. Cuts
    padding (EHR sequences vary from a few to thousands of tokens) while batches still mix patients and tasks.

    Yields item indices, batch after batch; only the rank's last batch can be short, so a
    ``DataLoader(batch_size=batch_size)`` cuts them back into exactly these batches. A ``DistributedSampler``, so
    Lightning injects none of its own (``linmix.shared.sharding``).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 window: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        share = train_share(len(self.lengths), num_replicas, "the training split")
        super().__init__(range(len(self.lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.batch_size, self.window, self.num_samples = batch_size, window, share

    def __len__(self) -> int:
        return self.num_samples

    def batches(self) -> list[list[int]]:
        """This epoch's batches of this rank, in order (the short one, if any, last)."""
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        mine = order[self.rank * self.num_samples:(self.rank + 1) * self.num_samples]
        span = self.batch_size * self.window  # a multiple of batch_size: only the last window leaves a short batch
        batches = []
        for start in range(0, len(mine), span):
            part = mine[start:start + span]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i:i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [b for b in batches if len(b) == self.batch_size]
        return [full[i] for i in rng.permutation(len(full))] + short

    def __iter__(self) -> Iterator[int]:
        return (i for b in self.batches() for i in b)


def sorted_eval_sampler(lengths: np.ndarray, batch_size: int, *, num_replicas: int = 1,
                        rank: int = 0) -> EvalShardSampler:
    """Evaluation order: items sorted by length (stable: ties keep the dataset order), cut into consecutive batches
    of ``batch_size`` and dealt round robin to the ranks. The same batches every time; padding is what sorting
    leaves (dataset order pads every batch to its longest history, ~4-5x the real tokens on EHR cohorts). Metrics
    are order-free; ``predict`` sorts its rows."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return EvalShardSampler(order, batch_size, num_replicas=num_replicas, rank=rank)


def rank_sampler(lengths: np.ndarray, batch_size: int, *, train: bool, shard: tuple[int, int] = (0, 1),
                 split: str = "") -> tuple[DistributedSampler, int]:
    """The sampler of one rank (``shard = (rank, world)``) and the loader's batch size: :class:`BucketSampler` for
    training, :func:`sorted_eval_sampler` for evaluation (in smaller batches when there are fewer than ``world``)."""
    rank, world = shard
    if train:
        return BucketSampler(lengths, batch_size, num_replicas=world, rank=rank), batch_size
    bs = eval_batch_size(len(lengths), batch_size, world, f"split {split!r}")
    return sorted_eval_sampler(lengths, bs, num_replicas=world, rank=rank), bs

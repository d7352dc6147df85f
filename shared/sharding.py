"""Data-parallel sharding for data modules that build their own samplers: every process (rank) a disjoint part.

Lightning injects a ``DistributedSampler`` only into loaders whose sampler is not one already, and it cannot inject
one into a custom batch sampler; its evaluation sampler pads each rank's share with repeated items, which changes
exact metrics (AUROC of a set with duplicates is another number). So the apps shard themselves:

- training: each rank gets ``floor(N / world)`` items of every epoch's permutation (``seed + epoch``, the epoch set
  by Lightning through ``set_epoch``), disjoint, the same count on every rank, so every rank runs the same number of
  batches and none waits in a gradient all-reduce; ``N mod world`` items (fewer than ``world``) sit out each epoch,
  different ones every epoch. Torch's ``DistributedSampler(drop_last=True)`` does this for plain loaders; the EHR
  length-bucketing sampler does it itself (``linmix.apps.ehr.batching.BucketSampler``).
- evaluation (:class:`EvalShardSampler`): the single-process batches, dealt round robin to the ranks, without
  padding or repeats; ranks may differ by one batch. Every rank gets at least one batch (a rank with none would skip
  the epoch-end hooks the others wait in), by evaluating in smaller batches when there are fewer batches than ranks
  (:func:`eval_batch_size`).
- per-item results (predictions, per-utterance rows) are gathered once with :func:`gather_objects` and written by
  rank 0; epoch-level means logged with ``sync_dist`` are exact (Lightning sums the weighted values and the batch
  sizes over ranks).

``rank, world = shard_of(datamodule)``: ``(0, 1)`` without a trainer, so data modules keep working alone.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from linmix.shared.errors import UserError

__all__ = ["EvalShardSampler", "eval_batch_size", "gather_objects", "shard_of", "train_share"]


def shard_of(datamodule: Any) -> tuple[int, int]:
    """``(global rank, world size)`` of the trainer a data module is attached to; ``(0, 1)`` without one."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


def train_share(n: int, world: int, what: str) -> int:
    """Items per rank and epoch, ``n // world``; a clear error when a rank would get none."""
    if n < world:
        raise UserError(f"{what} has {n} items, fewer than the {world} training processes: each needs at least one "
                        "(use fewer devices or more data)")
    return n // world


def eval_batch_size(n: int, batch_size: int, world: int, what: str) -> int:
    """``batch_size``, or the smaller size that gives each of ``world`` ranks at least one batch of ``n`` items."""
    if n < world:
        raise UserError(f"{what} has {n} items, fewer than the {world} evaluation processes: each needs at least one "
                        "(use fewer devices or more data)")
    if math.ceil(n / batch_size) >= world:
        return batch_size
    return math.ceil(n / world)


class EvalShardSampler(DistributedSampler):
    """Evaluation order of one rank: ``order`` (a permutation of the dataset's indices, e.g. length-sorted) cut into
    consecutive batches of ``batch_size``; rank ``r`` gets batches ``r, r + world, ...``, every item exactly once over
    all ranks, nothing padded. Use it with ``DataLoader(batch_size=batch_size)``: only the globally last batch can be
    short and it is the last of its rank, so the loader cuts the rank's indices back into the same batches a single
    process would run.

    Args:
        order: the dataset's indices in evaluation order (each once), or the dataset size for ``range(n)``.
        batch_size: the loader's batch size (see :func:`eval_batch_size`).
        num_replicas, rank: world size and this process's rank.
    """

    def __init__(self, order: Sequence[int] | np.ndarray | int, batch_size: int, *, num_replicas: int = 1,
                 rank: int = 0) -> None:
        order = np.arange(order) if isinstance(order, int) else np.asarray(order, dtype=np.int64)
        super().__init__(range(len(order)), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.order, self.batch_size = order, batch_size
        starts = range(rank * batch_size, len(order), num_replicas * batch_size)
        self.indices = [int(i) for s in starts for i in order[s:s + batch_size]]
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

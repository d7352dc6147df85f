"""Batching for the EHR data module: padding collate and length-aware batch samplers.

``collate`` right-pads per-sequence arrays into the batch dict the LightningModule reads (B, L_max), in one masked
assignment per array (``collate_ref`` is the per-item reference it must equal); ``BucketBatchSampler`` makes shuffled
length-bucketed batches for training, ``SortedBatchSampler`` fixed length-sorted batches for evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

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


class BucketBatchSampler(Sampler):
    """Shuffled batches of similar length: shuffle, sort each window of ``50 * batch_size`` items by length, cut into
    batches, shuffle the batches. Cuts padding (EHR sequences vary from a few to thousands of tokens) while batches
    still mix patients and tasks. A new order every epoch (``seed + epoch``)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, window: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.window = np.asarray(lengths), batch_size, seed, window
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            part = order[start:start + span]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i:i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        for i in rng.permutation(len(batches)):
            yield batches[i]


class SortedBatchSampler(Sampler):
    """Evaluation batches: items sorted by length (stable: ties keep the dataset order), cut into consecutive batches of
    ``batch_size``. The same batches every time; padding is what sorting leaves (dataset order pads every batch to its
    longest history, ~4-5x the real tokens on EHR cohorts). Metrics are order-free; ``predict`` sorts its rows."""

    def __init__(self, lengths: np.ndarray, batch_size: int) -> None:
        self.order = np.argsort(np.asarray(lengths), kind="stable")
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        for i in range(0, len(self.order), self.batch_size):
            yield self.order[i:i + self.batch_size].tolist()

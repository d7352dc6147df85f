"""Built-in synthetic corpus for the tiny LM: lines of integer additions, ``"417+38=455;"``, character-level.

The answer digits are fully determined by the prompt, so answer accuracy measures whether a mixer can carry
information across the sequence; everything else is generated at random.
"""

from __future__ import annotations

import random

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["LMDataModule", "VOCAB", "encode", "decode", "make_corpus"]

VOCAB = "0123456789+=;"
STOI = {c: i for i, c in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    return [STOI[c] for c in text]


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def make_corpus(n_chars: int, seed: int, max_value: int = 999) -> str:
    """Random additions until ``n_chars`` characters, deterministic by ``seed``."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < n_chars:
        a, b = rng.randint(0, max_value), rng.randint(0, max_value)
        s = f"{a}+{b}={a + b};"
        parts.append(s)
        size += len(s)
    return "".join(parts)[:n_chars]


class LMDataModule(pl.LightningDataModule):
    """Windows of ``seq_len + 1`` characters of the synthetic corpus (input = first L, target = last L).

    Args:
        seq_len: L.
        batch_size: B.
        n_train: training windows.
        n_val: validation windows.
        seed: corpus seed (validation uses ``seed + 1``).
    """

    def __init__(self, seq_len: int = 128, batch_size: int = 32, n_train: int = 2048, n_val: int = 256,
                 seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.seq_len, self.batch_size, self.n_train, self.n_val, self.seed = seq_len, batch_size, n_train, n_val, seed

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    def _windows(self, n: int, seed: int) -> TensorDataset:
        ids = torch.tensor(encode(make_corpus(n * (self.seq_len + 1), seed)), dtype=torch.long)
        w = ids.view(n, self.seq_len + 1)
        return TensorDataset(w[:, :-1].contiguous(), w[:, 1:].contiguous())

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._windows(self.n_train, self.seed)
        self.val_set = self._windows(self.n_val, self.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

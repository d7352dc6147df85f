"""Field embeddings for encoded click rows (one table, per-field offsets)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class FieldEmbedding(nn.Module):
    """Embed F scalar fields (index x value) and S pooled sequence fields into (B, F + S, D).

    Each field has its own slice of one ``nn.Embedding`` (local index + field offset), so the encoded input
    keeps per-field local indices (``0`` pad, ``1`` OOV, ``2`` missing, ``3..`` tokens). A scalar field's vector
    is ``E[idx] * val`` (val = 1 for categorical; the normalised value for a numeric field, i.e. FuxiCTR's
    ``Linear(1, D)``). A sequence field's vector is the masked mean (or sum) of its non-pad token vectors.

    Args:
        field_sizes: vocabulary size of each scalar field (F entries, specials included).
        seq_sizes: vocabulary size of each sequence field (S entries).
        dim: embedding size D per field.
        init_std: normal init std (FuxiCTR uses 1e-4).
        pooling: ``mean`` or ``sum`` for sequence fields.
    """

    def __init__(self, field_sizes: list[int], seq_sizes: list[int], dim: int, init_std: float = 1e-4,
                 pooling: str = "mean") -> None:
        super().__init__()
        sizes = list(field_sizes) + list(seq_sizes)
        if len(sizes) == 0:
            raise ValueError("FieldEmbedding needs at least one field")
        offsets = [0]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + int(s))
        self.n_fields = len(field_sizes)
        self.n_seq = len(seq_sizes)
        self.dim = dim
        self.init_std = init_std
        self.mean_pool = pooling == "mean"
        self.register_buffer("offsets", torch.tensor(offsets[: self.n_fields], dtype=torch.long), persistent=False)
        self.register_buffer("seq_offsets", torch.tensor(offsets[self.n_fields:], dtype=torch.long),
                             persistent=False)
        self.table = nn.Embedding(sum(int(s) for s in sizes), dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.table.weight, std=self.init_std)

    def _lookup(self, rows: Tensor) -> Tensor:
        """Table rows for global indices of any shape (...) -> (..., D). ``index_select`` gives the same values
        as ``nn.Embedding`` and a dense gradient, but its backward (``index_add_``) costs a third of
        ``embedding_dense_backward`` on a CPU."""
        shape: list[int] = list(rows.shape)
        shape.append(self.dim)
        return self.table.weight.index_select(0, rows.reshape(-1)).view(shape)

    def forward(self, idx: Tensor, val: Tensor, seq: Optional[Tensor] = None) -> Tensor:
        """idx (B, F) long, val (B, F) float, seq (B, S, L) long or None -> (B, F + S, D)."""
        e = self._lookup(idx + self.offsets) * val.unsqueeze(-1)
        if self.n_seq > 0 and seq is not None:
            mask = (seq > 0).to(e.dtype).unsqueeze(-1)  # (B, S, L, 1), pad = 0
            t = self._lookup(seq + self.seq_offsets.view(1, -1, 1)) * mask
            pooled = t.sum(2)
            if self.mean_pool:
                pooled = pooled / mask.sum(2).clamp_min(1.0)
            e = torch.cat([e, pooled], 1)
        return e

    def extra_repr(self) -> str:
        return f"fields={self.n_fields}, seq_fields={self.n_seq}, rows={self.table.num_embeddings}, dim={self.dim}"

"""CTR network: field embeddings + one body (FCN, DCNv2, DNN or LR), chosen by ``CTRNetConfig.arch``.

Shapes: B batch, F scalar fields, S sequence fields, L sequence length, d embedding size per field and head.
Inputs are the encoder's local indices ``idx`` (B, F) int64, multipliers ``val`` (B, F) float32 and optional
``seq`` (B, S, L) int64; outputs are logits (``CTRNet``) or click probabilities (``CTRServing``).
Pure torch (no Lightning), scriptable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from linmix.apps.ctr.baselines import DCNv2Body, DNNBody, LRBody
from linmix.apps.ctr.embedding import FieldEmbedding
from linmix.apps.ctr.fcn import FCNBody


@dataclass
class CTRNetConfig:
    """Network hyperparameters (defaults = FCN's constructor defaults with embedding 16).

    Args:
        arch: ``fcn`` (ECN + LCN, arXiv:2407.13349), ``dcnv2`` (arXiv:2008.13535), ``dnn`` or ``lr``.
        field_sizes: vocabulary size per scalar field; derived from the data (filled in at setup).
        seq_sizes: vocabulary size per sequence field; derived from the data.
        d_model: embedding size d per field (per head for FCN); LR always uses 1.
        n_heads: FCN heads.
        n_layers: FCN ECN layers / DCNv2 cross layers.
        n_linear_layers: FCN LCN layers.
        dropout: FCN ECN dropout, DNN/DCNv2 MLP dropout.
        linear_dropout: FCN LCN dropout.
        layer_norm: FCN Self-Mask LayerNorm.
        batch_norm: FCN BatchNorm over heads / MLP BatchNorm.
        hidden: DNN / DCNv2 deep-part widths.
        embed_init_std: embedding init std (1e-4 in FuxiCTR).
        seq_pooling: ``mean`` or ``sum``.
    """

    arch: Literal["fcn", "dcnv2", "dnn", "lr"] = "fcn"
    field_sizes: tuple[int, ...] = ()
    seq_sizes: tuple[int, ...] = ()
    d_model: int = 16
    n_heads: int = 1
    n_layers: int = 4
    n_linear_layers: int = 4
    dropout: float = 0.1
    linear_dropout: float = 0.3
    layer_norm: bool = True
    batch_norm: bool = False
    hidden: tuple[int, ...] = (400, 400, 400)
    embed_init_std: float = 1e-4
    seq_pooling: Literal["mean", "sum"] = "mean"


class CTRNet(nn.Module):
    """Embeddings + body; ``forward`` gives the fused logit (B,), ``branch_logits`` also the two branches."""

    def __init__(self, cfg: CTRNetConfig) -> None:
        super().__init__()
        if not cfg.field_sizes and not cfg.seq_sizes:
            raise ValueError("CTRNetConfig.field_sizes is empty: the sizes come from the data (fit the encoder "
                             "first, or let CTRLitModule fill them from the datamodule)")
        self.cfg = cfg
        n = len(cfg.field_sizes) + len(cfg.seq_sizes)
        d = 1 if cfg.arch == "lr" else cfg.d_model
        width = d * cfg.n_heads if cfg.arch == "fcn" else d
        self.embedding = FieldEmbedding(list(cfg.field_sizes), list(cfg.seq_sizes), width, cfg.embed_init_std,
                                        cfg.seq_pooling)
        hidden = list(cfg.hidden)
        if cfg.arch == "fcn":
            self.body = FCNBody(n, d, cfg.n_heads, cfg.n_layers, cfg.n_linear_layers, cfg.dropout,
                                cfg.linear_dropout, cfg.layer_norm, cfg.batch_norm)
        elif cfg.arch == "dcnv2":
            self.body = DCNv2Body(n, d, cfg.n_layers, hidden, cfg.dropout, cfg.batch_norm)
        elif cfg.arch == "dnn":
            self.body = DNNBody(n, d, hidden, cfg.dropout, cfg.batch_norm)
        elif cfg.arch == "lr":
            self.body = LRBody()
        else:
            raise ValueError(f"unknown arch {cfg.arch!r} (fcn|dcnv2|dnn|lr)")

    def branch_logits(self, idx: Tensor, val: Tensor, seq: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (fused, ECN, LCN) logits (B,); baselines repeat their single logit."""
        return self.body(self.embedding(idx, val, seq))

    def forward(self, idx: Tensor, val: Tensor, seq: Optional[Tensor] = None) -> Tensor:
        """idx (B, F), val (B, F), seq (B, S, L) or None -> fused logit (B,)."""
        return self.branch_logits(idx, val, seq)[0]


class CTRServing(nn.Module):
    """Exported model: checks the encoded input, returns the click probability (B,).

    Raises a clear error for a wrong number of fields, an index outside a field's vocabulary, or NaN/inf
    in ``val`` (numeric input must be finite at serving time). ``checks=False`` leaves the value checks out (the
    ``torch.export`` / ONNX graphs: data-dependent branches do not trace; ONNX Runtime itself refuses an out-of-range
    index in its Gather, and the exported featurizer only produces valid ones).
    """

    def __init__(self, net: CTRNet, checks: bool = True) -> None:
        super().__init__()
        self.net = net
        self.checks = checks
        self.n_fields = len(net.cfg.field_sizes)
        self.n_seq = len(net.cfg.seq_sizes)
        self.register_buffer("sizes", torch.tensor(list(net.cfg.field_sizes), dtype=torch.long))

    def forward(self, idx: Tensor, val: Tensor, seq: Optional[Tensor] = None) -> Tensor:
        """idx (B, F) int64 local indices, val (B, F) float, seq (B, S, L) int64 -> probability (B,)."""
        if idx.dim() != 2 or idx.size(1) != self.n_fields:
            raise ValueError(f"idx must be (B, {self.n_fields}), got {list(idx.shape)}")
        if val.shape != idx.shape:
            raise ValueError(f"val must have the shape of idx {list(idx.shape)}, got {list(val.shape)}")
        if self.checks and not bool(torch.isfinite(val).all()):
            bad = torch.nonzero(~torch.isfinite(val))[0]
            raise ValueError(f"NaN/inf in numeric input at row {int(bad[0])}, field {int(bad[1])}")
        if self.checks and idx.numel() > 0 and (bool((idx < 0).any()) or bool((idx >= self.sizes).any())):
            bad = torch.nonzero((idx < 0) | (idx >= self.sizes))[0]
            raise ValueError(f"index {int(idx[bad[0], bad[1]])} out of range for field {int(bad[1])} at row "
                             f"{int(bad[0])} (vocabulary size {int(self.sizes[bad[1]])})")
        if self.n_seq > 0 and seq is None:
            raise ValueError(f"this model has {self.n_seq} sequence field(s): pass seq (B, S, L)")
        return torch.sigmoid(self.net(idx, val.to(torch.float32), seq))

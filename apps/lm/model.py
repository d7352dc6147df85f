"""A tiny mixer language model: token embedding -> shared MixerStack -> tied LM head.

The smoke-test app of the shared core: it exercises every mixer kind end to end (training, DDP, resume, export).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from torch import Tensor, nn

from linmix.shared.blocks import MixerStack

__all__ = ["MixerLMConfig", "MixerLM"]


@dataclass
class MixerLMConfig:
    """Size of :class:`MixerLM`. ``vocab_size`` is linked from the data module. ``mixer`` is one of
    ``linmix.shared.MIXERS``; ``mixer_cfg`` holds keyword arguments of its mixers over ``n_heads`` / ``d_state``
    (Mamba2: ``headdim``, ``expand``, ``d_conv``, ``chunk_size``, ``segment_len``, ``ngroups``, ``backend``;
    ``linmix.shared.blocks.mixer_options`` lists them per kind)."""

    vocab_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    mixer: str = "mamba2"
    n_heads: int = 4
    d_state: int = 16
    dropout: float = 0.0
    mixer_cfg: Optional[Dict[str, Any]] = None


class MixerLM(nn.Module):
    """Causal LM. ``forward(tokens (B, L) long, mask (B, L) bool | None) -> logits (B, L, V)``."""

    def __init__(self, cfg: MixerLMConfig) -> None:
        super().__init__()
        self.vocab_size = cfg.vocab_size
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone = MixerStack(cfg.d_model, cfg.n_layers, mixer=cfg.mixer, n_heads=cfg.n_heads,
                                   d_state=cfg.d_state, dropout=cfg.dropout, mixer_cfg=cfg.mixer_cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, tokens: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"MixerLM: tokens must be (B, L), got {list(tokens.shape)}")
        return self.head(self.backbone(self.embed(tokens), mask))

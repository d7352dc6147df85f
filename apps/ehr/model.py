"""EHRMamba: Odyssey-style embeddings on the shared causal Mamba2 stack, with LM and classification heads.

Fallahpour et al., "EHRMamba: Towards Generalizable and Scalable Foundation Models for Electronic Health Records",
arXiv 2405.14567 (ML4H 2024). Embedding (Odyssey ``MambaEmbeddingsForCEHR``)::

    e = tanh(W [concept(token) ; sin_time(delta_time) ; sin_age(age)]) + type(token_type) + visit(visit_order)
        + segment(visit_segment)
    e = LayerNorm(dropout(e))

then ``shared.MixerStack(mixer="mamba2")`` (causal). Pretraining: next-token logits (``lm_logits``). Multitask prompted
finetuning: the task token sits in slot 0 (where ``[CLS]`` was) and one logit is read at the last real token
(``pool_logit``). Shapes: B batch, L tokens, D = ``d_model``, V = ``vocab_size``. Times are in days, ages in years.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from linmix.shared import MixerStack

PAD_ID = 0  # == sequences.PAD
TYPE_TASK = 9  # == sequences.TYPE_TASK


@dataclass
class EHRMambaConfig:
    """EHRMamba sizes. ``vocab_size`` and ``n_token_types`` come from the data (linked in the CLI). ``mixer``: a causal
    kind of ``linmix.shared.MixerStack`` (``mamba2``, ``mamba3``, or ``hybrid``: Mamba + causal softmax attention).
    ``mixer_cfg``: keyword arguments of every mixer over ``n_heads`` / ``d_state`` (Mamba2: ``headdim``, ``expand``,
    ``d_conv``, ``chunk_size``, ``segment_len``, ``ngroups``, ``backend``; ``linmix.shared.blocks.mixer_options``
    lists them per kind)."""

    vocab_size: int = 2048
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_state: int = 64
    dropout: float = 0.1
    d_time: int = 32  # width of each sinusoidal embedding (time delta, age)
    n_token_types: int = 14
    max_visits: int = 512  # visit orders above are clamped
    n_segments: int = 3
    tie_embeddings: bool = True
    n_tasks: int = 0  # 0: one task logit shared by all prompts (Odyssey MPF); k: one linear readout per task
    activation_checkpointing: bool = False  # recompute blocks in backward: less training memory, more time
    mixer: str = "mamba2"
    mixer_cfg: Optional[Dict[str, Any]] = None


CAUSAL_MIXERS = ("mamba2", "mamba3", "hybrid")


class Sinusoid(nn.Module):
    """Fixed sinusoidal embedding of a real value: (B, L) -> (B, L, dim), periods from 2*pi/scale to max_period."""

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = scale * torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / max(half, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        angles = x.unsqueeze(-1).float() * self.freqs  # (B, L, dim/2)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class EHRMambaEmbedding(nn.Module):
    """Token + side arrays -> (B, L, D). ``prev_time`` (B,) continues a sequence (time delta of its first token)."""

    def __init__(self, cfg: EHRMambaConfig) -> None:
        super().__init__()
        self.max_visits = cfg.max_visits
        self.concept = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.time_emb = Sinusoid(cfg.d_time, max_period=1000.0, scale=4.0)  # days; fastest period ~1.5 d
        self.age_emb = Sinusoid(cfg.d_time, max_period=200.0, scale=1.0)  # years
        self.mix = nn.Linear(cfg.d_model + 2 * (cfg.d_time // 2) * 2, cfg.d_model)
        self.token_type = nn.Embedding(cfg.n_token_types, cfg.d_model)
        self.visit_order = nn.Embedding(cfg.max_visits, cfg.d_model)
        self.segment = nn.Embedding(cfg.n_segments, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.concept, self.token_type, self.visit_order, self.segment):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.concept.weight[PAD_ID].zero_()
        self.mix.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, tokens: Tensor, token_type: Tensor, age: Tensor, time: Tensor, visit_order: Tensor,
                visit_segment: Tensor, prev_time: Optional[Tensor] = None) -> Tensor:
        first = time[:, :1] if prev_time is None else prev_time.unsqueeze(1).to(time.dtype)
        delta = (time - torch.cat([first, time[:, :-1]], dim=1)).clamp_min(0.0)  # (B, L) days
        feats = torch.cat([self.concept(tokens), self.time_emb(delta), self.age_emb(age)], dim=-1)
        x = torch.tanh(self.mix(feats))
        x = x + self.token_type(token_type) + self.visit_order(visit_order.clamp(0, self.max_visits - 1)) \
            + self.segment(visit_segment)
        return self.norm(self.dropout(x))


class EHRMamba(nn.Module):
    """Embedding -> causal Mamba2 MixerStack -> hidden (B, L, D); LM head (tied by default) and a task logit head."""

    def __init__(self, cfg: EHRMambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_id = PAD_ID
        self.embed = EHRMambaEmbedding(cfg)
        if cfg.mixer not in CAUSAL_MIXERS:
            raise ValueError(f"EHRMamba: mixer must be one of {CAUSAL_MIXERS} (causal), got {cfg.mixer!r}")
        self.backbone = MixerStack(d_model=cfg.d_model, n_layers=cfg.n_layers, mixer=cfg.mixer, n_heads=cfg.n_heads,
                                   d_state=cfg.d_state, dropout=cfg.dropout,
                                   activation_checkpointing=cfg.activation_checkpointing, mixer_cfg=cfg.mixer_cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.concept.weight
        self.cls_head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.d_model, max(1, cfg.n_tasks)))

    def forward(self, tokens: Tensor, token_type: Tensor, age: Tensor, time: Tensor, visit_order: Tensor,
                visit_segment: Tensor) -> Tensor:
        """All inputs (B, L) (tokens/types/visits/segments long, age years, time days) -> hidden (B, L, D)."""
        mask = tokens != self.pad_id
        x = self.embed(tokens, token_type, age, time, visit_order, visit_segment)
        return self.backbone(x, mask)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """(B, L, D) -> next-token logits (B, L, V)."""
        return self.lm_head(hidden)

    def pool_logit(self, hidden: Tensor, lengths: Tensor, task: Optional[Tensor] = None) -> Tensor:
        """Task logit at the last real token: hidden (B, L, D), lengths (B,), task (B,) index -> (B,)."""
        idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
        return self.head_logit(hidden.gather(1, idx).squeeze(1), task)

    def head_logit(self, pooled: Tensor, task: Optional[Tensor] = None) -> Tensor:
        """Pooled hidden (B, D) -> logit (B,): the shared readout, or task ``task``'s readout when ``n_tasks`` > 0."""
        out = self.cls_head(pooled)  # (B, max(1, n_tasks))
        if out.size(-1) == 1:
            return out.squeeze(-1)
        if task is None:
            raise ValueError("this model has one readout per task: pass the task indices")
        return out.gather(1, task.view(-1, 1)).squeeze(1)

    def init_state(self, batch: int) -> list[Tensor]:
        """Empty recurrent state of the backbone for ``batch`` sequences."""
        return self.backbone.init_state(batch)

    def forward_state(self, tokens: Tensor, token_type: Tensor, age: Tensor, time: Tensor, visit_order: Tensor,
                      visit_segment: Tensor, prev_time: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Continue sequences from a saved state: new chunk (B, L) + the time of the previous token (B,) ->
        (hidden (B, L, D), new state). No padding inside a chunk. Equals ``forward`` on the concatenation."""
        x = self.embed(tokens, token_type, age, time, visit_order, visit_segment, prev_time)
        return self.backbone.forward_state(x, state)


def prompt(tokens: Tensor, token_type: Tensor, age: Tensor, time: Tensor, visit_order: Tensor,
           visit_segment: Tensor, task_token: Tensor, type_task: int = TYPE_TASK,
           pad_id: int = PAD_ID) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Multitask prompt: the task token replaces ``[CLS]`` in slot 0 and is appended after the last real token.

    Inputs (B, L) right-padded with ``pad_id``, ``task_token`` (B,) -> the six arrays (B, L + 1) and lengths (B,). The
    appended token (type TASK, age/time of the last real token, visit 0) is where the causal model is pooled, so the
    task conditions the readout directly (Odyssey's last-token swap, but after the cutoff: Odyssey swaps before
    truncating, so the trailing task token of long LOS / readmission inputs is cut off).
    """
    b = tokens.size(0)
    lengths = (tokens != pad_id).sum(dim=1)
    idx = lengths.unsqueeze(1)  # (B, 1) position of the appended token
    last = (lengths - 1).clamp_min(0).unsqueeze(1)
    zl = torch.zeros(b, 1, dtype=tokens.dtype, device=tokens.device)
    zf = torch.zeros(b, 1, dtype=age.dtype, device=age.device)
    tokens = torch.cat([task_token.unsqueeze(1), tokens[:, 1:], zl], dim=1).scatter(1, idx, task_token.unsqueeze(1))
    task_type = torch.full_like(zl, type_task)
    token_type = torch.cat([task_type, token_type[:, 1:], zl], dim=1).scatter(1, idx, task_type)
    age = torch.cat([age, zf], dim=1)
    age = age.scatter(1, idx, age.gather(1, last))
    time = torch.cat([time, zf.to(time.dtype)], dim=1)
    time = time.scatter(1, idx, time.gather(1, last))
    visit_order = torch.cat([visit_order[:, :1] * 0, visit_order[:, 1:], zl], dim=1)
    visit_segment = torch.cat([visit_segment[:, :1] * 0, visit_segment[:, 1:], zl], dim=1)
    return tokens, token_type, age, time, visit_order, visit_segment, lengths + 1


class EHRMambaScorer(nn.Module):
    """Exportable scorer: token + side arrays (B, L), right-padded with PAD, + task index (B,) -> probability (B,).

    The inputs are a patient's sequence cut at the prediction time, ``[CLS]`` in slot 0; :func:`prompt` adds the task
    token (``task_token_ids[task]``) in front and at the end.
    """

    def __init__(self, net: EHRMamba, task_token_ids: list[int]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("task_token_ids", torch.tensor(task_token_ids, dtype=torch.long), persistent=False)

    def forward(self, tokens: Tensor, token_type: Tensor, age: Tensor, time: Tensor, visit_order: Tensor,
                visit_segment: Tensor, task: Tensor) -> Tensor:
        t, ty, a, tm, vo, vs, lengths = prompt(tokens, token_type, age, time, visit_order, visit_segment,
                                                self.task_token_ids[task])
        hidden = self.net(t, ty, a, tm, vo, vs)
        return torch.sigmoid(self.net.pool_logit(hidden, lengths, task))

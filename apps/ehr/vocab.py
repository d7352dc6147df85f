"""EHR token vocabulary: fixed ids (specials, interval tokens, task prompts), then concept tokens by train frequency.

Ids: ``[PAD] [UNK] [MASK] [VS] [VE] [CLS] [REG]`` (0-6), 18 time tokens (7-24), task tokens
``[MOR_1M] [LOS_1W] [REA_1M] [C0..C{k-1}]``, then the train split's concept tokens (events, binned labs, visit classes)
by descending count up to ``vocab_size`` (rarer -> ``[UNK]``), then one ``[TASK//<name>]`` per task a user brings
(``--data.labels_dir``): these take the last ids, so every other id is the same with or without user tasks (a model
pretrained without them finetunes on them; their slots held the rarest concepts, which become ``[UNK]``). The lab bin
edges and the code dialect (when not the ``own`` preset) travel with the vocabulary, so a trained model tokenises new
data exactly as its training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl

SPECIALS = ("[PAD]", "[UNK]", "[MASK]", "[VS]", "[VE]", "[CLS]", "[REG]")
TIME_TOKENS = tuple([f"[W_{i}]" for i in range(4)] + [f"[M_{i}]" for i in range(13)] + ["[LT]"])
BASE_TASK_TOKENS = ("[MOR_1M]", "[LOS_1W]", "[REA_1M]")
UNK = 1


def task_tokens(n_conditions: int) -> tuple[str, ...]:
    """Task prompt tokens: mortality, length of stay, readmission, then one per condition group."""
    return BASE_TASK_TOKENS + tuple(f"[C{i}]" for i in range(n_conditions))


@dataclass
class Vocabulary:
    """Token strings, ids by position; ``n_conditions`` sets the task-token block."""

    tokens: list[str]
    n_conditions: int
    lab_edges: dict[str, list[float]] = field(default_factory=dict)
    dialect: dict | None = None  # the code dialect it was built with (``CodeDialect.to_dict``); None = own

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def id(self, token: str) -> int:
        return self.index.get(token, UNK)

    def task_id(self, token: str) -> int:
        return self.index[token]

    def to_json(self) -> str:
        d = {"tokens": self.tokens, "n_conditions": self.n_conditions, "lab_edges": self.lab_edges}
        if self.dialect is not None:
            d["dialect"] = self.dialect
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        d = json.loads(text)
        return cls(d["tokens"], d["n_conditions"], d.get("lab_edges", {}), d.get("dialect"))


def user_task_token(task: str) -> str:
    """Prompt token of a task from ``--data.labels_dir``."""
    return f"[TASK//{task}]"


def fixed_tokens(n_conditions: int) -> list[str]:
    """Ids that never depend on the data: specials, time tokens, task tokens."""
    return list(SPECIALS) + list(TIME_TOKENS) + list(task_tokens(n_conditions))


def build_vocabulary(tokenised: pl.DataFrame, settings, edges: dict[str, list[float]]) -> Vocabulary:
    """Fixed ids, then the train split's event tokens by descending count (ties by name) up to ``vocab_size``, then
    the user tasks' prompt tokens (``settings.user_tasks``) in the last ids."""
    fixed = fixed_tokens(settings.n_conditions)
    user = [user_task_token(t) for t in getattr(settings, "user_tasks", ())]
    room = settings.vocab_size - len(fixed) - len(user)
    if room < 1:
        raise ValueError(f"vocab_size {settings.vocab_size} leaves no room after {len(fixed)} fixed and {len(user)} "
                         "user task tokens")
    counts = (tokenised.filter((pl.col("split") == "train") & (pl.col("kind").is_not_null()) & (pl.col("kind") >= -1))
              .group_by("token").len().sort(["len", "token"], descending=[True, False]))
    concepts = counts["token"].head(room).to_list()
    pad = [f"[UNUSED_{i}]" for i in range(room - len(concepts))] if user else []
    return Vocabulary(fixed + concepts + pad + user, settings.n_conditions, edges)

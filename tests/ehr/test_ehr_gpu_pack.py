"""The GPU job's EHR pack (``benchmarks/gpu/pack_ehr.py``) and its reader (``benchmarks/gpu/train_ehr.py``): inputs
stored as prefixes of other sequences come back exactly, batched equal to ``collate`` of the items."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from linmix.apps.ehr.batches import collate

GPU = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU))  # the job's modules import each other by name (they run from that folder on the device)
import pack_ehr  # noqa: E402
import train_ehr  # noqa: E402


def _seq(rng, n: int, subject: int) -> dict:
    return {"tokens": rng.integers(3, 200, n), "token_type": rng.integers(0, 9, n), "age": rng.random(n).astype(np.float32) * 80,
            "time": np.cumsum(rng.random(n)).astype(np.float32), "visit_order": rng.integers(0, 60, n),
            "visit_segment": rng.integers(0, 3, n), "subject_id": subject}


def _cut(item: dict, n: int) -> dict:
    return {k: (v[:n] if isinstance(v, np.ndarray) else v) for k, v in item.items()}


def _check(z: dict, part: str, items: list[dict]) -> None:
    packed = train_ehr.Packed(z, part)
    assert np.array_equal(packed.lengths, [len(it["tokens"]) for it in items])
    for j, it in enumerate(items):
        got = packed.inputs(j)
        for k, _ in pack_ehr.KEYS:
            assert np.array_equal(got[k].astype(np.asarray(it[k]).dtype), it[k]), (part, j, k)
    rows = np.array([2, 0, len(items) - 1, 1])
    want = collate([{**items[j], "subject_id": 0} for j in rows])
    for k, v in packed.batch(rows).items():
        assert v.dtype == want[k].dtype and torch.equal(v, want[k]), k


def test_prefix_pack_round_trips_against_a_base_part_and_its_own_sequences():
    rng = np.random.default_rng(0)
    full = [_seq(rng, n, s) for s, n in ((11, 30), (12, 7), (13, 19))]
    out: dict = {}
    pack_ehr._pack_items(full, "pre_train", out)
    cuts = [_cut(full[0], 5), _cut(full[0], 30), _cut(full[2], 1), _cut(full[1], 7), _cut(full[2], 12)]
    assert pack_ehr._pack_prefixes(cuts, "ft_a", out, base="pre_train") == 0  # all prefixes: nothing stored again
    assert str(out["ft_a/base"]) == "pre_train"
    odd = _cut(full[1], 6)
    odd["tokens"] = odd["tokens"].copy()
    odd["tokens"][-1] += 1  # same patient, not a prefix of the base sequence
    mixed = cuts + [odd]
    stored = pack_ehr._pack_prefixes(mixed, "ft_b", out, base="pre_train")  # falls back to its own sequences
    assert str(out["ft_b/base"]) == "ft_b" and stored == 30 + 7 + 12 + 6  # longest cut per patient + the odd one
    z = {k: v for k, v in out.items()}
    _check(z, "ft_a", cuts)
    _check(z, "ft_b", mixed)

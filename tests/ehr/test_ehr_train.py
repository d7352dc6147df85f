"""EHRDataModule for both objectives, length-bucketed batches that mix tasks, and one finetuning step lowering the loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.batching import BucketSampler, collate, collate_ref, rank_sampler
from linmix.apps.ehr.data import EHRDataModule
from linmix.apps.ehr.lit_module import EHRLitModule
from linmix.apps.ehr.model import EHRMambaConfig
from linmix.shared.errors import UserError

_spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__).with_name("test_ehr_seq_fixture.py"))
FX = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FX)


def test_bucket_sampler_covers_everything_once_and_reduces_padding():
    lengths = np.random.default_rng(0).integers(1, 200, 1000)
    sampler = BucketSampler(lengths, batch_size=16, window=10)
    batches = sampler.batches()
    flat = list(sampler)
    assert flat == [i for b in batches for i in b] and len(flat) == len(sampler) == 1000
    assert sorted(flat) == list(range(1000)) and all(len(b) == 16 for b in batches[:-1])  # only the last is short
    loader = torch.utils.data.DataLoader(range(1000), batch_size=16, sampler=sampler)
    assert [b.tolist() for b in loader] == batches  # the loader cuts the flat order back into the same batches
    padded = sum(len(b) * lengths[b].max() for b in batches)
    rand = sum(len(b) * lengths[b].max() for b in np.array_split(np.random.default_rng(1).permutation(1000), 63))
    assert padded < 0.7 * rand
    assert list(sampler) == flat  # the same epoch, the same order
    sampler.set_epoch(1)
    assert [b[:3] for b in sampler.batches()[:3]] != [b[:3] for b in batches[:3]]  # a new order every epoch


def test_bucket_sampler_ranks_take_disjoint_equal_shares_of_every_epoch():
    lengths = np.random.default_rng(0).integers(1, 200, 1001)
    for epoch in (0, 3):
        shares = []
        for rank in range(3):
            s = BucketSampler(lengths, batch_size=16, window=10, num_replicas=3, rank=rank)
            s.set_epoch(epoch)
            shares.append(list(s))
            assert len(shares[-1]) == len(s) == 333 and len(s.batches()) == 21  # ceil(333 / 16) on every rank
        flat = [i for sh in shares for i in sh]
        assert len(set(flat)) == len(flat) == 999  # disjoint; 1001 % 3 = 2 items sit this epoch out
    with pytest.raises(UserError, match="fewer than the 4 training processes"):
        BucketSampler(lengths[:3], batch_size=16, num_replicas=4)


def test_sorted_eval_batches_cover_everything_once_in_fixed_length_order():
    lengths = np.random.default_rng(0).integers(1, 200, 1000)
    sampler, bs = rank_sampler(lengths, 16, train=False)
    flat = list(sampler)
    batches = [flat[i:i + bs] for i in range(0, len(flat), bs)]
    assert len(batches) == 63 and len(sampler) == 1000 and sorted(flat) == list(range(1000))
    assert list(lengths[flat]) == sorted(lengths) and list(sampler) == flat  # sorted, same every epoch
    padded = sum(len(b) * lengths[b].max() for b in batches)
    in_order = sum(len(b) * lengths[b].max() for b in np.array_split(np.arange(1000), 63))
    assert padded < 0.6 * in_order
    # two ranks: the single-process batches dealt round robin, each item once, no padding repeats
    parts = [list(rank_sampler(lengths, 16, train=False, shard=(r, 2))[0]) for r in range(2)]
    assert len(parts[0]) == 31 * 16 + 8 and len(parts[1]) == 31 * 16  # 63 batches, the last of 8 on rank 0
    assert parts[0][:16] == batches[0] and parts[1][:16] == batches[1] and parts[0][16:32] == batches[2]
    assert sorted(parts[0] + parts[1]) == list(range(1000))
    # fewer batches than ranks: smaller batches, so that every rank has one
    small = [rank_sampler(lengths[:20], 16, train=False, shard=(r, 3)) for r in range(3)]
    assert [bs for _, bs in small] == [7, 7, 7] and [len(s) for s, _ in small] == [7, 7, 6]


def test_collate_equals_the_per_item_reference():
    rng = np.random.default_rng(0)

    def item(n: int, finetune: bool) -> dict:
        it = {k: rng.integers(1, 99, n).astype(np.int32) for k in ("tokens", "token_type", "visit_order", "visit_segment")}
        it |= {k: rng.random(n).astype(np.float32) * 90 for k in ("age", "time")}
        it["subject_id"] = int(rng.integers(1, 10**6))
        if finetune:
            it |= {"task": int(rng.integers(0, 8)), "task_token": int(rng.integers(3, 20)), "label": float(rng.integers(0, 2)),
                   "prediction_time": int(rng.integers(0, 10**15))}
        return it

    for lengths, finetune in (([5], False), (rng.integers(1, 40, 17), True), ([3, 3, 60, 1], True)):
        items = [item(int(n), finetune) for n in lengths]
        want, got = collate_ref(items), collate(items)
        assert set(got) == set(want)
        assert got["tokens"].shape == (len(items), max(lengths)) and (got["tokens"][0, lengths[0]:] == 0).all()
        for k, v in got.items():
            assert v.dtype == want[k].dtype and torch.equal(v, want[k]), k


def test_datamodule_both_objectives_and_a_learning_step(tmp_path):
    meds = FX.write_meds(tmp_path / "meds", 50)
    kw = dict(meds_dir=str(meds), cache_dir=str(tmp_path / "cache"), vocab_size=128, max_len=32, batch_size=64)
    pre = EHRDataModule(objective="pretrain", **kw)
    pre.prepare_data()
    pre.setup("fit")
    batch = next(iter(pre.train_dataloader()))
    assert batch["tokens"].shape[1] <= 32 and (batch["tokens"][:, 0] == S.CLS).all()
    assert set(pre.datasets) == {"train", "tuning", "held_out"}
    fine = EHRDataModule(objective="finetune", **kw)
    fine.prepare_data()
    fine.setup("fit")
    assert fine.task_names[:3] == ["mortality", "los", "readmission"]
    batch = next(iter(fine.train_dataloader()))
    assert batch["tokens"].shape[1] <= 31 and len(set(batch["task"].tolist())) > 1  # tasks mixed in a batch
    assert set(batch["task_token"].tolist()) <= set(fine.task_token_ids)
    torch.manual_seed(0)
    lit = EHRLitModule(net=EHRMambaConfig(vocab_size=128, d_model=32, n_layers=1, d_state=16, d_time=8,
                                          max_visits=16, dropout=0.0), objective="finetune", lr=1e-2)
    lit.log_stage = lambda *a, **k: None
    opt = torch.optim.Adam(lit.parameters(), lr=1e-2)
    first = lit._step(batch, "train")
    for _ in range(5):
        opt.zero_grad()
        loss = lit._step(batch, "train")
        loss.backward()
        opt.step()
    assert lit._step(batch, "train") < first

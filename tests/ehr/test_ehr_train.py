"""EHRDataModule for both objectives, length-bucketed batches that mix tasks, and one finetuning step lowering the loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.batches import collate, collate_packed
from linmix.apps.ehr.data import BucketBatchSampler, EHRDataModule, SortedBatchSampler
from linmix.apps.ehr.lit_module import EHRLitModule
from linmix.apps.ehr.model import EHRMambaConfig

_spec = importlib.util.spec_from_file_location("ehr_meds_fixture", Path(__file__).with_name("test_ehr_seq_fixture.py"))
FX = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FX)


def test_bucket_sampler_covers_everything_once_and_reduces_padding():
    lengths = np.random.default_rng(0).integers(1, 200, 1000)
    sampler = BucketBatchSampler(lengths, batch_size=16, window=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) and sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    rand = sum(len(b) * lengths[b].max() for b in np.array_split(np.random.default_rng(1).permutation(1000), 63))
    assert padded < 0.7 * rand
    assert [b[:3] for b in list(sampler)[:3]] != [b[:3] for b in batches[:3]]  # a new order every epoch


def test_sorted_eval_batches_cover_everything_once_in_fixed_length_order():
    lengths = np.random.default_rng(0).integers(1, 200, 1000)
    sampler = SortedBatchSampler(lengths, batch_size=16)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert len(batches) == len(sampler) == 63 and sorted(flat) == list(range(1000))
    assert list(lengths[flat]) == sorted(lengths) and list(sampler) == batches  # sorted, same every epoch
    padded = sum(len(b) * lengths[b].max() for b in batches)
    in_order = sum(len(b) * lengths[b].max() for b in np.array_split(np.arange(1000), 63))
    assert padded < 0.6 * in_order


def test_collate_packed_equals_collate_of_the_items():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 60)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    arrays = {k: rng.integers(1, 99, offsets[-1]).astype(np.int32) for k in
              ("tokens", "token_type", "visit_order", "visit_segment")}
    arrays |= {k: rng.random(offsets[-1]).astype(np.float32) * 90 for k in ("age", "time")}
    for rows in (np.array([5]), rng.permutation(60)[:17], np.array([3, 3, 59, 0])):
        items = [{**{k: v[offsets[j]:offsets[j + 1]] for k, v in arrays.items()}, "subject_id": 0} for j in rows]
        want, got = collate(items), collate_packed(arrays, offsets[rows], lengths[rows])
        assert set(got) == set(want) - {"subject_id"}
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

"""EHRDataModule for both objectives, length-bucketed batches that mix tasks, and one finetuning step lowering the loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.batching import collate, collate_ref
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

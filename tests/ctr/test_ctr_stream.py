"""Streaming training data: exactly once per rank and worker, seeded order, shards checked, resume, parallel encode."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from linmix.apps.ctr.data import CTRDataModule
from linmix.apps.ctr.pipeline import encode_dataset
from linmix.apps.ctr.schema import criteo_schema
from linmix.apps.ctr.shards import (
    ArrowColumn,
    ShardError,
    arrow_to_numpy,
    load_manifest,
    manifest_path,
    split_folder,
)
from linmix.apps.ctr.stream import RowStream, ShardSource, StreamLoader, rank_plan, worker_plan
from linmix.shared.errors import UserError


def _lines(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        ints = [str(rng.randint(0, 50)) if rng.random() > 0.2 else "" for _ in range(13)]
        cats = [f"{rng.randint(0, 30):08x}" if rng.random() > 0.1 else "" for _ in range(26)]
        out.append("\t".join([str(int(rng.random() < 0.3))] + ints + cats))
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A Criteo-format split of 1,000 rows as 4 shards of row groups of 64 rows (the last ones shorter)."""
    d = tmp_path_factory.mktemp("stream")
    rng = random.Random(0)
    (d / "train.txt").write_text("\n".join(_lines(rng, 1000)) + "\n")
    (d / "val.txt").write_text("\n".join(_lines(rng, 203)) + "\n")
    encode_dataset({"train": d / "train.txt", "val": d / "val.txt"}, criteo_schema(), d / "enc", chunk_rows=250,
                   row_group_rows=64)
    return d / "enc"


def _plan_rows(units, world, workers, batch, epoch=0, seed=0, shuffle=True):
    per_rank = []
    for r in range(world):
        pieces, sizes = rank_plan(units, epoch=epoch, seed=seed, shuffle=shuffle, rank=r, world=world,
                                  batch_size=batch)
        rows, nb = [], len(sizes)
        for w in range(workers):
            p, s = worker_plan(pieces, sizes, w, workers)
            assert int((p[:, 3] - p[:, 2]).sum()) == sum(s)
            rows += [np.arange(q[4] + q[2], q[4] + q[3]) for q in p]
        per_rank.append((np.concatenate(rows) if rows else np.zeros(0, np.int64), nb))
    return per_rank


@pytest.mark.parametrize("world,workers,batch,sizes", [
    (2, 2, 7, [64] * 15 + [40]),      # uneven tail
    (3, 2, 5, [1000]),                 # more ranks than shards (one row group)
    (2, 3, 4, [3, 0, 5, 9]),           # an empty row group, more workers than some ranks' batches
    (4, 1, 2, [13]),                   # a rank one row short: last two batches 1 + 1
])
def test_plan_covers_every_row_once_with_equal_batches_per_rank(world, workers, batch, sizes):
    units = np.array([(0, g, n, sum(sizes[:g])) for g, n in enumerate(sizes) if n], np.int64)
    got = _plan_rows(units, world, workers, batch)
    allrows = np.concatenate([r for r, _ in got])
    assert sorted(allrows.tolist()) == list(range(sum(sizes)))  # each row exactly once
    assert len({nb for _, nb in got}) == 1  # same number of batches on every rank: no rank waits


def test_more_ranks_than_rows_is_a_user_error():
    with pytest.raises(UserError, match="at least one row"):
        rank_plan(np.array([(0, 0, 2, 0)]), epoch=0, seed=0, shuffle=True, rank=0, world=3, batch_size=4)


def _ddp_worker(rank: int, cache: str, port: str, out: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from linmix.apps.ctr.encoder import FeatureEncoder

    enc = FeatureEncoder.load(Path(cache) / "vocab.json")
    ds = RowStream(ShardSource(load_manifest(cache, "train"), enc), batch_size=64, shuffle=True, seed=3,
                   buffer_rows=100, rank=rank, world=2)
    ds.epoch = 1
    rows, batches = [], 0
    for b in DataLoader(ds, batch_size=None, num_workers=2):
        rows.append(b["row"])
        batches += 1
    everyone = [None, None]
    dist.all_gather_object(everyone, (torch.cat(rows).tolist(), batches))
    if rank == 0:
        Path(out).write_text(json.dumps(everyone))
    dist.destroy_process_group()


def test_two_gloo_ranks_by_two_workers_read_every_row_once(cache, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "rows.json"
    mp.start_processes(_ddp_worker, args=(str(cache), str(29500 + os.getpid() % 1000), str(out)), nprocs=2,
                       start_method="fork")
    (r0, n0), (r1, n1) = json.loads(out.read_text())
    assert n0 == n1 == 8  # ceil(500 / 64)
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(1000))


def _batches(cache, streaming, seed, epoch=0, buffer=300, monkeypatch=None):
    dm = CTRDataModule(format="criteo", train_path="unused", cache_dir=str(cache), batch_size=64,
                       streaming=streaming, shuffle_buffer=buffer)
    dm.prepare_data = lambda: None  # the cache is already encoded
    dm.setup("fit")
    if monkeypatch is not None:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
    loader = dm.train_dataloader()
    loader.epoch_fn = lambda: epoch
    return dm, list(loader)


def test_seed_and_epoch_set_the_order_and_stream_equals_memory(cache, monkeypatch):
    _, a = _batches(cache, True, 1, monkeypatch=monkeypatch)
    _, a2 = _batches(cache, True, 1, monkeypatch=monkeypatch)
    _, b = _batches(cache, True, 2, monkeypatch=monkeypatch)
    _, a_e1 = _batches(cache, True, 1, epoch=1, monkeypatch=monkeypatch)
    order = [x["row"].tolist() for x in a]
    assert order == [x["row"].tolist() for x in a2]  # one seed: one order
    assert order != [x["row"].tolist() for x in b]  # another seed: another order
    assert order != [x["row"].tolist() for x in a_e1]  # and a new order each epoch
    assert sorted(sum(order, [])) == list(range(1000)) and order[0] != sorted(order[0])
    dm, mem = _batches(cache, False, 1, monkeypatch=monkeypatch)
    assert not dm.streaming
    for s, m in zip(a, mem, strict=True):  # the same plan from shards and from memory: the same batches
        assert s.keys() == m.keys()
        for k in s:
            assert torch.equal(s[k], m[k]), k
    # the same batches give the same model
    from linmix.apps.ctr.model import CTRNet, CTRNetConfig

    def train(batches):
        torch.manual_seed(0)
        net = CTRNet(CTRNetConfig(field_sizes=tuple(dm.field_sizes), d_model=4, n_layers=1, n_linear_layers=1))
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        for x in batches:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x["idx"], x["val"]), x["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(train(a), train(mem))


def test_resume_skips_exactly_the_trained_batches(cache):
    dm = CTRDataModule(format="criteo", train_path="unused", cache_dir=str(cache), batch_size=64,
                       streaming=True, shuffle_buffer=200, num_workers=2)
    dm.prepare_data = lambda: None
    dm.setup("fit")
    full = dm.train_dataloader()
    full.epoch_fn = lambda: 1
    seen = []
    for i, b in enumerate(full):
        full.consumed(b)
        seen.append(b["row"])
        if i == 6:
            break
    state = json.loads(json.dumps(full.state_dict()))  # as a checkpoint stores it
    again = dm.train_dataloader()
    again.epoch_fn = lambda: 1
    again.load_state_dict(state)
    rest = [b["row"] for b in again]
    assert len(seen) + len(rest) == len(again) == 16
    rows = torch.cat(seen + rest).tolist()
    assert sorted(rows) == list(range(1000))  # nothing repeated, nothing skipped
    other = StreamLoader(RowStream(again.dataset.source, batch_size=32, shuffle=True), epoch_fn=lambda: 1)
    other.load_state_dict(state)
    with pytest.raises(UserError, match="same settings"):
        next(iter(other))


def _copy(cache, tmp_path):
    import shutil

    dst = tmp_path / "enc"
    shutil.copytree(cache, dst)
    return dst


def test_missing_truncated_and_corrupt_shards_are_named(cache, tmp_path):
    enc = _copy(cache, tmp_path)
    shard = split_folder(enc, "train") / "part-00001.parquet"
    data = shard.read_bytes()
    shard.write_bytes(data[:-40])
    with pytest.raises(ShardError, match="part-00001.parquet is .* bytes, the manifest says"):
        load_manifest(enc, "train")
    shard.write_bytes(data[:-8] + b"XXXXXXXX")  # same size, footer magic broken
    with pytest.raises(ShardError, match="part-00001.parquet is not a readable Parquet file"):
        load_manifest(enc, "train")
    shard.unlink()
    with pytest.raises(ShardError, match="part-00001.parquet is missing"):
        load_manifest(enc, "train")


def test_shard_schema_differing_from_the_vocabulary_and_an_empty_shard(cache, tmp_path):
    enc = _copy(cache, tmp_path)
    dm = CTRDataModule(format="criteo", train_path="unused", cache_dir=str(enc), streaming=True)
    dm.prepare_data = lambda: None
    vocab = json.loads((enc / "vocab.json").read_text())
    vocab["schema"]["fields"] = vocab["schema"]["fields"][:-1]  # a vocabulary without field C26
    del vocab["vocabs"]["C26"]
    (enc / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ShardError, match=r"do not match the vocabulary .*'idx_C26'"):
        dm.setup("fit")
    enc2 = _copy(cache, tmp_path / "b")
    folder = split_folder(enc2, "train")
    pl.read_parquet(folder / "part-00000.parquet").head(0).write_parquet(folder / "part-00004.parquet")
    man = json.loads(manifest_path(enc2, "train").read_text())
    man["shards"].append({"file": "part-00004.parquet", "bytes": (folder / "part-00004.parquet").stat().st_size,
                          "rows": 0, "row_groups": []})
    manifest_path(enc2, "train").write_text(json.dumps(man))
    for streaming in (True, False):
        dm = CTRDataModule(format="criteo", train_path="unused", cache_dir=str(enc2), streaming=streaming,
                           batch_size=100, num_workers=0)
        dm.prepare_data = lambda: None
        dm.setup("fit")
        rows = torch.cat([b["row"] for b in dm.train_dataloader()]).tolist()
        assert sorted(rows) == list(range(1000))


def test_parallel_encode_of_many_files_equals_one_process(tmp_path):
    rng = random.Random(5)
    for i in range(3):
        (tmp_path / f"day_{i}.tsv").write_text("\n".join(_lines(rng, 150 + 40 * i)) + "\n")
    (tmp_path / "val.tsv").write_text("\n".join(_lines(rng, 60)) + "\n")
    sc = criteo_schema()
    sc.min_count = 3  # thresholding after the counts of all files are summed
    one = encode_dataset({"train": str(tmp_path / "day_*.tsv"), "val": tmp_path / "val.tsv"}, sc,
                         tmp_path / "one", chunk_rows=100)
    two = encode_dataset({"train": str(tmp_path / "day_*.tsv"), "val": tmp_path / "val.tsv"}, sc,
                         tmp_path / "two", chunk_rows=100, workers=2)
    assert one["splits"]["train"]["read"] == 570 and one["splits"]["train"]["shards"] == 7
    assert (tmp_path / "one" / "vocab.json").read_text() == (tmp_path / "two" / "vocab.json").read_text()
    for s in ("train", "val"):
        assert pl.read_parquet(tmp_path / "one" / f"{s}.parquet").equals(pl.read_parquet(tmp_path / "two" /
                                                                                          f"{s}.parquet"))
        assert one["splits"][s] | {"rejects_file": ""} == two["splits"][s] | {"rejects_file": ""}
    (tmp_path / "all.tsv").write_text("".join((tmp_path / f"day_{i}.tsv").read_text() for i in range(3)))
    encode_dataset({"train": tmp_path / "all.tsv"}, sc, tmp_path / "whole")
    assert json.loads((tmp_path / "whole" / "vocab.json").read_text())["vocabs"] == \
        json.loads((tmp_path / "one" / "vocab.json").read_text())["vocabs"]  # = counting the files as one


def test_arrow_columns_as_numpy_equal_pyarrows():
    import pyarrow as pa

    cases = [pa.array(np.arange(10, dtype=t)) for t in (np.int32, np.int64, np.float32, np.float64, np.uint8)]
    cases += [c.slice(3, 4) for c in cases] + [pa.array([1, None, 3], pa.int32()), pa.array([True, False])]
    for a in cases:
        got, want = arrow_to_numpy(a), a.to_numpy(zero_copy_only=False)
        assert got.dtype == want.dtype, a.type
        np.testing.assert_array_equal(got, want)
    seq = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.int32)), 3).slice(1, 2)
    np.testing.assert_array_equal(ArrowColumn(pa.chunked_array([seq])).to_numpy(), [[3, 4, 5], [6, 7, 8]])


READ_SHARDS = """
import json, sys
from pathlib import Path
from linmix.apps.ctr.encoder import FeatureEncoder
from linmix.apps.ctr.shards import load_manifest, read_rows
cache = Path(sys.argv[1])
man, enc = load_manifest(cache, "train"), FeatureEncoder.load(cache / "vocab.json")
rows, total = 0, 0
for s, shard in enumerate(man.shards):
    for g, n in enumerate(shard.row_groups):
        a = enc.arrays(read_rows(man, s, g, 0, n, list(man.columns)))  # as ShardSource.chunks in a worker
        rows, total = rows + n, total + int(a["idx"].sum()) + int(a["label"].sum())
print(json.dumps({"rows": rows, "total": total, "pandas": "pandas" in sys.modules}))
"""


def test_reading_shards_imports_no_pandas(cache):
    """pyarrow's ``to_numpy`` imports pandas (~40 MB per process); the shard reader does not go through it."""
    r = subprocess.run([sys.executable, "-c", READ_SHARDS, str(cache)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    df = pl.read_parquet(split_folder(cache, "train"))
    want = int(df.select(pl.col("^idx_.*$").cast(pl.Int64)).sum().sum_horizontal()[0]) + int(df["label"].sum())
    assert got == {"rows": 1000, "total": want, "pandas": False}

"""benchmarks/ctr/streaming.py --distinct: the large split is a log of distinct rows, written as several TSV files and
encoded by ``linmix-ctr encode`` with a glob and worker processes; the TSV files go unless kept; encodes are reused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_streaming", ROOT / "benchmarks" / "ctr" / "streaming.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_distinct_log_is_glob_encoded_and_its_tsv_removed(tmp_path: Path) -> None:
    small, large, info = bench.prepare_distinct(tmp_path, 2000, 3, 2, keep_tsv=True)
    assert sorted(p.name for p in (tmp_path / "tsv_2000").iterdir()) == [f"part_0000{i}.tsv" for i in range(3)]
    big = pl.read_parquet(large / "train.parquet")
    assert big.height == 6000 and big.unique().height == 6000  # 6,000 distinct encoded rows, not one file 3 times
    rep = bench.json.loads((large / "report.json").read_text())["splits"]["train"]
    assert len(rep["source"]) == 3 and rep["shards"] == 3  # one vocabulary over the three files
    assert pl.read_parquet(small / "train.parquet").height == 2000
    assert info["tsv_bytes_per_row"] > 100 and 0 < info["shard_bytes_per_row"] < info["tsv_bytes_per_row"]
    again = bench.prepare_distinct(tmp_path, 2000, 3, 2, keep_tsv=False)[2]
    assert "generate_s" not in again and "encode_large" not in again  # reused, nothing written again
    assert not (tmp_path / "tsv_2000").exists()  # deleted without --keep-tsv

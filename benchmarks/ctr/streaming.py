"""CTR streaming memory bar: FCN trained from Parquet shards vs from memory, peak RSS and rows/s.

One Criteo-format TSV (``throughput.write_criteo``: label, I1-I13, C1-C26) of ``--rows`` rows is encoded once
(``encode_dataset``, shards of row groups of 16,384 rows). The large split is that split's shards listed
``--replicate`` times in one manifest (hard links), so that the streaming reader walks ``rows x replicate`` rows
without encoding them again; the reader and the plan do not look at row contents, so its memory is the same as on
distinct rows. Each measurement runs in a fresh subprocess (its own peak RSS, ``ru_maxrss``), builds
``CTRDataModule`` on the cache (``streaming`` true or false, 1 thread, DataLoader in-process) and trains FCN at
Criteo width (39 fields, d = 16, ECN 4 / LCN 4, Adam, official Tri-BCE, batch 4096) for ``--steps`` steps after
``--warmup`` untimed ones: rows/s is over the timed steps, peak RSS over the whole process (data module setup
included). Bars: streaming peak RSS < 2 GB on the large split and within 1.3x of the small split's; streaming
rows/s within 15% of the in-memory path on the small split (same run, alternating repeats, medians).

    python benchmarks/ctr/streaming.py --rows 2000000 --replicate 10 --steps 80 --out benchmarks/results

``--distinct``: the large split is a log of ``rows x replicate`` distinct rows instead, written as ``--replicate``
Criteo TSV files of ``--rows`` rows (``write_criteo(part=i)``: one category universe, each file its own rows) and
encoded by ``linmix-ctr encode --train '<folder>/part_*.tsv' --workers N`` (the app's parallel glob encode, one
vocabulary over all files); the small split is the first file encoded alone. The TSV files are deleted once both
are encoded (``--keep-tsv`` keeps them); encoded folders already there are reused. ``--prepare-only`` writes and
encodes and stops, printing the times and the bytes per row of TSV and of shards:

    python benchmarks/ctr/streaming.py --rows 2000000 --replicate 10 --distinct --steps 80 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _measure(task: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    os.environ["PL_GLOBAL_SEED"] = "0"
    from linmix.apps.ctr.data import CTRDataModule
    from linmix.apps.ctr.losses import tri_bce
    from linmix.apps.ctr.model import CTRNet, CTRNetConfig

    dm = CTRDataModule(format="criteo", train_path="unused", cache_dir=task["cache"], batch_size=task["batch"],
                       streaming=task["streaming"])
    dm.prepare_data = lambda: None
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    torch.manual_seed(0)
    net = CTRNet(CTRNetConfig(arch="fcn", field_sizes=tuple(dm.field_sizes), d_model=16))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loader = dm.train_dataloader()
    loader.epoch_fn = lambda: 0
    it = iter(loader)
    rows, t_start = 0, None
    for step in range(task["warmup"] + task["steps"]):
        if step == task["warmup"]:
            t_start = time.perf_counter()
        b = next(it)
        z, ze, zl = net.branch_logits(b["idx"], b["val"])
        loss = tri_bce(z, ze, zl, b["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= task["warmup"]:
            rows += len(b["label"])
    dt = time.perf_counter() - t_start
    return {"rows_per_s": rows / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "split_rows": dm.manifests["train"].rows, "streaming": dm.streaming, "setup_s": setup_s}


def _run(task: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (task,))


def _replicate(small: Path, large: Path, times: int) -> None:
    """``large`` = ``small``'s train shards listed ``times`` times (hard links) under one manifest."""
    from linmix.apps.ctr.shards import manifest_path, split_folder

    shutil.rmtree(large, ignore_errors=True)
    split_folder(large, "train").mkdir(parents=True)
    for f in ("vocab.json", "report.json"):
        shutil.copy(small / f, large / f)
    man = json.loads(manifest_path(small, "train").read_text())
    shards = []
    for r in range(times):
        for s in man["shards"]:
            name = f"r{r:02d}-{s['file']}"
            os.link(split_folder(small, "train") / s["file"], split_folder(large, "train") / name)
            shards.append(dict(s, file=name))
    man.update(shards=shards, rows=man["rows"] * times)
    manifest_path(large, "train").write_text(json.dumps(man))
    rep = json.loads((large / "report.json").read_text())
    rep["splits"] = {"train": rep["splits"]["train"]}
    (large / "report.json").write_text(json.dumps(rep))


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _encoded(folder: Path, rows: int) -> bool:
    """``folder`` holds a finished encode of ``rows`` training rows (report and manifest written last)."""
    rep = folder / "report.json"
    return rep.is_file() and (folder / "train.manifest.json").is_file() \
        and json.loads(rep.read_text())["splits"]["train"]["written"] == rows


def _encode_cli(sources: str, out: Path, workers: int) -> dict:
    """``linmix-ctr encode --format criteo --train <sources> --workers <workers> --out <out>``: seconds taken, the
    largest size of ``out`` while it ran (staged parts included, sampled each second) and the largest RSS of the
    benchmark's child processes so far (``RUSAGE_CHILDREN``: the encode and its workers)."""
    t0, peak = time.perf_counter(), 0
    proc = subprocess.Popen([sys.executable, "-m", "linmix.apps.ctr.cli", "encode", "--format", "criteo", "--train",
                             sources, "--workers", str(workers), "--out", str(out)])
    while True:
        try:
            rc = proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            peak = max(peak, _bytes(out) if out.exists() else 0)
    if rc != 0:
        raise SystemExit(f"linmix-ctr encode failed (rc {rc}) on {sources}")
    return {"s": time.perf_counter() - t0, "peak_disk_bytes": max(peak, _bytes(out)),
            "children_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def prepare_distinct(work: Path, rows: int, files: int, workers: int, keep_tsv: bool) -> tuple[Path, Path, dict]:
    """The small split (``part_00000.tsv`` encoded alone) and the large one (all ``files`` parts, glob encode);
    reused when already encoded. Returns both folders and what it took (seconds, bytes per row)."""
    from throughput import write_criteo

    tsv_dir, small, large = work / f"tsv_{rows}", work / f"enc_{rows}_part0", work / f"enc_{rows}_distinct{files}"
    info: dict = {"files": files, "rows_per_file": rows, "encode_workers": workers}
    if not (_encoded(small, rows) and _encoded(large, rows * files)):
        tsv_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for i in range(files):
            f = tsv_dir / f"part_{i:05d}.tsv"
            if not f.is_file():
                write_criteo(f, rows, part=i)
        info["generate_s"] = time.perf_counter() - t0
        info["tsv_bytes_per_row"] = _bytes(tsv_dir) / (rows * files)
        if not _encoded(small, rows):
            info["encode_small"] = _encode_cli(str(tsv_dir / "part_00000.tsv"), small, workers)
        if not _encoded(large, rows * files):
            info["encode_large"] = _encode_cli(str(tsv_dir / "part_*.tsv"), large, workers)
    if not keep_tsv:
        shutil.rmtree(tsv_dir, ignore_errors=True)
    info["shard_bytes_per_row"] = _bytes(large / "train.parquet") / (rows * files)
    info["large_field_sizes"] = json.loads((large / "report.json").read_text())["field_sizes"]
    return small, large, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--replicate", type=int, default=10)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="runs/bench/ctr_streaming")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--distinct", action="store_true",
                    help="large split = --replicate distinct TSV files of --rows rows, glob-encoded (not hard links)")
    ap.add_argument("--encode-workers", type=int, default=2, help="--workers of linmix-ctr encode (--distinct)")
    ap.add_argument("--keep-tsv", action="store_true", help="keep the generated TSV files (--distinct)")
    ap.add_argument("--prepare-only", action="store_true", help="write and encode the data, then stop")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.distinct:
        small, large, prep = prepare_distinct(work, a.rows, a.replicate, a.encode_workers, a.keep_tsv)
        print(json.dumps(prep), flush=True)
    else:
        from throughput import write_criteo

        from linmix.apps.ctr.pipeline import encode_dataset
        from linmix.apps.ctr.schema import criteo_schema

        tsv = work / f"criteo_{a.rows}.tsv"
        if not tsv.is_file():
            write_criteo(tsv, a.rows)
        small = work / f"enc_{a.rows}"
        encode_dataset({"train": tsv}, criteo_schema(), small, workers=2)
        large = work / f"enc_{a.rows}_x{a.replicate}"
        _replicate(small, large, a.replicate)
        prep = {"replicated_hard_links": a.replicate}
    prep_s = time.perf_counter() - t0
    if a.prepare_only:
        return 0
    rep = json.loads((small / "report.json").read_text())
    base = {"batch": a.batch, "steps": a.steps, "warmup": a.warmup}
    runs: dict[str, list[dict]] = {"memory_small": [], "stream_small": [], "stream_large": []}
    for _ in range(a.repeats):  # alternate, so that a change in the machine's load hits both paths
        runs["memory_small"].append(_run(dict(base, cache=str(small), streaming=False)))
        runs["stream_small"].append(_run(dict(base, cache=str(small), streaming=True)))
        print(json.dumps({k: v[-1] for k, v in runs.items() if v}), flush=True)
    runs["stream_large"].append(_run(dict(base, cache=str(large), streaming=True)))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rows_per_s", "peak_rss_mb")} for k, v in runs.items()}
    rss_l, rss_s = med["stream_large"]["peak_rss_mb"], med["stream_small"]["peak_rss_mb"]
    ratio_t = med["stream_small"]["rows_per_s"] / med["memory_small"]["rows_per_s"]
    res = {"rows_small": runs["stream_small"][0]["split_rows"], "rows_large": runs["stream_large"][0]["split_rows"],
           "encoded_rows": rep["splits"]["train"]["written"], "prep_s": prep_s, "prep": prep, "runs": runs,
           "median": med,
           "bars": {"stream_large_rss_under_2gb": rss_l < 2048, "rss_large_over_small": rss_l / rss_s,
                    "rss_within_1.3x": rss_l / rss_s <= 1.3, "stream_over_memory_rows_per_s": ratio_t,
                    "throughput_within_15pct": ratio_t >= 0.85},
           "args": vars(a)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ctr_streaming.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res["median"], indent=1), json.dumps(res["bars"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

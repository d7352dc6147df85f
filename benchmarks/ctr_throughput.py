"""CTR throughput: FCN at Criteo width, tensor-sliced batches vs the naive per-row Dataset, plus encoding speed.

Side by side in one run, each measurement in a fresh subprocess (so peak RSS is its own):

* ``train_fast``: ``TensorBatches`` + ``BatchSampler`` (whole batches gathered from tensors) -> FCN train steps;
* ``train_naive``: the same model fed by a per-row ``Dataset`` (one dict of tensors per row) and the default
  ``DataLoader`` collate;
* ``load_fast`` / ``load_naive``: the two input paths alone (no model), to separate loader cost from compute;
* ``infer``: FCN forward in eval mode on tensor-sliced batches;
* ``encode``: ``encode_dataset`` on an ``--encode-rows`` Criteo-format TSV (parse, fit vocab, encode, rejects).

Bars (issue 4): training >= 3x naive, inference >= 100k rows/s. Model: FCN, 39 fields, embedding 16, ECN 4 / LCN 4.
Writes ``runs/bench/ctr_throughput.{md,json,png}``.

    python benchmarks/ctr_throughput.py --threads 2 --steps 6 --encode-rows 1000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np

F_NUM, F_CAT = 13, 26


def _data(n: int, fields: int = F_NUM + F_CAT, seed: int = 0) -> tuple[dict, list[int]]:
    rng = np.random.default_rng(seed)
    sizes = ([60] * F_NUM + [10_000] * F_CAT) if fields == F_NUM + F_CAT else [1_000] * fields
    idx = np.stack([rng.integers(0, s, n) for s in sizes], 1).astype(np.int64)
    return {"idx": idx, "val": np.ones(idx.shape, np.float32), "seq": np.zeros((n, 0, 0), np.int64),
            "label": rng.integers(0, 2, n).astype(np.float32)}, sizes


def _model(sizes, threads):
    import torch

    from apps.ctr.model import CTRNet, CTRNetConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return CTRNet(CTRNetConfig(arch="fcn", field_sizes=tuple(sizes), d_model=16))


def _loader(kind: str, arrays: dict, batch: int):
    import torch
    from torch.utils.data import DataLoader, Dataset

    from apps.ctr.data import TensorBatches, batch_loader

    if kind == "fast":
        return batch_loader(TensorBatches(arrays), batch, shuffle=True)

    class RowDataset(Dataset):  # the naive way: one row at a time, stacked by default_collate
        def __init__(self, a):
            self.a = {k: torch.from_numpy(v) for k, v in a.items() if k != "seq"}

        def __len__(self):
            return len(self.a["label"])

        def __getitem__(self, i):
            return {k: v[i] for k, v in self.a.items()}

    return DataLoader(RowDataset(arrays), batch_size=batch, shuffle=True)


def _measure(task: dict) -> dict:
    import torch

    from apps.ctr.losses import tri_bce

    kind, threads, batch, steps = task["kind"], task["threads"], task["batch"], task["steps"]
    torch.set_num_threads(threads)
    if kind == "encode":
        from apps.ctr.pipeline import encode_dataset
        from apps.ctr.schema import criteo_schema

        t = time.perf_counter()
        rep = encode_dataset({"train": task["file"]}, criteo_schema(min_count=10), task["enc_out"], force=True)
        dt = time.perf_counter() - t
        r = rep["splits"]["train"]
        return {"kind": kind, "rows": r["read"], "seconds": dt, "rows_per_s": r["read"] / dt,
                "rejected": r["rejected"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    arrays, sizes = _data(batch * (steps + 1), task["fields"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows, t0 = 0, None
    if kind in ("train_fast", "train_naive", "load_fast", "load_naive"):
        path = kind.split("_")[1]
        net = _model(sizes, threads) if kind.startswith("train") else None
        opt = torch.optim.Adam(net.parameters(), 1e-3) if net is not None else None
        for i, b in enumerate(_loader(path, arrays, batch)):
            if i == 1:  # first batch is warm-up
                t0, rows = time.perf_counter(), 0
            if net is not None:
                z, ze, zl = net.branch_logits(b["idx"], b["val"])
                loss = tri_bce(z, ze, zl, b["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
            rows += len(b["label"])
        dt = time.perf_counter() - t0
    elif kind == "infer":
        net = _model(sizes, threads).eval()
        idx, val = torch.from_numpy(arrays["idx"]), torch.from_numpy(arrays["val"])
        with torch.no_grad():
            net(idx[:batch], val[:batch])
            t0 = time.perf_counter()
            for s in range(0, len(idx), batch):
                net(idx[s:s + batch], val[s:s + batch])
                rows += len(idx[s:s + batch])
        dt = time.perf_counter() - t0
    else:
        raise ValueError(kind)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "rows": rows, "seconds": dt, "rows_per_s": rows / dt, "peak_rss_mb": peak,
            "data_rss_mb": base}


def write_criteo(path: Path, n: int, seed: int = 0) -> Path:
    """A Criteo-format TSV (label, I1-I13 counts, C1-C26 hashed ids, empty = missing) with n rows."""
    import polars as pl

    rng = np.random.default_rng(seed)
    cols = {"label": rng.integers(0, 2, n)}
    for i in range(1, 14):
        x = np.floor(np.exp(rng.normal(1.5, 1.5, n))).astype(np.int64)
        cols[f"I{i}"] = pl.Series(x).set(pl.Series(rng.random(n) < 0.2), None)
    for i in range(1, 27):
        k = int(10 ** rng.uniform(1, 5))
        ids = rng.choice(2**31, size=k, replace=False)
        z = np.minimum(rng.zipf(1.2, n) - 1, k - 1)
        s = pl.Series([f"{v:08x}" for v in ids]).gather(z)
        cols[f"C{i}"] = s.set(pl.Series(rng.random(n) < 0.05), None)
    tmp = path.with_name(f".{path.name}.tmp")
    pl.DataFrame(cols).write_csv(tmp, separator="\t", include_header=False, null_value="")
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fields", type=int, default=39, help="39 = Criteo width; e.g. 10 = Frappe width")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=6, help="timed batches per measurement")
    ap.add_argument("--infer-batch", type=int, default=16384)
    ap.add_argument("--encode-rows", type=int, default=1_000_000)
    ap.add_argument("--out", default="runs/bench")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    common = {"threads": a.threads, "batch": a.batch, "steps": a.steps, "fields": a.fields}
    tasks = [dict(common, kind=k) for k in ("load_fast", "load_naive", "train_fast", "train_naive")]
    tasks.append(dict(common, kind="infer", batch=a.infer_batch, steps=max(a.steps, 8)))
    if a.encode_rows > 0 and a.fields == 39:
        f = out / "data" / f"criteo_{a.encode_rows}.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        if not f.is_file():
            t = time.perf_counter()
            write_criteo(f, a.encode_rows)
            print(f"wrote {f} in {time.perf_counter() - t:.1f}s")
        tasks.append(dict(common, kind="encode", file=str(f), enc_out=str(out / "data" / "criteo_enc")))
    res = {}
    for t in tasks:
        with ctx.Pool(1) as pool:
            r = pool.apply(_measure, (t,))
        res[r["kind"]] = r
        print(f"{r['kind']:<12} {r['rows_per_s']:>12,.0f} rows/s  peak RSS {r['peak_rss_mb']:8.0f} MB", flush=True)
    ratio_train = res["train_fast"]["rows_per_s"] / res["train_naive"]["rows_per_s"]
    ratio_load = res["load_fast"]["rows_per_s"] / res["load_naive"]["rows_per_s"]
    load = os.getloadavg()
    lines = [f"# CTR throughput (FCN, {a.fields} fields, d=16, ECN 4 / LCN 4; batch {a.batch}; {a.threads} threads; "
             f"load average at end {load[0]:.1f} on {os.cpu_count()} cores)", "",
             "| measurement | rows/s | peak RSS (MB) | note |", "|---|---|---|---|"]
    notes = {"train_fast": "tensor-sliced batches", "train_naive": "per-row Dataset + default collate",
             "load_fast": "input path only", "load_naive": "input path only", "infer": f"batch {a.infer_batch}",
             "encode": f"{a.encode_rows:,}-row Criteo TSV, parse+fit+encode"}
    for k, r in res.items():
        lines.append(f"| {k} | {r['rows_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | {notes[k]} |")
    lines += ["", f"- training speed-up vs naive: **{ratio_train:.2f}x** (bar >= 3x)",
              f"- input-path speed-up vs naive (no model): **{ratio_load:.1f}x**",
              f"- inference: **{res['infer']['rows_per_s']:,.0f} rows/s** (bar >= 100k rows/s)"]
    name = "ctr_throughput" if a.fields == 39 else f"ctr_throughput_f{a.fields}"
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"results": res, "train_ratio": ratio_train,
                                                         "load_ratio": ratio_load, "args": vars(a)}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ks = list(res)
    ax.barh(ks, [res[k]["rows_per_s"] for k in ks])
    ax.set_xscale("log")
    ax.set_xlabel("rows / s (log)")
    ax.set_title(f"CTR throughput (train speed-up {ratio_train:.2f}x)")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

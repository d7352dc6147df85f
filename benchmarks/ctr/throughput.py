"""CTR throughput: FCN at Criteo width, tensor-sliced batches vs the naive per-row Dataset, plus encoding speed.

Side by side in one run, each measurement in a fresh subprocess (so peak RSS is its own); every training
measurement runs the same model (FCN, 39 fields, d=16, ECN 4 / LCN 4), batch size and optimiser (Adam 1e-3,
official Tri-BCE):

* ``gemm``: fp32 GFLOP/s of one cross-layer matmul (B x D) @ (D x D/2) on this CPU: the compute ceiling;
* ``load_fast`` / ``load_naive``: the two input paths alone (no model);
* ``step``: the model's training step alone on a batch already in memory (no input path);
* ``train_fast``: ``TensorBatches`` + ``BatchSampler`` (whole batches gathered from tensors) -> train steps;
* ``train_naive``: the same steps fed by a per-row ``Dataset`` and the default ``DataLoader`` collate;
* ``infer_eager`` / ``infer_script`` / ``infer_int8``: forward under ``torch.inference_mode`` in eval mode,
  eager, TorchScript frozen + ``optimize_for_inference``, dynamic int8 Linear layers (``linmix.apps.ctr.serving``);
* ``encode``: ``encode_dataset`` on an ``--encode-rows`` Criteo-format TSV (chunked parse, fit vocab, encode,
  rejects), peak RSS of that process alone.

Per row, end-to-end time = input-path time + model time, so the training speed-up over the naive path is
bounded by (t_model + t_naive_input) / (t_model + t_fast_input); the table reports both parts. Target bars:
training >= 3x naive, inference >= 100k rows/s on 2 cores. Writes ``<out>/ctr_throughput.{md,json,png}``;
the committed results live in ``benchmarks/results/`` (``--out benchmarks/results``).

    python benchmarks/ctr/throughput.py --threads 2 --steps 8 --encode-rows 1000000 --out benchmarks/results
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

    from linmix.apps.ctr.model import CTRNet, CTRNetConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return CTRNet(CTRNetConfig(arch="fcn", field_sizes=tuple(sizes), d_model=16))


def _loader(kind: str, arrays: dict, batch: int):
    import torch
    from torch.utils.data import DataLoader, Dataset

    from linmix.apps.ctr.data import TensorBatches, batch_loader

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


def _train_step(net, opt, b):
    from linmix.apps.ctr.losses import tri_bce

    z, ze, zl = net.branch_logits(b["idx"], b["val"])
    loss = tri_bce(z, ze, zl, b["label"])
    opt.zero_grad()
    loss.backward()
    opt.step()


def _measure(task: dict) -> dict:
    import torch

    kind, threads, batch, steps = task["kind"], task["threads"], task["batch"], task["steps"]
    torch.set_num_threads(threads)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    if kind == "encode":
        from linmix.apps.ctr.pipeline import encode_dataset
        from linmix.apps.ctr.schema import criteo_schema

        t = time.perf_counter()
        rep = encode_dataset({"train": task["file"]}, criteo_schema(min_count=10), task["enc_out"], force=True)
        dt = time.perf_counter() - t
        r = rep["splits"]["train"]
        return {"kind": kind, "rows": r["read"], "seconds": dt, "rows_per_s": r["read"] / dt,
                "rejected": r["rejected"], "peak_rss_mb": rss()}
    if kind == "gemm":
        d = (F_NUM + F_CAT if task["fields"] == F_NUM + F_CAT else task["fields"]) * 16
        x, w = torch.randn(batch, d), torch.randn(d, d // 2)
        with torch.inference_mode():
            x @ w
            t0 = time.perf_counter()
            for _ in range(steps):
                x @ w
        dt = time.perf_counter() - t0
        return {"kind": kind, "rows": batch * steps, "seconds": dt, "rows_per_s": batch * steps / dt,
                "gflops": 2 * batch * d * (d // 2) * steps / dt / 1e9, "peak_rss_mb": rss()}
    arrays, sizes = _data(batch * (steps + 1), task["fields"])
    base = rss()
    rows, t0 = 0, None
    if kind in ("train_fast", "train_naive", "load_fast", "load_naive"):
        path = kind.split("_")[1]
        net = _model(sizes, threads) if kind.startswith("train") else None
        opt = torch.optim.Adam(net.parameters(), 1e-3) if net is not None else None
        for i, b in enumerate(_loader(path, arrays, batch)):
            if i == 1:  # first batch is warm-up
                t0, rows = time.perf_counter(), 0
            if net is not None:
                _train_step(net, opt, b)
            rows += len(b["label"])
        dt = time.perf_counter() - t0
    elif kind == "step":  # the model alone: one resident batch, no input path
        net = _model(sizes, threads)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        b = {k: torch.from_numpy(v[:batch]) for k, v in arrays.items() if k != "seq"}
        _train_step(net, opt, b)
        t0 = time.perf_counter()
        for _ in range(steps):
            _train_step(net, opt, b)
            rows += batch
        dt = time.perf_counter() - t0
    elif kind.startswith("infer_"):
        from linmix.apps.ctr.serving import serving_module

        net = serving_module(_model(sizes, threads), kind.split("_")[1])
        idx, val = torch.from_numpy(arrays["idx"]), torch.from_numpy(arrays["val"])
        with torch.inference_mode():
            for _ in range(2):  # warm-up (TorchScript profiles its first calls)
                net(idx[:batch], val[:batch])
            t0 = time.perf_counter()
            for s in range(0, len(idx), batch):
                net(idx[s:s + batch], val[s:s + batch])
                rows += len(idx[s:s + batch])
        dt = time.perf_counter() - t0
    else:
        raise ValueError(kind)
    return {"kind": kind, "rows": rows, "seconds": dt, "rows_per_s": rows / dt, "peak_rss_mb": rss(),
            "data_rss_mb": base}


def write_criteo(path: Path, n: int, seed: int = 0, *, part: int | None = None) -> Path:
    """A Criteo-format TSV (label, I1-I13 counts, C1-C26 hashed ids, empty = missing) with n rows.

    With ``part``, one file of a log written as several: every part has the same categories (each field's
    cardinality and hashed ids come from ``seed`` alone) and its own rows (drawn from ``seed`` and ``part``), so the
    parts together are one log of distinct rows. Without, the file of earlier runs (one stream for both).
    """
    import polars as pl

    rng = np.random.default_rng(seed)
    rows = rng if part is None else np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part,)))
    cols = {"label": rows.integers(0, 2, n)}
    for i in range(1, 14):
        x = np.floor(np.exp(rows.normal(1.5, 1.5, n))).astype(np.int64)
        cols[f"I{i}"] = pl.Series(x).set(pl.Series(rows.random(n) < 0.2), None)
    for i in range(1, 27):
        k = int(10 ** rng.uniform(1, 5))
        ids = rng.choice(2**31, size=k, replace=False)
        z = np.minimum(rows.zipf(1.2, n) - 1, k - 1)
        s = pl.Series([f"{v:08x}" for v in ids]).gather(z)
        cols[f"C{i}"] = s.set(pl.Series(rows.random(n) < 0.05), None)
    tmp = path.with_name(f".{path.name}.tmp")
    pl.DataFrame(cols).write_csv(tmp, separator="\t", include_header=False, null_value="")
    os.replace(tmp, path)
    return path


NOTES = {"gemm": "one cross-layer matmul, fp32 (compute ceiling)", "load_fast": "input path only: tensor slices",
         "load_naive": "input path only: per-row Dataset + collate", "step": "model only: train step, batch in memory",
         "train_fast": "end to end: tensor-sliced batches", "train_naive": "end to end: per-row Dataset + collate",
         "infer_eager": "eval, inference_mode", "infer_script": "TorchScript frozen + optimize_for_inference",
         "infer_int8": "dynamic int8 Linear layers", "encode": "Criteo TSV: chunked parse + fit + encode"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fields", type=int, default=39, help="39 = Criteo width; e.g. 10 = Frappe width")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8, help="timed batches per measurement")
    ap.add_argument("--infer-batch", type=int, default=16384)
    ap.add_argument("--encode-rows", type=int, default=1_000_000)
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--data-dir", default="runs/bench/data", help="where the Criteo TSV is generated (cached)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    common = {"threads": a.threads, "batch": a.batch, "steps": a.steps, "fields": a.fields}
    tasks = [dict(common, kind="gemm", batch=a.infer_batch)]
    tasks += [dict(common, kind=k) for k in ("load_fast", "load_naive", "step", "train_fast", "train_naive")]
    tasks += [dict(common, kind=k, batch=a.infer_batch, steps=max(a.steps, 8))
              for k in ("infer_eager", "infer_script", "infer_int8")]
    if a.encode_rows > 0 and a.fields == 39:
        f = Path(a.data_dir) / f"criteo_{a.encode_rows}.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        if not f.is_file():
            t = time.perf_counter()
            write_criteo(f, a.encode_rows)
            print(f"wrote {f} in {time.perf_counter() - t:.1f}s")
        tasks.append(dict(common, kind="encode", file=str(f), enc_out=str(Path(a.data_dir) / "criteo_enc")))
    res = {}
    for t in tasks:
        with ctx.Pool(1) as pool:
            r = pool.apply(_measure, (t,))
        res[r["kind"]] = r
        print(f"{r['kind']:<12} {r['rows_per_s']:>12,.0f} rows/s  peak RSS {r['peak_rss_mb']:8.0f} MB", flush=True)
    sizes = _data(1, a.fields)[1]
    from linmix.apps.ctr.serving import flops_per_row

    fwd = flops_per_row(_model(sizes, 1))
    gf = res["gemm"]["gflops"]
    us = {k: 1e6 / res[k]["rows_per_s"] for k in ("load_fast", "load_naive", "step", "train_fast", "train_naive")}
    ratio_train = res["train_fast"]["rows_per_s"] / res["train_naive"]["rows_per_s"]
    ratio_load = res["load_fast"]["rows_per_s"] / res["load_naive"]["rows_per_s"]
    bound = (us["step"] + us["load_naive"]) / (us["step"] + us["load_fast"])
    best_inf = max(res[k]["rows_per_s"] for k in res if k.startswith("infer_"))
    load = os.getloadavg()
    lines = [f"# CTR throughput (FCN, {a.fields} fields, d=16, ECN 4 / LCN 4; train batch {a.batch}, infer batch "
             f"{a.infer_batch}; {a.threads} threads; load average at end {load[0]:.1f} on {os.cpu_count()} cores)",
             "", "| measurement | rows/s | us/row | peak RSS (MB) | what |", "|---|---|---|---|---|"]
    for k, r in res.items():
        extra = f" ({r['gflops']:.1f} GFLOP/s)" if k == "gemm" else ""
        lines.append(f"| {k} | {r['rows_per_s']:,.0f} | {1e6 / r['rows_per_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{NOTES[k]}{extra} |")
    lines += ["", f"- FCN forward: {fwd / 1e6:.2f} MFLOP/row in its Linear layers (training ~3x). At the measured "
                  f"{gf:.1f} GFLOP/s ({a.threads} thread(s)) the fp32 ceiling is ~{gf * 1e9 / fwd:,.0f} rows/s "
                  f"inference and ~{gf * 1e9 / (3 * fwd):,.0f} rows/s training; 100k rows/s inference would need "
                  f"{100e3 * fwd / 1e9:.0f} GFLOP/s.",
              f"- training speed-up vs naive: **{ratio_train:.2f}x** (bar >= 3x). Per row: model "
              f"{us['step']:.1f} us, fast input path {us['load_fast']:.2f} us, naive input path "
              f"{us['load_naive']:.1f} us -> expected ratio (model + naive) / (model + fast) = {bound:.2f}x",
              f"- input-path speed-up vs naive (no model): **{ratio_load:.1f}x**",
              f"- inference: eager **{res['infer_eager']['rows_per_s']:,.0f}**, TorchScript "
              f"**{res['infer_script']['rows_per_s']:,.0f}**, int8 **{res['infer_int8']['rows_per_s']:,.0f}** rows/s "
              f"(bar >= 100k rows/s: {'met' if best_inf >= 100e3 else 'NOT met'})"]
    if "encode" in res:
        e = res["encode"]
        lines.append(f"- encoding: {e['rows']:,} rows in {e['seconds']:.1f} s = {e['rows_per_s']:,.0f} rows/s, "
                     f"peak RSS {e['peak_rss_mb']:.0f} MB (chunked: memory bounded by the chunk, not the file)")
    name = "ctr_throughput" if a.fields == 39 else f"ctr_throughput_f{a.fields}"
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"results": res, "train_ratio": ratio_train, "load_ratio": ratio_load,
                                                 "expected_train_ratio": bound, "fwd_flops_per_row": fwd,
                                                 "load_average": load, "args": vars(a)}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    ks = [k for k in res if k != "gemm"]
    ax.barh(ks, [res[k]["rows_per_s"] for k in ks])
    ax.axvline(100e3, color="k", ls="--", lw=1, label="inference bar 100k rows/s")
    ax.set_xscale("log")
    ax.set_xlabel("rows / s (log)")
    ax.set_title(f"CTR throughput, {a.threads} thread(s) (train speed-up {ratio_train:.2f}x)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=100)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

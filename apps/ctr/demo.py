"""``linmix-ctr demo``: synth -> fit FCN and DCNv2 -> test -> calibration plots -> export -> serve raw rows.

Writes under ``out``: ``data/`` (synthetic log + encoded cache), ``<arch>/`` (logs, checkpoints,
``calibration.png``, ``test_metrics.json``), ``export/`` (TorchScript + vocab) and ``summary.json``: a flat list
of ``{"stage", "metric", "value", "note"}`` rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from linmix.shared.checkpoint import load_lit


def run_demo(out: str | Path, rows: int = 30_000, epochs: int = 5) -> list[dict]:
    import pytorch_lightning as pl_
    from pytorch_lightning.loggers import CSVLogger

    from linmix.apps.ctr.data import CTRDataModule
    from linmix.apps.ctr.encoder import FeatureEncoder
    from linmix.apps.ctr.export import export_model
    from linmix.apps.ctr.lit_module import CTRLitModule
    from linmix.apps.ctr.model import CTRNetConfig
    from linmix.shared.export import load_torchscript

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # one intra-op thread: on a small shared CPU two threads contend (measured ~4x slower steps under load)
    torch.set_num_threads(1)
    summary: list[dict] = []

    def row(stage: str, metric: str, value: float, note: str = "") -> None:
        summary.append({"stage": stage, "metric": metric, "value": float(value), "note": note})

    t0 = time.perf_counter()
    dm = CTRDataModule(data_dir=str(out / "data"), synth_rows=rows, batch_size=1024, eval_batch_size=8192)
    dm.setup("fit")
    meta = json.loads((out / "data" / "meta.json").read_text())
    rep = dm.report["splits"]["train"]
    row("synth", "rows", rows, "80/10/10 split")
    row("synth", "test_bayes_auc", meta["splits"]["test"]["bayes"]["auc"], "true probability")
    row("synth", "test_bayes_logloss", meta["splits"]["test"]["bayes"]["logloss"], "true probability")
    row("encode", "train_rejected", rep["rejected"], f"read {rep['read']} = written {rep['written']} + rejected")
    row("encode", "seconds", time.perf_counter() - t0, "synth + encode (cached on rerun)")
    best = {}
    for arch, loss in (("fcn", "official"), ("dcnv2", "bce")):
        t1 = time.perf_counter()
        pl_.seed_everything(0)
        lit = CTRLitModule(net=CTRNetConfig(arch=arch, n_layers=3 if arch == "dcnv2" else 4, hidden=(256, 256)),
                           loss=loss, lr=2e-3, out_dir=str(out / arch))
        trainer = pl_.Trainer(max_epochs=epochs, logger=CSVLogger(str(out / arch), name="logs"),
                              default_root_dir=str(out / arch), enable_progress_bar=False,
                              enable_model_summary=False)
        trainer.fit(lit, datamodule=dm)
        fit_s = time.perf_counter() - t1
        best[arch] = trainer.checkpoint_callback.best_model_path
        m = trainer.test(lit, datamodule=dm, ckpt_path="best", verbose=False)[0]
        row(f"fit_{arch}", "seconds", fit_s, f"{trainer.current_epoch} epochs, {loss} loss")
        for k in ("auc", "logloss", "gauc", "ece"):
            if f"test/{k}" in m:
                row(f"test_{arch}", k, m[f"test/{k}"], "best val-AUC checkpoint")
    t2 = time.perf_counter()
    ex = export_model(best["fcn"], out / "export", formats=("torchscript", "onnx"))
    row("export", "roundtrip_max_abs_diff", ex["roundtrip_max_abs_diff"],
        "TorchScript and ONNX (ONNX Runtime), batch 3 and 257")
    # serve: raw test rows -> saved vocab -> TorchScript, against the Lightning model on the same rows
    enc = FeatureEncoder.load(out / "export" / "vocab.json")
    raw = pl.read_parquet(out / "data" / "test.parquet").head(64)
    a = enc.encode_serving(raw)
    model, _ = load_torchscript(out / "export" / "model.ts")
    lit = load_lit(CTRLitModule, best["fcn"], app="ctr").eval()
    with torch.no_grad():
        p_ts = model(torch.from_numpy(a["idx"]), torch.from_numpy(a["val"]), None).numpy()
        p_eager = torch.sigmoid(lit.net(torch.from_numpy(a["idx"]), torch.from_numpy(a["val"]))).numpy()
    row("serve", "raw_rows_max_abs_diff", float(np.abs(p_ts - p_eager).max()), "64 raw test rows, vocab.json + model.ts")
    row("export", "seconds", time.perf_counter() - t2, "")
    row("demo", "total_seconds", time.perf_counter() - t0, "")
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "summary.json")
    for r in summary:
        print(f"{r['stage']:<12} {r['metric']:<24} {r['value']:>12.4f}  {r['note']}")
    return summary

"""linmix side of ``benchmarks/ctr/fuxictr.py``: one fit + test-split inference in the project venv.

Uses the app's own path: ``CTRDataModule`` (``format: schema`` on the synthetic CSV log, encoded once into its
cache by ``--prep``), ``CTRLitModule`` under a Lightning ``Trainer`` (Adam(W) with no weight decay, constant lr,
gradient-norm clip 10, validation AUC every epoch, best checkpoint, early stopping), then the best checkpoint's
net scored on the test split in eval mode under ``torch.inference_mode`` (``linmix.apps.ctr.serving``, eager), in
batches sliced from the encoded tensors, and again through the serving path: the net exported to ONNX by the app's
exporter and run by ONNX Runtime.

    python fuxictr_linmix.py --prep --data DIR --work W
    python fuxictr_linmix.py --data DIR --work W --model fcn --threads 1 --epochs 1 --batch 4096 --out RUN_DIR
    python fuxictr_linmix.py ... --precision bf16-mixed      # bfloat16 autocast training, float32 inference
    python fuxictr_linmix.py ... --malloc default            # glibc's malloc thresholds, not the CLI's

Writes ``RUN_DIR/result.json`` and ``RUN_DIR/test_pred.npz`` (p, y) like ``fuxictr_runner.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NETS = {  # the settings both libraries get (fuxictr_runner.py's constructors use the same numbers)
    "fcn": ("official", {"arch": "fcn", "n_layers": 4, "n_linear_layers": 4, "dropout": 0.1, "linear_dropout": 0.3,
                         "layer_norm": True, "batch_norm": False, "n_heads": 1}),
    "dcnv2": ("bce", {"arch": "dcnv2", "n_layers": 3, "hidden": (256, 256), "dropout": 0.1, "batch_norm": False}),
}


def datamodule(data: Path, work: Path, batch: int):
    from linmix.apps.ctr.data import CTRDataModule

    return CTRDataModule(format="schema", schema_path=str(data / "schema.yaml"), train_path=str(data / "train.csv"),
                         val_path=str(data / "val.csv"), test_path=str(data / "test.csv"),
                         cache_dir=str(work / "linmix_cache"), batch_size=batch, eval_batch_size=batch,
                         data_dir=str(data), streaming=False)  # in memory: the benchmark reads the tensors


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def onnx_inference(net, out: Path, idx, vals, b: int, threads: int, passes: int, p_eager) -> float:
    """The serving path: the net exported to ONNX by the app's own exporter, scored by ONNX Runtime on the test
    split at the training batch with ``threads`` intra-op threads; rows/s of the fastest pass. The probabilities
    must equal the eager ones (max abs diff <= 1e-5)."""
    import numpy as np
    import onnxruntime as ort

    from linmix.apps.ctr.export import export_net

    path = out / "export"
    export_net(net, path, {"net": "benchmark"}, formats=("onnx",))
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path / "model.onnx"), so, providers=["CPUExecutionProvider"])
    n = len(idx)

    def score():
        return np.concatenate([sess.run(None, {"idx": idx[s:s + b], "val": vals[s:s + b]})[0]
                               for s in range(0, n, b)])

    q = score()  # warm-up pass
    diff = float(np.abs(q.astype(np.float64) - p_eager).max())
    if diff > 1e-5:
        raise SystemExit(f"ONNX Runtime disagrees with eager: max abs diff {diff:.2e}")
    return n / min(_timed(score) for _ in range(passes))


def run(a) -> dict:
    import numpy as np
    import pytorch_lightning as pl_
    import torch

    from linmix.apps.ctr.lit_module import CTRLitModule
    from linmix.apps.ctr.model import CTRNetConfig
    from linmix.apps.ctr.serving import flops_per_row, serving_module
    from linmix.shared.allocator import tune_malloc

    torch.set_num_threads(a.threads)
    if a.malloc == "linmix":
        tune_malloc()  # what `linmix-ctr fit` does at start-up
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dm = datamodule(Path(a.data), Path(a.work), a.batch)
    dm.setup("fit")
    pl_.seed_everything(a.seed, verbose=False)
    loss, net = NETS[a.model]
    lit = CTRLitModule(net=CTRNetConfig(d_model=a.d_model, **net), loss=loss, lr=a.lr, warmup_steps=0,
                       min_lr_ratio=1.0, early_stopping_patience=a.patience, out_dir=str(out),
                       betas=tuple(float(b) for b in a.betas.split(",")))
    val = {"s": 0.0, "t": 0.0}

    class ValTimer(pl_.Callback):  # seconds in validation (+ the checkpoint it triggers), as FuxiCTR's eval_step
        def on_validation_start(self, trainer, module):
            val["t"] = time.perf_counter()

        def on_validation_end(self, trainer, module):
            val["s"] += time.perf_counter() - val["t"]

    tr = pl_.Trainer(max_epochs=a.epochs, default_root_dir=str(out), enable_progress_bar=False, logger=False,
                     enable_model_summary=False, gradient_clip_val=10.0, num_sanity_val_steps=0,
                     callbacks=[ValTimer()], accelerator="cpu", devices=1, precision=a.precision)
    t = time.perf_counter()
    tr.fit(lit, datamodule=dm)
    fit_s = time.perf_counter() - t
    epochs = tr.current_epoch
    n_train = len(dm.datasets["train"])
    best = CTRLitModule.load_from_checkpoint(tr.checkpoint_callback.best_model_path, map_location="cpu",
                                             weights_only=True)
    m = serving_module(best.net, "eager")
    te = dm.datasets["test"].t
    idx, vals, y = te["idx"], te["val"], te["label"]
    n, b = len(y), a.batch
    with torch.inference_mode():
        def score():
            return torch.cat([m(idx[s:s + b], vals[s:s + b]) for s in range(0, n, b)])

        p = score()  # warm-up pass
        infer_s = min(_timed(score) for _ in range(a.passes))  # the fastest pass, as fuxictr_runner.py
    p = torch.sigmoid(p).double().numpy()
    np.savez(out / "test_pred.npz", p=p, y=y.double().numpy())
    onnx_rows_per_s = onnx_inference(best.net, out, idx.numpy(), vals.numpy(), b, a.threads, a.passes, p)
    train_s = fit_s - val["s"]
    res = {"lib": "linmix", "model": a.model, "threads": a.threads, "precision": a.precision, "malloc": a.malloc,
           "params": sum(x.numel() for x in lit.net.parameters()),
           "epochs": epochs, "fit_seconds": fit_s, "eval_seconds": val["s"], "train_seconds": train_s,
           "train_rows": n_train * epochs, "train_rows_per_s": n_train * epochs / train_s,
           "infer_rows": n, "infer_rows_per_s": n / infer_s, "forward_rows_per_s": n / infer_s,
           "onnx_rows_per_s": onnx_rows_per_s,
           "flops_per_row": flops_per_row(best.net), "width": best.net.embedding.n_fields * a.d_model,
           "vocab": list(best.net.cfg.field_sizes)}
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prep", action="store_true", help="encode the CSV splits into the cache and stop")
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", choices=tuple(NETS), default="fcn")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--d-model", type=int, default=16)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--betas", default="0.9,0.999", help="AdamW betas (Adam's default, as FuxiCTR)")
    ap.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"),
                    help="Lightning training precision (inference is float32 either way)")
    ap.add_argument("--malloc", default="linmix", choices=("linmix", "default"),
                    help="linmix: the malloc thresholds `linmix-ctr fit` sets (linmix.shared.allocator); default: "
                         "glibc's own")
    ap.add_argument("--passes", type=int, default=3, help="timed inference passes (the fastest counts)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.prep:
        t = time.perf_counter()
        datamodule(Path(a.data), Path(a.work), a.batch).prepare_data()
        print(json.dumps({"prep_seconds": time.perf_counter() - t}))
        return 0
    run(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

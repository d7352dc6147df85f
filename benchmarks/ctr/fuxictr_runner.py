"""FuxiCTR side of ``benchmarks/ctr/fuxictr.py``: runs in the FuxiCTR venv (``benchmarks/ctr/fuxictr_env.sh``).

Imports the installed ``fuxictr`` 2.3.10 only (nothing from its GitHub model zoo): FuxiCTR's ``FeatureProcessor`` /
``build_dataset`` (polars + Ray) encode the CSV log, its ``RankDataLoader`` (Ray Data over Parquet) feeds batches,
its ``BaseModel`` runs ``fit`` (Adam, gradient-norm clip 10, evaluation and best-checkpoint saving every epoch,
early stopping, best weights reloaded), ``predict`` scores the test split. The 2.3.10 wheel ships no FCN and no
plain-CTR DCNv2 (its ``model_zoo/LongCTR/DCNv2`` expects behaviour sequences), so both nets are assembled here as
``BaseModel`` subclasses from the library's own layers (``FeatureEmbedding``, ``CrossNetV2``, ``MLP_Block``):

* DCNv2 (parallel): [CrossNetV2(x0) || MLP_Block(x0)] -> Linear -> sigmoid, BCE;
* FCN (a.k.a. DCNv3): multi-head half-split field embeddings, ECN + LCN halved cross layers with Self-Mask,
  fused logit = mean of the two, Tri-BCE with non-detached weights (the official code's form; no FuxiCTR layer
  exists for it).

    python fuxictr_runner.py prep --data DIR --work W --min-count 2
    python fuxictr_runner.py run --work W --model fcn --threads 1 --epochs 1 --batch 4096 --out RUN_DIR
    python fuxictr_runner.py step --work W --linmix-site SITE --model fcn --threads 1     # model step alone

``run`` writes ``RUN_DIR/result.json`` (parameters, seconds, rows/s) and ``RUN_DIR/test_pred.npz`` (p, y). Ray
keeps a session folder per process under ``/tmp/ray`` (its default); remove it after a benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

NUMERIC_MISSING = -1.0  # a missing count gets its own token (bucket -1), as linmix's "missing" state


def feature_cols(schema: dict) -> list[dict]:
    """FuxiCTR feature_cols for a linmix schema dict: categoricals as str tokens ("" = missing), bucketed numerics
    as floor(ln(x)^2) categories (``convert_to_bucket``), missing filled with -1."""
    cats = [f["name"] for f in schema["fields"] if f.get("type", "categorical") == "categorical"]
    nums = [f["name"] for f in schema["fields"] if f.get("type") == "numeric"]
    cols = [{"name": cats, "active": True, "dtype": "str", "type": "categorical"}]
    if nums:
        cols.append({"name": nums, "active": True, "dtype": "float", "type": "categorical",
                     "preprocess": "convert_to_bucket", "fill_na": NUMERIC_MISSING})
    return cols


def prep(a) -> None:
    import ray
    import yaml
    from fuxictr.datasets.criteo import CustomizedFeatureProcessor
    from fuxictr.preprocess import build_dataset

    schema = yaml.safe_load((Path(a.data) / "schema.yaml").read_text())
    ray.init(num_cpus=a.threads, include_dashboard=False, logging_level=logging.ERROR)
    t = time.perf_counter()
    fp = CustomizedFeatureProcessor(feature_cols=feature_cols(schema),
                                    label_col={"name": schema["label"], "dtype": "float"},
                                    dataset_id="synth", data_root=str(Path(a.work) / "data"))
    build_dataset(fp, train_data=str(Path(a.data) / "train.csv"), valid_data=str(Path(a.data) / "val.csv"),
                  test_data=str(Path(a.data) / "test.csv"), data_format="csv", sep=",",
                  min_categr_count=a.min_count)
    secs = time.perf_counter() - t
    (Path(a.work) / "prep.json").write_text(json.dumps({"seconds": secs}))
    print(json.dumps({"prep_seconds": secs}))


def build_models():
    """FCN and DCNv2 as FuxiCTR ``BaseModel`` subclasses (classes made here so that the module imports without
    fuxictr)."""
    import torch
    from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    from torch import nn

    class TimedEval:
        """Adds up the seconds spent in evaluation (+ checkpointing) inside ``fit``."""

        eval_seconds = 0.0

        def eval_step(self):
            t = time.perf_counter()
            super().eval_step()
            self.eval_seconds += time.perf_counter() - t

    class DCNv2(TimedEval, BaseModel):
        def __init__(self, feature_map, model_id="DCNv2", learning_rate=1e-3, embedding_dim=16, num_cross_layers=3,
                     dnn_hidden_units=(256, 256), net_dropout=0.1, batch_norm=False, **kwargs):
            super().__init__(feature_map, model_id=model_id, **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            d = feature_map.sum_emb_out_dim()
            self.crossnet = CrossNetV2(d, num_cross_layers)
            self.parallel_dnn = MLP_Block(input_dim=d, output_dim=None, hidden_units=list(dnn_hidden_units),
                                          hidden_activations="ReLU", output_activation=None,
                                          dropout_rates=net_dropout, batch_norm=batch_norm)
            self.fc = nn.Linear(d + list(dnn_hidden_units)[-1], 1)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            x = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
            out = self.fc(torch.cat([self.crossnet(x), self.parallel_dnn(x)], -1))
            return {"y_pred": self.output_activation(out)}

    class CrossStack(nn.Module):
        """Halved cross layers with Self-Mask (ECN if exponential, else LCN); x (B, H, D) -> logit (B, 1)."""

        def __init__(self, dim, n_layers, n_heads, dropout, layer_norm, batch_norm, exponential):
            super().__init__()
            self.exponential = exponential
            self.w = nn.ModuleList(nn.Linear(dim, dim // 2, bias=False) for _ in range(n_layers))
            self.b = nn.ParameterList(nn.Parameter(torch.empty(dim)) for _ in range(n_layers))
            self.ln = nn.ModuleList(nn.LayerNorm(dim // 2) if layer_norm else nn.Identity() for _ in range(n_layers))
            self.bn = nn.ModuleList(nn.BatchNorm1d(n_heads) if batch_norm else nn.Identity() for _ in range(n_layers))
            self.drop = nn.ModuleList(nn.Dropout(dropout) for _ in range(n_layers))
            self.out = nn.Linear(dim, 1)

        def init_weights(self):  # called by BaseModel.reset_parameters after the xavier/zero default
            for b in self.b:
                nn.init.uniform_(b, 0.0, 1.0)

        def forward(self, x0):
            x = x0
            for w, b, ln, bn, drop in zip(self.w, self.b, self.ln, self.bn, self.drop):
                h = bn(w(x))
                hp = torch.cat([h, h * torch.relu(ln(h))], -1) + b
                x = drop((x if self.exponential else x0) * hp + x)
            return self.out(x).mean(1)

    class FCN(TimedEval, BaseModel):
        def __init__(self, feature_map, model_id="FCN", learning_rate=1e-3, embedding_dim=16, num_heads=1,
                     num_deep_cross_layers=4, num_shallow_cross_layers=4, deep_net_dropout=0.1,
                     shallow_net_dropout=0.3, layer_norm=True, batch_norm=False, **kwargs):
            super().__init__(feature_map, model_id=model_id, **kwargs)
            self.d, self.h = embedding_dim, num_heads
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim * num_heads)
            dim = feature_map.sum_emb_out_dim()
            self.ecn = CrossStack(dim, num_deep_cross_layers, num_heads, deep_net_dropout, layer_norm, batch_norm,
                                  True)
            self.lcn = CrossStack(dim, num_shallow_cross_layers, num_heads, shallow_net_dropout, layer_norm,
                                  batch_norm, False)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            e = self.embedding_layer(self.get_inputs(inputs))  # (B, F, H * d)
            B, F = e.shape[0], e.shape[1]
            e = e.view(B, F, self.h, self.d).transpose(1, 2)  # (B, H, F, d)
            half = self.d // 2
            x0 = torch.cat([e[..., :half].reshape(B, self.h, -1), e[..., half:].reshape(B, self.h, -1)], -1)
            z_e, z_l = self.ecn(x0), self.lcn(x0)
            return {"y_pred": torch.sigmoid((z_e + z_l) / 2), "y_d": torch.sigmoid(z_e),
                    "y_s": torch.sigmoid(z_l)}

        def add_loss(self, return_dict, y_true):  # Tri-BCE, weights in the graph (not detached)
            loss = self.loss_fn(return_dict["y_pred"], y_true, reduction="mean")
            l_d = self.loss_fn(return_dict["y_d"], y_true, reduction="mean")
            l_s = self.loss_fn(return_dict["y_s"], y_true, reduction="mean")
            w_d = torch.where(l_d - loss > 0, l_d - loss, torch.zeros_like(loss))
            w_s = torch.where(l_s - loss > 0, l_s - loss, torch.zeros_like(loss))
            return loss + l_d * w_d + l_s * w_s

    return {"fcn": FCN, "dcnv2": DCNv2}


def best_of(n: int, fn) -> float:
    """Fastest of ``n`` timed calls of ``fn`` (seconds): the least disturbed pass on a shared machine."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(a) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    import ray
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader

    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=a.threads, include_dashboard=False, logging_level=logging.ERROR)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(a.work) / "data" / "synth"
    fmap = FeatureMap("synth", str(data_dir))
    params = {"model_root": str(out / "ckpt"), "gpu": -1, "verbose": 0, "optimizer": "adam",
              "loss": "binary_crossentropy", "metrics": ["AUC", "logloss"], "monitor": "AUC", "monitor_mode": "max",
              "early_stop_patience": a.patience, "reduce_lr_on_plateau": False, "embedding_regularizer": 0,
              "net_regularizer": 0, "learning_rate": a.lr, "embedding_dim": a.d_model, "batch_size": a.batch}
    fmap.load(str(data_dir / "feature_map.json"), params)
    os.makedirs(Path(params["model_root"]) / "synth", exist_ok=True)
    model = build_models()[a.model](fmap, **params)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_gen, valid_gen = RankDataLoader(fmap, stage="train", train_data=str(data_dir / "train.parquet"),
                                          valid_data=str(data_dir / "valid.parquet"), batch_size=a.batch,
                                          shuffle=True, data_format="parquet")
    test_gen = RankDataLoader(fmap, stage="test", test_data=str(data_dir / "test.parquet"), batch_size=a.batch,
                              shuffle=False, data_format="parquet")
    t = time.perf_counter()
    model.fit(train_gen, epochs=a.epochs, validation_data=valid_gen, max_gradient_norm=10.0)
    fit_s = time.perf_counter() - t
    epochs = model._epoch_index + 1
    train_rows = train_gen.num_samples * epochs
    train_s = fit_s - model.eval_seconds
    # inference 1: the library's own path (Ray loader + forward + numpy collection), at batch a.batch
    model.predict(test_gen)  # warm-up pass
    pred_s = best_of(a.passes, lambda: model.predict(test_gen))
    # inference 2: forward only, on batches already collated in memory (no loader)
    batches = list(test_gen)
    model.eval()
    with torch.no_grad():
        fwd_s = best_of(a.passes, lambda: [model.forward(b) for b in batches])
        p = torch.cat([model.forward(b)["y_pred"].reshape(-1) for b in batches]).double().numpy()
        y = torch.cat([model.get_labels(b).reshape(-1) for b in batches]).double().numpy()
    np.savez(out / "test_pred.npz", p=p, y=y)
    n_test = len(y)
    import fuxictr

    res = {"lib": "fuxictr", "version": fuxictr.__version__, "model": a.model, "threads": a.threads, "params": n_params, "epochs": epochs,
           "fit_seconds": fit_s, "eval_seconds": model.eval_seconds, "train_seconds": train_s,
           "train_rows": train_rows, "train_rows_per_s": train_rows / train_s,
           "infer_rows": n_test, "infer_rows_per_s": n_test / pred_s, "forward_rows_per_s": n_test / fwd_s,
           "vocab": {k: v.get("vocab_size") for k, v in fmap.features.items()}}
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    ray.shutdown()


def step(a) -> None:
    """The two nets' training step and forward alone, alternating in one process on one resident batch of random
    ids (no loader, no training loop): whether the model math costs the same on both sides. linmix is imported
    from ``--linmix-site`` (the project venv's site-packages); its model code needs torch only."""
    import site
    import statistics

    import torch

    site.addsitedir(a.linmix_site)
    from fuxictr.features import FeatureMap

    from linmix.apps.ctr.losses import tri_bce
    from linmix.apps.ctr.model import CTRNet, CTRNetConfig

    sys.path.insert(0, str(HERE))
    from fuxictr_linmix import NETS

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data_dir = Path(a.work) / "data" / "synth"
    params = {"model_root": str(Path(a.work) / "step_ckpt"), "gpu": -1, "verbose": 0, "optimizer": "adam",
              "loss": "binary_crossentropy", "metrics": ["AUC"], "embedding_dim": a.d_model, "learning_rate": 1e-3}
    fmap = FeatureMap("synth", str(data_dir))
    fmap.load(str(data_dir / "feature_map.json"), params)
    fx = build_models()[a.model](fmap, **params)
    fx._max_gradient_norm = 10.0
    b = a.batch
    batch = {k: torch.randint(1, v["vocab_size"] - 1, (b,)) for k, v in fmap.features.items()}
    batch[fmap.labels[0]] = torch.randint(0, 2, (b,)).float()
    loss_mode, cfg = NETS[a.model]
    sizes = json.loads((Path(a.work) / "linmix_cache" / "vocab.json").read_text())["field_sizes"]
    net = CTRNet(CTRNetConfig(field_sizes=tuple(sizes), d_model=a.d_model, **cfg))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.0, fused=True)  # as linmix.shared.lightning
    idx = torch.stack([torch.randint(3, n, (b,)) for n in sizes], 1)
    val, y = torch.ones(idx.shape), batch[fmap.labels[0]]

    def l_train(bf16: bool = False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # Lightning's bf16-mixed
            loss = tri_bce(*net.branch_logits(idx, val), y, loss_mode)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()

    def l_fwd():
        with torch.inference_mode():
            net(idx, val)

    def f_fwd():
        with torch.no_grad():
            fx.forward(batch)

    dim = len(sizes) * a.d_model
    xg, wg = torch.randn(b, dim), torch.randn(dim, dim // 2 if a.model == "fcn" else dim)

    def gemm():  # the cross-layer matmul shape, fp32: the compute ceiling, timed in the same alternation
        with torch.inference_mode():
            xg @ wg

    fns = {"gemm": gemm, "linmix_train": l_train, "linmix_train_bf16": lambda: l_train(True),
           "fuxictr_train": lambda: fx.train_step(batch), "linmix_forward": l_fwd, "fuxictr_forward": f_fwd}
    times = {k: [] for k in fns}
    for rep in range(a.steps + 1):  # the first round is a warm-up
        for k, fn in fns.items():
            net.train(mode="train" in k)
            fx.train(mode="train" in k)
            t = time.perf_counter()
            fn()
            if rep:
                times[k].append(time.perf_counter() - t)
    from linmix.apps.ctr.serving import flops_per_row

    res = {"model": a.model, "threads": a.threads, "steps": a.steps,
           **{f"{k}_rows_per_s": b / statistics.median(v) for k, v in times.items()}}
    res["gemm_gflops"] = 2 * b * wg.shape[0] * wg.shape[1] / statistics.median(times["gemm"]) / 1e9
    res["flops_per_row"] = flops_per_row(net)
    res["linmix_forward_gemm_pct"] = 100 * res["linmix_forward_rows_per_s"] * res["flops_per_row"] / (
        res["gemm_gflops"] * 1e9)
    print(json.dumps(res))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prep")
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("run")
    r.add_argument("--work", required=True)
    r.add_argument("--model", choices=("fcn", "dcnv2"), required=True)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--epochs", type=int, default=1)
    r.add_argument("--batch", type=int, default=4096)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--d-model", type=int, default=16)
    r.add_argument("--patience", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--passes", type=int, default=3, help="timed inference passes (the fastest counts)")
    r.add_argument("--out", required=True)
    st = sub.add_parser("step")
    st.add_argument("--work", required=True)
    st.add_argument("--linmix-site", required=True)
    st.add_argument("--model", choices=("fcn", "dcnv2"), required=True)
    st.add_argument("--threads", type=int, default=1)
    st.add_argument("--batch", type=int, default=4096)
    st.add_argument("--d-model", type=int, default=16)
    st.add_argument("--steps", type=int, default=10)
    a = ap.parse_args(argv)
    {"prep": prep, "run": run, "step": step}[a.cmd](a)
    return 0


if __name__ == "__main__":
    # this folder holds fuxictr.py (the orchestrator): keep it off the path so ``import fuxictr`` finds the library
    # (only when run as a script: a test that loads this file must not lose the folder from its own path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    raise SystemExit(main())

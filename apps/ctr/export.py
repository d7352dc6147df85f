"""TorchScript export of a CTR checkpoint: ``model.ts`` (CTRServing: idx (B, F), val (B, F)[, seq (B, S, L)] ->
probability (B,)), ``vocab.json`` and ``export.json`` (round-trip check)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from linmix.shared.checkpoint import load_lit


def export_model(ckpt: str | Path, out: str | Path, vocab: Optional[str] = None,
                 batch_sizes: tuple[int, int] = (3, 257)) -> dict:
    """Export a checkpoint as ``model.ts`` (CTRServing: idx, val[, seq] -> probability) + ``vocab.json``."""
    from linmix.apps.ctr.lit_module import CTRLitModule
    from linmix.apps.ctr.model import CTRServing
    from linmix.shared.export import check_roundtrip, export_torchscript

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lit = load_lit(CTRLitModule, ckpt, app="ctr")
    net = lit.exportable().eval()
    serving = CTRServing(net).eval()
    cfg = net.cfg
    vocab = vocab or lit.hparams.get("vocab_path")
    fields = []
    if vocab and Path(vocab).is_file():
        vd = json.loads(Path(vocab).read_text())
        fields = [f["name"] for f in vd["schema"]["fields"]]
        tmp = out / ".vocab.json.tmp"
        shutil.copyfile(vocab, tmp)
        os.replace(tmp, out / "vocab.json")
    config = {"net": dataclasses.asdict(cfg), "fields": fields, "inputs": "idx (B, F) int64, val (B, F) float32, "
              "seq (B, S, L) int64 or None", "output": "click probability (B,)", "vocab": "vocab.json"}
    path = export_torchscript(serving, out / "model.ts", config)
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor(list(cfg.field_sizes))
    inputs = []
    for b in batch_sizes:
        idx = (torch.rand(b, len(sizes), generator=g) * sizes).long()
        val = torch.ones(b, len(sizes))
        seq = None
        if cfg.seq_sizes:
            seq = (torch.rand(b, len(cfg.seq_sizes), 4, generator=g) * torch.tensor(cfg.seq_sizes).view(1, -1, 1)
                   ).long()
        inputs.append((idx, val, seq))
    diff = check_roundtrip(serving, path, inputs)
    summary = {"model": str(path), "vocab": str(out / "vocab.json") if fields else None,
               "roundtrip_max_abs_diff": diff, "batch_sizes": list(batch_sizes), "arch": cfg.arch}
    (out / "export.json").write_text(json.dumps(summary, indent=1))
    return summary

"""``linmix-ehr export``: TorchScript of a finetuned EHRMamba (tokens + side arrays + task -> probability).

The exported module is :class:`linmix.apps.ehr.model.EHRMambaScorer` (pure torch, pure-torch Mamba2 path); its embedded
``config.json`` holds the net sizes, the task names and their prompt-token ids, the input order and the vocabulary, so a
consumer needs nothing else. The round trip is checked at two sequence lengths before the command reports success.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def example_inputs(vocab_size: int, n_tasks: int, batch: int, length: int, seed: int = 0) -> tuple:
    """Random but valid scorer inputs (B = batch, L = length), the last row right-padded to half length."""
    import torch

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(7, vocab_size, (batch, length), generator=g)
    token_type = torch.randint(1, 9, (batch, length), generator=g)
    age = 40 + 40 * torch.rand(batch, length, generator=g)
    time = torch.cumsum(torch.rand(batch, length, generator=g), dim=1)
    visit_order = torch.randint(1, 10, (batch, length), generator=g)
    segment = torch.randint(0, 3, (batch, length), generator=g)
    tokens[-1, length // 2:] = 0
    task = torch.randint(0, n_tasks, (batch,), generator=g)
    return tokens, token_type, age, time, visit_order, segment, task


def export_checkpoint(ckpt: str | Path, out: str | Path, lengths: tuple[int, int] = (24, 61)) -> tuple[Path, float]:
    """Export ``ckpt`` to ``out``; returns (path, max abs round-trip difference over both lengths)."""
    from linmix.apps.ehr.lit_module import INPUTS, EHRLitModule
    from linmix.shared.export import check_roundtrip, export_torchscript

    lit = EHRLitModule.load(ckpt)
    lit.eval()
    scorer = lit.exportable().eval()
    cfg = lit.net.cfg
    config = {"net": asdict(cfg), "tasks": lit.task_names, "task_token_ids": lit.task_token_ids,
              "inputs": list(INPUTS) + ["task"], "output": "probability (B,)",
              "vocab": json.loads(lit.vocab_json) if lit.vocab_json else None}
    path = export_torchscript(scorer, out, config)
    n_tasks = len(lit.task_token_ids)
    inputs = [example_inputs(cfg.vocab_size, n_tasks, 3, n, seed=i) for i, n in enumerate(lengths)]
    diff = check_roundtrip(scorer, path, inputs)
    return path, diff


def export_main(argv=None) -> int:
    """TorchScript export of a finetuned checkpoint (tokens + side arrays + task -> probability)"""
    p = argparse.ArgumentParser(prog="linmix-ehr export", description=export_main.__doc__)
    p.add_argument("--ckpt", required=True, help="finetuned checkpoint (.ckpt) from `linmix-ehr fit`")
    p.add_argument("--out", default="runs/ehr/export/ehr_mamba.pt", help="output TorchScript file")
    p.add_argument("--lengths", type=int, nargs=2, default=(24, 61), help="two sequence lengths for the round trip")
    args = p.parse_args(argv)
    if not Path(args.ckpt).exists():
        p.error(f"checkpoint {args.ckpt} not found")
    path, diff = export_checkpoint(args.ckpt, args.out, tuple(args.lengths))
    print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB); round trip at lengths {args.lengths}: "
          f"max abs diff {diff:.2e}")
    return 0

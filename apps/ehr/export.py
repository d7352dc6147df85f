"""``linmix-ehr export``: TorchScript, ``torch.export`` and ONNX of a finetuned EHRMamba (tokens + side arrays + task ->
probability), batch and sequence length dynamic.

The exported module is :class:`linmix.apps.ehr.model.EHRMambaScorer` (pure torch, pure-torch Mamba2 path); its embedded
``config.json`` holds the net sizes, the task names and their prompt-token ids, the input order and the vocabulary, so a
consumer needs nothing else. Each format's round trip is checked at two sequence lengths before the command reports
success (ONNX with ONNX Runtime).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from linmix.shared.argtypes import add_format_argument, chosen_formats


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


def export_scorer(scorer, out: str | Path, config: dict, formats=("torchscript", "export", "onnx"),
                  lengths: tuple[int, int] = (24, 61)) -> list[dict]:
    """Write ``scorer`` (an ``EHRMambaScorer``) in ``formats`` beside ``out`` (``.pt`` / ``.pt2`` / ``.onnx``), batch and
    length dynamic; round trip at the two ``lengths`` (batch 3 and 2). Returns one result dict per format."""
    from linmix.apps.ehr.lit_module import INPUTS
    from linmix.shared.export import export_formats, format_paths

    vocab_size, n_tasks = scorer.net.cfg.vocab_size, len(scorer.task_token_ids)
    example = example_inputs(vocab_size, n_tasks, 4, 40, seed=7)
    checks = [example_inputs(vocab_size, n_tasks, 3 - i, n, seed=i) for i, n in enumerate(lengths)]
    dims = [{0: "batch", 1: "length"}] * len(INPUTS) + [{0: "batch"}]
    config = {**config, "dynamic": {"batch": 0, "length": 1}}
    return export_formats(scorer, format_paths(out, formats), config, checks, example=example, dims=dims,
                          input_names=list(INPUTS) + ["task"], output_names=["probability"])


def export_checkpoint(ckpt: str | Path, out: str | Path, lengths: tuple[int, int] = (24, 61),
                      formats=("torchscript", "export", "onnx")) -> list[dict]:
    """Export ``ckpt`` beside ``out`` in ``formats``; returns one result dict per format (path, max_abs_diff)."""
    from linmix.apps.ehr.lit_module import INPUTS, EHRLitModule

    lit = EHRLitModule.load(ckpt)
    lit.eval()
    scorer = lit.exportable().eval()
    cfg = lit.net.cfg
    config = {"net": asdict(cfg), "tasks": lit.task_names, "task_token_ids": lit.task_token_ids,
              "inputs": list(INPUTS) + ["task"], "output": "probability (B,)",
              "vocab": json.loads(lit.vocab_json) if lit.vocab_json else None}
    return export_scorer(scorer, out, config, formats, lengths)


def export_main(argv=None) -> int:
    """Export a finetuned checkpoint (tokens + side arrays + task -> probability) as TorchScript, torch.export and
    ONNX"""
    p = argparse.ArgumentParser(prog="linmix-ehr export", description=export_main.__doc__)
    p.add_argument("--ckpt", required=True, help="finetuned checkpoint (.ckpt) from `linmix-ehr fit`")
    p.add_argument("--out", default="runs/ehr/export/ehr_mamba.pt",
                   help="output file; the .pt2 and .onnx files take its stem")
    p.add_argument("--lengths", type=int, nargs=2, default=(24, 61), help="two sequence lengths for the round trip")
    add_format_argument(p)
    args = p.parse_args(argv)
    if not Path(args.ckpt).exists():
        p.error(f"checkpoint {args.ckpt} not found")
    from linmix.shared.export import report_lines

    results = export_checkpoint(args.ckpt, args.out, tuple(args.lengths), chosen_formats(args.formats))
    print("\n".join(report_lines(results, f"at lengths {list(args.lengths)}")))
    return 0

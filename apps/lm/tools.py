"""Tools of ``linmix-lm``: ``export`` (TorchScript, torch.export and ONNX of a checkpoint) and ``demo`` (train for about
a minute)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from linmix.shared.argtypes import add_format_argument, chosen_formats

__all__ = ["export_main", "demo_main", "export_checkpoint", "export_net"]


def export_net(net, out: str | Path, config: dict, formats: Sequence[str] = ("torchscript", "export", "onnx")
               ) -> list[dict]:
    """Write ``net`` (a ``MixerLM``: tokens (B, L) -> logits (B, L, V)) in ``formats`` beside ``out``, batch and length
    dynamic; round trip at L=50 and L=131. Returns one result dict per format."""
    import torch

    from linmix.shared.export import export_formats, format_paths

    vocab = net.vocab_size
    g = torch.Generator().manual_seed(0)
    checks = [(torch.randint(0, vocab, (2, 50), generator=g),), (torch.randint(0, vocab, (3, 131), generator=g),)]
    example = (torch.randint(0, vocab, (2, 80), generator=g),)
    return export_formats(net, format_paths(out, formats), {**config, "dynamic": {"batch": 0, "length": 1}}, checks,
                          example=example, dims=[{0: "batch", 1: "length"}], input_names=["tokens"],
                          output_names=["logits"])


def export_checkpoint(ckpt: str | Path, out: str | Path, formats: Sequence[str] = ("torchscript",)) -> float:
    """Export the net of ``ckpt`` beside ``out`` in ``formats`` and round-trip check each at two lengths; returns the
    largest max abs diff."""
    from linmix.apps.lm.lit_module import LMLitModule
    from linmix.shared.checkpoint import load_lit

    lit = load_lit(LMLitModule, ckpt, app="lm")
    results = export_net(lit.exportable().eval(), out, {"app": "lm", "net": dict(lit.hparams.net)}, formats)
    return max(r["max_abs_diff"] for r in results)


def export_main(argv: Sequence[str]) -> int:
    """Export a checkpoint's network to TorchScript, torch.export and ONNX (config embedded), round-trip checked."""
    ap = argparse.ArgumentParser(prog="linmix-lm export", description=export_main.__doc__)
    ap.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt)")
    ap.add_argument("--out", required=True, help="output TorchScript file (.pt); the .pt2 and .onnx files take its stem")
    add_format_argument(ap)
    a = ap.parse_args(argv)
    from linmix.apps.lm.lit_module import LMLitModule
    from linmix.shared.checkpoint import load_lit
    from linmix.shared.export import report_lines

    lit = load_lit(LMLitModule, a.ckpt, app="lm")
    results = export_net(lit.exportable().eval(), a.out, {"app": "lm", "net": dict(lit.hparams.net)},
                         chosen_formats(a.formats))
    print("\n".join(report_lines(results, "at L=50 and L=131")))
    return 0


def demo_main(argv: Sequence[str]) -> int:
    """Train the tiny Mamba2 LM on the built-in additions corpus for about a minute, then test and export."""
    from linmix.apps.lm.cli import main

    ap = argparse.ArgumentParser(prog="linmix-lm demo", description=demo_main.__doc__)
    ap.add_argument("--out", default="runs/demo/lm")
    ap.add_argument("--max-time", default="00:00:01:00", help="training wall-time limit DD:HH:MM:SS")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    common = ["--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false"]
    main(["fit", "-c", "configs/lm/tiny.yaml", "--trainer.max_time", a.max_time, "--trainer.max_steps", "100000",
          "--trainer.max_epochs", "100", "--trainer.val_check_interval", "1.0", *common])
    ckpt = sorted(out.glob("lightning_logs/version_*/checkpoints/last.ckpt"))[-1]
    train_s = time.time() - t0
    import torch

    from linmix.apps.lm.data import LMDataModule
    from linmix.apps.lm.lit_module import LMLitModule
    from linmix.shared.checkpoint import load_lit

    lit = load_lit(LMLitModule, ckpt, app="lm")

    dm = LMDataModule(seq_len=128, n_val=128)
    dm.setup()
    x, y = dm.val_set.tensors
    with torch.no_grad():
        logits = lit.net.eval()(x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    diff = export_checkpoint(ckpt, out / "mixer_lm.pt")
    rows = [
        {"stage": "lm", "metric": "val_loss (nats/char)", "value": round(loss, 4), "note": f"{train_s:.0f} s training"},
        {"stage": "lm", "metric": "export round-trip max diff", "value": diff, "note": str(out / "mixer_lm.pt")},
    ]
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))
    return 0

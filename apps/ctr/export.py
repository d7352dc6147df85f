"""Export of a CTR checkpoint into a serving folder: ``model.ts`` (TorchScript), ``model.pt2`` (``torch.export``),
``model.onnx`` (ONNX, dynamo exporter), ``vocab.json``, ``featurize.py`` (pure-numpy raw rows -> ids) and
``export.json`` (formats, round-trip checks).

Every model maps ``idx (B, F) int64, val (B, F) float32[, seq (B, S, L) int64]`` to the click probability (B,), batch
dynamic. The TorchScript model checks its input values (index range, finite values); the traced formats carry no
data-dependent branch (:class:`linmix.apps.ctr.model.CTRServing` ``checks=False``). A serving process needs only
``onnxruntime`` + ``numpy`` and the folder (README "Serving with ONNX Runtime").
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import torch

from linmix.shared.checkpoint import load_lit

FILES = {"torchscript": "model.ts", "export": "model.pt2", "onnx": "model.onnx"}


def example_inputs(field_sizes: Sequence[int], seq_sizes: Sequence[int], batch: int, seed: int = 0,
                   seq_len: int = 4) -> tuple:
    """Random valid (idx, val[, seq]) for a net with these vocabulary sizes (``seq`` only when it has seq fields)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(list(field_sizes))
    idx = (torch.rand(batch, len(sizes), generator=g) * sizes).long()
    val = torch.rand(batch, len(sizes), generator=g) + 0.5
    if not seq_sizes:
        return idx, val
    seq = (torch.rand(batch, len(seq_sizes), seq_len, generator=g) * torch.tensor(list(seq_sizes)).view(1, -1, 1)).long()
    return idx, val, seq


def export_net(net, out: str | Path, config: dict, formats: Sequence[str] = tuple(FILES),
               batch_sizes: tuple[int, int] = (3, 257)) -> list[dict]:
    """Write ``net`` (a ``CTRNet``) as CTRServing in ``formats`` under ``out``; round trip at two batch sizes."""
    from linmix.apps.ctr.model import CTRServing
    from linmix.shared.export import export_formats

    cfg = net.cfg
    serving = CTRServing(net).eval()
    traced = CTRServing(net, checks=False).eval()
    example = example_inputs(cfg.field_sizes, cfg.seq_sizes, 16, seed=7)
    names = ["idx", "val", "seq"][: len(example)]
    dims = [{0: "batch"}] * len(example)
    checks = [example_inputs(cfg.field_sizes, cfg.seq_sizes, b, seed=i) for i, b in enumerate(batch_sizes)]
    out = Path(out)
    paths = {f: out / FILES[f] for f in formats}
    return export_formats(serving, paths, config, checks, example=example, dims=dims, input_names=names,
                          output_names=["probability"], traced_net=traced)


def export_model(ckpt: str | Path, out: str | Path, vocab: Optional[str] = None,
                 batch_sizes: tuple[int, int] = (3, 257), formats: Sequence[str] = tuple(FILES)) -> dict:
    """Export a checkpoint into the folder ``out`` in ``formats``, with ``vocab.json`` and ``featurize.py``."""
    from linmix.apps.ctr.lit_module import CTRLitModule

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lit = load_lit(CTRLitModule, ckpt, app="ctr")
    net = lit.exportable().eval()
    cfg = net.cfg
    vocab = vocab or lit.hparams.get("vocab_path")
    fields = []
    if vocab and Path(vocab).is_file():
        vd = json.loads(Path(vocab).read_text())
        fields = [f["name"] for f in vd["schema"]["fields"]]
        for src, name in ((Path(vocab), "vocab.json"), (Path(__file__).with_name("featurize.py"), "featurize.py")):
            tmp = out / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, out / name)
    inputs = ["idx", "val"] + (["seq"] if cfg.seq_sizes else [])
    config = {"net": dataclasses.asdict(cfg), "fields": fields, "inputs": "idx (B, F) int64, val (B, F) float32, "
              "seq (B, S, L) int64 or None", "input_names": inputs, "output": "click probability (B,)",
              "vocab": "vocab.json", "featurizer": "featurize.py" if fields else None, "dynamic": {"batch": 0}}
    results = export_net(net, out, config, formats, batch_sizes)
    summary = {"model": str(out / FILES[results[0]["format"]]), "formats": results,
               "vocab": str(out / "vocab.json") if fields else None,
               "featurizer": str(out / "featurize.py") if fields else None,
               "roundtrip_max_abs_diff": max(r["max_abs_diff"] for r in results), "batch_sizes": list(batch_sizes),
               "arch": cfg.arch}
    tmp = out / ".export.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "export.json")
    return summary

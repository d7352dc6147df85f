"""``linmix-ctr encode`` (files -> encoded cache + rejects + report), ``linmix-ctr export`` (TorchScript / torch.export / ONNX, see
:mod:`linmix.apps.ctr.export`) and ``linmix-ctr demo`` (see :mod:`linmix.apps.ctr.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from linmix.apps.ctr.schema import DataSchema, avazu_schema, criteo_schema, libfm_schema, load_schema
from linmix.shared.argtypes import add_format_argument, at_least, chosen_formats


def _schema(fmt: str, schema_path: Optional[str], libfm_fields: int, min_count: Optional[int]) -> DataSchema:
    if fmt == "criteo":
        sc = criteo_schema()
    elif fmt == "avazu":
        sc = avazu_schema()
    elif fmt == "libfm":
        sc = libfm_schema(libfm_fields)
    else:
        if not schema_path:
            raise SystemExit("--format schema needs --schema FILE.yaml")
        sc = load_schema(schema_path)
    if min_count is not None:
        sc.min_count = min_count
    return sc


def encode_main(argv: list[str] | None = None) -> int:
    """Encode click-log files (Criteo/Avazu/libfm/schema) into a cached dataset with rejects and a report."""
    ap = argparse.ArgumentParser(prog="linmix-ctr encode", description=encode_main.__doc__)
    ap.add_argument("--format", choices=("criteo", "avazu", "libfm", "schema"), required=True)
    ap.add_argument("--train", required=True, nargs="+",
                    help="training file(s) or quoted glob(s) such as 'day_*.tsv' (vocabularies are fitted on train only)")
    ap.add_argument("--val", nargs="+")
    ap.add_argument("--test", nargs="+")
    ap.add_argument("--workers", type=at_least(1), default=1,
                    help="processes that parse, count and encode files in parallel (same output for any number)")
    ap.add_argument("--schema", help="YAML schema (format=schema)")
    ap.add_argument("--libfm-fields", type=at_least(1), default=10)
    ap.add_argument("--min-count", type=at_least(1), help="vocabulary threshold (>= 1)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--force", action="store_true", help="re-encode even if the cache is current")
    a = ap.parse_args(argv)
    from rich.console import Console

    from linmix.apps.ctr.pipeline import encode_dataset

    src = {k: v for k, v in (("train", a.train), ("val", a.val), ("test", a.test)) if v}
    rep = encode_dataset(src, _schema(a.format, a.schema, a.libfm_fields, a.min_count), a.out, force=a.force,
                         console=Console(stderr=True), workers=a.workers)
    for s, r in rep["splits"].items():
        print(f"{s:5s} read {r['read']:>10,} written {r['written']:>10,} rejected {r['rejected']:>8,} "
              f"OOV {r['oov_total']:>9,} shards {r['shards']:>5,}  rejects: {r['rejects_file']}")
        for reason, n in list(r["rejects_by_reason"].items())[:8]:
            print(f"        {n:>8,} x {reason}")
    if "libfm_convention" in rep:
        print(f"libfm fields are {rep['libfm_convention']}")
    print(f"report: {Path(a.out) / 'report.json'}")
    return 0


def export_main(argv: list[str] | None = None) -> int:
    """Export a trained checkpoint (encoded idx/val -> probability) as TorchScript, torch.export and ONNX, with its
    vocabularies and a pure-numpy featurizer."""
    ap = argparse.ArgumentParser(prog="linmix-ctr export", description=export_main.__doc__)
    ap.add_argument("--ckpt", required=True, help="Lightning checkpoint of CTRLitModule")
    ap.add_argument("--out", default="runs/ctr/export",
                    help="output folder (model.ts / model.pt2 / model.onnx, vocab.json, featurize.py, export.json)")
    ap.add_argument("--vocab", help="vocab.json (default: the one recorded in the checkpoint)")
    add_format_argument(ap)
    a = ap.parse_args(argv)
    from linmix.apps.ctr.export import export_model
    from linmix.shared.export import report_lines

    s = export_model(a.ckpt, a.out, a.vocab, formats=chosen_formats(a.formats))
    print(f"exported {s['arch']}; vocab: {s['vocab']}; featurizer: {s['featurizer']}")
    print("\n".join(report_lines(s["formats"], f"at batch {s['batch_sizes']}")))
    return 0


def demo_main(argv: list[str] | None = None) -> int:
    """End-to-end demo on small synthetic data: synth -> fit FCN and DCNv2 -> test -> export -> summary.json."""
    ap = argparse.ArgumentParser(prog="linmix-ctr demo", description=demo_main.__doc__)
    ap.add_argument("--out", default="runs/demo/ctr")
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args(argv)
    from linmix.apps.ctr.demo import run_demo

    run_demo(a.out, a.rows, a.epochs)
    return 0

"""``linmix-speech demo --out runs/demo/speech``: synth -> fit tiny -> test -> separate -> stream -> export.

Everything runs on the built-in espeak-ng corpus at small size (a few minutes on 2 CPU cores) through the same CLI
entry points a user calls; results, plots and ``summary.json`` (rows of ``{stage, metric, value, note}``) go to --out.
"""

import argparse
import json
import os
import time
from pathlib import Path
from typing import Optional

TINY = Path(__file__).resolve().parents[2] / "configs" / "speech" / "tiny.yaml"


def main(argv: Optional[list[str]] = None) -> int:
    """end-to-end demo on the synthetic corpus: synth, fit tiny, test, separate, stream, export"""
    p = argparse.ArgumentParser(prog="linmix-speech demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo/speech")
    p.add_argument("--steps", type=int, default=150, help="training steps of the tiny model")
    p.add_argument("--n-train", type=int, default=64, help="synthetic training mixtures")
    a = p.parse_args(argv)
    import torch

    from linmix.shared.checkpoint import load_lit

    from .audio import read_audio
    from .cli import main as cli_main
    from .data import SpeechDataModule
    from .export import export_separator
    from .lit_module import SpeechLitModule
    from .losses import pit_si_snr_loss
    from .model import ConvTasNet, ConvTasNetConfig
    from .separate import separate_file
    from .streaming import StreamingSeparator
    from .synth import generate

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []

    def row(stage: str, metric: str, value: float, note: str = "") -> None:
        rows.append({"stage": stage, "metric": metric, "value": float(value), "note": note})
        print(f"[demo] {stage:<9} {metric:<22} {value:10.3f}  {note}")

    t0 = time.time()
    data_root = out / "data"
    counts = {"train-100": a.n_train, "dev": 6, "test": 8}
    generate(str(data_root), 2, counts, n_speakers=40, seed=0, progress=False)
    row("synth", "mixtures", sum(counts.values()), f"espeak-ng Libri2Mix layout under {data_root}")
    row("synth", "seconds", time.time() - t0)

    common = ["-c", str(TINY), f"--data.root={data_root}", f"--data.synth_n_train={a.n_train}",
              "--data.synth_n_valid=6", "--data.synth_n_test=8", f"--data.rejects_dir={out / 'rejects'}",
              f"--trainer.logger.init_args.save_dir={out}"]  # fmt: skip
    t0 = time.time()
    cli_main(["fit", *common, f"--trainer.max_steps={a.steps}", "--trainer.max_epochs=-1",
              "--trainer.limit_train_batches=1.0", "--trainer.limit_val_batches=1.0", "--trainer.enable_progress_bar=false",
              "--model.lr=3.0e-3"])  # fmt: skip
    ckpts = sorted(out.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not ckpts:
        raise RuntimeError(f"fit wrote no checkpoint under {out}")
    ckpt = ckpts[-1]
    row("fit", "seconds", time.time() - t0, f"{a.steps} steps, tiny config, {ckpt}")

    t0 = time.time()
    cli_main(["test", *common, f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false"])
    test_dir = max(out.glob("lightning_logs/version_*"), key=lambda p: int(p.name.split("_")[1]))
    summary = json.loads((test_dir / "test_summary.json").read_text())
    row(
        "test",
        "si_snri_db",
        summary["si_snri_mean"],
        f"{summary['n_utterances']} unseen-speaker test mixtures",
    )
    row("test", "sdri_db", summary["sdri_mean"], "BSS-eval SDR improvement (torchmetrics)")
    row("test", "seconds", time.time() - t0)

    dm = SpeechDataModule(root=str(data_root), synth_n_train=a.n_train, synth_n_valid=6, synth_n_test=8,
                          rejects_dir=None)  # fmt: skip
    mix_path = dm.records("test")[0].mix_path
    lit = load_lit(SpeechLitModule, ckpt, app="speech")
    net = lit.net.eval()
    t0 = time.time()
    separate_file(net, mix_path, out / "separated" / mix_path.stem, 8000, net.n_src, chunk_s=1.0, overlap_s=0.25,
                  plot=True)
    row("separate", "seconds", time.time() - t0, f"{mix_path.name} -> {out / 'separated' / mix_path.stem}")

    # Streaming: a causal copy of the tiny config, chunk-by-chunk output vs the offline causal model.
    causal = ConvTasNet(ConvTasNetConfig(**{**lit.net.config.__dict__, "causal": True})).eval()
    x, _ = read_audio(mix_path, 8000)
    with torch.no_grad():
        ref = causal(x.unsqueeze(0))
    st = StreamingSeparator(causal)
    chunks = [st.push(x[i : i + 160]) for i in range(0, x.shape[-1], 160)] + [st.flush()]
    row(
        "stream",
        "max_abs_diff",
        (torch.cat(chunks, -1) - ref).abs().max(),
        "causal streaming vs offline, 20 ms chunks",
    )

    t0 = time.time()
    diff = export_separator(net, str(out / "convtasnet_tiny.pt"), 8000)
    row("export", "roundtrip_max_abs_diff", diff, "TorchScript, lengths 1001 and 2403")
    with torch.no_grad():
        est = net(x.unsqueeze(0))
    srcs = torch.stack(
        [read_audio(p, 8000, allow_silent=True, quiet=True)[0] for p in dm.records("test")[0].source_paths]
    )
    row("check", "si_snr_db", -pit_si_snr_loss(est, srcs.unsqueeze(0))[0], "first test mixture, eager net")

    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(rows, indent=2))
    os.replace(tmp, out / "summary.json")
    print(f"[demo] wrote {out / 'summary.json'}")
    return 0

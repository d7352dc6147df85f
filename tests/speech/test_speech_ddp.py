"""``linmix-speech`` under DDP, 2 gloo processes on CPU, through the console script: fit (with validation) and test.
Each rank trains on a disjoint half of every epoch, and the 2-process validation / test metrics and the
per-utterance results file equal a single-process evaluation of the same checkpoint on the same utterances."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from linmix.apps.speech.cli import main

TESTS = Path(__file__).resolve().parents[1]
TINY = str(TESTS.parent / "configs" / "speech" / "tiny.yaml")
_spec = importlib.util.spec_from_file_location("linmix_tests_scaleout", TESTS / "scaleout.py")
SO = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SO)


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested summary -> {"a/b": value}, None as NaN."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = float("nan") if v is None else v
    return out


def _rows(folder: Path) -> list[dict]:
    with open(folder / "test_results.csv", newline="") as f:
        return list(csv.DictReader(f))


pytestmark = pytest.mark.skipif(not shutil.which(str(SO.exe("speech"))),
                                reason="console script not installed (pip install -e .)")
QUIET = [*SO.QUIET, "--trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def fitted(synth_root, tmp_path_factory):
    """One 2-process fit of one epoch on the session corpus: 6 training mixtures (batches of 2), 2 dev and 2 test
    utterances."""
    root = tmp_path_factory.mktemp("speech_ddp")
    common = ["-c", TINY, f"--data.root={synth_root}", "--data.synthesize=false", f"--data.rejects_dir={root}",
              "--trainer.limit_val_batches=1.0"]
    SO.run_ddp("speech", ["fit", *common, "--trainer.limit_train_batches=1.0", "--trainer.num_sanity_val_steps=0"],
               root)
    (fit_dir,) = SO.versions(root / "runs" / "speech")
    return {"root": root, "common": common, "fit_dir": fit_dir, "ckpt": fit_dir / "checkpoints" / "last.ckpt"}


def test_ddp_fit_halves_the_epoch_and_validates_like_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    state = torch.load(fitted["ckpt"], map_location="cpu", weights_only=True)
    assert state["global_step"] == 2  # 3 mixtures per rank in batches of 2 (one process: 3 steps)
    assert main(["validate", *fitted["common"], *QUIET, f"--ckpt_path={fitted['ckpt']}"]) == 0
    one = SO.metrics(SO.versions(fitted["root"] / "runs" / "speech")[-1])
    assert SO.assert_close_metrics(SO.metrics(fitted["fit_dir"]), one, "val/") == 3  # loss, si_snr, si_snri


def test_ddp_test_writes_each_utterance_once_as_one_process(fitted, monkeypatch):
    monkeypatch.chdir(fitted["root"])
    logs, common, ckpt = fitted["root"] / "runs" / "speech", fitted["common"], fitted["ckpt"]
    SO.run_ddp("speech", ["test", *common, f"--ckpt_path={ckpt}"], fitted["root"])
    ddp_dir = SO.versions(logs)[-1]
    assert main(["test", *common, *QUIET, f"--ckpt_path={ckpt}"]) == 0
    one_dir = SO.versions(logs)[-1]
    assert SO.assert_close_metrics(SO.metrics(ddp_dir), SO.metrics(one_dir), "test/") >= 3
    ddp_rows, one_rows = _rows(ddp_dir), _rows(one_dir)
    ids = [r["mixture_ID"] for r in one_rows]
    assert len(ids) == len(set(ids)) == 2 and [r["mixture_ID"] for r in ddp_rows] == ids  # each utterance once
    for a, b in zip(ddp_rows, one_rows, strict=True):
        SO.assert_close_metrics({k: float(v) for k, v in a.items() if k not in ("mixture_ID", "groups")},
                                {k: float(v) for k, v in b.items() if k not in ("mixture_ID", "groups")}, "")
    ddp_sum, one_sum = (_flat(json.loads((d / "test_summary.json").read_text())) for d in (ddp_dir, one_dir))
    assert ddp_sum["n_utterances"] == 2 and ddp_sum == pytest.approx(one_sum, abs=1e-6, nan_ok=True)


def test_dynamic_mixing_ranks_draw_different_mixtures(tmp_path):
    """DDP ranks share torch's seed: items are seeded by the index too, so the ranks' disjoint indices mix differently."""
    import numpy as np
    import soundfile as sf

    from linmix.apps.speech.dynamic_mix import DynamicMixDataset, SourceRecord

    rng = np.random.default_rng(0)
    pool = []
    for s in range(4):
        path = tmp_path / f"spk{s}.wav"
        sf.write(str(path), (0.1 * rng.standard_normal(6000)).astype(np.float32), 8000)
        pool.append(SourceRecord(path, f"spk{s}", f"g{s}"))
    ds = DynamicMixDataset(pool, 8000, 4000, epoch_size=4)
    torch.manual_seed(0)
    rank0 = ds[0]["mix"]  # the first item of rank 0 (index 0) and of rank 1 (index 1), both after seed 0
    torch.manual_seed(0)
    rank1 = ds[1]["mix"]
    torch.manual_seed(0)
    assert not torch.equal(rank0, rank1) and torch.equal(ds[0]["mix"], rank0)

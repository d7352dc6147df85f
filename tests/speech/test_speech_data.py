"""Synthetic LibriMix-layout corpus and the LibriMix / wsj0-2mix data module."""

import csv
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from linmix.apps.speech.data import DatasetError, SpeechDataModule, read_librimix_csv

BASE = ("Libri2Mix", "wav8k", "min")


def _dm(root, **kw):
    kw.setdefault("rejects_dir", None)
    kw.setdefault("segment_s", 0.5)
    return SpeechDataModule(root=str(root), synthesize=False, batch_size=2, **kw)


def test_synth_writes_librimix_layout_and_metadata(synth_root):
    base = synth_root.joinpath(*BASE)
    with open(base / "metadata" / "mixture_train-100_mix_clean.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]
    assert len(rows) == 6
    mix, sr = sf.read(base / rows[0]["mixture_path"])
    s1, _ = sf.read(base / rows[0]["source_1_path"])
    s2, _ = sf.read(base / rows[0]["source_2_path"])
    assert sr == 8000 and len(mix) == int(rows[0]["length"]) == len(s1) == len(s2)
    assert np.abs(mix - (s1 + s2)).max() < 3e-4  # mixture = sum of sources (up to 16-bit rounding)
    # dev/test speakers are unseen in training (speaker id = mixture id minus the running number)
    spk = {s.rsplit("-", 1)[0] for r in rows for s in r["mixture_ID"].split("_")}
    with open(base / "metadata" / "mixture_test_mix_clean.csv") as f:
        test_spk = {s.rsplit("-", 1)[0] for r in csv.DictReader(f) for s in r["mixture_ID"].split("_")}
    assert not spk & test_spk


def test_datamodule_segments_for_training_whole_utterances_for_eval(synth_root):
    dm = _dm(synth_root)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["mix"].shape == (2, 4000) and batch["sources"].shape == (2, 2, 4000)
    torch.testing.assert_close(batch["sources"].sum(1), batch["mix"], atol=3e-4, rtol=0)
    item = next(iter(dm.val_dataloader()))
    rec = dm.datasets["valid"].records[0]
    assert item["mix"].shape == (1, rec.length)


def test_short_mixtures_are_padded_or_dropped_and_logged(synth_root, caplog):
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        dm = _dm(synth_root, segment_s=30.0)
        dm.setup("fit")
    assert "shorter than the 30.00 s segment: zero-padded" in caplog.text
    assert dm.datasets["train"][0]["mix"].shape == (240000,)
    dm = _dm(synth_root, segment_s=30.0, short_policy="drop")
    with pytest.raises(ValueError, match="no usable mixtures"):
        dm.setup("fit")


def test_metadata_naming_missing_file_is_rejected_counted_and_listed(synth_root, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    base = root.joinpath(*BASE)
    with open(base / "metadata" / "mixture_train-100_mix_clean.csv") as f:
        rows = list(csv.DictReader(f))
    (base / rows[2]["source_2_path"]).unlink()
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        dm = _dm(root, rejects_dir=str(tmp_path / "rejects"))
        dm.setup("fit")
    assert "1 of 6 mixtures rejected" in caplog.text
    assert len(dm.datasets["train"]) == 5  # read = kept + rejected
    with open(tmp_path / "rejects" / "rejects_train-100.csv") as f:
        rej = list(csv.DictReader(f))
    assert rej[0]["mixture_ID"] == rows[2]["mixture_ID"] and "missing file" in rej[0]["reason"]
    assert rej[0]["where"].endswith(":4")  # csv line of the row


def test_missing_dataset_gives_a_clear_error(tmp_path):
    dm = _dm(tmp_path / "nowhere")  # instantiating without the data works (configs point at user paths)
    with pytest.raises(DatasetError, match="data.root"):
        dm.setup("fit")


def test_absolute_paths_from_another_machine_are_rerooted(synth_root, tmp_path):
    base = synth_root.joinpath(*BASE)
    src = base / "metadata" / "mixture_dev_mix_clean.csv"
    rows = list(csv.reader(open(src)))
    moved = tmp_path / "mixture_dev_mix_clean.csv"
    with open(moved, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rows[0])
        for r in rows[1:]:
            w.writerow([r[0]] + ["/old/disk/LibriMix/Libri2Mix/wav8k/min/" + p for p in r[1:4]] + [r[4]])
    meta = base / "metadata"
    (meta / "alt").mkdir(exist_ok=True)
    # parse as if the CSV sat in the dataset's metadata folder
    recs, rejects = read_librimix_csv(shutil.copy(moved, meta / "mixture_moved_mix_clean.csv"), 2)
    (meta / "mixture_moved_mix_clean.csv").unlink()
    assert len(recs) == 2 and not rejects and recs[0].mix_path.is_file()


def test_wsj0mix_layout_and_resampling_from_16k(synth_root, tmp_path, caplog):
    base = synth_root.joinpath(*BASE)
    wsj = tmp_path / "2speakers" / "wav8k" / "min"
    for split, subset in (("tr", "train-100"), ("cv", "dev"), ("tt", "test")):
        for d in ("mix_clean", "s1", "s2"):
            dest = wsj / split / ("mix" if d == "mix_clean" else d)
            dest.mkdir(parents=True)
            for f in sorted((base / subset / d).glob("*.wav")):
                x, sr = sf.read(f)
                sf.write(dest / f.name, np.repeat(x, 2), 16000)  # stored at 16 kHz: must be resampled
    dm = SpeechDataModule(root=str(wsj), layout="wsj0mix", synthesize=False, segment_s=0.5, rejects_dir=None)
    with caplog.at_level(logging.WARNING, logger="linmix.speech"):
        dm.setup("test")
        item = dm.datasets["test"][0]
    n16 = sf.info(sorted((wsj / "tt" / "mix").glob("*.wav"))[0]).frames
    assert item["sources"].shape == (2, n16 // 2)
    dm.setup("fit")
    assert dm.datasets["train"][0]["mix"].shape == (4000,)


def test_dev_and_test_voices_are_unseen_in_training():
    from linmix.apps.speech.synth import speaker_pools

    pools = speaker_pools(np.random.default_rng(0), 160, 2)
    variants = {k: {s.voice.split("+")[1] for s in v} for k, v in pools.items()}
    assert not variants["train-100"] & variants["test"] and not variants["train-100"] & variants["dev"]
    assert not variants["dev"] & variants["test"]
    assert [len(v) for v in pools.values()] == [20, 20, 120] and len(variants["train-100"]) >= 25
    ids = [s.speaker_id for v in pools.values() for s in v]
    assert len(set(ids)) == len(ids)

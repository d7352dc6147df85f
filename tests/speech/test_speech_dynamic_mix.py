"""Dynamic mixing (apps/speech/dynamic_mix.py): shapes, exact mixtures, determinism by seed, pairing rate, speed."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from linmix.apps.speech.dynamic_mix import DynamicMixDataset, SourceRecord, source_speakers

SR = 8000


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> list[SourceRecord]:
    """6 speakers in 3 groups (2 each), 2 utterances each; some shorter than the 0.5 s segment."""
    root = tmp_path_factory.mktemp("dm_pool")
    rng = np.random.default_rng(0)
    out = []
    for s in range(6):
        for u in range(2):
            n = int(rng.integers(2000, 9000))  # 0.25-1.1 s
            path = Path(root) / f"spk{s}_{u}.wav"
            sf.write(str(path), (0.1 * rng.standard_normal(n)).astype(np.float32), SR)
            out.append(SourceRecord(path, f"spk{s}", f"g{s // 2}"))
    return out


def test_items_have_the_segment_shape_and_sum_exactly(pool):
    ds = DynamicMixDataset(pool, SR, 4000, epoch_size=7, same_group_p=0.5, speed=0.1)
    assert len(ds) == 7
    torch.manual_seed(0)
    for i in range(20):
        item = ds[i % len(ds)]
        assert item["mix"].shape == (4000,) and item["sources"].shape == (2, 4000)
        assert torch.equal(item["mix"], item["sources"].sum(0))  # the mixture IS the sum of the targets
        assert item["mix"].abs().max() <= 0.9 + 1e-6 and item["sources"].abs().max() <= 0.9 + 1e-6
        assert item["id"].startswith("dm:") and item["id"].count("+") == 1
        for k in range(2):  # each source has energy (short files are zero-padded, never empty)
            assert item["sources"][k].pow(2).sum() > 0


def test_same_seed_same_items_new_draws_otherwise(pool):
    ds = DynamicMixDataset(pool, SR, 4000, epoch_size=5, same_group_p=0.3, speed=0.1)

    def epoch(seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return [ds[i] for i in range(len(ds))]

    a, b = epoch(1), epoch(1)
    for x, y in zip(a, b, strict=True):
        assert x["id"] == y["id"] and torch.equal(x["mix"], y["mix"])
    c = epoch()  # the next epoch, same process: fresh mixtures
    assert any(not torch.equal(x["mix"], z["mix"]) for x, z in zip(a, c, strict=True))
    d = epoch(2)
    assert any(not torch.equal(x["mix"], z["mix"]) for x, z in zip(a, d, strict=True))


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_same_group_pairing_rate(pool, p):
    ds = DynamicMixDataset(pool, SR, 4000, same_group_p=p)
    rng = np.random.default_rng(5)
    n = 3000
    same = 0
    for _ in range(n):
        a, b = ds._pick_speakers(rng)
        assert a != b  # never the same speaker twice
        same += ds.group_of[a] == ds.group_of[b]
    sd = np.sqrt(p * (1 - p) / n)
    assert abs(same / n - p) <= 4 * sd + 1e-9, (same / n, p)


def test_uniform_pairing_uses_the_pool_rate(pool):
    ds = DynamicMixDataset(pool, SR, 4000, same_group_p=None)
    rng = np.random.default_rng(6)
    pairs = [ds._pick_speakers(rng) for _ in range(3000)]
    rate = np.mean([ds.group_of[a] == ds.group_of[b] for a, b in pairs])
    assert abs(rate - 1 / 5) < 0.03  # 6 speakers, 3 pairs of group-mates: 1 partner of 5


def test_speed_perturbation_shifts_pitch_within_range(tmp_path):
    t = np.arange(4 * SR) / SR
    recs = []
    for s in range(2):
        path = tmp_path / f"tone{s}.wav"
        sf.write(str(path), (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), SR)
        recs.append(SourceRecord(path, f"s{s}", f"g{s}"))
    ds = DynamicMixDataset(recs, SR, 8000, speed=0.2)
    torch.manual_seed(0)
    freqs = []
    for i in range(12):
        x = ds[i]["sources"][0].numpy()
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        freqs.append(np.argmax(spec) * SR / len(x))
    assert all(160 - 2 <= f <= 240 + 2 for f in freqs), freqs
    assert np.std(freqs) > 5  # the factor varies item to item
    plain = DynamicMixDataset(recs, SR, 8000, speed=0.0)
    x = plain[0]["sources"][0].numpy()
    assert abs(np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * SR / len(x) - 200) <= 1


def test_speaker_and_group_parsing():
    synth = "en-us-paul-p76-r133-00000_en-gb-x-gbclan-Annie-p23-r166-00000"
    assert source_speakers(synth, 2) == [("en-us-paul-p76-r133", "paul"), ("en-gb-x-gbclan-Annie-p23-r166", "Annie")]
    assert source_speakers("103-1240-0003_1034-121119-0049", 2) == [("103", "103"), ("1034", "1034")]
    odd = source_speakers("011a0101_0.061105_401o030y_-0.061105", 2)  # wsj0-2mix names: one speaker per utterance
    assert len(odd) == 2 and odd[0][0] != odd[1][0]


def test_bad_arguments_are_refused(pool):
    with pytest.raises(ValueError, match="same_group_p"):
        DynamicMixDataset(pool, SR, 4000, same_group_p=1.5)
    with pytest.raises(ValueError, match="speakers"):
        DynamicMixDataset(pool[:2], SR, 4000)  # one speaker only
    with pytest.raises(ValueError, match="speed"):
        DynamicMixDataset(pool, SR, 4000, speed=0.7)


def test_datamodule_switch_trains_on_dynamic_mixtures(synth_root):
    from linmix.apps.speech.data import SpeechDataModule

    dm = SpeechDataModule(root=str(synth_root), segment_s=0.5, batch_size=3, synthesize=False, rejects_dir=None,
                          dynamic_mixing=True, dm_same_group_p=0.2, dm_speed=0.1)  # fmt: skip
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert isinstance(ds, DynamicMixDataset) and len(ds) == 6  # one epoch = as many items as fixed mixtures
    assert len(ds.speakers) >= 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["mix"].shape == (3, 4000) and batch["sources"].shape == (3, 2, 4000)
    assert torch.allclose(batch["mix"], batch["sources"].sum(1))
    fixed = SpeechDataModule(root=str(synth_root), segment_s=0.5, synthesize=False, rejects_dir=None)
    fixed.setup("fit")
    assert not isinstance(fixed.datasets["train"], DynamicMixDataset)  # default: the fixed pairs


def test_fixed_pairs_speed_perturbation_keeps_the_pair_and_the_sum(synth_root):
    from linmix.apps.speech.data import SpeechDataModule

    kw = dict(root=str(synth_root), segment_s=0.5, synthesize=False, rejects_dir=None)
    dm = SpeechDataModule(**kw, speed_perturb=0.2)
    dm.setup("fit")
    ds = dm.datasets["train"]
    torch.manual_seed(4)
    a = ds[0]
    torch.manual_seed(4)
    b = ds[0]
    assert torch.equal(a["mix"], b["mix"]) and a["id"] == ds.records[0].mixture_id  # same seed, same item; same pair
    assert a["sources"].shape == (2, 4000) and torch.equal(a["mix"], a["sources"].sum(0))
    plain = SpeechDataModule(**kw)
    plain.setup("fit")
    torch.manual_seed(4)
    c = plain.datasets["train"][0]
    assert not torch.equal(a["sources"], c["sources"])  # perturbed vs not, same crop start

"""uPIT SI-SNR loss and separation metrics: invariances and agreement with torchmetrics."""

import itertools

import pytest
import torch
from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio

from linmix.apps.speech.losses import best_permutation, pairwise_si_snr, pit_si_snr_loss, reorder, si_snr
from linmix.apps.speech.metrics import separation_metrics


def test_si_snr_matches_torchmetrics_and_is_scale_and_offset_invariant():
    torch.manual_seed(0)
    ref = torch.randn(3, 800)
    est = ref + 0.3 * torch.randn(3, 800)
    ours = si_snr(est, ref)
    torch.testing.assert_close(ours, scale_invariant_signal_noise_ratio(est, ref), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(si_snr(4.0 * est + 0.5, ref), ours, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("n_src", [2, 3, 4, 5])
def test_pit_loss_invariant_to_source_permutation(n_src):
    torch.manual_seed(n_src)
    ref = torch.randn(4, n_src, 500)
    est = ref + 0.5 * torch.randn(4, n_src, 500)
    base, perm = pit_si_snr_loss(est, ref)
    assert torch.equal(perm, torch.arange(n_src).expand(4, -1))
    for p in list(itertools.permutations(range(n_src)))[:6]:
        loss, perm_p = pit_si_snr_loss(est[:, list(p)], ref)
        torch.testing.assert_close(loss, base)
        torch.testing.assert_close(reorder(est[:, list(p)], perm_p), est)


def test_hungarian_equals_exhaustive_search():
    torch.manual_seed(1)
    pw = torch.randn(6, 4, 4)
    perm = best_permutation(pw)  # S = 4: Hungarian
    for b in range(6):
        best = max(
            itertools.permutations(range(4)), key=lambda p: sum(pw[b, p[j], j].item() for j in range(4))
        )
        assert perm[b].tolist() == list(best)


def test_loss_is_finite_on_silent_reference_and_estimate():
    est = torch.zeros(2, 2, 400, requires_grad=True)
    ref = torch.zeros(2, 2, 400)
    ref[0, 0] = torch.randn(400)
    loss, _ = pit_si_snr_loss(est, ref)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(est.grad).all()
    assert torch.isfinite(pairwise_si_snr(torch.randn(1, 2, 400), torch.zeros(1, 2, 400))).all()


def test_perfect_separation_scores_high_and_loss_decreases_towards_it():
    torch.manual_seed(2)
    ref = torch.randn(1, 2, 1000)
    good, _ = pit_si_snr_loss(ref + 0.01 * torch.randn_like(ref), ref)
    bad, _ = pit_si_snr_loss(ref + 1.0 * torch.randn_like(ref), ref)
    assert good < -35 and bad > good + 30


def test_separation_metrics_improvement_over_mixture():
    torch.manual_seed(3)
    ref = torch.randn(2, 4000)
    mix = ref.sum(0)
    est = ref[[1, 0]] + 0.1 * torch.randn(2, 4000)  # swapped order: PIT must undo it
    m = separation_metrics(est, ref, mix)
    base = scale_invariant_signal_noise_ratio(mix.expand(2, -1), ref).mean().item()
    assert m["si_snr"] > 15
    assert m["si_snri"] == pytest.approx(m["si_snr"] - base, abs=1e-6)
    assert m["sdri"] > 10 and m["sdr"] > 15


def test_group_breakdown_cells():
    from linmix.apps.speech.metrics import group_breakdown

    rows = [{"groups": "m2+m2", "si_snri": 2.0}, {"groups": "m2+paul", "si_snri": 8.0},
            {"groups": "f4+paul", "si_snri": 12.0}]  # fmt: skip
    bd = group_breakdown(rows)
    assert bd["same_group"] == {"n": 1, "mean": 2.0}
    assert bd["different_groups"] == {"n": 2, "mean": 10.0}
    assert bd["by_group"] == {"f4": {"n": 1, "mean": 12.0}, "m2": {"n": 2, "mean": 5.0}, "paul": {"n": 2, "mean": 10.0}}
    assert group_breakdown([])["same_group"] == {"n": 0, "mean": None}

"""Separation metrics with torchmetrics: SI-SNRi and SDRi (BSS-eval v3 SDR, 512-tap distortion filter).

SI-SNRi = SI-SNR(est, s) - SI-SNR(mix, s), averaged over sources after PIT ordering (papers' main number);
SDRi likewise with ``torchmetrics.functional.audio.signal_distortion_ratio`` (agrees with mir_eval / fast_bss_eval to
3 decimals).  Shapes: S sources, T samples.
"""

import torch
from torchmetrics.functional.audio import (
    permutation_invariant_training,
    scale_invariant_signal_noise_ratio,
    signal_distortion_ratio,
)
from torchmetrics.functional.audio.pit import pit_permutate


def separation_metrics(
    est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor, sdr: bool = True
) -> dict[str, float]:
    """One utterance: est (S, T), ref (S, T), mix (T,) -> dict of si_snr, si_snri, [sdr, sdri] in dB."""
    est = est.detach().double().cpu()
    ref = ref.detach().double().cpu()
    mix = mix.detach().double().cpu().reshape(1, -1).expand_as(ref)
    best, perm = permutation_invariant_training(
        est.unsqueeze(0),
        ref.unsqueeze(0),
        scale_invariant_signal_noise_ratio,
        mode="speaker-wise",
        eval_func="max",
    )
    est = pit_permutate(est.unsqueeze(0), perm)[0]
    out = {"si_snr": float(best[0])}
    out["si_snri"] = out["si_snr"] - float(scale_invariant_signal_noise_ratio(mix, ref).mean())
    if sdr:
        # SDR of a silent reference is undefined (NaN); nanmean keeps the other sources.
        s_est = signal_distortion_ratio(est, ref)
        s_mix = signal_distortion_ratio(mix, ref)
        out["sdr"] = float(torch.nanmean(s_est))
        out["sdri"] = float(torch.nanmean(s_est - s_mix))
    return out


def group_breakdown(rows: list[dict], key: str = "si_snri") -> dict:
    """Where a test mean comes from: mean ``key`` over mixtures whose sources all share one group vs all-different
    groups, and per group (over the mixtures holding it).  A group is a voice variant for the synthetic corpus
    (speakers of one variant share a vocal-tract model) and the speaker for LibriSpeech IDs; ``rows[i]["groups"]`` is
    the mixture's groups joined by ``+``.  Returns ``{"same_group": {"n", "mean"}, "different_groups": {...},
    "by_group": {group: {"n", "mean"}}}`` (a mean is None when its n is 0)."""

    def cell(vals: list[float]) -> dict:
        return {"n": len(vals), "mean": sum(vals) / len(vals) if vals else None}

    same, diff, by_group = [], [], {}
    for r in rows:
        v, groups = float(r[key]), str(r["groups"]).split("+")
        (same if len(set(groups)) == 1 else diff).append(v)
        for g in sorted(set(groups)):
            by_group.setdefault(g, []).append(v)
    return {"same_group": cell(same), "different_groups": cell(diff),
            "by_group": {g: cell(by_group[g]) for g in sorted(by_group)}}  # fmt: skip

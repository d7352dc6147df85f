"""Negative SI-SNR with utterance-level permutation-invariant training (uPIT).

SI-SNR (Luo & Mesgarani 2019, eq. 11; = SI-SDR, Le Roux et al. 2019): with zero-mean est and ref,
``s_t = <est, ref> ref / ||ref||^2``, ``e = est - s_t``, ``SI-SNR = 10 log10(||s_t||^2 / ||e||^2)``.
Numerically safe: eps in both energies, so a silent reference or estimate gives a finite value and gradient.
uPIT (Kolbaek et al. 2017): the loss of the best source permutation per utterance; every permutation for S <= 3,
Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on the pairwise matrix above.
Shapes: B batch, S sources, T samples.
"""

import itertools

import torch
from scipy.optimize import linear_sum_assignment

EPS = 1e-8


def pairwise_si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """est (B, S, T), ref (B, S, T) -> (B, S, S) SI-SNR in dB, entry [b, i, j] = SI-SNR(est_i, ref_j)."""
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    dot = torch.einsum("bit,bjt->bij", est, ref)  # (B, S, S)
    ref_energy = ref.pow(2).sum(-1).unsqueeze(1)  # (B, 1, S)
    est_energy = est.pow(2).sum(-1).unsqueeze(2)  # (B, S, 1)
    scale = dot / (ref_energy + eps)
    target_energy = scale.pow(2) * ref_energy  # ||s_t||^2
    # ||e||^2 = ||est||^2 - 2 scale <est, ref> + scale^2 ||ref||^2 = ||est||^2 - ||s_t||^2 (exact projection)
    noise_energy = (est_energy - 2 * scale * dot + target_energy).clamp_min(0.0)
    return 10 * torch.log10((target_energy + eps) / (noise_energy + eps))


def si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Matched SI-SNR: est (..., T), ref (..., T) -> (...) in dB."""
    flat = pairwise_si_snr(
        est.reshape(-1, 1, est.shape[-1]), ref.reshape(-1, 1, ref.shape[-1]), eps
    )  # (N, 1, 1)
    return flat.reshape(est.shape[:-1])


def best_permutation(pairwise: torch.Tensor) -> torch.Tensor:
    """pairwise (B, S, S) scores to maximise -> perm (B, S) long, ``est[perm[b, j]]`` matches ``ref[j]``."""
    b, s, _ = pairwise.shape
    if s <= 3:
        perms = torch.tensor(
            list(itertools.permutations(range(s))), device=pairwise.device
        )  # (P, S): ref j <- est p[j]
        # score[b, p] = sum_j pairwise[b, perms[p, j], j]
        idx_j = torch.arange(s, device=pairwise.device)
        scores = pairwise[:, perms, idx_j]  # (B, P, S)
        best = scores.sum(-1).argmax(dim=1)  # (B,)
        return perms[best]
    out = torch.empty(b, s, dtype=torch.long)
    cost = pairwise.detach().cpu().numpy()
    for i in range(b):
        row, col = linear_sum_assignment(cost[i], maximize=True)  # row = est index, col = ref index
        out[i, torch.as_tensor(col)] = torch.as_tensor(row)
    return out.to(pairwise.device)


def reorder(est: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """est (B, S, T), perm (B, S) from ``best_permutation`` -> est reordered to the reference order."""
    return torch.gather(est, 1, perm.unsqueeze(-1).expand(-1, -1, est.shape[-1]))


def pit_si_snr_loss(
    est: torch.Tensor, ref: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """uPIT negative SI-SNR: est, ref (B, S, T) -> (loss scalar = -mean best SI-SNR in dB, perm (B, S))."""
    if est.shape != ref.shape:
        raise ValueError(f"estimate {tuple(est.shape)} and reference {tuple(ref.shape)} differ in shape")
    pw = pairwise_si_snr(est, ref, eps)
    perm = best_permutation(pw.detach())
    matched = torch.gather(pw, 1, perm.unsqueeze(1)).squeeze(1)  # (B, S): pw[b, perm[b, j], j]
    return -matched.mean(), perm

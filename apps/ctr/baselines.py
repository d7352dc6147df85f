"""Baselines on the same field embeddings: DCNv2 (parallel cross + deep), DNN and logistic regression.

Every body maps field embeddings e (B, F, d) to ``(fused, a, b)`` logits (B,) like ``FCNBody``; baselines
return the same logit three times, so one LightningModule and loss serve all nets. Linear layers start as in
FuxiCTR (Xavier-normal weights, zero biases); dropout is :class:`linmix.shared.dropout.FastDropout`. Under autocast
(``--trainer.precision bf16-mixed``) the hidden layers run in the low precision and the logit layer in float32
(:class:`LogitLinear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.dropout import FastDropout


def xavier_linears(module: nn.Module) -> None:
    """Xavier-normal weights and zero biases for every ``nn.Linear`` in ``module`` (FuxiCTR's default)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class LogitLinear(nn.Linear):
    """``nn.Linear(d_in, 1)`` returning the logit without its last axis: h (..., d_in) -> (...).

    Under autocast (mixed precision) it runs in float32: a bfloat16 logit keeps 8 bits of mantissa, so nearby scores
    would tie and blur AUC and calibration. The state dict is ``nn.Linear``'s."""

    def __init__(self, d_in: int) -> None:
        super().__init__(d_in, 1)

    def forward(self, h: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if autocast_on(h):
                return self._float32(h)
        return F.linear(h, self.weight, self.bias).squeeze(-1)

    def forward_pair(self, a: Tensor, b: Tensor) -> Tensor:
        """``forward(cat([a, b], -1))`` without the concatenation: a (..., Da), b (..., d_in - Da) -> (...)."""
        if not torch.jit.is_scripting():
            if autocast_on(a):
                return self._float32_pair(a, b)
        da = a.shape[-1]
        return (F.linear(a, self.weight[:, :da], self.bias) + F.linear(b, self.weight[:, da:])).squeeze(-1)

    @torch.jit.unused
    def _float32(self, h: Tensor) -> Tensor:
        with torch.autocast(h.device.type, enabled=False):
            return F.linear(h.float(), self.weight, self.bias).squeeze(-1)

    @torch.jit.unused
    def _float32_pair(self, a: Tensor, b: Tensor) -> Tensor:
        with torch.autocast(a.device.type, enabled=False):
            return self.forward_pair(a.float(), b.float())


@torch.jit.unused
def autocast_on(h: Tensor) -> bool:
    """Whether autocast (mixed precision) is on for h's device."""
    return torch.is_autocast_enabled(h.device.type)


def mlp(d_in: int, hidden: list[int], dropout: float, batch_norm: bool) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers.append(nn.Linear(d_in, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers += [nn.ReLU(), FastDropout(dropout)]
        d_in = h
    return nn.Sequential(*layers), d_in


class DNNBody(nn.Module):
    """MLP on the flattened embeddings (B, F * d) -> logit."""

    def __init__(self, n_fields: int, d_model: int, hidden: list[int], dropout: float = 0.1,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.net, d = mlp(n_fields * d_model, hidden, dropout, batch_norm)
        self.out = LogitLinear(d)
        xavier_linears(self)

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.out(self.net(e.flatten(1)))
        return z, z, z


class CrossNetV2(nn.Module):
    """DCNv2 full-rank cross layers: x_{l+1} = x0 * (W_l x_l + b_l) + x_l (arXiv:2008.13535), x (B, D)."""

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, dim) for _ in range(n_layers)])

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for lin in self.layers:
            x = torch.addcmul(x, x0, lin(x))
        return x


class DCNv2Body(nn.Module):
    """DCNv2, parallel structure: [CrossNetV2(x0) || MLP(x0)] -> Linear -> logit."""

    def __init__(self, n_fields: int, d_model: int, n_layers: int, hidden: list[int], dropout: float = 0.1,
                 batch_norm: bool = False) -> None:
        super().__init__()
        dim = n_fields * d_model
        self.cross = CrossNetV2(dim, n_layers)
        self.deep, d = mlp(dim, hidden, dropout, batch_norm)
        self.out = LogitLinear(dim + d)
        xavier_linears(self)

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x0 = e.flatten(1)
        z = self.out.forward_pair(self.cross(x0), self.deep(x0))  # out([cross || deep]), no concatenation
        return z, z, z


class LRBody(nn.Module):
    """Logistic regression: sum of per-feature weights (1-dim embeddings) plus a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = e.sum(1).squeeze(-1) + self.bias
        return z, z, z

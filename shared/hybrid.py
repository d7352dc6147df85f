"""Hybrid Mamba + causal softmax attention: in parallel inside each block, or interleaved across blocks.

``MixerStack(mixer="hybrid", mixer_cfg={...})`` builds one of two layouts (the hybrid backbones of Hymba, Dong et al.
2024, run heads of both kinds in parallel; Jamba, Lieber et al. 2024, interleaves layers):

* ``layout="parallel"``: every block's mixer is :class:`ParallelHybrid`, the mean of a Mamba mixer and causal softmax
  attention applied to the same (normalised) block input.
* ``layout="interleave"``: block ``i`` holds causal softmax attention when ``(i + 1) % attn_every == 0``, else the
  Mamba mixer (``attn_every=2``: Mamba, attention, Mamba, attention, ...).

Options (``mixer_cfg`` keys): ``ssm`` (``"mamba3"`` or ``"mamba2"``), ``layout``, ``attn_every``, ``ssm_cfg`` (keyword
arguments of the Mamba mixer, as its own ``mixer_cfg``), plus the stack-wide ``n_heads`` (heads of both mixers),
``d_state``, ``chunk_size``, ``backend``, ``expand``, ``dropout``.

Both layouts run recurrently (``MixerStack.init_state`` / ``forward_state`` / ``step``): the Mamba mixer carries its
O(1) state, attention a key/value cache that grows by one token per step (O(T) per token after T tokens,
:class:`linmix.shared.softmax_attention.SoftmaxAttention`); :class:`ParallelHybrid`'s state is the Mamba mixer's state
followed by the cache ``(k, v)``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from torch import Tensor, nn

from linmix.shared.mamba2 import Mamba2
from linmix.shared.mamba3 import Mamba3
from linmix.shared.norms import check_input
from linmix.shared.softmax_attention import SoftmaxAttention

__all__ = ["ParallelHybrid", "HYBRID_OPTIONS", "build_hybrid", "state_size"]

HYBRID_OPTIONS = ("attn_every", "backend", "chunk_size", "d_state", "dropout", "expand", "layout", "n_heads", "ssm",
                  "ssm_cfg")
SSM_KINDS = ("mamba3", "mamba2")
LAYOUTS = ("parallel", "interleave")


def state_size(mixer: nn.Module) -> int:
    """Tensors in ``mixer``'s recurrent state: Mamba2 2 (conv, ssm), Mamba3 4 (angle, ssm, k, v), causal softmax
    attention 2 (its key/value cache), :class:`ParallelHybrid` the sum of its two; 0 for a mixer without one."""
    if isinstance(mixer, Mamba3):
        return 4
    if isinstance(mixer, Mamba2):
        return 2
    if isinstance(mixer, SoftmaxAttention):
        return 2 if mixer.causal else 0
    if isinstance(mixer, ParallelHybrid):
        return mixer.n_ssm_state + 2
    return 0


class ParallelHybrid(nn.Module):
    """``0.5 * (ssm(x, mask) + attn(x, mask))``: a Mamba mixer and causal attention side by side.
    ``(B, L, D)`` + mask ``(B, L)`` -> ``(B, L, D)``; padding exact wherever both mixers' is.

    Recurrent state: the Mamba mixer's (Mamba2 ``conv, ssm``; Mamba3 ``angle, ssm, k, v``), then attention's key/value
    cache ``k, v (B, H, T, D / H)``."""

    def __init__(self, d_model: int, ssm: nn.Module, attn: nn.Module) -> None:
        super().__init__()
        self.d_model = d_model
        self.ssm = ssm
        self.attn = attn
        self.n_ssm_state = state_size(ssm)

    def reset_parameters(self) -> None:
        self.ssm.reset_parameters()
        self.attn.reset_parameters()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "ParallelHybrid", mask)
        return 0.5 * (self.ssm(x, mask) + self.attn(x, mask))

    def init_state(self, batch: int) -> Tuple[Tensor, ...]:
        """Zero Mamba state, then an empty key/value cache."""
        return tuple(self.ssm.init_state(batch)) + tuple(self.attn.init_state(batch))

    def forward_state(self, x: Tensor, *state: Tensor) -> Tuple[Tensor, ...]:
        """Continue from ``state``: ``x (B, L, D) -> (y (B, L, D), *new_state)``; equals the full forward."""
        check_input(x, self.d_model, "ParallelHybrid")
        n = self.n_ssm_state
        a, *s = self.ssm.forward_state(x, *state[:n])
        b, k, v = self.attn.forward_state(x, *state[n:])
        return (0.5 * (a + b), *s, k, v)

    def step(self, x: Tensor, *state: Tensor) -> Tuple[Tensor, ...]:
        """One token: ``x (B, D) -> (y (B, D), *new_state)``."""
        n = self.n_ssm_state
        a, *s = self.ssm.step(x, *state[:n])
        b, k, v = self.attn.step(x, *state[n:])
        return (0.5 * (a + b), *s, k, v)


def build_hybrid(
    d_model: int, layer: int, build: Callable[..., nn.Module], *, ssm: str = "mamba3", layout: str = "parallel",
    attn_every: int = 2, n_heads: int = 4, d_state: int = 64, chunk_size: int = 64, backend: str = "auto",
    expand: int = 2, dropout: float = 0.0, ssm_cfg: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """The mixer of block ``layer`` of a hybrid stack; ``build`` is :func:`linmix.shared.blocks.build_mixer`."""
    if ssm not in SSM_KINDS:
        raise ValueError(f"mixer_cfg: hybrid ssm must be one of {SSM_KINDS}, got {ssm!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"mixer_cfg: hybrid layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(attn_every, bool) or not isinstance(attn_every, int) or attn_every < 1:
        raise ValueError(f"mixer_cfg: hybrid attn_every must be an integer >= 1, got {attn_every!r}")
    if ssm_cfg is not None and not isinstance(ssm_cfg, dict):
        raise ValueError(f"mixer_cfg: hybrid ssm_cfg must be a mapping of {ssm} options, got {ssm_cfg!r}")

    def make_ssm() -> nn.Module:
        return build(ssm, d_model, n_heads=n_heads, d_state=d_state, chunk_size=chunk_size, backend=backend,
                     expand=expand, mixer_cfg=ssm_cfg)

    def make_attn() -> nn.Module:
        return SoftmaxAttention(d_model, n_heads=n_heads, causal=True, dropout=dropout)

    if layout == "parallel":
        return ParallelHybrid(d_model, make_ssm(), make_attn())
    return make_attn() if (layer + 1) % attn_every == 0 else make_ssm()

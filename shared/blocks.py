"""Residual blocks around an injected mixer, and a stack of them.

The block knows nothing about its mixer (mamba-ssm's ``Block(dim, mixer_cls)`` pattern): pre-norm RMSNorm -> mixer ->
residual, then pre-norm RMSNorm -> gated MLP (SwiGLU) -> residual. :func:`build_mixer` maps a name to a mixer with a
local, greppable table; ``mixer_cfg`` passes any other constructor argument of the mixer through (mamba-ssm's
``ssm_cfg``).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linmix.shared.bimamba import BiMamba2
from linmix.shared.hybrid import HYBRID_OPTIONS, build_hybrid, state_size
from linmix.shared.linear_attention import LinearAttention
from linmix.shared.mamba2 import Mamba2
from linmix.shared.mamba3 import Mamba3
from linmix.shared.norms import RMSNorm, check_input
from linmix.shared.projection_attention import ProjectionAttention
from linmix.shared.softmax_attention import SoftmaxAttention

__all__ = ["GatedMLP", "ResidualBlock", "MixerStack", "build_mixer", "mixer_options", "MIXERS"]

MIXERS = ("mamba2", "mamba3", "hybrid", "bimamba2", "linear", "linear_causal", "projection", "softmax",
          "softmax_causal")


# kind -> (class, arguments fixed by the kind); every other constructor argument but d_model is a ``mixer_cfg`` key
_KINDS: Dict[str, Tuple[type, Dict[str, Any]]] = {
    "mamba2": (Mamba2, {}),
    "mamba3": (Mamba3, {}),
    "bimamba2": (BiMamba2, {}),
    "linear": (LinearAttention, {"causal": False, "decay": False}),
    "linear_causal": (LinearAttention, {"causal": True, "decay": True}),
    "projection": (ProjectionAttention, {}),
    "softmax": (SoftmaxAttention, {"causal": False}),
    "softmax_causal": (SoftmaxAttention, {"causal": True}),
}
_MAMBA = ("mamba2", "mamba3", "bimamba2")


def mixer_options(mixer: str) -> Tuple[str, ...]:
    """The ``mixer_cfg`` keys mixer kind ``mixer`` takes: its constructor's arguments except ``d_model`` and those its
    kind fixes, plus ``n_heads`` for the Mamba kinds (turned into ``headdim = expand * d_model // n_heads``);
    ``"hybrid"``: :data:`linmix.shared.hybrid.HYBRID_OPTIONS`."""
    if mixer == "hybrid":
        return HYBRID_OPTIONS
    if mixer not in _KINDS:
        raise ValueError(f"build_mixer: unknown mixer {mixer!r}; choose one of {MIXERS}")
    cls, fixed = _KINDS[mixer]
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "d_model", *fixed)]
    return tuple(sorted(names + (["n_heads"] if mixer in _MAMBA else [])))


def build_mixer(
    mixer: str, d_model: int, *, n_heads: int = 4, d_state: int = 64, dropout: float = 0.0, n_slots: int = 32,
    chunk_size: int = 64, backend: str = "auto", expand: int = 2, mixer_cfg: Optional[Dict[str, Any]] = None,
    layer: int = 0,
) -> nn.Module:
    """Build a mixer by name (one of :data:`MIXERS`).

    The keyword arguments are defaults shared by all kinds (each kind uses those it has: ``n_heads`` sets the heads
    of every kind, for Mamba2 as ``headdim = expand * d_model // n_heads``; ``d_state`` and ``backend`` only the
    Mamba2 kinds). ``mixer_cfg`` (mamba-ssm's ``ssm_cfg``) overrides them and reaches any other constructor argument
    of the mixer (Mamba2: ``headdim`` or ``n_heads``, ``expand``, ``d_conv``, ``chunk_size``, ``segment_len``,
    ``ngroups``, ``backend``, ...; see :func:`mixer_options`); a key the kind does not take raises ``ValueError``.
    The Mamba2 ``backend`` is overridden by the ``LINMIX_BACKEND`` environment variable when it is set
    (:func:`linmix.shared.mamba2.resolve_backend`). ``"mamba3"`` takes Mamba3's arguments (``rope_fraction``,
    ``A_floor``, ``is_outproj_norm``, ...); ``"hybrid"`` is the mixer of block ``layer`` of a hybrid Mamba +
    attention stack (:mod:`linmix.shared.hybrid`).
    """
    allowed = mixer_options(mixer)
    cfg = dict(mixer_cfg or {})
    bad = sorted(set(cfg) - set(allowed))
    if bad:
        raise ValueError(f"mixer_cfg: mixer {mixer!r} takes no {', '.join(map(repr, bad))}; "
                         f"its options are {', '.join(allowed)}")
    shared = {"n_heads": n_heads, "d_state": d_state, "dropout": dropout, "n_slots": n_slots, "chunk_size": chunk_size,
              "backend": backend, "expand": expand}
    kw = {k: v for k, v in shared.items() if k in allowed}
    kw.update(cfg)
    if mixer == "hybrid":
        return build_hybrid(d_model, layer, build_mixer, **kw)
    cls, fixed = _KINDS[mixer]
    if mixer in _MAMBA:
        heads = kw.pop("n_heads")
        if "headdim" in cfg and "n_heads" in cfg:
            raise ValueError(f"mixer_cfg: give headdim or n_heads for {mixer!r}, not both")
        if "headdim" not in cfg:
            inner = kw["expand"] * d_model
            if inner % heads != 0:
                raise ValueError(f"build_mixer: expand * d_model = {inner} is not a multiple of n_heads={heads}")
            kw["headdim"] = inner // heads
    return cls(d_model, **fixed, **kw)


class GatedMLP(nn.Module):
    """SwiGLU MLP (Shazeer 2020): ``W2 (silu(W1 x) * W3 x)``. ``(..., D) -> (..., D)``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.fc_out = nn.Linear(d_ff, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.fc_in.reset_parameters()
        self.fc_out.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.fc_in(x).chunk(2, dim=-1)
        return self.fc_out(self.drop(F.silu(a) * g))


class ResidualBlock(nn.Module):
    """``x + mixer(norm(x)); x + mlp(norm(x))`` with an injected mixer. ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, d_model: int, mixer: nn.Module, d_ff: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.mixer = mixer
        self.norm2 = RMSNorm(d_model)
        self.mlp = GatedMLP(d_model, d_ff if d_ff > 0 else 2 * d_model, dropout)
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for m in (self.norm1, self.mixer, self.norm2, self.mlp):
            m.reset_parameters()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        x = x + self.drop(self.mixer(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))

    @torch.jit.unused
    def forward_state(self, x: Tensor, state: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Continue from the mixer's ``state`` (Mamba2: ``[conv, ssm]``; Mamba3: ``[angle, ssm, k, v]``; causal
        attention: its key/value cache ``[k, v]``; ParallelHybrid: the Mamba state then ``[k, v]``)."""
        h, *state = self.mixer.forward_state(self.norm1(x), *state)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.norm2(x))), state

    @torch.jit.unused
    def step(self, x: Tensor, state: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        h, *state = self.mixer.step(self.norm1(x), *state)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.norm2(x))), state


class MixerStack(nn.Module):
    """``n_layers`` residual blocks of one mixer kind, plus a final RMSNorm. ``(B, L, D) -> (B, L, D)``.

    Args:
        d_model: channels D.
        n_layers: blocks.
        mixer: one of :data:`MIXERS` (``"hybrid"``: Mamba + causal softmax attention, :mod:`linmix.shared.hybrid`).
        n_heads: heads of the mixer.
        d_state: SSM state size N (Mamba kinds).
        d_ff: hidden width of the gated MLP (0 -> 2 * d_model).
        dropout: dropout on residual branches.
        n_slots: slots M (projection attention).
        chunk_size: chunk length of chunked scans.
        backend: ``"auto" | "torch" | "kernel"`` (Mamba kinds; ``LINMIX_BACKEND``, when set, overrides it).
        mixer_cfg: keyword arguments of every block's mixer, over the arguments above (``{"chunk_size": 32,
            "expand": 1, "backend": "torch"}``; keys per kind: :func:`mixer_options`; another key raises
            ``ValueError``). In the apps' YAML: ``model.net.mixer_cfg``.
        final_norm: apply an RMSNorm after the last block.
        activation_checkpointing: in training, recompute each block in backward instead of keeping its
            activations: memory per token drops to the block inputs plus one block's working set, for one more
            forward per block (the pure-PyTorch Mamba2 keeps ~30 KB per token per block at D = 128 otherwise; long
            sequences are already recomputed per ``segment_len`` inside Mamba2, big batches of short ones are not).
            EHRMamba D = 128 x 4, batch 256 x 184 tokens, 2 CPU threads: peak RSS 6.9 -> 2.9 GB, 12.0 -> 21.4 s
            per step.

    Causal Mamba2, Mamba3, hybrid and causal softmax stacks also run recurrently: :meth:`init_state`,
    :meth:`forward_state` (continue from a saved state; equals the full forward) and :meth:`step` (one token). The
    Mamba mixers' state is O(1) in the sequence length; attention's is a key/value cache that grows with every token
    (:class:`linmix.shared.softmax_attention.SoftmaxAttention`), so a step after T tokens costs O(T).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        mixer: str = "mamba2",
        n_heads: int = 4,
        d_state: int = 64,
        d_ff: int = 0,
        dropout: float = 0.0,
        n_slots: int = 32,
        chunk_size: int = 64,
        backend: str = "auto",
        final_norm: bool = True,
        activation_checkpointing: bool = False,
        mixer_cfg: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.d_model, self.n_layers, self.mixer_kind = d_model, n_layers, mixer
        self.activation_checkpointing = activation_checkpointing
        self.blocks = nn.ModuleList(
            ResidualBlock(d_model, build_mixer(mixer, d_model, n_heads=n_heads, d_state=d_state, dropout=dropout,
                                               n_slots=n_slots, chunk_size=chunk_size, backend=backend,
                                               mixer_cfg=mixer_cfg, layer=i), d_ff, dropout)
            for i in range(n_layers)
        )
        self.norm = RMSNorm(d_model) if final_norm else nn.Identity()

    def reset_parameters(self) -> None:
        for blk in self.blocks:
            blk.reset_parameters()
        if isinstance(self.norm, RMSNorm):
            self.norm.reset_parameters()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_input(x, self.d_model, "MixerStack", mask)
        recompute = False
        if not torch.jit.is_scripting():
            recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, blk in enumerate(self.blocks):
            if recompute and not torch.jit.is_scripting():  # (the guard keeps TorchScript from compiling the call)
                x = self._block_recomputed(i, x, mask)
            else:
                x = blk(x, mask)
        return self.norm(x)

    @torch.jit.unused
    def _block_recomputed(self, i: int, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        from torch.utils.checkpoint import checkpoint

        # non-reentrant checkpointing restores the RNG state, so dropout draws the same masks when recomputing
        return checkpoint(self.blocks[i], x, mask, use_reentrant=False)

    def _state_sizes(self) -> List[int]:
        """Tensors of recurrent state per block; raise unless every block's mixer has one (causal Mamba, hybrid,
        causal softmax attention)."""
        sizes: List[int] = []
        for blk in self.blocks:
            n = state_size(blk.mixer)
            if n == 0:
                raise ValueError(f"MixerStack: recurrent inference needs mixer='mamba2', 'mamba3', 'hybrid' or "
                                 f"'softmax_causal', this stack uses {self.mixer_kind!r}")
            sizes.append(n)
        return sizes

    @torch.jit.unused
    def init_state(self, batch: int) -> List[Tensor]:
        """Zero state, the blocks' states in order (Mamba2: ``conv, ssm``; Mamba3: ``angle, ssm, k, v``; causal
        attention: an empty key/value cache ``k, v``; ParallelHybrid: the Mamba state, then ``k, v``)."""
        self._state_sizes()
        state: List[Tensor] = []
        for blk in self.blocks:
            state.extend(blk.mixer.init_state(batch))
        return state

    @torch.jit.unused
    def forward_state(self, x: Tensor, state: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Continue from ``state``: ``x (B, L, D) -> (y (B, L, D), new_state)``."""
        sizes = self._state_sizes()
        check_input(x, self.d_model, "MixerStack")
        new: List[Tensor] = []
        at = 0
        for blk, n in zip(self.blocks, sizes):
            x, s = blk.forward_state(x, state[at:at + n])
            new += s
            at += n
        return self.norm(x), new

    @torch.jit.unused
    def step(self, x: Tensor, state: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """One token: ``x (B, D) -> (y (B, D), new_state)``."""
        sizes = self._state_sizes()
        new: List[Tensor] = []
        at = 0
        for blk, n in zip(self.blocks, sizes):
            x, s = blk.step(x, state[at:at + n])
            new += s
            at += n
        return self.norm(x), new

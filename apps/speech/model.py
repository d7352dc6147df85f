"""Conv-TasNet (Luo & Mesgarani, TASLP 2019, arXiv:1809.07454v3) with a TCN or a shared Mamba2 separator.

waveform (B, T) -> linear encoder (N filters of length L, stride L/2, no bias) -> w (B, N, K)
-> separator -> masks (B, S, N, K) -> masked representations -> transposed-conv decoder -> sources (B, S, T).

Framing: the input is padded with L/2 zeros on the left and up to a whole frame on the right, so frame k covers
samples [k*L/2 - L/2, k*L/2 + L/2); output sample t depends on input samples < t + L/2 + ... i.e. the causal model has
an algorithmic latency of one window (L samples: 2 ms at L=16, 8 kHz).  ``StreamingSeparator`` reproduces this
framing chunk by chunk.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from linmix.shared import MixerStack
from linmix.shared.ssd import is_exporting

from .tcn import TCNSeparator, make_norm


@dataclass
class ConvTasNetConfig:
    """Conv-TasNet hyperparameters; defaults are the paper's best (non-causal, 8 kHz).

    Attributes:
        n_src: S, number of sources.
        n_filters: N, encoder filters.  kernel_size: L, filter length in samples (stride L/2).
        bottleneck: B.  hidden: H.  skip: Sc.  conv_kernel: P.  n_blocks: X.  n_repeats: R.
        causal: cumulative layer norm + causal convs (TCN) or a causal Mamba2 stack.
        mask: mask nonlinearity (sigmoid: final paper; softmax: preprint; relu: torchaudio/asteroid recipes).
        separator: "tcn" (paper) or "mamba" (shared ``MixerStack``: "bimamba2" non-causal, "mamba2" causal).
        mixer: the Mamba separator's ``MixerStack`` kind; "" picks "mamba2" (causal) or "bimamba2" (non-causal).
            A causal separator takes a causal kind ("mamba2", "mamba3", "hybrid", "linear_causal", "softmax_causal").
        d_model, n_layers, n_heads, d_state, dropout: the Mamba separator's width, depth, heads, SSM state size
            and dropout.
        mixer_cfg: keyword arguments of the Mamba separator's mixers over ``n_heads`` / ``d_state`` (``headdim``,
            ``expand``, ``d_conv``, ``chunk_size``, ``segment_len``, ``ngroups``, ``backend``;
            ``linmix.shared.blocks.build_mixer``).
    """

    n_src: int = 2
    n_filters: int = 512
    kernel_size: int = 16
    bottleneck: int = 128
    hidden: int = 512
    skip: int = 128
    conv_kernel: int = 3
    n_blocks: int = 8
    n_repeats: int = 3
    causal: bool = False
    mask: Literal["sigmoid", "relu", "softmax"] = "sigmoid"
    separator: Literal["tcn", "mamba"] = "tcn"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_state: int = 64
    dropout: float = 0.0
    mixer: str = ""
    mixer_cfg: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        if self.kernel_size % 2 or self.kernel_size < 2:
            raise ValueError(f"kernel_size L must be even and >= 2 (stride L/2), got {self.kernel_size}")
        if self.n_src < 1:
            raise ValueError(f"n_src must be >= 1, got {self.n_src}")


CAUSAL_MIXERS = ("mamba2", "mamba3", "hybrid", "linear_causal", "softmax_causal")


class MambaSeparator(nn.Module):
    """Mask estimator with the shared Mamba2 stack in place of the TCN: (B, N, K) -> logits (B, S, N, K).

    norm (gLN / cLN) -> 1x1 conv N -> d_model -> MixerStack over frames (bidirectional when non-causal)
    -> PReLU -> 1x1 conv d_model -> S*N.
    """

    def __init__(
        self,
        n_filters: int = 512,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        d_state: int = 64,
        dropout: float = 0.0,
        n_src: int = 2,
        causal: bool = False,
        mixer: str = "",
        mixer_cfg: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.n_src = n_src
        self.n_filters = n_filters
        self.causal = causal
        self.in_norm = make_norm(n_filters, causal)
        self.proj_in = nn.Conv1d(n_filters, d_model, 1)
        mixer = mixer or ("mamba2" if causal else "bimamba2")
        if causal and mixer not in CAUSAL_MIXERS:
            raise ValueError(f"MambaSeparator: a causal separator needs a causal mixer {CAUSAL_MIXERS}, got {mixer!r}")
        self.stack = MixerStack(
            d_model, n_layers, mixer=mixer, n_heads=n_heads, d_state=d_state, dropout=dropout, mixer_cfg=mixer_cfg
        )
        self.out_act = nn.PReLU()
        self.out_conv = nn.Conv1d(d_model, n_src * n_filters, 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, N, K) -> mask logits (B, S, N, K)."""
        h = self.proj_in(self.in_norm(w)).transpose(1, 2)  # (B, K, D)
        h = self.stack(h).transpose(1, 2)  # (B, D, K)
        m = self.out_conv(self.out_act(h))
        return m.view(w.shape[0], self.n_src, self.n_filters, w.shape[-1])

    def init_state(self, batch: int) -> list[torch.Tensor]:
        dev = self.proj_in.weight.device
        return [torch.zeros(batch, 3, dtype=torch.float64, device=dev)] + list(self.stack.init_state(batch))

    def forward_state(
        self, w: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Causal streaming (the stack's recurrent state + cLN running sums); equals ``forward`` on the whole sequence."""
        if not self.causal:
            raise RuntimeError("forward_state needs the causal separator (causal=True)")
        x, s = self.in_norm.forward_state(w, state[0])
        h = self.proj_in(x).transpose(1, 2)
        h, stack_state = self.stack.forward_state(h, list(state[1:]))
        m = self.out_conv(self.out_act(h.transpose(1, 2)))
        return m.view(w.shape[0], self.n_src, self.n_filters, w.shape[-1]), [s] + list(stack_state)


class ConvTasNet(nn.Module):
    """Conv-TasNet separator network: mixture (B, T) or (B, 1, T) -> sources (B, S, T), same sample rate.

    Scriptable (``torch.jit.script``); the masks of the S sources sum to one only with ``mask="softmax"``.
    """

    def __init__(self, config: ConvTasNetConfig = ConvTasNetConfig()) -> None:  # noqa: B008 (frozen-by-use default)
        super().__init__()
        self.config = config
        c = config
        self.n_src = c.n_src
        self.kernel_size = c.kernel_size
        self.stride = c.kernel_size // 2
        self.mask_kind = c.mask
        self.encoder = nn.Conv1d(1, c.n_filters, c.kernel_size, stride=self.stride, bias=False)
        if c.separator == "tcn":
            self.separator = TCNSeparator(
                n_filters=c.n_filters,
                bottleneck=c.bottleneck,
                hidden=c.hidden,
                skip=c.skip,
                kernel=c.conv_kernel,
                n_blocks=c.n_blocks,
                n_repeats=c.n_repeats,
                n_src=c.n_src,
                causal=c.causal,
            )
        elif c.separator == "mamba":
            self.separator = MambaSeparator(
                n_filters=c.n_filters, d_model=c.d_model, n_layers=c.n_layers, n_heads=c.n_heads, d_state=c.d_state,
                dropout=c.dropout, n_src=c.n_src, causal=c.causal, mixer=c.mixer, mixer_cfg=c.mixer_cfg,
            )
        else:
            raise ValueError(f"unknown separator {c.separator!r}; expected 'tcn' or 'mamba'")
        self.decoder = nn.ConvTranspose1d(c.n_filters, 1, c.kernel_size, stride=self.stride, bias=False)

    def config_dict(self) -> dict:
        return asdict(self.config)

    def apply_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, S, N, K) -> masks in [0, 1] (sigmoid, softmax over S) or [0, inf) (relu)."""
        if self.mask_kind == "sigmoid":
            return torch.sigmoid(logits)
        if self.mask_kind == "softmax":
            return torch.softmax(logits, dim=1)
        return torch.relu(logits)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Padded waveform (B, 1, T') -> w (B, N, K); no nonlinearity (linear encoder, paper v3)."""
        return self.encoder(x)

    def decode(self, masked: torch.Tensor) -> torch.Tensor:
        """(B, S, N, K) -> overlap-added frames (B, S, (K+1)*L/2)."""
        b, s, n, k = masked.shape
        y = self.decoder(masked.reshape(b * s, n, k))
        return y.view(b, s, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) or (B, 1, T) waveform -> (B, S, T) separated sources."""
        if x.dim() == 3:
            x = x.squeeze(1)
        if x.dim() != 2:
            raise ValueError("expected a waveform of shape (B, T) or (B, 1, T)")
        t = x.shape[-1]
        # Left pad one stride; right pad to a whole number of frames plus one stride (symmetric framing):
        # (ceil(t / stride) + 1) * stride - t, written with a modulo so torch.export can prove it non-negative.
        pad_right = self.stride + (-t) % self.stride
        xp = F.pad(x, (self.stride, pad_right)).unsqueeze(1)  # (B, 1, T')
        w = self.encode(xp)  # (B, N, K)
        masks = self.apply_mask(self.separator(w))  # (B, S, N, K)
        y = self.decode(masks * w.unsqueeze(1))
        if not torch.jit.is_scripting():
            if is_exporting():  # the same crop as a gather: torch.export cannot bound a slice end of ceil-div sizes
                return y.index_select(2, torch.arange(self.stride, self.stride + t, device=y.device))
        return y[:, :, self.stride : self.stride + t]

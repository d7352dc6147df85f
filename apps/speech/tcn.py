"""Temporal convolutional network (TCN) separator of Conv-TasNet, with a stateful streaming path.

Luo & Mesgarani, "Conv-TasNet", TASLP 27(8), 2019 (arXiv:1809.07454v3), Sec. II-C and Fig. 1(c).
Shapes: B batch, N encoder filters, K encoder frames, S sources.

Layout per block (paper): 1x1 conv B->H -> PReLU -> norm -> depthwise dilated conv (kernel P, dilation d)
-> PReLU -> norm -> residual 1x1 conv H->B and skip 1x1 conv H->Sc.  Dilations 1, 2, ..., 2^(X-1), repeated R times.
Non-causal: global layer norm (gLN, exactly ``GroupNorm(1, C, eps=1e-8)``) and symmetric padding.
Causal: cumulative layer norm (cLN: frame k normalised with the mean/variance of all channels over frames 0..k) and
left padding of ``(P-1)*d`` frames, so frame k sees frames <= k only.

As in torchaudio the last block has no residual conv (its output would feed nothing): 4,984,881 parameters at the
paper configuration, equal to ``torchaudio.models.ConvTasNet``; keeping it gives the 5,050,545 of the paper's "5.1M".
"""

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


class CumulativeLayerNorm(nn.Module):
    """Cumulative layer norm (the paper's cLN) over (B, C, K): stats of all channels over frames 0..k.

    The streaming form carries ``state (B, 3) = [sum, sum of squares, count]`` of everything seen so far.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.eps = EPS
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward_state(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, K), state (B, 3) -> (normalised x (B, C, K), new state (B, 3))."""
        # Running sums in float64: a cumulative sum over an hour of frames loses precision in float32.
        step_sum = x.sum(dim=1).to(torch.float64)  # (B, K)
        step_pow = x.pow(2).sum(dim=1).to(torch.float64)  # (B, K)
        cum_sum = torch.cumsum(step_sum, dim=1) + state[:, 0:1]
        cum_pow = torch.cumsum(step_pow, dim=1) + state[:, 1:2]
        frames = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=torch.float64)
        count = state[:, 2:3] + frames.unsqueeze(0) * self.channels  # (B, K)
        mean = cum_sum / count
        var = (cum_pow / count - mean.pow(2)).clamp_min(0.0)
        inv_std = torch.rsqrt(var + self.eps).to(x.dtype).unsqueeze(1)  # (B, 1, K)
        y = (x - mean.to(x.dtype).unsqueeze(1)) * inv_std * self.weight + self.bias
        new_state = torch.stack([cum_sum[:, -1], cum_pow[:, -1], count[:, -1]], dim=1)
        return y, new_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, K) -> (B, C, K)."""
        state = torch.zeros(x.shape[0], 3, device=x.device, dtype=torch.float64)
        return self.forward_state(x, state)[0]


def make_norm(channels: int, causal: bool) -> nn.Module:
    """gLN (``GroupNorm(1, C, eps=1e-8)``) for the non-causal model, cLN for the causal one."""
    if causal:
        return CumulativeLayerNorm(channels)
    return nn.GroupNorm(1, channels, eps=EPS)


class TCNBlock(nn.Module):
    """One 1-D conv block. x (B, Bn, K) -> (residual output (B, Bn, K), skip (B, Sc, K))."""

    def __init__(
        self,
        bottleneck: int,
        hidden: int,
        skip: int,
        kernel: int,
        dilation: int,
        causal: bool,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.dilation = dilation
        self.kernel = kernel
        self.context = (kernel - 1) * dilation  # frames of history a causal block needs
        self.conv_in = nn.Conv1d(bottleneck, hidden, 1)
        self.act1 = nn.PReLU()
        self.norm1 = make_norm(hidden, causal)
        # Non-causal with an even context: let the conv pad symmetrically (no extra copy); else pad explicitly.
        self.conv_pads = (not causal) and self.context % 2 == 0
        pad = self.context // 2 if self.conv_pads else 0
        self.dconv = nn.Conv1d(hidden, hidden, kernel, dilation=dilation, groups=hidden, padding=pad)
        self.act2 = nn.PReLU()
        self.norm2 = make_norm(hidden, causal)
        self.res_conv = nn.Conv1d(hidden, bottleneck, 1) if residual else None
        self.skip_conv = nn.Conv1d(hidden, skip, 1)

    def _tail(self, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.skip_conv(h)
        if self.res_conv is not None:
            x = x + self.res_conv(h)
        return x, skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(self.act1(self.conv_in(x)))
        if self.causal:
            h = F.pad(h, (self.context, 0))
        elif not self.conv_pads:
            h = F.pad(h, (self.context // 2, self.context - self.context // 2))
        h = self.norm2(self.act2(self.dconv(h)))
        return self._tail(h, x)


class TCNSeparator(nn.Module):
    """Conv-TasNet mask estimator: (B, N, K) encoder output -> (B, S, N, K) pre-activation mask logits.

    Args:
        n_filters: N, encoder channels.  bottleneck: B.  hidden: H.  skip: Sc.  kernel: P.
        n_blocks: X (dilations 1..2^(X-1)).  n_repeats: R.  n_src: S.  causal: cLN + left padding if True.
    """

    def __init__(
        self,
        n_filters: int = 512,
        bottleneck: int = 128,
        hidden: int = 512,
        skip: int = 128,
        kernel: int = 3,
        n_blocks: int = 8,
        n_repeats: int = 3,
        n_src: int = 2,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.n_src = n_src
        self.n_filters = n_filters
        self.causal = causal
        # torchaudio / asteroid order: norm, then bottleneck (naplab has them the other way round).
        self.in_norm = make_norm(n_filters, causal)
        self.bottleneck = nn.Conv1d(n_filters, bottleneck, 1)
        n_total = n_blocks * n_repeats
        self.blocks = nn.ModuleList(
            [
                TCNBlock(
                    bottleneck, hidden, skip, kernel, 2**x, causal, residual=(r * n_blocks + x) < n_total - 1
                )
                for r in range(n_repeats)
                for x in range(n_blocks)
            ]
        )
        self.out_act = nn.PReLU()
        self.out_conv = nn.Conv1d(skip, n_src * n_filters, 1)

    @property
    def receptive_field(self) -> int:
        """Frames seen by one output frame: 1 + sum over blocks of (P-1)*d (1531 at P=3, X=8, R=3)."""
        return 1 + sum(int(b.context) for b in self.blocks)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, N, K) -> mask logits (B, S, N, K)."""
        x = self.bottleneck(self.in_norm(w))
        skip_sum = torch.zeros(1, dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x, skip = block(x)
            skip_sum = skip_sum + skip
        m = self.out_conv(self.out_act(skip_sum))
        return m.view(w.shape[0], self.n_src, self.n_filters, w.shape[-1])

    def init_state(self, batch: int) -> list[torch.Tensor]:
        """Streaming state for the causal TCN: [in_norm (B,3)] + per block [norm1 (B,3), cache (B,H,ctx), norm2 (B,3)]."""
        dev = self.bottleneck.weight.device
        dtype = self.bottleneck.weight.dtype
        state = [torch.zeros(batch, 3, dtype=torch.float64, device=dev)]
        for block in self.blocks:
            hidden = block.conv_in.out_channels
            state.append(torch.zeros(batch, 3, dtype=torch.float64, device=dev))
            state.append(torch.zeros(batch, hidden, int(block.context), dtype=dtype, device=dev))
            state.append(torch.zeros(batch, 3, dtype=torch.float64, device=dev))
        return state

    def forward_state(
        self, w: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Causal streaming: continue from ``state``. w (B, N, K) -> (mask logits (B, S, N, K), new state).

        Feeding a sequence chunk by chunk gives the same masks as ``forward`` on the whole sequence.
        """
        if not self.causal:
            raise RuntimeError("forward_state needs the causal TCN (causal=True)")
        new_state: list[torch.Tensor] = []
        in_norm = self.in_norm
        assert isinstance(in_norm, CumulativeLayerNorm)
        x, s = in_norm.forward_state(w, state[0])
        new_state.append(s)
        x = self.bottleneck(x)
        skip_sum = torch.zeros(1, dtype=x.dtype, device=x.device)
        i = 1
        for block in self.blocks:
            norm1 = block.norm1
            norm2 = block.norm2
            assert isinstance(norm1, CumulativeLayerNorm)
            assert isinstance(norm2, CumulativeLayerNorm)
            h, s1 = norm1.forward_state(block.act1(block.conv_in(x)), state[i])
            h = torch.cat([state[i + 1], h], dim=-1)  # history frames then this chunk's frames
            cache = h[:, :, h.shape[-1] - int(block.context) :]
            h, s2 = norm2.forward_state(block.act2(block.dconv(h)), state[i + 2])
            x, skip = block._tail(h, x)
            skip_sum = skip_sum + skip
            new_state.extend([s1, cache, s2])
            i += 3
        m = self.out_conv(self.out_act(skip_sum))
        return m.view(w.shape[0], self.n_src, self.n_filters, w.shape[-1]), new_state

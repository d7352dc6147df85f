"""Stateful chunk-by-chunk separation with the causal Conv-TasNet (TCN or Mamba2 separator).

Feed any chunk sizes; the concatenated outputs equal the offline causal model on the whole signal (up to float
rounding).  Latency: one encoder window (L samples: 2 ms at L=16, 8 kHz) plus buffering to a hop of L/2 samples.
State carried between chunks: the last L/2 input samples (encoder framing), the separator state (cLN running sums and
dilated-conv histories, or the Mamba2 conv/SSM states) and the last L/2 decoder overlap-add samples.
Shapes: B batch, S sources, T samples.
"""

import torch

from .model import ConvTasNet


class StreamingSeparator:
    """Streaming wrapper: ``push(chunk (B, n)) -> (B, S, m)`` finished samples; ``flush()`` returns the rest."""

    def __init__(self, net: ConvTasNet, batch: int = 1) -> None:
        if not net.config.causal:
            raise ValueError(
                "streaming needs a causal model (model.net.causal=true); non-causal ones use `separate`"
            )
        self.net = net.eval()
        self.batch = batch
        self.stride = net.stride
        self.reset()

    def reset(self) -> None:
        dev = self.net.encoder.weight.device
        self.prev = torch.zeros(
            self.batch, self.stride, device=dev
        )  # last hop of input (left zero padding at start)
        self.buf = torch.zeros(self.batch, 0, device=dev)  # input not yet forming a whole hop
        self.state = self.net.separator.init_state(self.batch)
        self.tail = torch.zeros(self.batch, self.net.n_src, self.stride, device=dev)  # decoder overlap
        self.to_skip = self.stride  # the first hop of output belongs to the left padding
        self.n_in = 0
        self.n_out = 0

    @torch.inference_mode()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """chunk (B, n) or (n,) samples -> (B, S, m) output samples that are final now (m may be 0)."""
        if chunk.dim() == 1:
            chunk = chunk.unsqueeze(0)
        self.n_in += chunk.shape[-1]
        return self._run(chunk)

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        self.buf = torch.cat([self.buf, chunk.to(self.buf)], dim=-1)
        n_hops = self.buf.shape[-1] // self.stride
        if n_hops == 0:
            return torch.zeros(self.batch, self.net.n_src, 0)
        take = self.buf[:, : n_hops * self.stride]
        self.buf = self.buf[:, n_hops * self.stride :]
        frames_in = torch.cat([self.prev, take], dim=-1).unsqueeze(1)  # (B, 1, (n_hops + 1) * hop)
        self.prev = take[:, -self.stride :]
        w = self.net.encode(frames_in)  # (B, N, n_hops)
        logits, self.state = self.net.separator.forward_state(w, self.state)
        y = self.net.decode(self.net.apply_mask(logits) * w.unsqueeze(1))  # (B, S, (n_hops + 1) * hop)
        y[:, :, : self.stride] += self.tail
        self.tail = y[:, :, -self.stride :].clone()
        out = y[:, :, : -self.stride]
        if self.to_skip:
            cut = min(self.to_skip, out.shape[-1])
            out = out[:, :, cut:]
            self.to_skip -= cut
        self.n_out += out.shape[-1]
        return out

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """Finish the stream: zero look-ahead for the last samples; returns (B, S, m) so that total out == total in."""
        pad = (-self.buf.shape[-1]) % self.stride + self.stride
        out = self._run(torch.zeros(self.batch, pad))
        keep = self.n_in - (self.n_out - out.shape[-1])
        self.n_out = self.n_in
        return out[:, :, :keep]

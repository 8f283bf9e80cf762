"""Reconstruction phase, step 2: one normalizing flow per modality over (B, D, T) sequences.

Glow-style steps: ActNorm, an invertible 1x1 convolution, an affine coupling whose subnet is a
small Conv1d stack. Every step is exactly invertible; its log-determinant counts valid steps
only (`mask` (B, T)), and padded steps are kept at zero so that padding changes nothing.
The flows and their likelihood run in fp32 with autocast disabled (see `precision.py`): in bf16 the
round trip loses about 3e-2 relative and the log-determinant is off by nats.
"""

from __future__ import annotations

import math

import torch
from cmarr.train.model.pooling import zero_padded
from cmarr.train.precision import at_least_fp32, full_precision
from torch import nn


def _valid(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """(B,) number of valid steps; `mask` None means every step of x (B, D, T) is valid."""
    return x.new_full((x.shape[0],), x.shape[-1]) if mask is None else mask.sum(1).to(x.dtype)


class ActNorm(nn.Module):
    """Per-channel affine map y = (x + b) * exp(s)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x, mask):
        y = zero_padded((x + self.bias) * self.logs.exp(), mask)
        return y, self.logs.sum() * _valid(mask, x)

    def inverse(self, y, mask):
        return zero_padded(y * (-self.logs).exp() - self.bias, mask)


class InvConv1x1(nn.Module):
    """y_t = W x_t with W invertible (initialised as a random rotation)."""

    def __init__(self, channels: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        self.weight = nn.Parameter(w)

    def forward(self, x, mask):
        y = torch.einsum("ij,bjt->bit", self.weight, x)
        return y, torch.linalg.slogdet(self.weight)[1] * _valid(mask, x)

    def inverse(self, y, mask):
        return torch.einsum("ij,bjt->bit", torch.linalg.inv(self.weight), y)


class AffineCoupling(nn.Module):
    """Half the channels set the scale and shift of the other half: y_b = (x_b + t(x_a)) * s(x_a)."""

    def __init__(self, channels: int, hidden: int = 64, kernel: int = 3):
        super().__init__()
        self.half = channels // 2
        out = 2 * (channels - self.half)
        self.net = nn.ModuleList(
            [
                nn.Conv1d(self.half, hidden, kernel, padding=kernel // 2),
                nn.Conv1d(hidden, hidden, 1),
                nn.Conv1d(hidden, out, kernel, padding=kernel // 2),
            ]
        )
        nn.init.zeros_(self.net[-1].weight)  # start as the identity (Glow)
        nn.init.zeros_(self.net[-1].bias)

    def _subnet(self, xa, mask):
        """Conv stack with padded steps re-zeroed after every layer: a kernel reaching past the
        last valid step then reads zeros, exactly as it would on the unpadded sequence."""
        h = zero_padded(torch.relu(self.net[0](xa)), mask)
        h = zero_padded(torch.relu(self.net[1](h)), mask)
        return zero_padded(self.net[2](h), mask)

    def _scale_shift(self, xa, mask):
        h = self._subnet(xa, mask)
        logs, t = h.chunk(2, dim=1)
        scale = torch.sigmoid(logs + 2.0) + 1e-4  # bounded, near 1 at start
        return scale, t

    def forward(self, x, mask):
        xa, xb = x[:, : self.half], x[:, self.half :]
        scale, t = self._scale_shift(xa, mask)
        yb = zero_padded((xb + t) * scale, mask)
        logdet = zero_padded(scale.log(), mask).sum(dim=(1, 2))
        return torch.cat([xa, yb], 1), logdet

    def inverse(self, y, mask):
        ya, yb = y[:, : self.half], y[:, self.half :]
        scale, t = self._scale_shift(ya, mask)
        xb = zero_padded(yb / scale - t, mask)
        return torch.cat([ya, xb], 1)


class ModalityFlow(nn.Module):
    """F_n: X (B, D, T) -> Z with log|det dZ/dX| per sample (B,); `inverse` maps Z back."""

    def __init__(self, channels: int, steps: int = 32, hidden: int = 64):
        super().__init__()
        self.steps = nn.ModuleList()
        for _ in range(steps):
            self.steps.extend([ActNorm(channels), InvConv1x1(channels), AffineCoupling(channels, hidden)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D, T) any float dtype, mask (B, T) or None (all valid) -> z (B, D, T) fp32, logdet (B,) fp32."""
        with full_precision(x.device):
            x = zero_padded(at_least_fp32(x), mask)
            logdet = x.new_zeros(x.shape[0])
            for step in self.steps:
                x, ld = step(x, mask)
                logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """z (B, D, T) -> x (B, D, T) fp32, the exact inverse of `forward` on valid steps."""
        with full_precision(z.device):
            z = zero_padded(at_least_fp32(z), mask)
            for step in reversed(self.steps):
                z = step.inverse(z, mask)
        return z


def gaussian_nll(z: torch.Tensor, mean: torch.Tensor, logdet: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample negative log-likelihood per valid dimension of X under z ~ N(mean, I):
    z (B, D, T), mean (B, D) broadcast over time, logdet (B,), mask (B, T) or None (all valid);
    computed in fp32 whatever autocast is on."""
    with full_precision(z.device):
        z, mean, logdet = at_least_fp32(z), at_least_fp32(mean), at_least_fp32(logdet)
        sq = zero_padded((z - mean.unsqueeze(-1)) ** 2, mask).sum(dim=(1, 2))
        n = _valid(mask, z) * z.shape[1]
        return (0.5 * sq + 0.5 * n * math.log(2 * math.pi) - logdet) / n.clamp(min=1)

"""DiCMoR's per-modality flows and class-conditional priors (Wang et al., ICCV 2023; mdswyz/DiCMoR glow.py).

Legend: B batch, D common width (channels), T common length, K classes.

A flow maps a projected sequence X (B, D, T) to Z step by step, position by position (1x1
convolutions only: no mixing over time). Each step holds an ActNorm, an invertible 1x1 convolution
(both from CM-ARR's `flow.py`) and an affine coupling whose subnet is 1x1 conv -> ReLU -> 1x1 conv
-> ReLU -> zero-initialised 1x1 conv, with y_b = (x_b + t) * sigmoid(log_s + 2). Two variants:

- `glow` (default): each step applies ActNorm, the 1x1 convolution and the coupling (Glow's step);
- `dicmor-exact`: each step applies its coupling only, as the published `Flow.forward/reverse` do.
  The ActNorm and 1x1 convolution keep their parameters but never receive a gradient, and with no
  permutation between couplings the first D/2 channels leave the flow unchanged. It also holds the
  Glow block's prior, which DiCMoR never calls either, so that it counts what the published model counts.

Flows and their likelihood run in fp32 with autocast off (see `precision.py`).
"""

from __future__ import annotations

import math

import torch
from cmarr.train.model.flow import ActNorm, InvConv1x1
from cmarr.train.precision import at_least_fp32, full_precision
from torch import nn

FLOW_VARIANTS = ("glow", "dicmor-exact")


class ZeroConv(nn.Module):
    """Glow's zero-initialised 1x1 convolution with a learnt per-channel output scale exp(3 s)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros(1, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(3 * self.scale)


class PointwiseCoupling(nn.Module):
    """The first half of the channels sets a scale and shift of the second: y_b = (x_b + t) * s."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels // 2, hidden, 1),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, 1),
            nn.ReLU(),
            ZeroConv(hidden, channels),  # zero at start: the coupling starts as the identity
        )
        for conv in (self.net[0], self.net[2]):
            nn.init.normal_(conv.weight, 0.0, 0.05)
            nn.init.zeros_(conv.bias)

    def _scale_shift(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_s, t = self.net(xa).chunk(2, 1)
        return torch.sigmoid(log_s + 2), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x.chunk(2, 1)
        s, t = self._scale_shift(xa)
        return torch.cat([xa, (xb + t) * s], 1), s.log().sum(dim=(1, 2))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y.chunk(2, 1)
        s, t = self._scale_shift(ya)
        return torch.cat([ya, yb / s - t], 1)


class FlowStep(nn.Module):
    """ActNorm, invertible 1x1 convolution and coupling; with `coupling_only` just the coupling."""

    def __init__(self, channels: int, hidden: int, coupling_only: bool):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        self.coupling = PointwiseCoupling(channels, hidden)
        self.coupling_only = coupling_only

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        if not self.coupling_only:
            x, a = self.actnorm(x, mask)
            x, b = self.invconv(x, mask)
            logdet = a + b
        x, c = self.coupling(x)
        return x, logdet + c

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.coupling.inverse(y)
        if not self.coupling_only:
            x = self.actnorm.inverse(self.invconv.inverse(x, mask), mask)
        return x


class DiCMoRFlow(nn.Module):
    """F_m: X (B, D, T) -> Z (B, D, T) with log|det dZ/dX| (B,); `inverse` maps Z back."""

    def __init__(self, channels: int, steps: int = 32, hidden: int = 64, variant: str = "glow"):
        super().__init__()
        if variant not in FLOW_VARIANTS:
            raise ValueError(f"unknown flow variant {variant!r}; choose from {', '.join(FLOW_VARIANTS)}")
        exact = variant == "dicmor-exact"
        self.steps = nn.ModuleList(FlowStep(channels, hidden, coupling_only=exact) for _ in range(steps))
        if exact:  # Glow's Block.prior: only its sampling path calls it, and DiCMoR never samples
            self.block_prior = ZeroConv(channels, 2 * channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D, T) any float dtype -> z (B, D, T) fp32 and logdet (B,) fp32."""
        with full_precision(x.device):
            x = at_least_fp32(x)
            mask = x.new_ones(x.shape[0], x.shape[2], dtype=torch.bool)  # fixed-length input: no padding
            logdet = x.new_zeros(x.shape[0])
            for step in self.steps:
                x, ld = step(x, mask)
                logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, T) -> x (B, D, T) fp32, the inverse of `forward`."""
        with full_precision(z.device):
            z = at_least_fp32(z)
            mask = z.new_ones(z.shape[0], z.shape[2], dtype=torch.bool)
            for step in reversed(self.steps):
                z = step.inverse(z, mask)
        return z


class ClassPriors(nn.Module):
    """One diagonal Gaussian per class, shared by every modality's flow. As in DiCMoR, each is a
    ZeroConv(D, 2D) applied to zeros: its output is bias * exp(3 s) (the weight only multiplies zeros),
    so every class starts at N(0, I)."""

    def __init__(self, n_classes: int, channels: int):
        super().__init__()
        self.channels = channels
        self.priors = nn.ModuleList(ZeroConv(channels, 2 * channels) for _ in range(n_classes))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (K, D), log_sd (K, D)), fp32."""
        with full_precision(self.priors[0].scale.device):
            zero = self.priors[0].scale.new_zeros(1, self.channels, 1)
            out = torch.cat([prior(zero) for prior in self.priors], 0)[..., 0]  # (K, 2D)
        mean, log_sd = out.chunk(2, -1)
        return mean, log_sd


def bits_per_dim(z: torch.Tensor, logdet: torch.Tensor, mean: torch.Tensor, log_sd: torch.Tensor) -> torch.Tensor:
    """DiCMoR's flow loss for one modality: max(0, -(sum over rows of log p(X)) / (ln 2 * R * D * T)),
    the negative log-likelihood in bits per dimension of the batch, clamped at 0 as published.
    z (R, D, T), logdet (R,), mean and log_sd (R, D): each row's class prior. Computed in fp32."""
    with full_precision(z.device):
        z, logdet = at_least_fp32(z), at_least_fp32(logdet)
        mean, log_sd = at_least_fp32(mean).unsqueeze(-1), at_least_fp32(log_sd).unsqueeze(-1)
        log_p = -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (z - mean) ** 2 * torch.exp(-2 * log_sd)
        total = logdet.sum() + log_p.sum()
        return torch.clamp(-total / (math.log(2) * z.numel()), min=0)

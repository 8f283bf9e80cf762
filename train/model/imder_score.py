"""IMDer's score-based diffusion (Wang et al., NeurIPS 2023; mdswyz/IMDer scoremodel.py): a
variance-exploding SDE, a conditional time-dependent score network, its denoising score-matching
error and the Euler-Maruyama sampler that recovers a missing modality from the available ones.

Legend: B batch, D common width (the score net's input and output channels), T steps (a multiple
of 8: three stride-2 levels), C_i the channels of U-Net level i, E the time-embedding width.

SDE (Song et al., 2021, "VE"): dx = sigma^t dw on t in [0, 1], so the perturbation kernel
p_0t(x(t) | x(0)) is N(x(0), std(t)^2) with std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma)), and the
reverse-time sampler steps x += g(t)^2 score(x, t | c) dt + g(t) sqrt(dt) noise, g(t) = sigma^t.
The condition c (the available modalities' projection) is perturbed with the kernel's noise too.

Every random draw goes through one `torch.Generator` (or torch's global one with None), in the
published order: score matching draws t then the noise; the sampler the start, then per step the
condition's noise and the step's noise.
"""

from __future__ import annotations

import math

import torch
from cmarr.train.model.mult import TransformerEncoder
from torch import nn

SIGMA = 25.0  # the SDE's sigma (scoremodel.py / imder.py)
EPS_TRAIN = 1e-5  # smallest t drawn for score matching
EPS_SAMPLE = 1e-3  # last t of the sampler
_NO_DROPOUT = {"embed": 0.0, "attn": 0.0, "relu": 0.0, "res": 0.0}


def marginal_std(t: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """std(t) (B,) of the perturbation kernel at times t (B,)."""
    return torch.sqrt((sigma ** (2 * t) - 1.0) / 2.0 / math.log(sigma))


def diffusion_coeff(t: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """g(t) = sigma^t (B,)."""
    return sigma**t


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)  # written out as published (F.silu rounds differently)


class GaussianFourierTime(nn.Module):
    """t (B,) -> [sin(2 pi t W), cos(2 pi t W)] (B, E) with W ~ N(0, 30^2) fixed at init (a
    parameter that never trains, as published)."""

    def __init__(self, width: int, scale: float = 30.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(width // 2) * scale, requires_grad=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.W[None, :] * 2 * math.pi  # (B, E/2)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _attention(width: int) -> TransformerEncoder:
    """The score net's conditioning: 2 causal crossmodal layers, 8 heads, no dropout."""
    return TransformerEncoder(width, 8, 2, _NO_DROPOUT, causal=True)


class ScoreLevel(nn.Module):
    """One U-Net level: h = act(norm(conv(h) + attend(conv(h), cond(c)) + dense(emb))), the
    condition taken to the level's resolution by its own conv (`cond`, none on the first level);
    the last level has neither dense nor norm (nor act)."""

    def __init__(self, conv: nn.Module, cond: nn.Module | None, width: int, embed: int, groups: int | None):
        super().__init__()
        self.conv, self.cond = conv, cond
        self.attention = _attention(width)
        self.dense = nn.Linear(embed, width) if groups else None
        self.norm = nn.GroupNorm(groups, width) if groups else None

    def forward(self, h, c, emb) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, C_in, T_in), c (B, C_c, T_in), emb (B, E) -> (h, c) at the level's (C, T)."""
        h = self.conv(h)
        if self.cond is not None:
            c = self.cond(c)
        h = h + self.attention(h.transpose(1, 2), c.transpose(1, 2)).transpose(1, 2)
        if self.norm is None:
            return h, c
        return swish(self.norm(h + self.dense(emb)[..., None])), c


def _down(c_in: int, c_out: int, stride: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _up(c_in: int, c_out: int, last: bool = False) -> nn.ConvTranspose1d:
    if last:
        return nn.ConvTranspose1d(c_in, c_out, 3, stride=1, padding=1)
    return nn.ConvTranspose1d(c_in, c_out, 3, stride=2, padding=1, bias=False, output_padding=1)


class ScoreNet(nn.Module):
    """s(x, t | c) (B, D, T): a 1-D U-Net whose every level attends (causally) to the condition,
    divided by std(t) (scoremodel.py ScoreNet)."""

    def __init__(self, width: int = 32, channels: tuple[int, ...] = (32, 64, 128, 256), embed: int = 256):
        super().__init__()
        if len(channels) != 4 or channels[0] != width:
            raise ValueError("the score net has 4 levels and its first has the input's width")
        c0, c1, c2, c3 = channels
        self.time = GaussianFourierTime(embed)
        self.time_proj = nn.Linear(embed, embed)
        ins, strides, groups = (width, c0, c1, c2), (1, 2, 2, 2), (4, 32, 32, 32)
        self.down = nn.ModuleList(
            ScoreLevel(_down(i, o, s), None if k == 0 else _down(i, o, s), o, embed, g)
            for k, (i, o, s, g) in enumerate(zip(ins, channels, strides, groups))
        )
        self.up = nn.ModuleList(
            [
                ScoreLevel(_up(c3, c2), _up(c3, c2), c2, embed, 32),
                ScoreLevel(_up(2 * c2, c1), _up(c2, c1), c1, embed, 32),
                ScoreLevel(_up(2 * c1, c0), _up(c1, c0), c0, embed, 32),
                ScoreLevel(_up(2 * c0, width, last=True), _up(c0, width, last=True), width, embed, None),
            ]
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, D, T), t (B,), cond (B, D, T) -> score (B, D, T)."""
        emb = swish(self.time_proj(self.time(t)))  # (B, E)
        h, c, skips = x, cond, []
        for level in self.down:
            h, c = level(h, c, emb)
            skips.append(h)
        for k, level in enumerate(self.up):
            h, c = level(h if k == 0 else torch.cat([h, skips[-1 - k]], 1), c, emb)
        return h / marginal_std(t)[:, None, None]


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def score_matching_error(
    net: ScoreNet, x: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per row (B,) the denoising score-matching error sum_{D,T} (s(x + std z, t | c + std z) std
    + z)^2 at t ~ U(EPS_TRAIN, 1), z ~ N(0, I) (scoremodel.py loss_fn, before its batch mean)."""
    t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device) * (1.0 - EPS_TRAIN) + EPS_TRAIN
    z = _randn(x.shape, x, generator)
    std = marginal_std(t)[:, None, None]
    score = net(x + z * std, t, cond + z * std)
    return (score * std + z).pow(2).sum(dim=(1, 2))


@torch.no_grad()
def euler_maruyama(
    net: ScoreNet, cond: torch.Tensor, steps: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A sample (B, D, T) of the modality the score net models given cond (B, D, T): `steps`
    Euler-Maruyama steps of the reverse SDE from t = 1 to EPS_SAMPLE, the last one's mean
    (scoremodel.py Euler_Maruyama_sampler)."""
    B = cond.shape[0]
    ones = torch.ones(B, dtype=cond.dtype, device=cond.device)
    x = _randn(cond.shape, cond, generator) * marginal_std(ones)[:, None, None]
    times = torch.linspace(1.0, EPS_SAMPLE, steps, dtype=cond.dtype, device=cond.device)
    dt = times[0] - times[1]
    mean = x
    for time in times:
        t = ones * time
        g = diffusion_coeff(t)[:, None, None]
        c = cond + _randn(cond.shape, cond, generator) * marginal_std(t)[:, None, None]
        mean = x + g**2 * net(x, t, c) * dt
        x = mean + torch.sqrt(dt) * g * _randn(x.shape, x, generator)
    return mean

"""Alignment phase: the uncertainty module (UMC) turns a modality's sequence into Gaussians.

Legend: B batch, T time, F input features, W width. A linear map to W, then an attention block
(sequence interactions; switchable for the "w/o attention" ablation) and an MLP block (feature
interactions), pre-LayerNorm with GELU as in MAP's DisTrans; the output splits into mean and
log-std sequences. The utterance Gaussian is the masked time-mean of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from cmarr.train.model.masking import masked_mean
from torch import nn


@dataclass
class Gaussians:
    mu_seq: torch.Tensor  # (B, T, W)
    logsig_seq: torch.Tensor  # (B, T, W)
    mu: torch.Tensor  # (B, W) utterance mean
    sigma: torch.Tensor  # (B, W) utterance standard deviation (diagonal)


class UncertaintyModule(nn.Module):
    def __init__(self, in_dim: int, width: int = 128, heads: int = 8, dropout: float = 0.1, attention: bool = True):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.attention = attention
        self.norm_attn = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        )
        self.to_mu = nn.Linear(width, width)
        self.to_logsig = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Gaussians:
        h = self.inp(x)  # (B, T, W)
        if self.attention:
            q = self.norm_attn(h)
            a, _ = self.attn(q, q, q, key_padding_mask=~mask, need_weights=False)
            h = h + a
        h = h + self.mlp(self.norm_mlp(h))
        mu_seq = self.to_mu(h)
        logsig_seq = self.to_logsig(h).clamp(-7.0, 5.0)  # keeps exp() finite early in training
        return Gaussians(mu_seq, logsig_seq, masked_mean(mu_seq, mask), masked_mean(logsig_seq, mask).exp())

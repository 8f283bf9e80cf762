"""Alignment phase: the uncertainty module (UMC) turns a modality's sequence into Gaussians.

Legend: B batch, T time, F input features, W width. A linear map to W, then an attention block
(sequence interactions; switchable for the "w/o attention" ablation) and an MLP block (feature
interactions), pre-LayerNorm with GELU as in MAP's DisTrans; the output splits into mean and
log-std sequences. The utterance Gaussian is the masked time-mean of both.

With `distribution=False` (Table 3's "w/ Point") the module is point-based: no log-std head, and
the mean sequence is the representation (nothing is sampled; the model is deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from cmarr.train.model.pooling import masked_mean
from torch import nn
from torch.nn import functional as F


@dataclass
class Gaussians:
    """Per-utterance diagonal Gaussians (or points, when `sigma` is None)."""

    mu_seq: torch.Tensor | None  # (B, T, W); None once reduced to utterance statistics
    logsig_seq: torch.Tensor | None  # (B, T, W); None for points
    mu: torch.Tensor  # (B, W) utterance mean
    sigma: torch.Tensor | None  # (B, W) utterance standard deviation (diagonal); None for points

    def rows(self, rows: torch.Tensor) -> Gaussians:
        """The Gaussians of the rows where `rows` (B,) is True."""
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return Gaussians(pick(self.mu_seq), pick(self.logsig_seq), self.mu[rows], pick(self.sigma))


class UncertaintyModule(nn.Module):
    def __init__(
        self,
        in_dim: int,
        width: int = 128,
        heads: int = 8,
        dropout: float = 0.1,
        attention: bool = True,
        distribution: bool = True,
    ):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.attention = attention
        self.norm_attn = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)  # its weights; the product is below
        self.attn_dropout = nn.Dropout(dropout)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        )
        self.to_mu = nn.Linear(width, width)
        self.to_logsig = nn.Linear(width, width) if distribution else None

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over the valid steps, x (B, T, W) -> (B, T, W), through
        `scaled_dot_product_attention` (a fused kernel): nothing quadratic in T is kept for
        backward, which matters for minute-long speech (50 frames/s). Dropout applies to the block's
        output, not to the attention weights (weight dropout would force the (B, heads, T, T) path)."""
        B, T, W = x.shape
        heads = self.attn.num_heads
        q, k, v = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(B, T, heads, W // heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, W/h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, h, T, W/h)
        return self.attn.out_proj(out.transpose(1, 2).reshape(B, T, W))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Gaussians:
        """x (B, T, F), mask (B, T) -> Gaussians with (B, T, W) sequences and (B, W) utterance statistics."""
        h = self.inp(x)  # (B, T, W)
        if self.attention:
            h = h + self.attn_dropout(self._self_attention(self.norm_attn(h), mask))
        h = h + self.mlp(self.norm_mlp(h))
        mu_seq = self.to_mu(h)
        if self.to_logsig is None:
            return Gaussians(mu_seq, None, masked_mean(mu_seq, mask), None)
        logsig_seq = self.to_logsig(h).clamp(-7.0, 5.0)  # keeps exp() finite early in training
        return Gaussians(mu_seq, logsig_seq, masked_mean(mu_seq, mask), masked_mean(logsig_seq, mask).exp())

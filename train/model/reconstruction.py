"""Reconstruction phase, step 3: residual channel-attention blocks in 1-D (RCAN, conv2d -> conv1d).

Legend: B batch, D common width, T common length. 1x1 conv D -> 2D, one group of blocks
(conv3-ReLU-conv3, channel attention with a squeeze ratio, residual), group residual, 1x1 conv back.
"""

from __future__ import annotations

import torch
from cmarr.train.model.pooling import zero_padded
from torch import nn


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Conv1d(channels, squeezed, 1), nn.ReLU(), nn.Conv1d(squeezed, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:  # every step valid
            pooled = x.mean(-1, keepdim=True)  # (B, C, 1)
        else:
            m = mask.unsqueeze(1).to(x.dtype)
            pooled = (x * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
        return x * self.gate(pooled)


class ResidualChannelAttentionBlock(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.attention = ChannelAttention(channels, reduction)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, C, T), mask (B, T) or None (all valid); padded steps are re-zeroed between convs."""
        h = zero_padded(torch.relu(self.conv1(zero_padded(x, mask))), mask)
        return x + self.attention(zero_padded(self.conv2(h), mask), mask)


class ReconstructionModule(nn.Module):
    """X~ (B, D, T) from the inverse flow -> X^ (B, D, T)."""

    def __init__(self, width: int = 64, blocks: int = 20, reduction: int = 16):
        super().__init__()
        self.inp = nn.Conv1d(width, 2 * width, 1)
        self.blocks = nn.ModuleList(ResidualChannelAttentionBlock(2 * width, reduction) for _ in range(blocks))
        self.out = nn.Conv1d(2 * width, width, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D, T), mask (B, T) or None (all valid) -> (B, D, T)."""
        h = self.inp(x)
        g = h
        for block in self.blocks:
            g = block(g, mask)
        return zero_padded(self.out(g + h), mask)

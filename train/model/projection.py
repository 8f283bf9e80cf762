"""Reconstruction phase, step 1: project a modality to the common width D and length T.

Legend: B batch, T_in input steps, W input width, D common width, T common length.
"""

from __future__ import annotations

import torch
from cmarr.train.model.pooling import masked_adaptive_pool
from torch import nn


class Projection(nn.Module):
    """Conv1d (kernel k, "same" padding) to D, then masked adaptive average pooling to T steps."""

    def __init__(self, in_dim: int, width: int = 64, length: int = 50, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, width, kernel, padding=kernel // 2)
        self.length = length

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T_in, W), mask (B, T_in) -> (B, D, T); padded steps are zeroed before the conv,
        as a lone sequence's own zero padding would be."""
        x = (x * mask.unsqueeze(-1)).transpose(1, 2)  # (B, W, T_in)
        return masked_adaptive_pool(self.conv(x), mask, self.length)  # (B, D, T)

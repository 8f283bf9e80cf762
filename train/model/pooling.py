"""Masked pooling helpers. Legend: B batch, T time, D width. `mask` (B, T) is True on valid steps."""

from __future__ import annotations

import torch


def zero_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (B, C, T) with padded steps zeroed; unchanged when `mask` is None (no padding: CM-ARR's
    pooled sequences all have the common length, so their masks would be all ones)."""
    return x if mask is None else x * mask.unsqueeze(1).to(x.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of x (B, T, D) over valid steps of `mask` (B, T); zero for an all-padding row."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def adaptive_pool_matrix(lengths: torch.Tensor, t_in: int, t_out: int) -> torch.Tensor:
    """(B, t_out, t_in) averaging weights: bin j of an utterance of length L covers its valid steps
    [floor(j L / t_out), ceil((j + 1) L / t_out)), so bins depend on L only, never on padding, and
    every bin is non-empty for L >= 1 (short utterances repeat steps)."""
    j = torch.arange(t_out, device=lengths.device)
    L = lengths.clamp(min=1).unsqueeze(1)  # (B, 1)
    start = torch.div(j * L, t_out, rounding_mode="floor")  # (B, t_out)
    end = torch.div((j + 1) * L + t_out - 1, t_out, rounding_mode="floor")
    steps = torch.arange(t_in, device=lengths.device)
    inside = (steps[None, None] >= start[..., None]) & (steps[None, None] < end[..., None])  # (B, t_out, t_in)
    weights = inside.float()
    return weights / weights.sum(-1, keepdim=True).clamp(min=1.0)


def masked_adaptive_pool(x: torch.Tensor, mask: torch.Tensor, t_out: int) -> torch.Tensor:
    """x (B, D, T) -> (B, D, t_out), averaging valid steps only (see `adaptive_pool_matrix`)."""
    P = adaptive_pool_matrix(mask.sum(1), x.shape[-1], t_out)  # (B, t_out, T)
    return torch.einsum("bdt,bjt->bdj", x, P)

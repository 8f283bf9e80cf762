"""Cross-modal fusion: per target modality, cross-attention to each other modality, concatenated,
then self-attention; masked mean pooling; the three pooled vectors concatenated.

Legend: B batch, T time, D width, M modalities (3). No causal masks.
"""

from __future__ import annotations

import torch
from cmarr.train.model.masking import masked_mean
from torch import nn


class AttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: query attends to context, then a feed-forward layer."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        )

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        kv_n = self.norm_kv(kv)
        h = q + self.attn(self.norm_q(q), kv_n, kv_n, key_padding_mask=~kv_mask, need_weights=False)[0]
        return h + self.ff(self.norm_ff(h))


class CrossModalFusion(nn.Module):
    def __init__(self, width: int, modalities: list[str], heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.modalities = modalities
        self.cross = nn.ModuleDict(
            {f"{t}_{s}": AttentionBlock(width, heads, dropout) for t in modalities for s in modalities if s != t}
        )
        self.self_attn = nn.ModuleDict(
            {t: AttentionBlock(width * (len(modalities) - 1), heads, dropout) for t in modalities}
        )
        self.out_dim = width * (len(modalities) - 1) * len(modalities)

    def forward(self, seqs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """seqs[m] (B, T, D), masks[m] (B, T) -> (B, out_dim)."""
        pooled = []
        for t in self.modalities:
            h = torch.cat([self.cross[f"{t}_{s}"](seqs[t], seqs[s], masks[s]) for s in self.modalities if s != t], -1)
            h = self.self_attn[t](h, h, masks[t])  # (B, T, 2D)
            pooled.append(masked_mean(h, masks[t]))
        return torch.cat(pooled, -1)

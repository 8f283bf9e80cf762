"""Cross-modal fusion (paper section 3.3.2, Eq. 10-13), and the all-queries variant kept as an option.

Legend: B batch, T time, D width. No causal masks; key padding masks (B, T) are True on valid steps.

- `TextQueryFusion` ("paper"): text is the only query. H_tv = CrossAttn(Q_t, K_v, V_v),
  H_ts = CrossAttn(Q_t, K_s, V_s), H' = [H_tv, H_ts] (B, T, 2D), H = SelfAttn(H'); masked mean over
  text steps -> (B, 2D). A missing text is its reconstruction, so the query always exists.
- `AllQueriesFusion` ("all-queries"): every modality queries the other two (six cross blocks), one
  self-attention block per modality, the three pooled vectors concatenated -> (B, 6D).
"""

from __future__ import annotations

import torch
from cmarr.train.model.pooling import masked_mean
from torch import nn


class AttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: the query attends to the context, then a feed-forward layer."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        )

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        """q (B, Tq, W), kv (B, Tk, W), kv_mask (B, Tk) -> (B, Tq, W)."""
        kv_n = self.norm_kv(kv)
        h = q + self.attn(self.norm_q(q), kv_n, kv_n, key_padding_mask=~kv_mask, need_weights=False)[0]
        return h + self.ff(self.norm_ff(h))


class TextQueryFusion(nn.Module):
    """The paper's fusion: two cross-attention blocks with the text as query, one self-attention block."""

    def __init__(self, width: int, modalities: list[str], heads: int = 4, dropout: float = 0.1, query: str = "text"):
        super().__init__()
        self.query = query
        self.others = [m for m in modalities if m != query]  # keys/values, in the model's modality order
        self.cross = nn.ModuleDict({m: AttentionBlock(width, heads, dropout) for m in self.others})
        self.self_attn = AttentionBlock(width * len(self.others), heads, dropout)
        self.out_dim = width * len(self.others)

    def forward(self, seqs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """seqs[m] (B, T, D), masks[m] (B, T) -> (B, 2D)."""
        q = seqs[self.query]
        h = torch.cat([self.cross[m](q, seqs[m], masks[m]) for m in self.others], -1)  # (B, T, 2D)
        h = self.self_attn(h, h, masks[self.query])
        return masked_mean(h, masks[self.query])


class AllQueriesFusion(nn.Module):
    """Every modality a query over the other two, then self-attention per modality (cmarr <= 0.1)."""

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
        """seqs[m] (B, T, D), masks[m] (B, T) -> (B, 6D)."""
        pooled = []
        for t in self.modalities:
            h = torch.cat([self.cross[f"{t}_{s}"](seqs[t], seqs[s], masks[s]) for s in self.modalities if s != t], -1)
            h = self.self_attn[t](h, h, masks[t])  # (B, T, 2D)
            pooled.append(masked_mean(h, masks[t]))
        return torch.cat(pooled, -1)


FUSIONS = {"paper": TextQueryFusion, "all-queries": AllQueriesFusion}


def build_fusion(kind: str, width: int, modalities: list[str], heads: int, dropout: float) -> nn.Module:
    """The fusion named by `train.model.fusion`; `.out_dim` gives its output width."""
    return FUSIONS[kind](width, modalities, heads, dropout)

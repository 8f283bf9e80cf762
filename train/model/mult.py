"""MulT's crossmodal transformer (Tsai et al., ACL 2019) as DiCMoR uses it for fusion.

Legend: B batch, T steps, D width, M modalities.

An encoder scales its input by sqrt(D) and adds sinusoidal positions (fairseq's numbering: steps
1..T; a step whose first channel is exactly 0 counts as padding and gets none), then embedding
dropout. Its layers are pre-LayerNorm: multi-head attention, then a ReLU feed-forward of width 4D;
a last LayerNorm closes it. In a crossmodal encoder the target sequence attends to a source
sequence that every layer reads again; the layer's first LayerNorm normalises query, keys and
values alike, and keys and values get their own embedding-dropout masks (as published).

With `causal` a step attends only to steps up to its own (MulT's `attn_mask`), so the last step is
the only one that has seen the whole sequence, and the fusion takes it; without, every step sees
every step and the fusion takes the mean over steps. DiCMoR's inputs have a fixed length, so there
is no padding to mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sinusoidal_positions(x: torch.Tensor) -> torch.Tensor:
    """(B, T, D) fp32 position embeddings for x (B, T, D): [sin(p w), cos(p w)] for p = 1..T,
    w_i = 10000^(-i / (D/2 - 1)); zero on steps whose first channel is exactly 0."""
    B, T, D = x.shape
    half = D // 2
    freq = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(1, T + 1, device=x.device)[:, None] * freq[None]  # (T, D/2)
    table = torch.cat([angles.sin(), angles.cos()], -1)
    if D % 2:
        table = F.pad(table, (0, 1))
    return table[None] * (x[..., 0] != 0)[..., None]


def causal_mask(t_query: int, t_source: int, device) -> torch.Tensor:
    """(Tq, Ts) bool, True where attention is barred (MulT's `buffered_future_mask`)."""
    ones = torch.ones(t_query, t_source, dtype=torch.bool, device=device)
    return ones.triu(1 + abs(t_source - t_query))


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class TransformerLayer(nn.Module):
    """Pre-LayerNorm attention (self, or to a source) and feed-forward, each with a residual."""

    def __init__(self, width: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, dropout=attn_dropout, batch_first=True)
        nn.init.xavier_uniform_(self.attn.out_proj.weight)
        self.norm_attn, self.norm_ff = nn.LayerNorm(width), nn.LayerNorm(width)
        self.fc1, self.fc2 = _linear(width, 4 * width), _linear(4 * width, width)
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(self, x, key=None, value=None, mask=None) -> torch.Tensor:
        """x (B, T, D); key and value (B, S, D) or None for self-attention; mask (T, S) -> (B, T, D)."""
        h = self.norm_attn(x)
        k, v = (h, h) if key is None else (self.norm_attn(key), self.norm_attn(value))
        h = self.attn(h, k, v, attn_mask=mask, need_weights=False)[0]
        x = x + F.dropout(h, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norm_ff(x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """MulT's encoder: self-attention over x, or crossmodal attention from x to `source`."""

    def __init__(self, width: int, heads: int, layers: int, dropouts: dict[str, float], causal: bool):
        super().__init__()
        self.scale = math.sqrt(width)
        self.embed_dropout, self.causal = dropouts["embed"], causal
        self.layers = nn.ModuleList(
            TransformerLayer(width, heads, dropouts["attn"], dropouts["relu"], dropouts["res"]) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.scale * x + sinusoidal_positions(x), self.embed_dropout, self.training)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), source (B, S, D) or None -> (B, T, D)."""
        key = value = None
        if source is not None:
            key, value = self._embed(source), self._embed(source)  # two dropout masks
        mask = causal_mask(x.shape[1], x.shape[1] if source is None else source.shape[1], x.device)
        x = self._embed(x)
        for layer in self.layers:
            x = layer(x, key, value, mask if self.causal else None)
        return self.norm(x)


class MulTFusion(nn.Module):
    """Per target modality, one crossmodal encoder from each other modality, their outputs
    concatenated (B, T, 2D) into a self-attention encoder, pooled to (B, 2D) (the last step when
    causal, else the mean); the M vectors concatenated -> (B, 2D M)."""

    def __init__(
        self,
        modalities: list[str],
        width: int,
        heads: int,
        layers: int,
        attn_dropout: dict[str, float],
        dropouts: dict[str, float],
        causal: bool,
    ):
        """`attn_dropout`: attention dropout per *source* modality, plus "self" for the self-attention
        encoders; `dropouts`: "embed", "relu", "res"."""
        super().__init__()
        self.modalities, self.causal = modalities, causal
        self.cross = nn.ModuleDict(
            {
                f"{t}_{s}": TransformerEncoder(width, heads, layers, {**dropouts, "attn": attn_dropout[s]}, causal)
                for t in modalities
                for s in modalities
                if s != t
            }
        )
        width_self = width * (len(modalities) - 1)
        self_dropouts = {**dropouts, "attn": attn_dropout["self"]}
        self.memory = nn.ModuleDict(
            {t: TransformerEncoder(width_self, heads, max(layers, 3), self_dropouts, causal) for t in modalities}
        )
        self.out_dim = width_self * len(modalities)

    def forward(self, seqs: dict[str, torch.Tensor]) -> torch.Tensor:
        """seqs[m] (B, T, D) -> (B, 2D M)."""
        pooled = []
        for t in self.modalities:
            h = torch.cat([self.cross[f"{t}_{s}"](seqs[t], seqs[s]) for s in self.modalities if s != t], -1)
            h = self.memory[t](h)  # (B, T, 2D)
            pooled.append(h[:, -1] if self.causal else h.mean(1))
        return torch.cat(pooled, -1)

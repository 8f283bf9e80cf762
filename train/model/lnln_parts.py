"""LNLN's transformer blocks (Zhang et al., NeurIPS 2024; Haoyu-ha/LNLN models/basic_layers.py),
written for cmarr: a ViT-style encoder with learnable extra tokens, the hyper-modality learning
layer and the cross-transformer of the dominant-modality-based learning module.

Legend: B batch, N tokens (extra tokens first, then the sequence), D width, H heads, E head width.

Every block is pre-LayerNorm with no dropout (the published rates are all 0). Attention has no
mask: LNLN reads fixed-length, zero-padded sequences and attends to the padding as to any step.
Query, keys and values get their own LayerNorm (the published `PreNorm_qkv`), even in
self-attention, where all three read the same sequence.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*E) -> (B, H, N, E)."""
    B, N, _ = x.shape
    return x.view(B, N, heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, E) -> (B, N, H*E)."""
    B, H, N, E = x.shape
    return x.transpose(1, 2).reshape(B, N, H * E)


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections to H*E and an output projection back to D."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(f(t), self.heads) for f, t in ((self.to_q, q), (self.to_k, k), (self.to_v, v)))
        return self.to_out(_merge(F.scaled_dot_product_attention(q, k, v)))  # (B, Nq, D)


class FeedForward(nn.Module):
    """Linear D -> hidden, GELU, Linear back to D."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderLayer(nn.Module):
    """x + attn(norm_q(x), norm_k(s), norm_v(s)), then + ff(norm_ff(x)); s = x in self-attention."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp: int):
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        s = x if source is None else source
        x = self.attn(self.norm_q(x), self.norm_k(s), self.norm_v(s)) + x
        return self.ff(self.norm_ff(x)) + x


class TokenTransformer(nn.Module):
    """`extra` learnable tokens (zeros at the start) prepended to a sequence of at most `length`
    steps, learnable positions (normal at the start), then `depth` self-attention layers.
    (B, T, D) -> (B, extra + T, D), or with `hidden` the input and every layer's output."""

    def __init__(self, length: int, extra: int, dim: int, depth: int, heads: int, dim_head: int, mlp: int):
        super().__init__()
        self.extra = nn.Parameter(torch.zeros(1, extra, dim)) if extra else None
        self.pos = nn.Parameter(torch.randn(1, length + extra, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim_head, mlp) for _ in range(depth))

    def forward(self, x: torch.Tensor, hidden: bool = False) -> torch.Tensor | list[torch.Tensor]:
        if self.extra is not None:
            x = torch.cat([self.extra.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.pos[:, : x.shape[1]]
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return states if hidden else x


class HyperLayer(nn.Module):
    """One hyper-modality learning layer: the dominant modality's tokens query audio and video;
    the two attended results, summed and projected, shift the (normalised) hyper-modality tokens:
    H' = norm_h(H) + out(attn(q(d), k_a(a), v_a(a)) + attn(q(d), k_v(v), v_v(v))), with d, a, v
    each normalised by its own LayerNorm."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_dominant, self.norm_audio = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_video, self.norm_hyper = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k_audio, self.to_k_video = nn.Linear(dim, inner, bias=False), nn.Linear(dim, inner, bias=False)
        self.to_v_audio, self.to_v_video = nn.Linear(dim, inner, bias=False), nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, dominant, audio, video, hyper: torch.Tensor) -> torch.Tensor:
        d, a, v = self.norm_dominant(dominant), self.norm_audio(audio), self.norm_video(video)
        q = _heads(self.to_q(d), self.heads)
        from_audio = F.scaled_dot_product_attention(
            q, _heads(self.to_k_audio(a), self.heads), _heads(self.to_v_audio(a), self.heads)
        )
        from_video = F.scaled_dot_product_attention(
            q, _heads(self.to_k_video(v), self.heads), _heads(self.to_v_video(v), self.heads)
        )
        return self.norm_hyper(hyper) + self.to_out(_merge(from_audio) + _merge(from_video))  # (B, N, D)


class HyperEncoder(nn.Module):
    """`depth` hyper layers, layer i reading the language encoder's i-th state (input first)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int):
        super().__init__()
        self.layers = nn.ModuleList(HyperLayer(dim, heads, dim_head) for _ in range(depth))

    def forward(self, dominant: list[torch.Tensor], audio, video, hyper: torch.Tensor) -> torch.Tensor:
        for layer, d in zip(self.layers, dominant):
            hyper = layer(d, audio, video, hyper)
        return hyper


class CrossTransformer(nn.Module):
    """The fusion transformer: one learnable token (zeros at the start) prepended to both the
    source and the target sequence, each with its own learnable positions; then `depth` layers in
    which the target attends to the source. (B, Ns, D), (B, Nt, D) -> (B, 1 + Nt, D)."""

    def __init__(self, source_length: int, target_length: int, dim: int, depth: int, heads, dim_head, mlp):
        super().__init__()
        self.pos_source = nn.Parameter(torch.randn(1, source_length + 1, dim))
        self.pos_target = nn.Parameter(torch.randn(1, target_length + 1, dim))
        self.extra = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim_head, mlp) for _ in range(depth))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        token = self.extra.expand(source.shape[0], -1, -1)
        source = torch.cat([token, source], 1) + self.pos_source[:, : source.shape[1] + 1]
        target = torch.cat([token, target], 1) + self.pos_target[:, : target.shape[1] + 1]
        for layer in self.layers:
            target = layer(target, source)
        return target


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -alpha backward (the proxy generator learns to fool
    the effectiveness discriminator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.alpha * grad, None

"""LNLN, the Language-dominated Noise-resistant Learning Network (Zhang et al., NeurIPS 2024;
Haoyu-ha/LNLN models/lnln.py) on cmarr's store, classifying K classes.

Legend: B batch, T_m input steps of modality m, L_m its fixed length, F_m its feature width,
N tokens per modality (8), D width (128), K classes.

Input: each modality made a fixed-length sequence of L_m steps (the zero-padded, fixed-length
sequences LNLN reads; a longer recording is averaged down to L_m by masked adaptive pooling), its
missing steps zeroed. In training the input is LNLN's noise: per modality a rate r ~ U(0, 1) per
row, 0 on half the rows, and each step dropped with probability r (`draw_noise`); at evaluation a
modality a condition drops is all zeros (rate 1). An encoder per modality (linear to D, then a
transformer with N extra tokens) gives the N extra tokens h_m (B, N, D).

Dominant-modality correction: a completeness check on the language tokens predicts w in (0, 1)
(B, 1), trained towards 1 - r_text; a proxy generator builds proxy language tokens h_p from
audio and video behind a gradient reversal; the dominant tokens are h_d = w h_t + (1 - w) h_p.
An effectiveness discriminator tells h_d (label 1) from the language tokens of the clean input
(label 0). Dominant-modality-based learning: a language encoder over h_d, hyper-modality layers
in which each of its states queries audio and video, a cross-transformer from the hyper tokens to
the last state, and a linear head on the mean of its tokens after the first. A reconstructor per
modality maps the noisy tokens h_m to the clean input's tokens.

Losses (unweighted): `task` cross-entropy (LNLN's MSE regression, made K-way); `completeness` the
MSE of w to 1 - r_text; `adversarial` the discriminator's cross-entropy; `rec` the MSE of the
reconstructed tokens to the clean ones (gradient into both, as published). The last two need the
clean input of every modality, so they are computed where the batch knows every modality of every
row and gradients are on (training), and are 0 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from cmarr.shared.sections import Section
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.lnln_parts import CrossTransformer, GradientReversal, HyperEncoder, TokenTransformer
from cmarr.train.model.pooling import masked_adaptive_pool
from cmarr.train.precision import full_precision
from pydantic import Field
from torch import nn
from torch.nn import functional as F


class LNLNModel(Section):
    """LNLN's modules (configs/train_mosi.yaml at cmarr's feature widths)."""

    width: int = Field(128, gt=0)  # hidden_dims: every token's width D
    heads: int = Field(8, gt=0)
    dim_head: int = Field(64, gt=0)  # each head's width (the blocks' default: heads * 64 = 512 inner)
    mlp: int = Field(128, gt=0)  # feed-forward width of every transformer
    tokens: int = Field(8, gt=0)  # extra tokens per modality encoder (token_length), the modality's summary
    text_length: int = Field(50, gt=0)  # input_length: BERT tokens (MMSA's 50)
    audio_length: int = Field(500, gt=0)  # wav2vec2 frames at 50 Hz: 10 s (MOSEI's 500 steps)
    video_length: int = Field(500, gt=0)  # face frames at 10 fps: 50 s (MOSI's and MOSEI's 500)
    encoder_depth: int = Field(2, gt=0)  # each modality encoder
    proxy_depth: int = Field(2, gt=0)  # proxy dominant feature generator
    completeness_depth: int = Field(2, gt=0)
    reconstructor_depth: int = Field(2, gt=0)
    language_depth: int = Field(2, gt=0)  # the dominant modality's encoder; hyper_depth must be language_depth + 1
    hyper_depth: int = Field(3, gt=0)  # hyper-modality learning layers, one per language-encoder state
    fusion_depth: int = Field(2, gt=0)  # cross-transformer layers (MOSI 2, MOSEI 4)
    discriminator_hidden: int = Field(64, gt=0)
    noise: bool = True  # LNLN's per-step missing noise on the training input (off: the clean input)
    noise_free_share: float = Field(0.5, ge=0, le=1)  # rows per modality whose noise rate is 0


@dataclass
class LNLNOutputs:
    logits: torch.Tensor  # (B, K)
    w: torch.Tensor  # (B, 1) completeness score of the language input
    text_rate: torch.Tensor  # (B,) the text's missing rate: the completeness target is 1 - it
    discriminator: torch.Tensor | None = None  # (2 B N, 2): h_d's tokens, then the clean language tokens
    rec: torch.Tensor | None = None  # (B, 3N, D) reconstructed audio, video, text tokens
    clean: torch.Tensor | None = None  # (B, 3N, D) the clean input's audio, video, text tokens


@dataclass
class Noise:
    """LNLN's missing noise: per modality the rate drawn per row (B,) and the steps kept (B, L_m)."""

    rate: dict[str, torch.Tensor]
    keep: dict[str, torch.Tensor]


class ModalityEncoder(nn.Module):
    """Linear F_m -> D, then a transformer with N extra tokens; returns those tokens (B, N, D)."""

    def __init__(self, features: int, length: int, cfg: LNLNModel):
        super().__init__()
        self.linear = nn.Linear(features, cfg.width)
        self.encoder = TokenTransformer(
            length, cfg.tokens, cfg.width, cfg.encoder_depth, cfg.heads, cfg.dim_head, cfg.mlp
        )
        self.tokens = cfg.tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.linear(x))[:, : self.tokens]


class CompletenessCheck(nn.Module):
    """A transformer with one extra token over the language tokens, then an MLP to a sigmoid score."""

    def __init__(self, cfg: LNLNModel):
        super().__init__()
        D = cfg.width
        self.encoder = TokenTransformer(cfg.tokens, 1, D, cfg.completeness_depth, cfg.heads, cfg.dim_head, cfg.mlp)
        self.head = nn.Sequential(nn.Linear(D, D // 2), nn.LeakyReLU(0.1), nn.Linear(D // 2, 1), nn.Sigmoid())

    def forward(self, h_text: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(h_text)[:, 0])  # (B, 1)


def fixed_length(x: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, F) with mask (B, T) as (B, L, F) zero-padded features and their valid steps (B, L):
    a recording of up to L steps as it is, a longer one averaged down to L (masked adaptive pooling)."""
    B, T, Fm = x.shape
    x = x * mask.unsqueeze(-1).to(x.dtype)
    out, valid = x.new_zeros(B, length, Fm), mask.new_zeros(B, length)
    n = min(T, length)
    out[:, :n], valid[:, :n] = x[:, :n], mask[:, :n]
    long = mask.sum(1) > length
    if long.any():
        pooled = masked_adaptive_pool(x[long].transpose(1, 2), mask[long], length).transpose(1, 2)
        out[long], valid[long] = pooled.to(out.dtype), True
    return out, valid


class LNLN(SystemModel):
    """LNLN's model (one stage): noisy input in training, the condition's input at evaluation."""

    reads_missing_targets = True  # the clean input of every modality: the rec and adversarial targets

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: LNLNModel):
        super().__init__()
        if cfg.hyper_depth != cfg.language_depth + 1:
            raise ValueError("hyper_depth must be language_depth + 1 (one hyper layer per language state)")
        self.modalities, self.cfg = list(dims), cfg
        D, N, h, e, mlp = cfg.width, cfg.tokens, cfg.heads, cfg.dim_head, cfg.mlp
        self.lengths = {"text": cfg.text_length, "audio": cfg.audio_length, "video": cfg.video_length}
        self.proj = nn.ModuleDict({m: ModalityEncoder(f, self.lengths[m], cfg) for m, f in dims.items()})
        self.proxy_tokens = nn.Parameter(torch.ones(1, N, D))  # h_p's start
        self.hyper_tokens = nn.Parameter(torch.ones(1, N, D))  # h_hyper's start
        self.proxy = TokenTransformer(3 * N, N, D, cfg.proxy_depth, h, e, mlp)
        self.discriminator = nn.Sequential(
            nn.Linear(D, cfg.discriminator_hidden), nn.LeakyReLU(0.1), nn.Linear(cfg.discriminator_hidden, 2)
        )
        self.completeness = CompletenessCheck(cfg)
        self.reconstructor = nn.ModuleDict(
            {m: TokenTransformer(N, 0, D, cfg.reconstructor_depth, h, e, mlp) for m in ("audio", "video", "text")}
        )
        self.language = TokenTransformer(N, 0, D, cfg.language_depth, h, e, mlp)
        self.hyper = HyperEncoder(D, cfg.hyper_depth, h, D // h)  # heads of D / H: inner width D, as published
        self.fusion = CrossTransformer(N, N, D, cfg.fusion_depth, h, e, mlp)
        self.head = nn.Linear(D, n_classes)

    def draw_noise(self, valid: dict[str, torch.Tensor]) -> Noise:
        """LNLN's training noise (core/dataset.py): per modality a rate r ~ U(0, 1) per row, 0 on
        a `noise_free_share` of the rows (drawn), each valid step kept with probability 1 - r."""
        rate, keep = {}, {}
        for m in self.modalities:
            B, L = valid[m].shape
            r = torch.rand(B, device=valid[m].device)
            r[torch.randperm(B, device=r.device)[: int(B * self.cfg.noise_free_share)]] = 0.0
            rate[m], keep[m] = r, (torch.rand(B, L, device=r.device) > r[:, None]) & valid[m]
        return Noise(rate, keep)

    def forward(self, batch: Batch, noise: Noise | None = None) -> LNLNOutputs:
        clean, valid = {}, {}
        for m in self.modalities:
            clean[m], valid[m] = fixed_length(batch.x[m], batch.mask[m], self.lengths[m])
        if noise is None and self.training and self.cfg.noise:
            noise = self.draw_noise(valid)
        given = {m: batch.given[m] for m in self.modalities}
        if noise is None:  # the condition's input: a modality it drops is missing altogether
            noise = Noise({m: 1.0 - given[m].float() for m in self.modalities}, valid)
        h = {}
        for m in self.modalities:
            keep = noise.keep[m] & valid[m] & given[m][:, None]
            h[m] = self.proj[m](clean[m] * keep.unsqueeze(-1).to(clean[m].dtype))  # (B, N, D)
        text_rate = torch.where(given["text"], noise.rate["text"], torch.ones_like(noise.rate["text"]))
        w = self.completeness(h["text"])  # (B, 1)
        h_d = self._dominant(h, w)
        out = LNLNOutputs(self._predict(h_d, h), w, text_rate)
        if torch.is_grad_enabled() and all(bool(batch.known[m].all()) for m in self.modalities):
            self._clean_branch(out, h, h_d, clean, valid)
        return out

    def _dominant(self, h: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        """h_d = w h_t + (1 - w) h_p (B, N, D), the proxy built from audio and video behind a
        gradient reversal."""
        N, B = self.cfg.tokens, w.shape[0]
        start = self.proxy_tokens.expand(B, -1, -1)
        h_p = self.proxy(torch.cat([start, h["audio"], h["video"]], 1))[:, :N]
        h_p = GradientReversal.apply(h_p, 1.0)
        w = w.unsqueeze(-1)  # (B, 1, 1)
        return h_p * (1 - w) + h["text"] * w

    def _predict(self, h_d: torch.Tensor, h: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self.language(h_d, hidden=True)  # [h_d + positions, then each layer's output]
        hyper = self.hyper(states, h["audio"], h["video"], self.hyper_tokens.expand(h_d.shape[0], -1, -1))
        fused = self.fusion(hyper, states[-1])  # (B, 1 + N, D)
        return self.head(fused[:, 1:].mean(1))  # (B, K)

    def _clean_branch(self, out: LNLNOutputs, h, h_d, clean, valid) -> None:
        """The reconstructions, the clean input's tokens and the discriminator's logits."""
        order = ("audio", "video", "text")  # LNLN's concat order
        tokens = {m: self.proj[m](clean[m]) for m in order}  # clean[m] is zero off its valid steps
        out.rec = torch.cat([self.reconstructor[m](h[m]) for m in order], 1)  # (B, 3N, D)
        out.clean = torch.cat([tokens[m] for m in order], 1)
        out.discriminator = self.discriminator(torch.cat([h_d, tokens["text"]]).flatten(0, 1))  # (2 B N, 2)

    def losses(self, batch: Batch, out: LNLNOutputs) -> dict[str, torch.Tensor]:
        """{'task', 'completeness', 'adversarial', 'rec'} in fp32 (core/losses.py, unweighted)."""
        with full_precision(batch.labels.device):
            zero = out.logits.float().sum() * 0
            terms = {
                "task": F.cross_entropy(out.logits.float(), batch.labels),
                "completeness": F.mse_loss(out.w.float(), (1.0 - out.text_rate.float())[:, None]),
                "adversarial": zero,
                "rec": zero,
            }
            if out.discriminator is not None:
                n = out.discriminator.shape[0] // 2
                target = torch.cat([torch.ones(n), torch.zeros(n)]).long().to(batch.labels.device)
                terms["adversarial"] = F.cross_entropy(out.discriminator.float(), target)
                terms["rec"] = F.mse_loss(out.rec.float(), out.clean.float())
        return terms

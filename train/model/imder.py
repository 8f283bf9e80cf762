"""IMDer (Wang et al., NeurIPS 2023; mdswyz/IMDer imder.py) on cmarr's store, classifying K classes.

Legend: B batch, T_m input steps of modality m, F_m its feature width, L common length (pooled),
T = L - k + 1 projected steps, D common width, K classes.

Per modality: masked adaptive pooling of the sequence to L steps (in place of IMDer's word
alignment), a Conv1d projection (kernel k, no padding, no bias) to X_m (B, D, T). A modality m a
row does not give is recovered by its score net: the condition is the given modality's X_n (one
given) or cat_m([X_n1, X_n2]) (two given); `sampling_steps` Euler-Maruyama steps of the reverse
SDE draw X~_m from it (without gradient, as published), and rec_m (RCAN) refines it. MulT fusion
over the three sequences (causal, last step), then a residual MLP head with K outputs.

Losses (unweighted): `task` cross-entropy; `score_t`, `score_s`, `score_v` the score-matching error
of the modality's score net on the rows that miss it, conditioned as above (its true X_m is the
target: training only); `rec` the MSE of each recovered X_m to the detached true X_m, summed over
the modalities (IMDer sums them), each a mean over the rows recovering it.

Noise: in training from torch's global generator (seeded by the trainer), in eval mode from a
generator seeded with `sample_seed` at every forward, so scoring a checkpoint twice agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from cmarr.shared.modalities import LETTER
from cmarr.shared.sections import Section
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.dicmor import RCANReconstructor, ResidualHead
from cmarr.train.model.imder_score import ScoreNet, euler_maruyama, score_matching_error
from cmarr.train.model.mult import MulTFusion
from cmarr.train.model.pooling import masked_adaptive_pool
from cmarr.train.precision import full_precision, scatter_rows
from pydantic import Field, ValidationInfo, field_validator
from torch import nn
from torch.nn import functional as F


class IMDerModel(Section):
    """IMDer's modules (mdswyz/IMDer imder.py, MOSI's config: d = 32, 4 crossmodal layers)."""

    width: int = Field(32, gt=0)  # common width d (32 on MOSI and MOSEI); the score nets' first level
    heads: int = Field(8, gt=0)
    layers: int = Field(4, gt=0)  # crossmodal layers (nlevels; MOSEI 6); self-attention: max(layers, 3)
    seq_len: int = Field(50, gt=0)  # common length after masked adaptive pooling (IMDer's word-aligned 50)
    kernel_size: int = Field(3, gt=0)  # projection kernel, no padding: seq_len - kernel_size + 1 steps (48)
    score_channels: tuple[int, int, int, int] = (32, 64, 128, 256)  # the score U-Net's levels (first = width)
    score_embed: int = Field(256, gt=1)  # Gaussian Fourier time-embedding width
    sampling_steps: int = Field(100, ge=2)  # Euler-Maruyama steps per recovery, training and evaluation
    sample_seed: int = 0  # the eval-mode noise generator's seed, at every forward
    rcab_blocks: int = Field(20, gt=0)  # residual channel-attention blocks per reconstructor
    rcab_reduction: int = Field(16, gt=0)
    text_dropout: float = Field(0.0, ge=0, lt=1)  # on the text input
    attn_dropout: float = Field(0.0, ge=0, lt=1)  # attention dropout with text as source, and in self-attention
    attn_dropout_audio: float = Field(0.2, ge=0, lt=1)  # with audio as source
    attn_dropout_video: float = Field(0.0, ge=0, lt=1)  # with video as source
    embed_dropout: float = Field(0.2, ge=0, lt=1)
    relu_dropout: float = Field(0.0, ge=0, lt=1)
    res_dropout: float = Field(0.0, ge=0, lt=1)
    output_dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("heads")
    @classmethod
    def _divides_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % heads:
            raise ValueError(f"must divide width {width}")
        return heads

    @field_validator("kernel_size")
    @classmethod
    def _steps_fit_the_unet(cls, kernel: int, info: ValidationInfo) -> int:
        length = info.data.get("seq_len")
        if length is not None and (kernel > length or (length - kernel + 1) % 8):
            raise ValueError(f"seq_len - kernel_size + 1 must be a positive multiple of 8 (seq_len {length})")
        return kernel

    @field_validator("score_channels")
    @classmethod
    def _first_is_width(cls, channels: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        # every level but the last is group-normed in 32 groups on the way up (the first, on the way
        # down, in 4): all four are multiples of 32
        if channels[0] != info.data.get("width") or any(c % 32 for c in channels):
            raise ValueError("the first level has the common width; every level is a multiple of 32")
        return channels


@dataclass
class IMDerOutputs:
    logits: torch.Tensor  # (B, K)
    projected: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) X_m, zero where not known
    score_error: dict[str, torch.Tensor] = field(default_factory=dict)  # (R_m,) on `scored[m]`
    scored: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) rows whose score error exists
    recovered: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) rec_m(X~_m) on `recovered_rows`
    recovered_rows: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,)


class IMDer(SystemModel):
    """The model of both IMDer stages; `freeze_projections` for the second (its projections come
    from the first and never train again)."""

    reads_missing_targets = True

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: IMDerModel, freeze_projections: bool = False):
        super().__init__()
        self.modalities, self.cfg = list(dims), cfg
        self.frozen = ("proj",) if freeze_projections else ()
        D = cfg.width
        self.proj = nn.ModuleDict({m: nn.Conv1d(f, D, cfg.kernel_size, bias=False) for m, f in dims.items()})
        self.score = nn.ModuleDict({m: ScoreNet(D, cfg.score_channels, cfg.score_embed) for m in dims})
        self.cat = nn.ModuleDict({m: nn.Conv1d(2 * D, D, 1) for m in dims})
        self.rec = nn.ModuleDict({m: RCANReconstructor(D, cfg.rcab_blocks, cfg.rcab_reduction) for m in dims})
        attn = {"text": cfg.attn_dropout, "audio": cfg.attn_dropout_audio, "video": cfg.attn_dropout_video}
        dropouts = {"embed": cfg.embed_dropout, "relu": cfg.relu_dropout, "res": cfg.res_dropout}
        self.fusion = MulTFusion(
            self.modalities, D, cfg.heads, cfg.layers, {**attn, "self": cfg.attn_dropout}, dropouts, causal=True
        )
        self.head = ResidualHead(self.fusion.out_dim, n_classes, cfg.output_dropout)

    def forward(self, batch: Batch) -> IMDerOutputs:
        out = IMDerOutputs(logits=torch.empty(0))
        for m in self.modalities:
            out.projected[m] = self._project(m, batch)
        generator = self._generator(batch)
        conds = {m: self._condition(m, out.projected, batch.given) for m in self.modalities}
        for m, (cond, rows) in conds.items():  # all score matching first, then all sampling (IMDer's order)
            out.scored[m] = rows & batch.known[m]
            if out.scored[m].any():
                x = out.projected[m][out.scored[m]].detach()  # the truth, under no_grad as published
                out.score_error[m] = score_matching_error(self.score[m], x, cond[out.scored[m]], generator)
        seqs = {}
        for m, (cond, rows) in conds.items():
            out.recovered_rows[m] = rows
            out.recovered[m] = torch.zeros_like(out.projected[m])
            if rows.any():
                sample = euler_maruyama(self.score[m], cond[rows].detach(), self.cfg.sampling_steps, generator)
                out.recovered[m] = scatter_rows(rows, self.rec[m](sample), batch.size)
            given = batch.given[m][:, None, None]
            seqs[m] = torch.where(given, out.projected[m], out.recovered[m]).transpose(1, 2)  # (B, T, D)
        out.logits = self.head(self.fusion(seqs))
        return out

    def _generator(self, batch: Batch) -> torch.Generator | None:
        if self.training:
            return None
        device = next(iter(batch.x.values())).device
        return torch.Generator(device).manual_seed(self.cfg.sample_seed)

    def _project(self, m: str, batch: Batch) -> torch.Tensor:
        """X_m (B, D, T) on the rows that hold m's features, zeros elsewhere (never read there)."""
        rows, B = batch.known[m], batch.size
        if not rows.any():
            return batch.x[m].new_zeros(B, self.cfg.width, self.cfg.seq_len - self.cfg.kernel_size + 1)
        mask = batch.mask[m][rows]
        x = (batch.x[m][rows] * mask.unsqueeze(-1)).transpose(1, 2)  # (R, F_m, T_m)
        x = masked_adaptive_pool(x, mask, self.cfg.seq_len)  # (R, F_m, L)
        if m == "text":
            x = F.dropout(x, self.cfg.text_dropout, self.training)
        return scatter_rows(rows, self.proj[m](x), B)

    def _condition(self, m: str, X: dict[str, torch.Tensor], given: dict[str, torch.Tensor]):
        """(condition (B, D, T), rows (B,)): for the rows that do not give m but give another
        modality, the given one's X_n, or cat_m([X_n1, X_n2]) where both are given; zeros elsewhere."""
        n1, n2 = (n for n in self.modalities if n != m)
        rows = ~given[m] & (given[n1] | given[n2])
        both = ~given[m] & given[n1] & given[n2]
        cond = torch.where(given[n1][:, None, None], X[n1], X[n2]) * rows[:, None, None]
        if both.any():
            merged = self.cat[m](torch.cat([X[n1][both], X[n2][both]], 1))  # (R, D, T)
            cond = torch.where(both[:, None, None], scatter_rows(both, merged, len(rows)), cond)
        return cond, rows

    @torch.no_grad()
    def reconstruct(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(true, recovered) time-averaged X_m (B, D) of modality m, which `batch` drops while
        knowing its true features (for Fig. 5; zeros on a row that gives nothing to recover from)."""
        out = self(batch)
        return out.projected[m].mean(-1), out.recovered[m].mean(-1)

    def losses(self, batch: Batch, out: IMDerOutputs) -> dict[str, torch.Tensor]:
        """{'task', 'score_t', 'score_s', 'score_v', 'rec'} in fp32 (IMDER.py's combine_loss, unweighted)."""
        labels = batch.labels
        zero = out.logits.float().sum() * 0
        with full_precision(labels.device):
            terms = {"task": F.cross_entropy(out.logits.float(), labels)}
            for m in self.modalities:
                error = out.score_error.get(m)
                terms[f"score_{LETTER[m]}"] = error.float().mean() if error is not None else zero
            rec = zero
            for m in self.modalities:
                rows = out.recovered_rows[m] & batch.known[m]
                if rows.any():
                    diff = out.recovered[m][rows].float() - out.projected[m][rows].detach().float()
                    rec = rec + diff.pow(2).mean()
            terms["rec"] = rec
        return terms

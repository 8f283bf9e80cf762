"""DiCMoR (Wang et al., ICCV 2023; mdswyz/DiCMoR dicmor.py) on cmarr's store, classifying K classes.

Legend: B batch, T_m input steps of modality m, F_m its feature width, L common length (pooled),
T = L - k + 1 projected steps, D common width, K classes.

Per modality: masked adaptive pooling of the sequence to L steps (in place of DiCMoR's word
alignment, which unaligned wav2vec2/BERT/face sequences do not have), a Conv1d projection
(kernel k, no padding, no bias) to X_m (B, D, T), and a flow F_m to Z_m. A modality a row does not
give is recovered from the flows of those it gives, as DiCMoR does it: with one given modality n,
rec_m(F_m^-1(Z_n)); with two, rec_m(cat_m([F_m^-1(Z_n1), F_m^-1(Z_n2)])); the inverse flows run
without gradient (the published `.detach()`), so the flows learn from their likelihood only.
MulT fusion over the three sequences, then a residual MLP head with K outputs.

Losses (unweighted): `task` cross-entropy; `nll_t`, `nll_s`, `nll_v` each flow's likelihood under
the class prior of the row's label, in bits per dimension; `rec` the MSE of each recovered modality
to its projected true features (training only: those features are read for the target, never for
the prediction). A modality a row does not give is never computed on for the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from cmarr.shared.modalities import LETTER
from cmarr.shared.sections import Section
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.dicmor_flow import ClassPriors, DiCMoRFlow, bits_per_dim
from cmarr.train.model.mult import MulTFusion
from cmarr.train.model.pooling import masked_adaptive_pool
from cmarr.train.model.reconstruction import ResidualChannelAttentionBlock
from cmarr.train.precision import full_precision, scatter_rows
from pydantic import Field, ValidationInfo, field_validator
from torch import nn
from torch.nn import functional as F


class DiCMoRModel(Section):
    """DiCMoR's modules (mdswyz/DiCMoR dicmor.py, MOSI's config: d = 32, 4 crossmodal layers)."""

    width: int = Field(32, gt=0)  # common width d (MOSI 32, MOSEI 64); even, and a multiple of `heads`
    heads: int = Field(8, gt=0)
    layers: int = Field(4, gt=0)  # crossmodal layers (nlevels; MOSEI 6); self-attention: max(layers, 3)
    seq_len: int = Field(50, gt=0)  # common length after masked adaptive pooling (DiCMoR's word-aligned 50)
    kernel_size: int = Field(5, gt=0)  # projection kernel, no padding: seq_len - kernel_size + 1 steps
    flow: Literal["glow", "dicmor-exact"] = "glow"  # glow: whole Glow steps; dicmor-exact: coupling-only steps
    flow_steps: int = Field(32, gt=0)
    flow_hidden: int = Field(64, gt=0)  # channels of each coupling subnet
    rcab_blocks: int = Field(20, gt=0)  # residual channel-attention blocks per reconstructor
    rcab_reduction: int = Field(16, gt=0)  # channel-attention squeeze ratio
    attention: Literal["causal-last", "full-mean"] = "causal-last"  # MulT's causal mask + last step, or neither
    text_dropout: float = Field(0.5, ge=0, lt=1)  # on the text input
    attn_dropout: float = Field(0.3, ge=0, lt=1)  # attention dropout with text as source, and in self-attention
    attn_dropout_audio: float = Field(0.2, ge=0, lt=1)  # attention dropout with audio as source
    attn_dropout_video: float = Field(0.0, ge=0, lt=1)  # attention dropout with video as source
    embed_dropout: float = Field(0.2, ge=0, lt=1)
    relu_dropout: float = Field(0.0, ge=0, lt=1)
    res_dropout: float = Field(0.0, ge=0, lt=1)
    output_dropout: float = Field(0.5, ge=0, lt=1)

    @field_validator("width")
    @classmethod
    def _even(cls, width: int) -> int:
        if width % 2:
            raise ValueError("must be even (each coupling splits the channels in half)")
        return width

    @field_validator("heads")
    @classmethod
    def _divides_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % heads:
            raise ValueError(f"must divide width {width}")
        return heads

    @field_validator("kernel_size")
    @classmethod
    def _fits_length(cls, kernel: int, info: ValidationInfo) -> int:
        length = info.data.get("seq_len")
        if length is not None and kernel > length:
            raise ValueError(f"must not exceed seq_len {length}")
        return kernel


@dataclass
class DiCMoROutputs:
    logits: torch.Tensor  # (B, K)
    projected: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) X_m, zero where not computed
    computed: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) rows whose X_m and Z_m exist
    z: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) fp32
    logdet: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) fp32
    recovered: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) on `recovered_rows`
    recovered_rows: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) rows not giving m, recovered


class RCANReconstructor(nn.Module):
    """DiCMoR's rec_m: 1x1 conv D -> 2D, a group of RCABs closed by a conv3 with the group's
    residual, 1x1 conv back to D. (B, D, T) -> (B, D, T)."""

    def __init__(self, width: int, blocks: int = 20, reduction: int = 16):
        super().__init__()
        self.inp = nn.Conv1d(width, 2 * width, 1)
        self.blocks = nn.ModuleList(ResidualChannelAttentionBlock(2 * width, reduction) for _ in range(blocks))
        self.tail = nn.Conv1d(2 * width, 2 * width, 3, padding=1)
        self.out = nn.Conv1d(2 * width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        mask = torch.ones(h.shape[0], h.shape[2], dtype=torch.bool, device=h.device)  # fixed length: no padding
        g = h
        for block in self.blocks:
            g = block(g, mask)
        return self.out(self.tail(g) + h)


class ResidualHead(nn.Module):
    """proj2(dropout(relu(proj1(h)))) + h, then a K-way output layer (DiCMoR's regression head, made K-way)."""

    def __init__(self, width: int, n_classes: int, dropout: float):
        super().__init__()
        self.proj1, self.proj2 = nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, n_classes)
        self.dropout = dropout

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.proj2(F.dropout(F.relu(self.proj1(h)), self.dropout, self.training)) + h)


class DiCMoR(SystemModel):
    """The model of both DiCMoR stages; `freeze_projections` for the second (its projections come
    from the first and never train again)."""

    reads_missing_targets = True

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: DiCMoRModel, freeze_projections: bool = False):
        super().__init__()
        self.modalities, self.cfg = list(dims), cfg
        self.frozen = ("proj",) if freeze_projections else ()
        D = cfg.width
        self.proj = nn.ModuleDict({m: nn.Conv1d(f, D, cfg.kernel_size, bias=False) for m, f in dims.items()})
        self.flow = nn.ModuleDict({m: DiCMoRFlow(D, cfg.flow_steps, cfg.flow_hidden, cfg.flow) for m in dims})
        self.prior = ClassPriors(n_classes, D)
        self.rec = nn.ModuleDict({m: RCANReconstructor(D, cfg.rcab_blocks, cfg.rcab_reduction) for m in dims})
        self.cat = nn.ModuleDict({m: nn.Conv1d(2 * D, D, 1) for m in dims})
        attn = {"text": cfg.attn_dropout, "audio": cfg.attn_dropout_audio, "video": cfg.attn_dropout_video}
        dropouts = {"embed": cfg.embed_dropout, "relu": cfg.relu_dropout, "res": cfg.res_dropout}
        self.fusion = MulTFusion(
            self.modalities, D, cfg.heads, cfg.layers, {**attn, "self": cfg.attn_dropout}, dropouts,
            causal=cfg.attention == "causal-last",
        )  # fmt: skip
        self.head = ResidualHead(self.fusion.out_dim, n_classes, cfg.output_dropout)
        if cfg.flow == "dicmor-exact":  # DiCMoR's weight_l/v/a: defined, never called; kept for its parameter count
            self.unused = nn.ModuleDict({m: nn.Linear(2 * D, 2 * D) for m in dims})

    def forward(self, batch: Batch) -> DiCMoROutputs:
        out = DiCMoROutputs(logits=torch.empty(0))
        B = batch.size
        for m in self.modalities:
            rows = batch.known[m]  # in training every really-present modality (its Z feeds the likelihood)
            out.computed[m] = rows
            out.projected[m] = self._project(m, batch, rows)
            z, logdet = self.flow[m](out.projected[m][rows])  # fp32
            out.z[m], out.logdet[m] = scatter_rows(rows, z, B), scatter_rows(rows, logdet, B)
        seqs = {}
        for m in self.modalities:
            out.recovered[m], out.recovered_rows[m] = self._recover(m, out.z, batch.given)
            given = batch.given[m][:, None, None]
            seqs[m] = torch.where(given, out.projected[m], out.recovered[m]).transpose(1, 2)  # (B, T, D)
        out.logits = self.head(self.fusion(seqs))
        return out

    def _project(self, m: str, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        """X_m (B, D, T) on `rows`, zeros elsewhere (other rows are never read)."""
        B, D = batch.size, self.cfg.width
        if not rows.any():
            return batch.x[m].new_zeros(B, D, self.cfg.seq_len - self.cfg.kernel_size + 1)
        mask = batch.mask[m][rows]
        x = (batch.x[m][rows] * mask.unsqueeze(-1)).transpose(1, 2)  # (R, F_m, T_m)
        x = masked_adaptive_pool(x, mask, self.cfg.seq_len)  # (R, F_m, L)
        if m == "text":
            x = F.dropout(x, self.cfg.text_dropout, self.training)
        return scatter_rows(rows, self.proj[m](x), B)

    def _recover(self, m: str, z: dict[str, torch.Tensor], given: dict[str, torch.Tensor]):
        """(recovered X_m (B, D, T), rows recovered (B,)): the rows that do not give m but give
        another modality; zeros elsewhere (a row giving nothing has nothing to recover from)."""
        B, template = len(given[m]), z[m]
        sources = [n for n in self.modalities if n != m]
        uses = [~given[m] & given[n] for n in sources]  # (B,) rows recovering m from source n
        rows = uses[0] | uses[1]
        if not rows.any():
            return template.new_zeros(template.shape), rows
        back = []  # F_m^-1(Z_n) (B, D, T) on the rows using source n
        for n, u in zip(sources, uses):
            with torch.no_grad():  # DiCMoR detaches F_m^-1(Z_n): no gradient into either flow
                back.append(scatter_rows(u, self.flow[m].inverse(z[n][u]), B) if u.any() else torch.zeros_like(z[n]))
        x_tilde = back[0] + back[1]  # one source: the other term is zero
        both = uses[0] & uses[1]
        if both.any():
            merged = self.cat[m](torch.cat([b[both] for b in back], 1))  # (R, D, T)
            x_tilde = torch.where(both[:, None, None], scatter_rows(both, merged, B), x_tilde)
        return scatter_rows(rows, self.rec[m](x_tilde[rows]), B), rows

    @torch.no_grad()
    def reconstruct(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(true, recovered) time-averaged X_m (B, D) of modality m, which `batch` drops while
        knowing its true features: the projection of those features (the `rec` loss's target) and
        the recovery from the flows of the modalities given (for Fig. 5; zeros on a row that gives
        nothing to recover from)."""
        out = self(batch)
        return out.projected[m].mean(-1), out.recovered[m].mean(-1)

    def losses(self, batch: Batch, out: DiCMoROutputs) -> dict[str, torch.Tensor]:
        """{'task', 'nll_t', 'nll_s', 'nll_v', 'rec'} in fp32 (DICMOR.py's combine_loss, unweighted)."""
        labels = batch.labels
        with full_precision(labels.device):
            terms = {"task": F.cross_entropy(out.logits.float(), labels)}
            mean, log_sd = self.prior()  # (K, D)
            for m in self.modalities:
                rows = out.computed[m]
                nll = out.logits.float().sum() * 0
                if rows.any():
                    y = labels[rows]
                    nll = bits_per_dim(out.z[m][rows], out.logdet[m][rows], mean[y], log_sd[y])
                terms[f"nll_{LETTER[m]}"] = nll
            terms["rec"] = self._rec_loss(batch, out)
        return terms

    def _rec_loss(self, batch: Batch, out: DiCMoROutputs) -> torch.Tensor:
        """Mean over recovered (row, modality) pairs of the MSE to the detached projected truth,
        on rows whose truth is known; 0 when nothing was recovered. With one missing pattern per
        batch (DiCMoR's schedule) this is the published mean over the missing modalities."""
        errors = []
        for m in self.modalities:
            rows = out.recovered_rows[m] & batch.known[m]
            if rows.any():
                diff = out.recovered[m][rows].float() - out.projected[m][rows].detach().float()
                errors.append(diff.pow(2).mean(dim=(1, 2)))  # (R,)
        return torch.cat(errors).mean() if errors else out.logits.float().sum() * 0

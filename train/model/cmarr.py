"""CM-ARR: alignment (UMC + UDCL), reconstruction (projection, flows, RCAN), refinement (SPCL), fusion.

Legend: B batch, T_m input steps of modality m, F_m its feature width, W UMC width, D common
width, T common length, C classes. Per row, `batch.given[m]` (B,) says whether modality m is given
in the current condition, `batch.known[m]` whether its true features are in the batch (in
training: every really-present modality). A modality that is not given is never computed on for
the prediction: only the training losses read its true features, and only to build targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from cmarr.shared.sections import Section
from cmarr.train.batch import Batch
from cmarr.train.losses import UDCL, reconstruction_loss, supcon_loss
from cmarr.train.model.base import SystemModel
from cmarr.train.model.flow import ModalityFlow, gaussian_nll
from cmarr.train.model.fusion import build_fusion
from cmarr.train.model.projection import Projection
from cmarr.train.model.reconstruction import ReconstructionModule
from cmarr.train.model.stacked import flows_on_rows, reconstruct_on_rows
from cmarr.train.model.uncertainty import Gaussians, UncertaintyModule
from cmarr.train.precision import full_precision, scatter_rows
from pydantic import Field
from torch import nn
from torch.nn import functional as F


class ModelConfig(Section):
    width: int = Field(128, gt=0)  # uncertainty module width (paper: 128)
    heads: int = Field(8, gt=0)  # attention heads in the uncertainty module
    latent_dim: int = Field(64, gt=0)  # common width D of the projections and flows
    latent_len: int = Field(50, gt=0)  # common length T after masked adaptive pooling
    kernel_size: int = Field(5, gt=0)  # Conv1d projection kernel ("same" padding)
    flow_steps: int = Field(32, gt=0)  # Glow steps per modality (DiCMoR's count)
    flow_hidden: int = Field(64, gt=0)  # coupling subnet channels
    rcab_blocks: int = Field(20, gt=0)  # residual channel-attention blocks (one group)
    rcab_reduction: int = Field(16, gt=0)  # channel-attention squeeze ratio
    fusion_heads: int = Field(4, gt=0)
    proj_dim: int = Field(128, gt=0)  # SPCL projection width
    dropout: float = Field(0.1, ge=0, lt=1)
    alignment: Literal["distribution", "point"] = "distribution"  # Table 3 "w/ Point" = point
    umc_attention: bool = True  # Table 3 "w/o attention" switches the UMC's attention off
    fusion: Literal["paper", "all-queries"] = "paper"  # paper: text queries speech and video (Eq. 10-13)


class LossConfig(Section):
    alpha: float = Field(1.0, ge=0)  # UDCL weight
    beta: float = Field(0.1, ge=0)  # SPCL weight (section 4.2; 4.5 calls 0.5 optimal)
    lambda_rec: float = Field(10.0, ge=0)  # reconstruction weight
    w_nll: float = Field(0.1, ge=0)  # flow Gaussian NLL weight (flows get no gradient without it)
    tau_init: float = Field(0.07, gt=0)  # UDCL learnable temperature, initial value
    d2w_scale_init: float = -1 / 200  # a in S = a * D2W + b (must stay negative)
    d2w_shift_init: float = 4.0  # b
    spcl_temperature: float = Field(0.07, gt=0)


@dataclass
class Outputs:
    logits: torch.Tensor  # (B, C)
    embeddings: torch.Tensor | None = None  # (3B, E) SPCL views, normalised
    gaussians: dict[str, Gaussians] = field(default_factory=dict)  # (B, W) statistics, valid on `computed` rows
    computed: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) rows whose modality was encoded
    z: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) flow latents
    logdet: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,)
    projected: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) X_m
    reconstructed: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) X^_m (missing rows)
    rec_target: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, D, T) projection of the UMC mean


def _classifier(width: int, n_classes: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Dropout(dropout), nn.Linear(128, n_classes))


class CMARR(SystemModel):
    reads_missing_targets = True

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: ModelConfig, loss: LossConfig | None = None):
        super().__init__()
        self.modalities = list(dims)
        self.cfg, self.loss_cfg = cfg, loss or LossConfig()
        D, T = cfg.latent_dim, cfg.latent_len
        self.distribution = cfg.alignment == "distribution"  # Table 3's "w/ Point" is point-based throughout
        self.umc = nn.ModuleDict(
            {
                m: UncertaintyModule(f, cfg.width, cfg.heads, cfg.dropout, cfg.umc_attention, self.distribution)
                for m, f in dims.items()
            }
        )
        self.proj = nn.ModuleDict({m: Projection(cfg.width, D, T, cfg.kernel_size) for m in dims})
        self.flow = nn.ModuleDict({m: ModalityFlow(D, cfg.flow_steps, cfg.flow_hidden) for m in dims})
        self.rec = nn.ModuleDict({m: ReconstructionModule(D, cfg.rcab_blocks, cfg.rcab_reduction) for m in dims})
        self.prior = nn.Parameter(torch.zeros(n_classes, D))  # class-conditional latent means, shared by modalities
        nn.init.normal_(self.prior, std=0.5)
        self.fusion = build_fusion(cfg.fusion, D, self.modalities, cfg.fusion_heads, cfg.dropout)
        self.classifier = _classifier(self.fusion.out_dim, n_classes, cfg.dropout)
        self.spcl_head = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, cfg.proj_dim))
        lc = self.loss_cfg
        self.udcl = UDCL(self.distribution, lc.d2w_scale_init, lc.d2w_shift_init, lc.tau_init)

    def forward(self, batch: Batch) -> Outputs:
        out = Outputs(logits=torch.empty(0))
        flows, recs = {m: self.flow[m] for m in self.modalities}, {m: self.rec[m] for m in self.modalities}
        for m in self.modalities:  # alignment (UMC) and projection, on the rows whose features are known
            out.computed[m] = batch.known[m]
            out.gaussians[m], out.projected[m], out.rec_target[m] = self._encode(
                m, batch.x[m], batch.mask[m], batch.known[m]
            )
        out.z, out.logdet = flows_on_rows(flows, out.computed, out.projected)  # Z_m = F_m(X_m), fp32
        z_miss = self._missing_latent(out.z, batch.given)  # (B, D, T), Eq. 7
        missing = {m: ~batch.given[m] for m in self.modalities}
        reconstructed = reconstruct_on_rows(flows, recs, missing, z_miss)  # Eq. 8 and the RCAN, on missing rows
        out.reconstructed = reconstructed or {m: torch.zeros_like(out.projected[m]) for m in self.modalities}
        final = {  # (B, D, T): the given modalities' projections, the missing ones' reconstructions
            m: torch.where(batch.given[m][:, None, None], out.projected[m], out.reconstructed[m])
            for m in self.modalities
        }
        seqs = {m: final[m].transpose(1, 2) for m in self.modalities}  # (B, T, D)
        ones = torch.ones(batch.size, self.cfg.latent_len, dtype=torch.bool, device=self.prior.device)
        out.logits = self.classifier(self.fusion(seqs, {m: ones for m in self.modalities}))  # Eq. 10-13
        views = [F.normalize(self.spcl_head(final[m].mean(-1)), dim=-1) for m in self.modalities]
        out.embeddings = torch.cat(views, 0)  # (M*B, E) SPCL views
        return out

    def _missing_latent(self, z: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 7: per row, the mean of the latents (B, D, T) of the modalities the condition gives."""
        weights = torch.stack([given[m] for m in self.modalities], 1).float()  # (B, M)
        z_stack = torch.stack([z[m] for m in self.modalities], 1)  # (B, M, D, T)
        return (z_stack * weights[..., None, None]).sum(1) / weights.sum(1).clamp(min=1)[:, None, None]

    def _encode(self, m: str, x, mask, rows) -> tuple[Gaussians, torch.Tensor, torch.Tensor]:
        """UMC and projection on `rows` only (other rows stay zero and are never computed on).
        Returns the Gaussians, the projection X_m (B, D, T) of the aligned sequence (a reparameterised
        sample in training) and the reconstruction target: the projection of the UMC *mean*, with
        gradients stopped (a sampled target would be mostly noise at the start of training)."""
        B, D, T = x.shape[0], self.cfg.latent_dim, self.cfg.latent_len
        if not rows.any():
            empty = x.new_zeros(B, D, T)
            zero = x.new_zeros(B, self.cfg.width)
            return Gaussians(None, None, zero, None if not self.distribution else zero + 1), empty, empty
        g = self.umc[m](x[rows], mask[rows])
        sampled = self.training and self.distribution
        seq = g.mu_seq + g.logsig_seq.exp() * torch.randn_like(g.mu_seq) if sampled else g.mu_seq
        projected = self.proj[m](seq, mask[rows])  # (rows, D, T)
        if sampled:
            with torch.no_grad():
                target = self.proj[m](g.mu_seq, mask[rows])
        else:
            target = projected.detach()
        full = Gaussians(  # utterance statistics of the whole batch (zeros on rows not computed)
            None,
            None,
            scatter_rows(rows, g.mu, B),
            None if g.sigma is None else scatter_rows(rows, g.sigma, B),
        )
        return full, scatter_rows(rows, projected, B), scatter_rows(rows, target, B)

    @torch.no_grad()
    def reconstruct(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(true, reconstructed) time-averaged projections (B, D) of modality m, which `batch` drops
        while knowing its true features (for Fig. 5)."""
        out = self(batch)
        return out.rec_target[m].mean(-1), out.reconstructed[m].mean(-1)

    def losses(self, batch: Batch, out: Outputs) -> dict[str, torch.Tensor]:
        """{'cls', 'udcl', 'spcl', 'rec', 'nll'} (Eq. 14, plus the flows' likelihood), in fp32."""
        labels = batch.labels
        with full_precision(labels.device):
            terms = {"cls": F.cross_entropy(out.logits.float(), labels)}
            terms["udcl"] = self.udcl(out.gaussians, out.computed)
            spcl_labels = labels.repeat(len(self.modalities))
            terms["spcl"] = supcon_loss(out.embeddings.float(), spcl_labels, self.loss_cfg.spcl_temperature)
            ones = torch.ones_like(out.z[self.modalities[0]][:, 0], dtype=torch.bool)
            rec, nll = [], []
            for m in self.modalities:
                rows = out.computed[m]
                if rows.any():
                    prior = self.prior[labels[rows]]
                    nll.append(gaussian_nll(out.z[m][rows], prior, out.logdet[m][rows], None).mean())
                dropped = rows & ~batch.given[m]  # reconstructed, and its true projection is known
                pred, target = out.reconstructed[m].float(), out.rec_target[m].float()
                rec.append(reconstruction_loss(pred, target, ones, dropped))
            terms["rec"] = torch.stack(rec).mean()
            terms["nll"] = torch.stack(nll).mean() if nll else terms["cls"] * 0
        return terms


class Baseline(SystemModel):
    """Table 3's full-modality Baseline: the encoders' features projected, the same fusion as
    CM-ARR, no alignment or reconstruction; a missing modality is a zero sequence. Trained on
    complete data only (its stage's sampler is `none`)."""

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: ModelConfig):
        super().__init__()
        self.modalities = list(dims)
        self.cfg = cfg
        self.proj = nn.ModuleDict(
            {m: Projection(f, cfg.latent_dim, cfg.latent_len, cfg.kernel_size) for m, f in dims.items()}
        )
        self.fusion = build_fusion(cfg.fusion, cfg.latent_dim, self.modalities, cfg.fusion_heads, cfg.dropout)
        self.classifier = _classifier(self.fusion.out_dim, n_classes, cfg.dropout)

    def forward(self, batch: Batch) -> Outputs:
        seqs, masks = {}, {}
        for m in self.modalities:
            x = self.proj[m](batch.x[m], batch.mask[m]) * batch.given[m][:, None, None]  # (B, D, T)
            seqs[m] = x.transpose(1, 2)
            masks[m] = torch.ones(x.shape[0], self.cfg.latent_len, dtype=torch.bool, device=x.device)
        return Outputs(logits=self.classifier(self.fusion(seqs, masks)))

    def losses(self, batch: Batch, out: Outputs) -> dict[str, torch.Tensor]:
        with full_precision(batch.labels.device):
            return {"cls": F.cross_entropy(out.logits.float(), batch.labels)}

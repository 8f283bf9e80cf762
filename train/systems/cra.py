"""CRA: the cascaded residual autoencoder (Tran et al., CVPR 2017) as GCNet builds it as a baseline
(zeroQiaoba/GCNet baseline-mmin/models/mmin_CRA_model.py, run_cra.sh).

Utterance-level input: each modality's sequence pooled to one vector (masked mean), zeros when the
condition does not give it. Per modality an MLP encoder to 128, a 2-block autoencoder [256, 128]
over the concatenation [A, L, V] (384), per-modality MLP decoders from the reconstruction back to
each modality's input space, and a classifier on the reconstruction. Losses: CE; recon = squared
error of the decoded inputs of the *missing* modalities, summed over the batch and divided by the
feature width (GCNet's scale, hence the small weight; `recon_norm = "mean"` averages instead).
`target = "embedding"` reconstructs the concatenated embeddings of the complete input (MMIN's way)
instead of the input features. Missingness: cmarr's six conditions, or GCNet's fixed-rate mask.
Weights normal(0, 0.02) as GCNet's script sets. Settings: `[train.cra]`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

import torch
from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.mmin_parts import FcClassifier, ResidualAE, init_weights, slot
from cmarr.train.model.pooling import masked_mean
from cmarr.train.precision import full_precision
from cmarr.train.systems.base import Stage, System
from cmarr.train.systems.registry import register_system
from cmarr.train.systems.utt_fusion import MMIN_FAMILY
from pydantic import Field
from torch import nn
from torch.nn import functional as F


class CRALoss(Section):
    ce: float = Field(1.0, ge=0)
    recon: float = Field(0.02, ge=0)  # GCNet's run_cra.sh sweep: 0.01-0.03 (recon summed over the batch)


class CRAConfig(Section):
    """Cascaded residual autoencoder (Tran et al. 2017) as GCNet's `mmin_CRA` builds it."""

    optim: StageOptim = StageOptim(
        lr=1e-3, beta1=0.5, batch_size=256, epochs=20, decay_epochs=80, clip=5.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128]
    blocks: int = Field(2, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    target: Literal["input", "embedding"] = "input"  # reconstruct the input features (GCNet) or the embeddings
    recon_norm: Literal["sum-over-batch", "mean"] = "sum-over-batch"  # GCNet sums over the batch
    missingness: Literal["six", "fixed-rate"] = "six"  # cmarr's six-condition sampler, or GCNet's fixed mask
    mask_rate: float = Field(0.5, ge=0, lt=1)  # fixed-rate missingness: share of missing modality entries
    loss: CRALoss = CRALoss()


ORDER = ("audio", "text", "video")  # GCNet concatenates A, L, V


class CRA(SystemModel):
    reads_missing_targets = True

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: TrainConfig):
        super().__init__()
        fam, c = cfg.mmin_family, cfg.cra
        e, layers, width = fam.embedding, list(fam.cls_layers), 3 * fam.embedding
        self.target, self.norm = c.target, c.recon_norm
        self.encoders = nn.ModuleDict({m: FcClassifier(dims[m], layers, e, c.dropout) for m in ORDER})
        self.ae = ResidualAE(list(c.ae_layers), c.blocks, width)
        self.decoders = nn.ModuleDict({m: FcClassifier(width, layers, dims[m], c.dropout) for m in ORDER})
        self.classifier = FcClassifier(width, layers, n_classes, c.dropout)
        init_weights(self, "normal")

    def _vectors(self, batch: Batch, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per modality the masked mean of its steps (B, F_m), zeros where `rows` is False."""
        return {m: masked_mean(batch.x[m], batch.mask[m] & rows[m][:, None]) for m in ORDER}

    def _embed(self, vectors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.encoders[m](vectors[m])[0] for m in ORDER], -1)  # (B, 384)

    def forward(self, batch: Batch):
        recon, _ = self.ae(self._embed(self._vectors(batch, batch.given)))
        logits, _ = self.classifier(recon)
        return SimpleNamespace(logits=logits, recon=recon)

    @torch.no_grad()
    def reconstruct(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(m's embedding from its true features, its slot of the reconstruction) (B, E), m dropped."""
        true = self._embed(self._vectors(batch, batch.known))
        return slot(true, m), slot(self(batch).recon, m)

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        missing = {m: batch.known[m] & ~batch.given[m] for m in ORDER}
        full = self._vectors(batch, batch.known)
        with full_precision(batch.labels.device):
            terms = {"ce": F.cross_entropy(out.logits.float(), batch.labels)}
            if self.target == "embedding":
                with torch.no_grad():
                    target = self._embed(full).float()
                e = target.shape[1] // len(ORDER)
                parts = [(out.recon.float()[:, k * e : (k + 1) * e], target[:, k * e : (k + 1) * e], missing[m])
                         for k, m in enumerate(ORDER)]  # fmt: skip
            else:
                parts = [(self.decoders[m](out.recon.float())[0].float(), full[m].float(), missing[m]) for m in ORDER]
            terms["recon"] = sum(self._error(pred, target, rows) for pred, target, rows in parts)
        return terms

    def _error(self, pred, target, rows) -> torch.Tensor:
        err = ((pred - target) ** 2) * rows[:, None].float()
        if self.norm == "sum-over-batch":
            return err.sum() / pred.shape[1]
        return err.sum() / (rows.sum() * pred.shape[1]).clamp(min=1)


def cra(cfg: TrainConfig) -> System:
    c = cfg.cra
    sampler = "six" if c.missingness == "six" else "fixed-rate"
    stage = Stage(
        "cra", lambda dims, k: CRA(dims, k, cfg), c.optim, {"ce": c.loss.ce, "recon": c.loss.recon}, sampler,
        sampler_rate=c.mask_rate,
    )  # fmt: skip
    options = {"target": c.target, "recon_norm": c.recon_norm, "missingness": c.missingness}
    title = "CRA (Tran et al., CVPR 2017) as GCNet's baseline: cascaded residual autoencoder on utterance vectors"
    return System("cra", title, (stage,), options)


FAST = {
    "train.cra.optim.batch_size": 16,
    "train.cra.optim.epochs": 4,
    "train.cra.optim.decay_epochs": 16,
}  # `--preset fast`: see utt_fusion.FAST
register_system("cra", cra, sections={"cra": CRAConfig}, reads=(MMIN_FAMILY, "cra"), fast=FAST, groups=("table2",))

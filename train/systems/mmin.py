"""MMIN (Zhao et al., ACL 2021; AIM3-RUC/MMIN models/mmin_model.py, scripts/CAP_mmin.sh).

Stage 1 is utt-fusion on complete data (`[train.utt_fusion]`). Stage 2 starts its encoders from
stage 1's and keeps a frozen copy as teacher: the student encodes the given modalities
(concatenated [A, L, V], 384), a cascaded residual autoencoder of 5 blocks [256, 128, 64]
"imagines" the missing ones, and the classifier reads the concatenated block latents (320).
Losses: CE; imagination = MSE to the teacher's embeddings of the *reverse* input (the dropped
modalities' true features, the given ones zeroed); cycle = MSE of a backward autoencoder's
output to the student's embeddings. Settings: `[train.mmin]`.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.mmin_parts import (
    FcClassifier,
    ModalityEncoders,
    ResidualAE,
    complete_input,
    given_input,
    init_weights,
    reverse_input,
    slot,
)
from cmarr.train.precision import full_precision
from cmarr.train.systems.base import Link, Stage, System
from cmarr.train.systems.registry import register_system
from cmarr.train.systems.utt_fusion import MMIN_FAMILY, pretraining_stage
from pydantic import Field
from torch.nn import functional as F


class MMINLoss(Section):
    ce: float = Field(1.0, ge=0)
    imagination: float = Field(4.0, ge=0)  # MSE to the teacher's embeddings (scripts/CAP_mmin.sh: 4)
    cycle: float = Field(2.0, ge=0)  # backward autoencoder back to the student's embeddings (2)


class MMINConfig(Section):
    """MMIN (Zhao et al., ACL 2021): utt-fusion pretraining ([train.utt_fusion]), then MMIN with it as teacher."""

    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.5, batch_size=128, epochs=30, decay_epochs=30, clip=1.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128, 64]
    blocks: int = Field(5, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    share_cycle: bool = False  # one autoencoder both ways (MMIN's MSP-IMPROV script)
    loss: MMINLoss = MMINLoss()


ORDER = ModalityEncoders.ORDER


class MMIN(SystemModel):
    frozen = ("teacher",)
    reads_missing_targets = True

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: TrainConfig):
        super().__init__()
        fam, c = cfg.mmin_family, cfg.mmin
        width = 3 * fam.embedding
        self.encoders = ModalityEncoders(dims, fam.embedding, fam.masked_pooling)
        self.ae = ResidualAE(list(c.ae_layers), c.blocks, width)
        self.ae_cycle = self.ae if c.share_cycle else ResidualAE(list(c.ae_layers), c.blocks, width)
        self.classifier = FcClassifier(c.ae_layers[-1] * c.blocks, list(fam.cls_layers), n_classes, c.dropout)
        self.teacher = ModalityEncoders(dims, fam.embedding, fam.masked_pooling)  # utt-fusion's, frozen
        init_weights(self, fam.init)

    def forward(self, batch: Batch):
        feat = self.encoders({m: given_input(batch, m) for m in ORDER})  # (B, 384)
        recon, latent = self.ae(feat)
        logits, _ = self.classifier(latent)
        return SimpleNamespace(logits=logits, feat=feat, recon=recon)

    @torch.no_grad()
    def reconstruct(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher's embedding of m's true features, the imagined m) (B, E), m dropped in `batch`."""
        true = self.teacher({n: complete_input(batch, n) for n in ORDER})
        return slot(true, m), slot(self(batch).recon, m)

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target = self.teacher({m: reverse_input(batch, m) for m in ORDER})
        cycle, _ = self.ae_cycle(out.recon)
        with full_precision(batch.labels.device):
            return {
                "ce": F.cross_entropy(out.logits.float(), batch.labels),
                "imagination": F.mse_loss(out.recon.float(), target.float()),
                "cycle": F.mse_loss(cycle.float(), out.feat.detach().float()),
            }


def mmin(cfg: TrainConfig) -> System:
    w = cfg.mmin.loss
    links = (
        Link("utt-fusion", "init", {"encoders": "encoders"}),
        Link("utt-fusion", "teacher", {"teacher": "encoders"}),
    )
    stage = Stage(
        "mmin", lambda dims, k: MMIN(dims, k, cfg), cfg.mmin.optim,
        {"ce": w.ce, "imagination": w.imagination, "cycle": w.cycle}, "six", links=links,
    )  # fmt: skip
    options = {"masked_pooling": cfg.mmin_family.masked_pooling, "share_cycle": cfg.mmin.share_cycle}
    title = "MMIN (Zhao et al., ACL 2021): utt-fusion pretraining, then imagination with a frozen teacher"
    return System("mmin", title, (pretraining_stage(cfg), stage), options)


FAST = {
    "train.mmin.optim.batch_size": 16,
    "train.mmin.optim.epochs": 6,
    "train.mmin.optim.decay_epochs": 6,
}  # `--preset fast`: see utt_fusion.FAST
register_system(
    "mmin",
    mmin,
    sections={"mmin": MMINConfig},
    reads=(MMIN_FAMILY, "utt_fusion", "mmin"),
    fast=FAST,
    groups=("table2",),
)

"""CIF-MMIN (Liu et al., IEEE TAFFC 2024; ZhuoYulang/CIF-MMIN models/utt_self_supervise_model.py,
models/our/CIF_MMIN_model.py).

Stage 1 (`utt-self-supervise`, complete data): MMIN's specific encoders (classified with CE) and a
separate "consistent" LSTM encoder per modality (text too), trained only by in-batch contrastive
terms between per-modality projection heads (0.25 text-video, 0.25 text-audio, 0.5 video-audio).
Stage 2 starts both encoder sets from stage 1 and keeps them frozen as teacher: the autoencoder is
fed the consistent features at every block, the classifier reads embedding + reconstruction (384).
Losses: CE; imagination (8) = MSE to the teacher's embeddings of the reverse input; consistent
(100) = MSE between the student's consistent features of the given input and the teacher's of the
complete input. Settings: `[train.cif_mmin]`.

Published-code option: `conl_pooling = "last"`: stage 2's text consistent encoder pools by its
last hidden state (the published class default) while stage 1 trained it with maxpool; the
weights load silently either way. Default: maxpool, as trained.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

import torch
from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.mmin_parts import (
    FcClassifier,
    ModalityEncoders,
    ResidualAE,
    cif_contrastive,
    complete_input,
    given_input,
    init_weights,
    reverse_input,
    shared_encoder,
    slot,
)
from cmarr.train.precision import full_precision
from cmarr.train.systems.base import Link, Stage, System
from cmarr.train.systems.registry import register_system
from cmarr.train.systems.utt_fusion import MMIN_FAMILY
from pydantic import Field
from torch import nn
from torch.nn import functional as F


class CIFPretrainLoss(Section):
    ce: float = Field(1.0, ge=0)
    cl_tv: float = Field(0.25, ge=0)  # contrastive text-video (weights hard-coded in CIF-MMIN's backward)
    cl_ta: float = Field(0.25, ge=0)
    cl_va: float = Field(0.5, ge=0)


class CIFMMINLoss(Section):
    ce: float = Field(1.0, ge=0)
    imagination: float = Field(8.0, ge=0)
    consistent: float = Field(100.0, ge=0)


class CIFMMINConfig(Section):
    """CIF-MMIN (Liu et al., TAFFC 2024): contrastive pretraining, then CIF-MMIN."""

    pretrain: StageOptim = StageOptim(
        lr=2e-4, beta1=0.9, batch_size=64, epochs=30, decay_epochs=10, clip=0.5, clip_mode="norm-per-module"
    )
    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.5, batch_size=64, epochs=20, decay_epochs=20, clip=1.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128, 64]
    blocks: int = Field(5, gt=0)
    pretrain_dropout: float = Field(0.3, ge=0, lt=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    conl_pooling: Literal["maxpool", "last"] = "maxpool"  # last = as published (stage 2's text ConL pools by h_n)
    pretrain_loss: CIFPretrainLoss = CIFPretrainLoss()
    loss: CIFMMINLoss = CIFMMINLoss()


ORDER = ModalityEncoders.ORDER


def _consistent(dims, cfg: TrainConfig, text_pooling: str = "maxpool") -> ModalityEncoders:
    fam = cfg.mmin_family
    return ModalityEncoders(dims, fam.embedding, fam.masked_pooling, text="lstm", pooling={"text": text_pooling})


class UttSelfSupervise(SystemModel):
    """Stage 1: CE on the specific encoders, contrastive terms on the consistent ones."""

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: TrainConfig):
        super().__init__()
        fam = cfg.mmin_family
        self.specific = ModalityEncoders(dims, fam.embedding, fam.masked_pooling)
        self.consistent = _consistent(dims, cfg)
        self.heads = nn.ModuleDict({m: shared_encoder(fam.embedding, layer_norm=True) for m in ORDER})
        self.classifier = FcClassifier(
            3 * fam.embedding, list(fam.cls_layers), n_classes, cfg.cif_mmin.pretrain_dropout
        )
        init_weights(self, fam.init)

    def forward(self, batch: Batch):
        inputs = {m: given_input(batch, m) for m in ORDER}
        logits, _ = self.classifier(self.specific(inputs))
        con = self.consistent.embed(inputs)
        return SimpleNamespace(logits=logits, projected={m: self.heads[m](con[m]) for m in ORDER})

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        p = {m: v.float() for m, v in out.projected.items()}
        with full_precision(batch.labels.device):
            return {
                "ce": F.cross_entropy(out.logits.float(), batch.labels),
                "cl_tv": cif_contrastive(p["text"], p["video"]),
                "cl_ta": cif_contrastive(p["text"], p["audio"]),
                "cl_va": cif_contrastive(p["video"], p["audio"]),
            }


class CIFMMIN(SystemModel):
    """Stage 2: consistency-aided imagination with a frozen stage-1 teacher."""

    frozen = ("teacher",)
    reads_missing_targets = True

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: TrainConfig):
        super().__init__()
        fam, c = cfg.mmin_family, cfg.cif_mmin
        self.specific = ModalityEncoders(dims, fam.embedding, fam.masked_pooling)
        self.consistent = _consistent(dims, cfg, "last" if c.conl_pooling == "last" else "maxpool")
        self.ae = ResidualAE(list(c.ae_layers), c.blocks, 3 * fam.embedding)
        self.classifier = FcClassifier(3 * fam.embedding, list(fam.cls_layers), n_classes, c.dropout)
        teacher = {"specific": ModalityEncoders(dims, fam.embedding, fam.masked_pooling)}
        self.teacher = nn.ModuleDict({**teacher, "consistent": _consistent(dims, cfg)})
        init_weights(self, fam.init)

    def forward(self, batch: Batch):
        inputs = {m: given_input(batch, m) for m in ORDER}
        feat, con = self.specific(inputs), self.consistent(inputs)
        x_in, x_out = feat, feat
        for encoder, decoder in self.ae.blocks():  # block 1 reads x + c, block k the last output + c
            x_in = x_out + con
            x_out = decoder(encoder(x_in))
        recon = self.ae.transition(x_in + x_out)
        logits, _ = self.classifier(feat + recon)
        return SimpleNamespace(logits=logits, recon=recon, consistent=con)

    @torch.no_grad()
    def reconstruct(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher's embedding of m's true features, the imagined m) (B, E), m dropped in `batch`."""
        true = self.teacher["specific"]({n: complete_input(batch, n) for n in ORDER})
        return slot(true, m), slot(self(batch).recon, m)

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target = self.teacher["specific"]({m: reverse_input(batch, m) for m in ORDER})
            consistent = self.teacher["consistent"]({m: complete_input(batch, m) for m in ORDER})
        with full_precision(batch.labels.device):
            return {
                "ce": F.cross_entropy(out.logits.float(), batch.labels),
                "imagination": F.mse_loss(out.recon.float(), target.float()),
                "consistent": F.mse_loss(out.consistent.float(), consistent.float()),
            }


def cif_mmin(cfg: TrainConfig) -> System:
    c = cfg.cif_mmin
    pw = c.pretrain_loss
    pre = Stage(
        "utt-self-supervise", lambda dims, k: UttSelfSupervise(dims, k, cfg), c.pretrain,
        {"ce": pw.ce, "cl_tv": pw.cl_tv, "cl_ta": pw.cl_ta, "cl_va": pw.cl_va}, "none", select_on="full",
    )  # fmt: skip
    links = (
        Link("utt-self-supervise", "init", {"specific": "specific", "consistent": "consistent"}),
        Link("utt-self-supervise", "teacher", {"teacher.specific": "specific", "teacher.consistent": "consistent"}),
    )
    weights = {"ce": c.loss.ce, "imagination": c.loss.imagination, "consistent": c.loss.consistent}
    main = Stage("cif-mmin", lambda dims, k: CIFMMIN(dims, k, cfg), c.optim, weights, "six", links=links)
    options = {"masked_pooling": cfg.mmin_family.masked_pooling, "conl_pooling": c.conl_pooling}
    title = "CIF-MMIN (Liu et al., TAFFC 2024): contrastive pretraining, then consistency-aided imagination"
    return System("cif-mmin", title, (pre, main), options)


FAST = {
    "train.cif_mmin.pretrain.batch_size": 16,
    "train.cif_mmin.pretrain.epochs": 6,
    "train.cif_mmin.pretrain.decay_epochs": 2,
    "train.cif_mmin.optim.batch_size": 16,
    "train.cif_mmin.optim.epochs": 4,
    "train.cif_mmin.optim.decay_epochs": 4,
}  # `--preset fast`: see utt_fusion.FAST
register_system(
    "cif-mmin",
    cif_mmin,
    sections={"cif_mmin": CIFMMINConfig},
    reads=(MMIN_FAMILY, "cif_mmin"),
    fast=FAST,
    groups=("table2",),
)

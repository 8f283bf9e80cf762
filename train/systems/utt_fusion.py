"""utt-fusion: MMIN's full-modality model (AIM3-RUC/MMIN models/utt_fusion_model.py), and the teacher
MMIN trains against.

Encoders A: LSTM (maxpool), L: TextCNN, V: LSTM (maxpool), 128 each, concatenated [A, L, V] ->
FcClassifier(384, [128, 128], K, dropout 0.3); CE only, trained on complete data, selected on the
validation UAR of the full condition. At test a missing modality is a zero input.
Settings: `[train.utt_fusion]` and `[train.mmin_family]`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

import torch
from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.mmin_parts import FcClassifier, ModalityEncoders, given_input, init_weights
from cmarr.train.precision import full_precision
from cmarr.train.systems.base import Stage, System
from cmarr.train.systems.registry import register_system
from pydantic import Field
from torch.nn import functional as F

MMIN_FAMILY = "mmin_family"  # the section of the modules every MMIN-family system shares


class MMINFamilyConfig(Section):
    """Modules every MMIN-family system shares (AIM3-RUC/MMIN models/networks)."""

    embedding: int = Field(128, gt=0)  # per-modality utterance embedding (LSTM hidden size, TextCNN output)
    cls_layers: list[int] = [128, 128]  # FcClassifier hidden layers
    masked_pooling: bool = True  # false = as published: LSTMs and TextCNN run over padding, max includes it
    init: Literal["kaiming", "default"] = "kaiming"  # Linear/Conv weights kaiming-normal, zero biases (MMIN)


class UttFusionConfig(Section):
    """MMIN's full-modality model (`utt_fusion`); also the teacher MMIN trains against."""

    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.9, batch_size=128, epochs=10, decay_epochs=10, clip=0.5, clip_mode="norm-per-module"
    )
    dropout: float = Field(0.3, ge=0, lt=1)


class UttFusion(SystemModel):
    def __init__(self, dims: dict[str, int], n_classes: int, cfg: TrainConfig):
        super().__init__()
        fam = cfg.mmin_family
        self.encoders = ModalityEncoders(dims, fam.embedding, fam.masked_pooling)
        self.classifier = FcClassifier(3 * fam.embedding, list(fam.cls_layers), n_classes, cfg.utt_fusion.dropout)
        init_weights(self, fam.init)

    def forward(self, batch: Batch):
        feat = self.encoders({m: given_input(batch, m) for m in ModalityEncoders.ORDER})
        logits, _ = self.classifier(feat)
        return SimpleNamespace(logits=logits)

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        with full_precision(batch.labels.device):
            return {"ce": F.cross_entropy(out.logits.float(), batch.labels)}


def pretraining_stage(cfg: TrainConfig, name: str = "utt-fusion") -> Stage:
    """The full-data stage MMIN (and this system) trains first."""
    return Stage(
        name, lambda dims, k: UttFusion(dims, k, cfg), cfg.utt_fusion.optim, {"ce": 1.0}, "none", select_on="full"
    )


def utt_fusion(cfg: TrainConfig) -> System:
    title = "MMIN's full-modality model (Zhao et al., ACL 2021)"
    options = {"masked_pooling": cfg.mmin_family.masked_pooling, "init": cfg.mmin_family.init}
    return System("utt-fusion", title, (pretraining_stage(cfg),), options)


# `--preset fast` for every MMIN-family system: about a fifth of each published schedule, the same
# shape, in batches of 16: the published 64-256 exceed a small store's training part (the demo's: 96
# utterances), which leaves one step per epoch and a model at chance
FAST = {
    "train.utt_fusion.optim.batch_size": 16,
    "train.utt_fusion.optim.epochs": 4,
    "train.utt_fusion.optim.decay_epochs": 4,
}
register_system(
    "utt-fusion", utt_fusion, sections={MMIN_FAMILY: MMINFamilyConfig, "utt_fusion": UttFusionConfig},
    fast=FAST, groups=("table2",),
)  # fmt: skip

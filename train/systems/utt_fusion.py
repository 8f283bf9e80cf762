"""utt-fusion: MMIN's full-modality model (AIM3-RUC/MMIN models/utt_fusion_model.py), and the teacher
MMIN trains against.

Encoders A: LSTM (maxpool), L: TextCNN, V: LSTM (maxpool), 128 each, concatenated [A, L, V] ->
FcClassifier(384, [128, 128], K, dropout 0.3); CE only, trained on complete data, selected on the
validation UAR of the full condition. At test a missing modality is a zero input.
Settings: `[train.utt_fusion]` and `[train.mmin_family]`.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.mmin_parts import FcClassifier, ModalityEncoders, given_input, init_weights
from cmarr.train.precision import full_precision
from cmarr.train.systems.base import Stage, System
from torch.nn import functional as F


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
    return System("utt-fusion", title, (pretraining_stage(cfg),), options, family_sections(cfg, "utt_fusion"))


def family_sections(cfg: TrainConfig, *names: str) -> dict:
    """The config sections an MMIN-family system reads (they make its run id)."""
    return {n: getattr(cfg, n).model_dump(mode="json") for n in ("mmin_family", *names)}

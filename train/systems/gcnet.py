"""GCNet (Lian et al., TPAMI 2023; zeroQiaoba/GCNet gcnet/): graph completion of missing modalities
over a conversation (model: train/model/gcnet.py).

One stage. Its batches are whole dialogs (`batch_size` dialogs each, the store's utterances of a
dialog in `start` order: StoreData.dialog_batches), as GCNet's loader batches conversations; at
evaluation each dialog is read whole under the condition (every utterance of it in the store as
context), its requested utterances scored. Missingness in training: GCNet's own, a CPM-Net-style
mask at `mask_rate` drawn anew every epoch (`--mask-type constant-0.2`), or cmarr's six conditions;
the test protocol is cmarr's (six missing conditions and the full one, per utterance). Loss:
ce + recon, both weight 1 (train_gcnet.py with --loss-recon). Adam, lr 1e-3, L2 1e-5, 100 epochs,
no clipping (the README's command); selection on the validation part (GCNet's reads the test
fold). Settings: `[train.gcnet]`.
"""

from __future__ import annotations

from typing import Literal

from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.model.gcnet import GCNet, GCNetModel
from cmarr.train.systems.base import Stage, System
from cmarr.train.systems.registry import register_system
from pydantic import Field


class GCNetLoss(Section):
    ce: float = Field(1.0, ge=0)
    recon: float = Field(1.0, ge=0)  # the dropped modalities' utterance vectors (MaskedReconLoss)


class GCNetConfig(Section):
    """GCNet (Lian et al., TPAMI 2023): LSTM over the dialog, temporal and speaker graphs, completion."""

    # batch_size counts dialogs (GCNet's default 32); no clipping, as train_gcnet.py
    optim: StageOptim = StageOptim(lr=1e-3, weight_decay=1e-5, batch_size=32, epochs=100)
    missingness: Literal["epoch-rate", "six"] = "epoch-rate"  # GCNet's per-epoch mask, or cmarr's six conditions
    mask_rate: float = Field(0.2, ge=0, le=0.7)  # GCNet's README: --mask-type constant-0.2
    model: GCNetModel = GCNetModel()
    loss: GCNetLoss = GCNetLoss()


def gcnet(cfg: TrainConfig) -> System:
    c = cfg.gcnet
    stage = Stage(
        "gcnet", lambda dims, k: GCNet(dims, k, c.model), c.optim, {"ce": c.loss.ce, "recon": c.loss.recon},
        c.missingness, sampler_rate=c.mask_rate,
    )  # fmt: skip
    options = {"missingness": c.missingness, "mask_rate": c.mask_rate, "recon_mask": c.model.recon_mask}
    title = "GCNet (Lian et al., TPAMI 2023): graph completion over the conversation's utterances"
    return System("gcnet", title, (stage,), options)


# `--preset fast`: a fifth of the epochs; two dialogs per batch (the least a stage takes), so that a
# corpus of few conversations (the demo's five, one per session) still takes steps an epoch, as
# IEMOCAP's 120 training dialogs do in batches of 32
FAST = {
    "train.gcnet.optim.batch_size": 2,
    "train.gcnet.optim.epochs": 20,
    "train.gcnet.model.hidden": 32,
}
register_system("gcnet", gcnet, sections={"gcnet": GCNetConfig}, fast=FAST, groups=("table2",))

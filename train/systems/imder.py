"""IMDer (Wang et al., NeurIPS 2023; mdswyz/IMDer): score-based diffusion recovers a missing
modality from the available ones, then MulT fusion classifies (on wav2vec2 speech features here).

Stage 1 (`imder-full`) trains the whole model on complete data, every parameter trainable (the
authors' `pretrained-<dataset>.pth`; no diffusion without a missing modality), selected on the
validation UAR of the full condition. Stage 2 (`imder`) starts from all of stage 1's weights, keeps
its projections frozen (the published code computes them under `no_grad`), and trains with the
authors' batch schedule at `missing_rate` or cmarr's six conditions, selected on the validation UAR
averaged over the six missing conditions. Loss: task + 0.1 (score_t + score_s + score_v + rec).
Settings: `[train.imder]`; docs/systems/imder.md.
"""

from __future__ import annotations

from typing import Literal

from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.model.imder import IMDer, IMDerModel
from cmarr.train.systems.base import System
from cmarr.train.systems.dicmor import full_then_missing
from cmarr.train.systems.registry import register_system
from pydantic import Field

# Sub-modules stage 2 takes from stage 1 and trains on (`proj` is taken frozen).
TRAINED_FROM_STAGE_1 = ("score", "cat", "rec", "fusion", "head")


class IMDerLoss(Section):
    task: float = Field(1.0, ge=0)  # cross-entropy (the published L1 regression loss, made K-way)
    score: float = Field(0.1, ge=0)  # each missing modality's score-matching error
    rec: float = Field(0.1, ge=0)  # MSE of each recovered modality to its projected true features


# config.json's MOSI values (IEMOCAP is nearer MOSI's size than MOSEI's): Adam 2e-3, batch 32,
# clip_grad_value_ 1.0, early stop 20; no epoch cap there (`while True`), 100 here
_IMDER_OPTIM = StageOptim(lr=2e-3, batch_size=32, epochs=100, patience=20, clip=1.0, clip_mode="value")


class IMDerConfig(Section):
    """IMDer (Wang et al., NeurIPS 2023): a full-data stage, then the missing-modality stage
    starting from it with its projections frozen."""

    pretrain: StageOptim = _IMDER_OPTIM  # stage 1, complete data (the authors' pretrained-<dataset>.pth)
    optim: StageOptim = _IMDER_OPTIM  # stage 2, with missingness
    missingness: Literal["batch-schedule", "six"] = "batch-schedule"  # IMDER.py's schedule or cmarr's six
    missing_rate: Literal[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] = 0.5  # batch-schedule's MR (0.5: the test grid's mean)
    model: IMDerModel = IMDerModel()
    loss: IMDerLoss = IMDerLoss()


def imder(cfg: TrainConfig) -> System:
    c = cfg.imder
    w = c.loss
    weights = {"task": w.task, "score_t": w.score, "score_s": w.score, "score_v": w.score, "rec": w.rec}
    full, missing = full_then_missing(
        "imder", lambda dims, k, frozen: IMDer(dims, k, c.model, freeze_projections=frozen), c.pretrain, c.optim,
        weights, c.missingness, c.missing_rate, TRAINED_FROM_STAGE_1,
    )  # fmt: skip
    options = {
        "sampling_steps": c.model.sampling_steps,
        "missingness": c.missingness,
        "missing_rate": c.missing_rate if c.missingness == "batch-schedule" else None,
    }
    title = "IMDer (Wang et al., NeurIPS 2023, on wav2vec2 features): score-based diffusion recovers missing modalities"
    return System("imder", title, (full, missing), options)


FAST = {
    "train.imder.pretrain.batch_size": 16,
    "train.imder.pretrain.epochs": 2,
    "train.imder.pretrain.patience": 1,
    "train.imder.optim.batch_size": 16,
    "train.imder.optim.epochs": 2,
    "train.imder.optim.patience": 1,
    "train.imder.model.layers": 1,
    "train.imder.model.score_channels": (32, 32, 32, 32),
    "train.imder.model.score_embed": 32,
    "train.imder.model.sampling_steps": 2,
    "train.imder.model.rcab_blocks": 2,
}  # `--preset fast`
register_system("imder", imder, sections={"imder": IMDerConfig}, fast=FAST, groups=("table2",))

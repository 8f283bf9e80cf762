"""DiCMoR (Wang et al., ICCV 2023; mdswyz/DiCMoR), the paper's "DiCMoR+": DiCMoR on wav2vec2 speech
features, which is what every DiCMoR run on cmarr's store is.

Stage 1 (`dicmor-full`) trains the whole model on complete data, every parameter trainable (the
authors' `pretrained-<dataset>.pth`), selected on the validation UAR of the full condition.
Stage 2 (`dicmor`) starts from all of stage 1's weights, keeps its projections frozen (the
published code computes them under `no_grad`), and trains with DiCMoR's batch schedule at
`missing_rate` or cmarr's six conditions, selected on the validation UAR averaged over the six
missing conditions. Loss: task + 0.1 (nll_t + nll_s + nll_v + rec). Settings: `[train.dicmor]`.
"""

from __future__ import annotations

from typing import Literal

from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.model.dicmor import DiCMoR, DiCMoRModel
from cmarr.train.systems.base import Link, Stage, System
from cmarr.train.systems.registry import register_system
from pydantic import Field

# Sub-modules stage 2 takes from stage 1 and trains on (`proj` is taken frozen; `unused` is inert).
TRAINED_FROM_STAGE_1 = ("flow", "prior", "rec", "cat", "fusion", "head")


class DiCMoRLoss(Section):
    task: float = Field(1.0, ge=0)  # cross-entropy (the published code's L1 regression loss, made K-way)
    nll: float = Field(0.1, ge=0)  # each modality's flow likelihood (bits per dimension)
    rec: float = Field(0.1, ge=0)  # MSE of the recovered missing modality to its projected true features


_DICMOR_OPTIM = StageOptim(lr=1e-4, batch_size=32, epochs=100, patience=10, clip=0.6, clip_mode="value")


class DiCMoRConfig(Section):
    """DiCMoR (Wang et al., ICCV 2023), "DiCMoR+" on wav2vec2 features: a full-data stage, then the
    missing-modality stage starting from it with its projections frozen."""

    pretrain: StageOptim = _DICMOR_OPTIM  # stage 1, complete data (the authors' pretrained-<dataset>.pth)
    optim: StageOptim = _DICMOR_OPTIM  # stage 2, with missingness
    missingness: Literal["batch-schedule", "six"] = "batch-schedule"  # DiCMoR's schedule or cmarr's six conditions
    missing_rate: Literal[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] = 0.5  # batch-schedule's MR (0.5: the test grid's mean)
    model: DiCMoRModel = DiCMoRModel()
    loss: DiCMoRLoss = DiCMoRLoss()


def full_then_missing(
    name: str,
    build,
    pretrain: StageOptim,
    optim: StageOptim,
    weights: dict[str, float],
    missingness: str,
    missing_rate: float,
    trained: tuple[str, ...],
) -> tuple[Stage, Stage]:
    """DiCMoR's two stages, which IMDer (built on its code base) shares: `<name>-full` trains every
    parameter on complete data, selected on the full condition; `<name>` starts from all of its
    weights, the projections `proj` taken frozen and the sub-modules `trained` trained on, under
    `missingness` at `missing_rate`. `build(dims, classes, freeze_projections)` makes the model."""
    full = Stage(f"{name}-full", lambda dims, k: build(dims, k, False), pretrain, weights, "none", select_on="full")
    links = (
        Link(f"{name}-full", "frozen", {"proj": "proj"}),
        Link(f"{name}-full", "init", {module: module for module in trained}),
    )
    missing = Stage(
        name, lambda dims, k: build(dims, k, True), optim, weights, missingness, links=links,
        sampler_rate=missing_rate,
    )  # fmt: skip
    return full, missing


def dicmor(cfg: TrainConfig) -> System:
    c = cfg.dicmor
    w = c.loss
    weights = {"task": w.task, "nll_t": w.nll, "nll_s": w.nll, "nll_v": w.nll, "rec": w.rec}
    full, missing = full_then_missing(
        "dicmor", lambda dims, k, frozen: DiCMoR(dims, k, c.model, freeze_projections=frozen), c.pretrain, c.optim,
        weights, c.missingness, c.missing_rate, TRAINED_FROM_STAGE_1,
    )  # fmt: skip
    options = {
        "flow": c.model.flow,
        "attention": c.model.attention,
        "missingness": c.missingness,
        "missing_rate": c.missing_rate if c.missingness == "batch-schedule" else None,
    }
    title = "DiCMoR+ (Wang et al., ICCV 2023, on wav2vec2 features): flows across modalities, full-data stage first"
    return System("dicmor", title, (full, missing), options)


FAST = {
    "train.dicmor.pretrain.batch_size": 16,
    "train.dicmor.pretrain.epochs": 4,
    "train.dicmor.pretrain.patience": 2,
    "train.dicmor.optim.batch_size": 16,
    "train.dicmor.optim.epochs": 6,
    "train.dicmor.optim.patience": 3,
    "train.dicmor.model.flow_steps": 4,
    "train.dicmor.model.rcab_blocks": 2,
}  # `--preset fast`
register_system("dicmor", dicmor, sections={"dicmor": DiCMoRConfig}, fast=FAST, groups=("table2",))

"""MPLMM (Guo et al., ACL 2024; zrguo/MPLMM): missing-aware prompts on a pre-trained MulT backbone.

Stage 1 (`mplmm-full`) trains the MulT backbone without prompts on complete data (the README's
pre-training run, `--drop_rate 0`; the authors pre-train on CMU-MOSEI, cmarr on the fold's own
training part), selected on the validation UAR of the full condition. Stage 2 (`mplmm`) is the
prompt model: it takes stage 1's crossmodal and self-attention encoders and its residual head's
two layers, frozen (the peer's `transfer_model`); the projections and the output layer start
afresh and train with the prompts, under MPLMM's missingness (`drop-rate`: per utterance, at
`drop_rate` one of the six missing conditions, else full), selected on the validation UAR averaged
over the six missing conditions. Loss: cross-entropy. Settings: `[train.mplmm]`.
"""

from __future__ import annotations

from typing import Literal

from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.model.mplmm import BACKBONE, MPLMM, MPLMMModel
from cmarr.train.systems.base import Link, Stage, System
from cmarr.train.systems.registry import register_system
from pydantic import Field

# main.py's defaults, which the README's runs keep: Adam 1e-3, batch 64, 40 epochs, clip_grad_norm_ 0.8
_MPLMM_OPTIM = StageOptim(lr=1e-3, batch_size=64, epochs=40, clip=0.8, clip_mode="norm")


class MPLMMConfig(Section):
    """MPLMM (Guo et al., ACL 2024): a full-data MulT stage, then missing-aware prompts on its frozen
    backbone."""

    pretrain: StageOptim = _MPLMM_OPTIM  # stage 1, complete data, no prompts (the README's pre-training run)
    optim: StageOptim = _MPLMM_OPTIM  # stage 2, prompts, with missingness
    missingness: Literal["drop-rate", "six"] = "drop-rate"  # MPLMM's drop_rate draw, or cmarr's six conditions
    drop_rate: float = Field(0.7, ge=0, le=1)  # the README's fine-tuning runs: --drop_rate 0.7
    model: MPLMMModel = MPLMMModel()


def mplmm(cfg: TrainConfig) -> System:
    c = cfg.mplmm
    weights = {"task": 1.0}
    full = Stage("mplmm-full", lambda dims, k: MPLMM(dims, k, c.model), c.pretrain, weights, "none", select_on="full")
    links = (Link("mplmm-full", "init", {name: name for name in BACKBONE}),)  # frozen by the model (see MPLMM)
    prompted = Stage(
        "mplmm", lambda dims, k: MPLMM(dims, k, c.model, prompts=True), c.optim, weights, c.missingness,
        links=links, sampler_rate=c.drop_rate,
    )  # fmt: skip
    options = {"missingness": c.missingness, "drop_rate": c.drop_rate if c.missingness == "drop-rate" else None}
    title = "MPLMM (Guo et al., ACL 2024): missing-aware prompts on a frozen MulT pre-trained on complete data"
    return System("mplmm", title, (full, prompted), options)


FAST = {
    "train.mplmm.pretrain.batch_size": 16,
    "train.mplmm.pretrain.epochs": 3,
    "train.mplmm.optim.batch_size": 16,
    "train.mplmm.optim.epochs": 4,
    "train.mplmm.model.layers": 2,
    "train.mplmm.model.audio_len": 100,
}  # `--preset fast`
register_system("mplmm", mplmm, sections={"mplmm": MPLMMConfig}, fast=FAST, groups=("table2",))

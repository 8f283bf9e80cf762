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

from cmarr.shared.train_config import TrainConfig
from cmarr.train.model.dicmor import DiCMoR
from cmarr.train.systems.base import Link, Stage, System

# Sub-modules stage 2 takes from stage 1 and trains on (`proj` is taken frozen; `unused` is inert).
TRAINED_FROM_STAGE_1 = ("flow", "prior", "rec", "cat", "fusion", "head")


def dicmor(cfg: TrainConfig) -> System:
    c = cfg.dicmor
    w = c.loss
    weights = {"task": w.task, "nll_t": w.nll, "nll_s": w.nll, "nll_v": w.nll, "rec": w.rec}
    full = Stage("dicmor-full", lambda dims, k: DiCMoR(dims, k, c.model), c.pretrain, weights, "none", select_on="full")
    links = (
        Link("dicmor-full", "frozen", {"proj": "proj"}),
        Link("dicmor-full", "init", {name: name for name in TRAINED_FROM_STAGE_1}),
    )
    missing = Stage(
        "dicmor", lambda dims, k: DiCMoR(dims, k, c.model, freeze_projections=True), c.optim, weights,
        c.missingness, links=links, sampler_rate=c.missing_rate,
    )  # fmt: skip
    options = {
        "flow": c.model.flow,
        "attention": c.model.attention,
        "missingness": c.missingness,
        "missing_rate": c.missing_rate if c.missingness == "batch-schedule" else None,
    }
    title = "DiCMoR+ (Wang et al., ICCV 2023, on wav2vec2 features): flows across modalities, full-data stage first"
    return System("dicmor", title, (full, missing), options, {"dicmor": c.model_dump(mode="json")})

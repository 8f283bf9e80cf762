"""CM-ARR (the paper), its Table-3 ablations and the paper's full-modality Baseline.

All read `[train.cm_arr]`: one stage each, AdamW at the paper's lr 1e-5, batch 16, 100 epochs,
early stopping on validation UAR averaged over the six missing conditions.

- `cm-arr`: L = CE + alpha UDCL + beta SPCL + lambda REC + w_nll NLL, six conditions per utterance;
- `no-udcl`, `no-spcl`: the same with that term's weight 0 (the term is still logged);
- `no-attention`: the uncertainty module without its attention (the fusion keeps its attention:
  without it the fusion would no longer be the Baseline's);
- `point`: point-based alignment (cosine InfoNCE, no variance head, nothing sampled);
- `baseline`: projection + the same fusion, CE only, trained on complete data; at test a missing
  modality is a zero sequence.
"""

from __future__ import annotations

from functools import partial

from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.model.cmarr import CMARR, Baseline, LossConfig, ModelConfig
from cmarr.train.systems.base import Stage, System
from cmarr.train.systems.registry import register_system

TITLES = {
    "cm-arr": "CM-ARR (Sun et al.): alignment, reconstruction, refinement",
    "no-udcl": "CM-ARR without UDCL (Table 3, w/o L_udcl)",
    "no-spcl": "CM-ARR without SPCL (Table 3, w/o L_spcl)",
    "no-attention": "CM-ARR without the uncertainty module's attention (Table 3, w/o attention)",
    "point": "CM-ARR with point-based alignment (Table 3, w/ Point)",
}
ABLATIONS = ("no-udcl", "no-spcl", "no-attention", "point")


class CMARRConfig(Section):
    """CM-ARR, its Table-3 ablations and the paper's Baseline (section 4.2: lr 1e-5, batch 16, 100 epochs)."""

    optim: StageOptim = StageOptim(
        optimizer="adamw", lr=1e-5, batch_size=16, epochs=100, patience=10, clip=1.0, clip_mode="norm"
    )
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()


def cm_arr(cfg: TrainConfig, variant: str = "cm-arr") -> System:
    """CM-ARR or one of its ablations (`variant` in ABLATIONS)."""
    c = cfg.cm_arr
    model_cfg = c.model
    if variant == "no-attention":
        model_cfg = model_cfg.model_copy(update={"umc_attention": False})
    elif variant == "point":
        model_cfg = model_cfg.model_copy(update={"alignment": "point"})
    lw = c.loss
    weights = {
        "cls": 1.0,
        "udcl": 0.0 if variant == "no-udcl" else lw.alpha,
        "spcl": 0.0 if variant == "no-spcl" else lw.beta,
        "rec": lw.lambda_rec,
        "nll": lw.w_nll,
    }
    stage = Stage(variant, lambda dims, k: CMARR(dims, k, model_cfg, lw), c.optim, weights, sampler="six")
    options = {"fusion": model_cfg.fusion, "alignment": model_cfg.alignment, "umc_attention": model_cfg.umc_attention}
    return System(variant, TITLES[variant], (stage,), options)


def baseline(cfg: TrainConfig) -> System:
    c = cfg.cm_arr
    stage = Stage("baseline", lambda dims, k: Baseline(dims, k, c.model), c.optim, {"cls": 1.0}, sampler="none")
    title = "Baseline (Table 3): CM-ARR's projection and fusion, trained on complete data"
    return System("baseline", title, (stage,), {"fusion": c.model.fusion})


# `--preset fast`: a short schedule at a higher rate, and small flows and reconstruction stacks
FAST = {
    "train.cm_arr.optim.lr": 1e-3,
    "train.cm_arr.optim.epochs": 20,
    "train.cm_arr.optim.patience": 5,
    "train.cm_arr.model.flow_steps": 4,
    "train.cm_arr.model.rcab_blocks": 2,
}
register_system("cm-arr", cm_arr, sections={"cm_arr": CMARRConfig}, fast=FAST, groups=("table2",))
register_system("baseline", baseline, reads=("cm_arr",), groups=("table2", "ablations"))
for _variant in ABLATIONS:
    register_system(_variant, partial(cm_arr, variant=_variant), reads=("cm_arr",), groups=("ablations",))

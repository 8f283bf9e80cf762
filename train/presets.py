"""Training presets: `paper` is every system's published schedule (the config as written); `fast`
shortens them (and shrinks CM-ARR's flows and reconstruction stacks) for quick looks and CPU demos."""

from __future__ import annotations

from cmarr.shared.config import PipelineConfig, with_overrides

FAST = {
    "train.cm_arr.optim.lr": 1e-3,
    "train.cm_arr.optim.epochs": 20,
    "train.cm_arr.optim.patience": 5,
    "train.cm_arr.model.flow_steps": 4,
    "train.cm_arr.model.rcab_blocks": 2,
    # the comparison systems: about a fifth of each published schedule, the same shape, in batches
    # of 16: the published 64-256 exceed a small store's training part (the demo's: 96 utterances),
    # which leaves one step per epoch and a model at chance
    **{
        f"train.{s}.batch_size": 16
        for s in (
            "utt_fusion.optim",
            "cra.optim",
            "mmin.optim",
            "if_mmin.pretrain",
            "if_mmin.optim",
            "cif_mmin.pretrain",
            "cif_mmin.optim",
            "dicmor.pretrain",
            "dicmor.optim",
        )
    },  # fmt: skip
    "train.utt_fusion.optim.epochs": 4,
    "train.utt_fusion.optim.decay_epochs": 4,
    "train.cra.optim.epochs": 4,
    "train.cra.optim.decay_epochs": 16,
    "train.mmin.optim.epochs": 6,
    "train.mmin.optim.decay_epochs": 6,
    "train.if_mmin.pretrain.epochs": 4,
    "train.if_mmin.pretrain.decay_epochs": 4,
    "train.if_mmin.optim.epochs": 4,
    "train.if_mmin.optim.decay_epochs": 4,
    "train.cif_mmin.pretrain.epochs": 6,
    "train.cif_mmin.pretrain.decay_epochs": 2,
    "train.cif_mmin.optim.epochs": 4,
    "train.cif_mmin.optim.decay_epochs": 4,
    "train.dicmor.pretrain.epochs": 4,
    "train.dicmor.pretrain.patience": 2,
    "train.dicmor.optim.epochs": 6,
    "train.dicmor.optim.patience": 3,
    "train.dicmor.model.flow_steps": 4,
    "train.dicmor.model.rcab_blocks": 2,
}


def apply_preset(cfg: PipelineConfig, explicit: set[str]) -> PipelineConfig:
    """The config with the preset's values, except keys the user set explicitly."""
    if cfg.train.preset != "fast":
        return cfg
    return with_overrides(cfg, {k: v for k, v in FAST.items() if k not in explicit}, "preset fast")

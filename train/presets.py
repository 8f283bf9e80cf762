"""Training presets: `paper` is the paper's schedule (the config as written); `fast` is a short
schedule with smaller flows and reconstruction stacks, for quick looks and CPU demos."""

from __future__ import annotations

from cmarr.shared.config import PipelineConfig, with_overrides

FAST = {
    "train.lr": 1e-3,
    "train.batch_size": 16,
    "train.epochs": 20,
    "train.patience": 5,
    "train.model.flow_steps": 4,
    "train.model.rcab_blocks": 2,
}


def apply_preset(cfg: PipelineConfig, explicit: set[str]) -> PipelineConfig:
    """The config with the preset's values, except keys the user set explicitly."""
    if cfg.train.preset != "fast":
        return cfg
    return with_overrides(cfg, {k: v for k, v in FAST.items() if k not in explicit}, "preset fast")

"""Training presets: `paper` is every system's published schedule (the config as written); `fast`
shortens them (and shrinks CM-ARR's flows and reconstruction stacks) for quick looks and CPU demos.
Each system registers its own `fast` values with its registration (`train/systems/`)."""

from __future__ import annotations

from cmarr.shared.config import PipelineConfig, with_overrides
from cmarr.train.systems import fast_preset


def apply_preset(cfg: PipelineConfig, explicit: set[str]) -> PipelineConfig:
    """The config with the preset's values, except keys the user set explicitly."""
    if cfg.train.preset != "fast":
        return cfg
    return with_overrides(cfg, {k: v for k, v in fast_preset().items() if k not in explicit}, "preset fast")

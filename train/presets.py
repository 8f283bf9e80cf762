"""Training presets: `paper` is every system's published schedule (the config as written); `fast`
shortens them (and shrinks CM-ARR's flows and reconstruction stacks) for quick looks and CPU demos.
Each system registers its own `fast` values with its registration (`train/systems/`)."""

from __future__ import annotations

from cmarr.shared.config import PipelineConfig, with_overrides
from cmarr.shared.errors import ConfigError
from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim
from cmarr.train.systems import fast_preset


def apply_preset(cfg: PipelineConfig, explicit: set[str]) -> PipelineConfig:
    """The config with the preset's values, except keys the user set explicitly."""
    if cfg.train.preset != "fast":
        return cfg
    return with_overrides(cfg, {k: v for k, v in fast_preset().items() if k not in explicit}, "preset fast")


def rescheduled(cfg: PipelineConfig, epochs: int | None = None, scale: float | None = None) -> PipelineConfig:
    """Every stage of every system with `epochs` epochs in all (its share of decaying epochs kept)
    or its schedule scaled by `scale` (epochs, decaying epochs and patience, rounded; at least one
    epoch): one knob for a quick run (`--epochs`, `--schedule-scale`) over every section's `StageOptim`."""
    if epochs is not None and scale is not None:
        raise ConfigError("give --epochs or --schedule-scale, not both")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if scale is not None and not scale > 0:
        raise ConfigError(f"--schedule-scale must be above 0, got {scale}")
    if epochs is None and scale is None:
        return cfg
    changes = {}
    for key, optim in _stage_optims(cfg.train):
        if epochs is not None:
            decay = round(epochs * optim.decay_epochs / (optim.epochs + optim.decay_epochs))
            new = {"epochs": max(1, epochs - decay), "decay_epochs": epochs - max(1, epochs - decay)}
        else:
            new = {"epochs": max(1, round(optim.epochs * scale)), "decay_epochs": round(optim.decay_epochs * scale)}
            new["patience"] = max(1, round(optim.patience * scale)) if optim.patience else 0
        changes.update({f"train.{key}.{k}": v for k, v in new.items()})
    return with_overrides(cfg, changes, "--epochs" if epochs is not None else "--schedule-scale")


def _stage_optims(section: Section, prefix: str = "") -> list[tuple[str, StageOptim]]:
    """(dotted key, value) of every StageOptim inside `section` (the [train] sections: per stage)."""
    found = []
    for name in [*type(section).model_fields, *(section.model_extra or {})]:
        value = getattr(section, name)
        if isinstance(value, StageOptim):
            found.append((prefix + name, value))
        elif isinstance(value, Section):
            found += _stage_optims(value, f"{prefix}{name}.")
    return found

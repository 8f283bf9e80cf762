"""Loading a trained split's final model (the predictor, `cmarr.predict`, and the figures use it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cmarr.shared.errors import ConfigError
from cmarr.shared.train_config import TrainConfig
from cmarr.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from cmarr.train.data import Normaliser
from cmarr.train.model.base import SystemModel
from cmarr.train.rundir import SplitDir, StageDir, split_of
from cmarr.train.systems import get_system


def final_checkpoint(split_dir: Path) -> Path:
    """The checkpoint of the last stage of the system trained in `split_dir` (or `split_dir` itself
    when it is a stage folder or a checkpoint file)."""
    split_dir = Path(split_dir)
    if split_dir.is_file():
        return split_dir
    if StageDir(split_dir).checkpoint.is_file():
        return StageDir(split_dir).checkpoint
    found = sorted(s.checkpoint for s in map(StageDir, split_dir.iterdir()) if s.checkpoint.is_file())
    if not found:
        raise ConfigError(
            f"{split_dir}: no checkpoint (point at a finished split folder, e.g. runs/<id>/seed0/fold1/split0)"
        )
    _, meta = load_checkpoint(found[0])
    last = get_system(meta["system"], recorded_train_config(found[0], meta)).stages[-1].name
    path = SplitDir(split_dir).stage(last).checkpoint
    if not path.is_file():
        raise ConfigError(f"{split_dir}: the final stage {last!r} of {meta['system']} has no checkpoint (unfinished?)")
    return path


def load_model(path: Path) -> tuple[SystemModel, dict, Normaliser]:
    """(model in eval mode, checkpoint metadata, the training fold's normaliser): the checkpoint's
    content checked against its own digest and against the one its split's result.json records."""
    checkpoint = read_checkpoint(path)
    state, meta = checkpoint.model, checkpoint.meta
    cfg = recorded_train_config(path, meta)
    stage = get_system(meta["system"], cfg).stage(meta["stage"])
    model = stage.build(meta["dims"], len(meta["classes"]))
    if problem := state_mismatch(model.state_dict(), state):
        raise CheckpointError(f"{path}: weights do not fit {meta['system']}: {problem}")
    model.load_state_dict(state)
    check_recorded(path, meta["stage"], checkpoint.sha256)
    norm = Normaliser(
        {m: np.array(v, np.float32) for m, v in meta["norm"]["mean"].items()},
        {m: np.array(v, np.float32) for m, v in meta["norm"]["std"].items()},
    )
    return model.eval(), meta, norm


def check_recorded(path: Path, stage: str, sha256: str | None) -> None:
    """Refuse a checkpoint other than the one its split trained (copied from another split or run, or
    re-saved since): result.json records the sha256 of each stage's checkpoint when the split ends."""
    split = SplitDir(split_of(path))
    recorded = split.recorded_sha256(stage)
    if recorded is None or recorded == sha256:
        return
    held = f"sha256 {sha256[:12]}..." if sha256 else "no digest"
    raise CheckpointError(
        f"{path}: not the checkpoint its split was trained with: {split.result} records sha256 {recorded[:12]}... "
        f"for stage {stage}, the file holds {held} (copied from another split or run, or re-saved since?). Put "
        f"the split's own checkpoint back, or train the split again: delete {split.path} and run the run's "
        "cmarr-train command with --resume"
    )


def recorded_train_config(path: Path, meta: dict) -> TrainConfig:
    """The train config a checkpoint records; ConfigError naming the plugin section it needs when
    its system was registered by a plugin this process has not loaded."""
    from cmarr.shared.train_config import SECTIONS
    from cmarr.train.systems import SYSTEMS, discover

    discover()
    recorded = meta["train_config"]
    if meta["system"] not in SYSTEMS or [k for k in recorded if isinstance(recorded[k], dict) and k not in SECTIONS]:
        raise ConfigError(
            f"{path}: trained by system {meta['system']!r}, which no loaded module registers (a plugin's): "
            "load the plugin first (--plugin MODULE, or import it before loading the run)"
        )
    try:
        return TrainConfig.model_validate(recorded)
    except ValueError as err:
        raise CheckpointError(f"{path}: its recorded train config does not validate: {err}") from None


def state_mismatch(expected: dict, found: dict, shown: int = 3) -> str | None:
    """What keeps the weights `found` from loading into a model whose state dict is `expected`:
    missing and unexpected names and shape differences, the first `shown` of each; None if they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} is {tuple(found[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{len(items)} {what} ({'; '.join(items[:shown])}{', ...' if len(items) > shown else ''})"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if items
    ]
    return ", ".join(parts) or None

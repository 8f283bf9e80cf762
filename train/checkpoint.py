"""The two files a training stage writes, and the only code that reads them back.

- `checkpoint.pt`: the best weights of a stage plus what is needed to use them (system, stage,
  fold, seed, config hash, feature dims, classes, the fold's normalisation, the store's encoders).
- `state.pt`: everything to resume an interrupted stage exactly (weights, optimiser, schedule,
  every random generator, the epoch counters).

Both hold tensors and plain data only and are read with `torch.load(weights_only=True)`: a file
that holds anything else (a pickle that would run code when opened) is refused, never executed.
Truncated, empty, garbage and incomplete files give a one-line `CheckpointError` naming the file.
Writes go to a temporary name and are renamed into place, so a kill never leaves half a file.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from cmarr.shared.errors import CmarrError

FORMAT = "cmarr-checkpoint/2"
STATE_FORMAT = "cmarr-state/2"
CHECKPOINT_KEYS = ("format", "model", "meta")
STATE_KEYS = ("format", "model", "optimizer", "schedule", "rng", "progress")


class CheckpointError(CmarrError):
    """A checkpoint or state file that cannot be used (damaged, foreign, or unsafe to open)."""


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """The best weights of a stage and their metadata (plain JSON-like values)."""
    _atomic_save({"format": FORMAT, "model": state_dict, "meta": meta}, path)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of a checkpoint written by `save_checkpoint`; CheckpointError otherwise."""
    data = _safe_load(path, FORMAT, CHECKPOINT_KEYS)
    return data["model"], data["meta"]


def save_state(path: Path, state: dict[str, Any]) -> None:
    """A resumable stage state (see STATE_KEYS)."""
    _atomic_save({"format": STATE_FORMAT, **state}, path)


def load_state(path: Path) -> dict[str, Any]:
    """A state written by `save_state`; CheckpointError otherwise, saying how to go on without it."""
    try:
        return _safe_load(path, STATE_FORMAT, STATE_KEYS)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}\n  --resume cannot continue this stage from it: delete {path} to train the stage again "
            "from its start (the run's other finished stages and folds are kept), or train without --resume"
        ) from None


def rng_state() -> dict[str, Any]:
    """Every random generator torch uses in this process: the CPU one and each CUDA device's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise CheckpointError(
                f"the run was saved with {len(state['cuda'])} CUDA devices, this machine has "
                f"{torch.cuda.device_count()}: resume it where it started (or start it again)"
            )
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _safe_load(path: Path, fmt: str, keys: tuple[str, ...]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (a write that never finished?)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols while refusing them
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):
            raise CheckpointError(
                f"{path}: refused: it holds Python objects beyond tensors and plain data, which could run "
                "code when opened (a file from another tool, an older cmarr, or a crafted one)"
            ) from None
        raise CheckpointError(
            f"{path}: not a checkpoint cmarr can read safely (garbage, or a plain pickle, which cmarr never opens)"
        ) from None
    except Exception as err:  # noqa: BLE001 - damaged bytes make the weights-only unpickler raise
        # anything (IndexError, KeyError, ...); it builds only tensors and plain data, so no code ran
        raise CheckpointError(f"{path}: unreadable, truncated or damaged ({_first_line(err)})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        if not isinstance(data, dict):
            found = f"it holds a {type(data).__name__}, not cmarr's dictionary"
        elif "format" not in data:
            found = "it has no format marker, so it was not written by cmarr"
        else:
            found = f"it is a {data['format']!r} file"
        raise CheckpointError(f"{path}: not a {fmt} file: {found}")
    if missing := [k for k in keys if k not in data]:
        raise CheckpointError(f"{path}: incomplete: missing {', '.join(missing)}")
    return data


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    return text[0] if len(text[0]) <= 200 else text[0][:197] + "..."

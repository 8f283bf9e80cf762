"""The two files a training stage writes, and the only code that reads them back.

- `checkpoint.pt`: the best weights of a stage plus what is needed to use them (system, stage,
  fold, seed, config hash, feature dims, classes, the fold's normalisation, the store's encoders).
- `state.pt`: everything to resume an interrupted stage exactly (weights, optimiser, schedule,
  every random generator, the epoch counters).

Both hold tensors and plain data only and are read with `torch.load(weights_only=True)`: a file
that holds anything else (a pickle that would run code when opened) is refused, never executed.
Truncated, empty, garbage and incomplete files give a one-line `CheckpointError` naming the file.
Writes go to a temporary name and are renamed into place, so a kill never leaves half a file.

Each file records the sha256 of its content when it is saved (`DIGEST`, beside the format marker), as
the store records its chunks' CRCs: over every tensor's dtype, shape and bytes and every plain value,
in key order, so a flipped byte, edited weights or edited classes that still unpickle are refused
on load, while the same tensors saved from another device (storages tagged cuda:0) load as saved.
A file from before digests loads with an `UnverifiedCheckpoint` warning.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from cmarr.shared.errors import CmarrError, CmarrWarning
from cmarr.train.rundir import split_of

FORMAT = "cmarr-checkpoint/2"
STATE_FORMAT = "cmarr-state/2"
DIGEST = "sha256"  # the key of the content digest (an older file has none)
_RETRAIN = (
    ". Restore it from the run's original copy, or train the split again: delete {split} and run the run's "
    "cmarr-train command with --resume (the other splits are kept; its report is written anew)"
)
CHECKPOINT_KEYS = ("format", "model", "meta")
STATE_KEYS = ("format", "model", "optimizer", "schedule", "rng", "progress")


class CheckpointError(CmarrError):
    """A checkpoint or state file that cannot be used (damaged, edited, foreign, or unsafe to open)."""


class UnverifiedCheckpoint(CmarrWarning):
    """A checkpoint or state file written before cmarr recorded digests: used, but unchecked."""


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """The best weights of a stage and their metadata (plain JSON-like values)."""
    _atomic_save({"format": FORMAT, "model": state_dict, "meta": meta}, path)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read: its weights, its metadata, and the content sha256 it records (checked)."""

    model: dict[str, torch.Tensor]
    meta: dict[str, Any]
    sha256: str | None  # None: written before cmarr recorded digests


def read_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint written by `save_checkpoint`, its content checked; CheckpointError otherwise."""
    data = _safe_load(path, FORMAT, CHECKPOINT_KEYS)
    return Checkpoint(data["model"], data["meta"], data.get(DIGEST))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of a checkpoint written by `save_checkpoint`; CheckpointError otherwise."""
    checkpoint = read_checkpoint(path)
    return checkpoint.model, checkpoint.meta


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


def content_sha256(data: dict[str, Any]) -> str:
    """sha256 of a checkpoint's or state's content, its own digest left out: independent of the
    device its tensors were on and of how torch laid out the file."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != DIGEST})
    return h.hexdigest()


def _feed(h, value) -> None:
    """Hash `value` unambiguously: a type tag, then a length or the content (keys sorted)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes of any dtype, bfloat16 included
    elif isinstance(value, dict):
        h.update(f"d{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"l{len(value)}".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(_scalar(value).encode() + b"\x00")


def _scalar(value) -> str:
    if isinstance(value, str):
        return f"s{len(value)}:{value}"
    if isinstance(value, (bool, type(None))):
        return f"c{value}"
    if isinstance(value, numbers.Integral):
        return f"i{int(value)}"
    if isinstance(value, float):  # numpy's float64 too, whose repr differs
        return f"f{float.__repr__(value)}"
    return f"o{type(value).__name__}:{value!r}"  # bytes, torch.dtype, ...: what weights_only allows


def _verify(path: Path, data: dict[str, Any], fmt: str) -> None:
    """Refuse content that no longer matches the digest recorded when the file was saved (a
    checkpoint's refusal says how to train its split again; `load_state` says how to go on)."""
    recorded = data.get(DIGEST)
    if recorded is None:
        warnings.warn(  # issued from here: once per file, whichever function loads it
            f"{path}: written by an older cmarr, it records no sha256 of its content, so damage or edits "
            "since training cannot be detected; it is used unchecked (train the split again for a verified one)",
            UnverifiedCheckpoint,
            stacklevel=1,
        )
        return
    if (found := content_sha256(data)) != recorded:
        raise CheckpointError(
            f"{path}: changed since training: its weights or metadata (classes, normalisation, config) no longer "
            f"match the sha256 recorded when it was saved ({recorded[:12]}..., now {found[:12]}...): a damaged "
            "copy or an edited file, which cmarr does not use"
            + (_RETRAIN.format(split=split_of(path)) if fmt == FORMAT else "")
        )


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({**obj, DIGEST: content_sha256(obj)}, tmp)
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
    _verify(path, data, fmt)
    return data


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    return text[0] if len(text[0]) <= 200 else text[0][:197] + "..."

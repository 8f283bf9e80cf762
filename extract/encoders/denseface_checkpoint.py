"""The Denseface checkpoint format, with its one writer and its one reader side by side.

`save_denseface` writes it (`cmarr-fer train`, the demo profile); `load_denseface` reads it (the
video encoder, `cmarr-fer evaluate`). A checkpoint is a `torch.save`d dict of plain values, read
with `weights_only=True` (nothing in it can run code):

    arch            the DenseNetArch fields
    normalization   {"mean", "std", "size"}: how faces were normalised in training
    classes         the class order of the FER+ head
    state_dict      the network's weights
    ...             anything else the writer records (metrics, data hashes, a note)
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC
from cmarr.shared.config import VideoEncoderConfig
from cmarr.shared.errors import ConfigError, InputDataError

FER_MEAN, FER_STD = 131.0754, 47.858177  # FER+ pixel statistics (Denseface normalisation)
REQUIRED = ("arch", "normalization", "classes", "state_dict")
MISSING_HINT = (
    "DenseNet-FER+ weights are not published: train them with\n"
    "  `cmarr-fer train --fer2013 fer2013.csv --ferplus fer2013new.csv` (see README), or use\n"
    "  --profile demo for the offline stand-in encoders."
)


@dataclass(frozen=True)
class DensefaceCheckpoint:
    """A loaded checkpoint: the network (eval mode, on the CPU) and what the file records."""

    net: DenseNetBC
    arch: dict[str, Any]
    normalization: dict[str, Any]  # mean, std (pixel values), size (pixels)
    classes: list[str]
    extra: dict[str, Any]  # the writer's other keys


def save_denseface(
    net: DenseNetBC,
    path: Path,
    classes: list[str],
    extra: dict | None = None,
    mean: float = FER_MEAN,
    std: float = FER_STD,
) -> None:
    """Write `net` as a checkpoint, atomically (a partial file never takes the name). `extra`
    values must be plain (str, numbers, lists, dicts) so the file loads with `weights_only`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    content = {
        "arch": net.arch.to_dict(),
        "normalization": {"mean": mean, "std": std, "size": net.arch.input_size},
        "classes": list(classes),
        "state_dict": net.state_dict(),
    }
    torch.save({**(extra or {}), **content}, tmp)
    os.replace(tmp, path)


def load_denseface(path: str | Path, expect: VideoEncoderConfig | None = None) -> DensefaceCheckpoint:
    """Read a checkpoint. Raises, in one line naming the file, ConfigError for a file that is not
    there and, given `expect`, for one whose architecture or normalisation disagrees with the
    config (features of a different network would silently mix in the store); InputDataError for
    a file that is not a checkpoint (empty, truncated, garbage, missing keys, weights of another
    network)."""
    path = Path(path)
    if not path.is_file():
        key = " (extract.video.checkpoint)" if expect is not None else ""
        raise ConfigError(f"video checkpoint {path} not found{key}. {MISSING_HINT}")
    content = _read(path)
    arch = _arch(path, content["arch"])
    net = DenseNetBC(arch)
    _load_weights(path, net, content["state_dict"])
    normalization = dict(content["normalization"])
    if expect is not None:
        _check_against(path, arch, normalization, expect)
    extra = {k: v for k, v in content.items() if k not in REQUIRED}
    return DensefaceCheckpoint(net.eval(), arch.to_dict(), normalization, list(content["classes"]), extra)


def _read(path: Path) -> dict[str, Any]:
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: not a Denseface checkpoint (empty file)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        said = textwrap.shorten(first, 120, placeholder=" ...")  # whole words: torch's messages run long
        raise InputDataError(f"{path}: not a Denseface checkpoint (truncated, or not from cmarr-fer: {said})") from None
    if not isinstance(content, dict) or (missing := [k for k in REQUIRED if k not in content]):
        what = f"no {', '.join(missing)}" if isinstance(content, dict) else f"a {type(content).__name__}"
        raise InputDataError(f"{path}: not a Denseface checkpoint ({what})")
    return content


def _arch(path: Path, raw: Any) -> DenseNetArch:
    known = {f.name for f in fields(DenseNetArch)}
    if not isinstance(raw, dict) or set(raw) - known:
        raise InputDataError(f"{path}: not a Denseface checkpoint (its arch is {raw!r})")
    return DenseNetArch(**raw)


def _load_weights(path: Path, net: DenseNetBC, state: Any) -> None:
    """The weights must be exactly the network's: same names, same shapes."""
    want = net.state_dict()
    have = state if isinstance(state, dict) else {}
    wrong = sorted(set(want) ^ set(have)) + [
        k for k in want if k in have and getattr(have[k], "shape", None) != want[k].shape
    ]
    if wrong:
        raise InputDataError(
            f"{path}: its weights do not fit its arch ({len(wrong)} tensors missing, extra or of another shape, "
            f"e.g. {wrong[0]!r})"
        )
    net.load_state_dict(state)


def _check_against(path: Path, arch: DenseNetArch, normalization: dict, cfg: VideoEncoderConfig) -> None:
    expected = {"mean": cfg.mean, "std": cfg.std, "size": cfg.face_size}
    if any(abs(float(normalization.get(k, "nan")) - float(v)) > 1e-6 for k, v in expected.items()):
        raise ConfigError(f"{path}: checkpoint normalises faces with {normalization}, the config expects {expected}")
    if (arch.depth, arch.growth, arch.input_size) != (cfg.depth, cfg.growth, cfg.face_size):
        raise ConfigError(
            f"{path}: checkpoint is DenseNet-BC depth {arch.depth} growth {arch.growth} on {arch.input_size}px, "
            f"the config expects depth {cfg.depth} growth {cfg.growth} on {cfg.face_size}px"
        )

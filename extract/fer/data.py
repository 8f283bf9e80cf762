"""FER2013 + FER+ in their public formats.

- `fer2013.csv`: `emotion,pixels,Usage`; pixels are 48x48 grey values as 2,304 space-separated
  integers; Usage is Training, PublicTest or PrivateTest.
- `fer2013new.csv` (FER+): `Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,
  contempt,unknown,NF`, vote counts per image, row k relabelling row k of fer2013.csv. FER+ marks
  images it dropped with an empty image name.
Images whose votes are mostly unknown/NF are dropped; the target is the majority class or the
vote distribution (cross-entropy on probabilities, the FER+ paper's best).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cmarr.shared.errors import InputDataError

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
USAGES = ("Training", "PublicTest", "PrivateTest")
SIZE = 48


@dataclass
class FerSplit:
    images: np.ndarray  # (N, 48, 48) uint8
    votes: np.ndarray  # (N, 8) float32 emotion votes

    def targets(self, kind: str) -> np.ndarray:
        """(N, 8) probabilities: the vote distribution, or one-hot of the majority class."""
        if kind == "distribution":
            return self.votes / self.votes.sum(1, keepdims=True)
        return np.eye(len(CLASSES), dtype=np.float32)[self.votes.argmax(1)]

    @property
    def majority(self) -> np.ndarray:
        return self.votes.argmax(1)


@dataclass
class FerData:
    splits: dict[str, FerSplit]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped


def load_fer(fer2013: str | Path, ferplus: str | Path, skip_bad_rows: bool = False) -> FerData:
    """Read both files; malformed rows raise InputDataError naming file and line, or are skipped
    and counted when `skip_bad_rows`."""
    images, usages = _read_fer2013(Path(fer2013), skip_bad_rows)
    skipped = dict(images.pop("__skipped__", {}))
    bad_images = images.pop("__bad__", set())
    per_split: dict[str, tuple[list, list]] = {u: ([], []) for u in USAGES}
    ferplus = Path(ferplus)
    with open(ferplus, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or [h.strip() for h in header[2:12]] != list(CLASSES) + ["unknown", "NF"]:
            raise InputDataError(
                f"{ferplus}:1: not a FER+ votes file (expected Usage,Image name,{','.join(CLASSES)},unknown,NF)"
            )
        for k, row in enumerate(reader):
            line = k + 2
            if k in bad_images:
                continue  # its image row was skipped (and counted) already
            try:
                if k not in usages:
                    raise InputDataError(
                        f"{ferplus}:{line}: votes row without a matching image in {Path(fer2013).name}"
                    )
                if len(row) < 12:
                    raise InputDataError(f"{ferplus}:{line}: expected 12 fields, found {len(row)}")
                if row[0].strip() != usages[k]:
                    raise InputDataError(
                        f"{ferplus}:{line}: Usage {row[0]!r} disagrees with {usages[k]!r} in {Path(fer2013).name}"
                    )
                votes = np.array([float(v) for v in row[2:12]], np.float32)
            except (InputDataError, ValueError) as err:
                if not skip_bad_rows:
                    raise InputDataError(
                        str(err) if isinstance(err, InputDataError) else f"{ferplus}:{line}: bad vote count ({err})"
                    ) from None
                skipped["bad votes row"] = skipped.get("bad votes row", 0) + 1
                continue
            emotion, other = votes[:8], votes[8:].sum()
            if not row[1].strip():
                skipped["dropped by FER+"] = skipped.get("dropped by FER+", 0) + 1
            elif emotion.sum() <= other or emotion.sum() == 0:
                skipped["mostly unknown/NF"] = skipped.get("mostly unknown/NF", 0) + 1
            elif k in images:
                per_split[usages[k]][0].append(images[k])
                per_split[usages[k]][1].append(emotion)
    splits = {
        u: FerSplit(
            np.stack(i) if i else np.zeros((0, SIZE, SIZE), np.uint8),
            np.stack(v) if v else np.zeros((0, 8), np.float32),
        )
        for u, (i, v) in per_split.items()
    }
    return FerData(splits, skipped)


def _read_fer2013(path: Path, skip_bad_rows: bool) -> tuple[dict, dict[int, str]]:
    images: dict = {}
    usages: dict[int, str] = {}
    skipped: dict[str, int] = {}
    bad: set[int] = set()
    if not path.is_file():
        raise InputDataError(f"{path}: not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise InputDataError(f"{path}:1: not a FER2013 file (expected emotion,pixels,Usage)")
        for k, row in enumerate(reader):
            line = k + 2
            try:
                if len(row) < 3:
                    raise InputDataError(f"{path}:{line}: expected 3 fields, found {len(row)}")
                usage = row[2].strip()
                if usage not in USAGES:
                    raise InputDataError(f"{path}:{line}: unknown Usage {usage!r} (expected {', '.join(USAGES)})")
                usages[k] = usage  # the row exists: FER+ row k relabels it even if its pixels are bad
                pixels = row[1].split()
                if len(pixels) != SIZE * SIZE:
                    raise InputDataError(f"{path}:{line}: {len(pixels)} pixel values, expected {SIZE * SIZE}")
                values = np.array(pixels, dtype=np.int64)
                if values.min() < 0 or values.max() > 255:
                    raise InputDataError(f"{path}:{line}: pixel values outside 0..255")
            except (InputDataError, ValueError) as err:
                if not skip_bad_rows:
                    raise InputDataError(
                        str(err) if isinstance(err, InputDataError) else f"{path}:{line}: bad pixel values"
                    ) from None
                skipped["bad image row"] = skipped.get("bad image row", 0) + 1
                bad.add(k)
                continue
            images[k] = values.astype(np.uint8).reshape(SIZE, SIZE)
    images["__skipped__"] = skipped
    images["__bad__"] = bad
    return images, usages

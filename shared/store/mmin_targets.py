"""Reading MMIN's `target/<cv>/` files in every layout its loaders accept.

AIM3-RUC/MMIN's IEMOCAP release stores labels one-hot [n, K] and ids as [n, 1] byte strings;
its MSP-IMPROV release stores class indices [n] and ids as [n] strings. Both are read here, and
empty splits too (a cv without validation items). Object arrays are refused: loading them means
unpickling, which runs code from the data file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from cmarr.shared.errors import InputDataError

SPLITS = ("trn", "val", "tst")


def read_targets(target: Path, classes: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """{utterance id as written in int2name: (class index, the cv where it is a test item, or '')}
    from every cv folder; an utterance's labels must agree across cvs, and it may be a test item
    of one cv only."""
    cvs = (
        sorted((d for d in target.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name))
        if target.is_dir()
        else []
    )
    if not cvs:
        raise InputDataError(f"{target}: no target/<cv>/ folders with *_label.npy and *_int2name.npy")
    labels: dict[str, int] = {}
    test_cv: dict[str, str] = {}
    for cv in cvs:
        for split in SPLITS:
            names, split_labels = load_split(cv, split, len(classes))
            for name, label in zip(names, split_labels.tolist()):
                if labels.setdefault(name, label) != label:
                    raise InputDataError(
                        f"{cv}/{split}_label.npy: {name} labelled {classes[label]} here, "
                        f"{classes[labels[name]]} elsewhere"
                    )
                if split == "tst" and test_cv.setdefault(name, cv.name) != cv.name:
                    raise InputDataError(f"{cv}/tst_int2name.npy: {name} is a test item of cv {test_cv[name]} too")
    return {name: (labels[name], test_cv.get(name, "")) for name in labels}


def load_split(cv: Path, split: str, n_classes: int) -> tuple[list[str], np.ndarray]:
    """(ids, class indices) of one split of one cv."""
    label_path, name_path = cv / f"{split}_label.npy", cv / f"{split}_int2name.npy"
    if not label_path.is_file() or not name_path.is_file():
        raise InputDataError(f"{cv}: missing {label_path.name} or {name_path.name}")
    names = _names(name_path)
    return names, _labels(label_path, len(names), n_classes)


def _load(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise InputDataError(
                f"{path}: holds Python objects (a pickle), which cmarr does not load from data files; "
                f"save the {what} as a plain array, e.g. np.save(path, np.array(values, dtype=str))"
            ) from None
        raise InputDataError(f"{path}: cannot read ({err})") from None
    except (OSError, EOFError) as err:
        raise InputDataError(f"{path}: not a readable .npy file ({err})") from None


def _names(path: Path) -> list[str]:
    raw = _load(path, "ids")
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1 or raw.dtype.kind not in "SU":
        raise InputDataError(f"{path}: {raw.dtype} array of shape {raw.shape}, expected ids as [n] or [n, 1] strings")
    try:
        return [x.decode() if isinstance(x, bytes) else str(x) for x in raw.tolist()]
    except UnicodeDecodeError as err:
        raise InputDataError(f"{path}: an id is not UTF-8 ({err})") from None


def _labels(path: Path, n: int, n_classes: int) -> np.ndarray:
    """Class indices [n] from one-hot [n, K] or indices [n] / [n, 1]."""
    raw = _load(path, "labels")
    if raw.ndim == 2 and raw.shape[1] == 1 and n_classes > 1:
        raw = raw[:, 0]
    if raw.ndim == 2:
        if raw.shape != (n, n_classes):
            raise InputDataError(
                f"{path}: shape {raw.shape}, expected [{n}, {n_classes}] one-hot "
                f"(pass the label classes with --classes if the corpus has {raw.shape[-1]})"
            )
        bad = np.flatnonzero(~np.isin(raw, (0, 1)).all(axis=1) | (raw.sum(axis=1) != 1))
        if len(bad):
            raise InputDataError(f"{path}: row {bad[0]} is not one-hot ({raw[bad[0]].tolist()})")
        return raw.argmax(axis=1).astype(np.int64)
    if raw.ndim != 1 or len(raw) != n or raw.dtype.kind not in "iuf":
        raise InputDataError(
            f"{path}: {raw.dtype} array of shape {raw.shape}, expected {n} labels, one-hot [{n}, {n_classes}] "
            f"or class indices [{n}]"
        )
    if len(raw) and (not np.array_equal(raw, np.round(raw)) or raw.min() < 0 or raw.max() >= n_classes):
        raise InputDataError(
            f"{path}: labels {raw.min()}..{raw.max()}, expected class indices 0..{n_classes - 1} "
            f"(pass the label classes with --classes if the corpus has more)"
        )
    return raw.astype(np.int64)


def natural_key(s: str) -> list:
    """Sort '2' before '10' (cv folders are numbered)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]

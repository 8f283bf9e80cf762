"""Rewriting columns of a store's utterance table in place, so that a kill leaves each column
either old or new.

A changed column is written whole under `<name>.new` (with its checksums), then swapped in by two
renames: `<name>` -> `<name>.old`, `<name>.new` -> `<name>`; then `<name>.old` is removed. A kill
between the renames leaves no `<name>` but a complete `<name>.new`: `finish_column_swaps` (run by
every `StoreWriter.open`) completes the swap; a kill while `<name>.new` was being written leaves
`<name>` untouched and the debris is removed. Readers meeting the gap say so (see `FeatureStore`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from cmarr.shared.store.checksums import write_checked
from cmarr.shared.store.parts import remove
from cmarr.shared.store.schema import UTTERANCE_COLUMNS

NEW, OLD = ".new", ".old"


def update_columns(group: zarr.Group, folder: Path, columns: dict[str, np.ndarray], n_classes: int) -> list[str]:
    """Write the changed `columns` of the table in `group` (stored in `folder`); returns their names.
    Bad names, lengths or values raise ValueError before anything is written."""
    n = group["id"].shape[0]
    fresh = {name: _column(name, values, n, n_classes) for name, values in columns.items()}
    changed = [name for name, data in fresh.items() if not _equal(group[name][:], data)]
    for name in changed:
        write_checked(group, name + NEW, fresh[name])
        os.rename(folder / name, folder / (name + OLD))
        os.rename(folder / (name + NEW), folder / name)
        remove(folder / (name + OLD))
    return changed


def finish_column_swaps(folder: Path) -> None:
    """Complete or undo column swaps a kill interrupted (see the module docstring)."""
    for name in UTTERANCE_COLUMNS:
        column, new, old = folder / name, folder / (name + NEW), folder / (name + OLD)
        if not column.exists() and new.exists():
            os.rename(new, column)  # killed between the renames: the new column is complete
        elif not column.exists() and old.exists():
            os.rename(old, column)
        remove(new)
        remove(old)


def _column(name: str, values, n: int, n_classes: int) -> np.ndarray:
    """`values` as the stored column `name`: its dtype, one value per utterance."""
    if name not in UTTERANCE_COLUMNS or name == "id":
        allowed = ", ".join(c for c in UTTERANCE_COLUMNS if c != "id")
        raise ValueError(f"cannot update utterance column {name!r} (updatable: {allowed})")
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"utterance column {name!r}: {values.shape[0] if values.ndim else 0} values for {n} rows")
    kind = UTTERANCE_COLUMNS[name]
    if kind == "str":
        return np.array([str(x) for x in values], dtype=object)
    if kind == "int16":
        labels = values.astype(np.int16)
        if not np.array_equal(labels, values) or labels.min(initial=0) < -1 or labels.max(initial=0) >= n_classes:
            raise ValueError(f"utterance column {name!r}: values must be -1 or class indices below {n_classes}")
        return labels
    return values.astype(np.float64)


def _equal(old: np.ndarray, new: np.ndarray) -> bool:
    if new.dtype.kind == "f":
        return np.array_equal(old, new, equal_nan=True)
    return old.tolist() == new.tolist()

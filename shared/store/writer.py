"""The only code that writes feature stores.

Crash safety rests on three rules:
1. A new store is built under a temporary name and renamed into place (`atomic_directory`), so a
   store at its final path always has its whole utterance table.
2. Extracted frames land in *staged parts* (`<modality>/_parts/<part>/`, see `parts.py`): a part
   without its completion mark is debris from a kill and is discarded; its items are simply
   extracted again.
3. `finalize` lays the parts out in utterance order (values, offsets, status, checksums) and sets
   the modality's `finalized` flag *last*. A store whose flag is unset reads as incomplete and
   `finalize` can always be re-run from the parts.
Concurrent writers (one per process or worker) each write their own parts, so no two writers
ever touch the same chunk; `store_lock` keeps two *runs* off one store.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from cmarr.shared.errors import StoreError
from cmarr.shared.labels import LabelSet
from cmarr.shared.provenance import now_utc, software
from cmarr.shared.store.checksums import nonfinite_mask, write_checked
from cmarr.shared.store.lock import atomic_directory, store_lock
from cmarr.shared.store.parts import (
    FINALIZE_CACHE_BYTES,
    STAGED_CACHE_BYTES,
    MemoryPart,
    PartCache,
    index_attrs,
    is_complete,
    part_index,
    plan_layout,
    remove,
    write_layout,
)
from cmarr.shared.store.schema import (
    PARTS,
    SCHEMA_ATTR,
    SCHEMA_VERSION,
    UTTERANCES,
    ModalitySpec,
    Status,
    UtteranceTable,
)
from cmarr.shared.store.table import finish_column_swaps, update_columns

__all__ = ["ModalityWriter", "StoreWriter", "store_lock"]


class StoreWriter:
    """Creates a store (utterance table + provenance) and hands out per-modality writers."""

    def __init__(self, path: Path, root: zarr.Group):
        self.path = path
        self.root = root

    @classmethod
    def create(
        cls,
        path: str | Path,
        table: UtteranceTable,
        corpus: str,
        label_set: LabelSet,
        config_toml: str = "",
        config_hash: str = "",
        extra_attrs: dict[str, Any] | None = None,
    ) -> StoreWriter:
        """Write a new store: the utterance table and provenance, no modality yet. It appears at
        `path` complete or not at all (see `building`). An existing store there is an error (use
        `open` to resume); an empty directory is fine."""
        with cls.building(path, table, corpus, label_set, config_toml, config_hash, extra_attrs):
            pass
        return cls.open(path)

    @classmethod
    @contextlib.contextmanager
    def building(
        cls,
        path: str | Path,
        table: UtteranceTable,
        corpus: str,
        label_set: LabelSet,
        config_toml: str = "",
        config_hash: str = "",
        extra_attrs: dict[str, Any] | None = None,
    ) -> Iterator[StoreWriter]:
        """A writer for a new store that is built under a temporary sibling name and renamed to
        `path` when the `with` block completes: an error, Ctrl-C, a full disk or a kill inside it
        leaves nothing at `path` (an import writes every modality inside the block)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StoreError(f"{path}: a store already exists here (remove it to write a new one, or write elsewhere)")
        with atomic_directory(path) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            root.attrs.update(
                {
                    SCHEMA_ATTR: SCHEMA_VERSION,
                    "corpus": corpus,
                    "label_set": {"name": label_set.name, "classes": list(label_set.classes)},
                    "created": now_utc(),
                    "software": software(),
                    "config_toml": config_toml,
                    "config_hash": config_hash,
                    "modalities": {},
                    **(extra_attrs or {}),
                }
            )
            group = root.create_group(UTTERANCES)
            for name, column in table.columns.items():
                write_checked(group, name, column)
            root.attrs["table_complete"] = True  # read by stores' older readers; creation is atomic now
            yield cls(tmp, root)

    @classmethod
    def open(cls, path: str | Path) -> StoreWriter:
        """Reopen an existing directory store for writing (resume, add a modality, update labels)."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: no feature store here")
        root = zarr.open_group(str(path), mode="r+")
        version = root.attrs.get(SCHEMA_ATTR)
        if version != SCHEMA_VERSION:
            raise StoreError(f"{path}: store schema v{version}; this cmarr writes v{SCHEMA_VERSION}")
        if not root.attrs.get("table_complete"):  # left by cmarr before creation was atomic
            raise StoreError(f"{path}: the utterance table was never completed; remove the store and re-create it")
        finish_column_swaps(path / UTTERANCES)
        return cls(path, root)

    @property
    def n_utterances(self) -> int:
        return self.root[f"{UTTERANCES}/id"].shape[0]

    def update_utterances(self, columns: dict[str, np.ndarray]) -> list[str]:
        """Replace metadata columns of the utterance table (any but `id`; one value per utterance,
        e.g. labels corrected in a manifest) and return the names of those that changed; unchanged
        ones are not rewritten. A kill leaves each column old or new (see `table.py`). Labels must
        index the store's label set (or be -1)."""
        n_classes = len(self.root.attrs["label_set"]["classes"])
        return update_columns(self.root[UTTERANCES], self.path / UTTERANCES, columns, n_classes)

    def modality(self, name: str, spec: ModalitySpec, overwrite: bool = False) -> ModalityWriter:
        """Start or resume writing `name`. A different encoder spec is refused unless `overwrite`,
        which discards the modality's existing features."""
        specs = dict(self.root.attrs.get("modalities", {}))
        old = specs.get(name)
        if old is not None and not overwrite and not spec.same_encoder(ModalitySpec.from_attrs(old)):
            raise StoreError(
                f"{self.path}: modality {name!r} was written with a different encoder config\n"
                f"  stored: {json.dumps(old, sort_keys=True)}\n"
                f"  now:    {json.dumps(spec.to_attrs(), sort_keys=True)}\n"
                "  pass --overwrite to replace its features"
            )
        if overwrite and name in self.root:
            remove(self.path / name)
        if name not in self.root:
            group = self.root.create_group(name)
            group.attrs.update({"finalized": False, "spec": spec.to_attrs()})
        specs[name] = spec.to_attrs()
        self.root.attrs["modalities"] = specs
        return ModalityWriter(self, name, spec)

    def attach(self, name: str) -> ModalityWriter:
        """A writer for a modality another process (the driver) is managing: it stages parts
        and touches nothing else, not even other writers' half-written parts."""
        if name not in self.root or PARTS not in self.root[name]:
            raise StoreError(f"{self.path}: modality {name!r} is not prepared for concurrent writers")
        spec = ModalitySpec.from_attrs(self.root[name].attrs["spec"])
        return ModalityWriter(self, name, spec, attached=True)


class ModalityWriter:
    """Writes one modality's features as staged parts, then finalizes them into schema v1."""

    def __init__(self, store: StoreWriter, name: str, spec: ModalitySpec, attached: bool = False):
        """`attached`: another process manages the modality (see `StoreWriter.attach`)."""
        self.store = store
        self.name = name
        self.spec = spec
        self.group: zarr.Group = store.root[name]
        self.dir = store.path / name
        self._staged = PartCache(0 if attached else STAGED_CACHE_BYTES)  # attached writers never finalize
        if not attached:
            self._discard_debris()

    # ------------------------------------------------------------------ resume state

    def settled(self) -> np.ndarray:
        """Boolean [n]: items with a settled outcome (ok, missing-input, no-face) so far."""
        status = self.current_status()
        return np.isin(status, [s for s in Status if s.settled])

    def current_status(self) -> np.ndarray:
        """Status of every utterance from the finalized arrays and the staged parts."""
        n = self.store.n_utterances
        status = np.full(n, Status.PENDING, dtype=np.int8)
        if self.group.attrs.get("finalized"):
            status[:] = self.group["status"][:]
        for part in self._complete_parts():
            items, _, part_status = part_index(part)
            better = (part_status == Status.OK) | (status[items] != Status.OK)
            status[items[better]] = part_status[better]
        return status

    def complete_tags(self, tags: set[str]) -> set[str]:
        """Which of these writer ids already have a complete part (a retried task skips them).
        Lists part names only; reads the marks of the matching parts alone."""
        parts_dir = self.dir / PARTS
        found = set()
        for entry in parts_dir.iterdir() if parts_dir.is_dir() else ():
            tag = entry.name.split("-")[1] if entry.name.count("-") >= 2 else None
            if tag in tags and is_complete(entry):
                found.add(tag)
        return found

    # ------------------------------------------------------------------ writing

    def prepare_concurrent(self) -> None:
        """Make the modality ready for writers in other processes (`StoreWriter.attach`): the
        parts group exists and a finalized layout is turned back into a part, so that workers
        never race to create either."""
        self._unfinalize()
        self.group.require_group(PARTS)

    def write_part(
        self,
        items: list[int] | np.ndarray,
        features: list[np.ndarray | None],
        status: list[Status] | None = None,
        reasons: dict[int, str] | None = None,
        writer_id: str = "",
    ) -> str:
        """Stage a batch of results. `features[k]` is [frames, dim] for item `items[k]`, or None
        (zero frames) with a non-ok status. An ok item whose frames hold NaN/inf (after conversion
        to the store's dtype) is staged as failed, its count in the reason. `writer_id` (no
        dashes) names the writer in the part's name; it defaults to the process id. Returns the
        part's name."""
        if "-" in writer_id:
            raise ValueError(f"writer_id {writer_id!r} must not contain '-'")
        values, index = self._batch(items, features, status, reasons)
        self._unfinalize()
        name = f"{time.time_ns():020d}-{writer_id or os.getpid()}-{uuid.uuid4().hex[:8]}"
        part = self.group.require_group(PARTS).create_group(name)
        part.create_array("values", data=values, chunks=(max(1, len(values)), self.spec.dim))
        part.attrs.update({**index, "complete": True})  # the mark comes with the index, after the values
        self._staged.put(part.path, values)
        return name

    def finalize(self, chunk_frames: int = 2048, last_batch: tuple | None = None) -> dict[str, int]:
        """Lay out all staged parts in utterance order; returns status counts.

        `last_batch` (the arguments of `write_part`: items, features, status, reasons) goes into
        the layout without being staged first: the run's final batch would otherwise be written
        as a part only to be read back at once. If finalize is cut off, its items are simply
        pending again."""
        extra = None
        if last_batch is not None and len(last_batch[0]):
            values, index = self._batch(*last_batch)
            extra = MemoryPart(f"{self.name}/{PARTS}/unstaged", index, values)
            self._unfinalize()
        if self.group.attrs.get("finalized"):
            return dict(self.group.attrs["status_counts"])  # nothing staged since (write_part unfinalizes)
        plan = plan_layout(self._complete_parts() + ([extra] if extra else []))
        n = self.store.n_utterances
        lengths = np.zeros(n, dtype=np.int64)
        status = np.full(n, Status.PENDING, dtype=np.int8)
        reasons: dict[str, str] = {}
        for i, (_part, _row, length, st, reason) in plan.items():
            lengths[i], status[i] = length, st
            if reason:
                reasons[str(i)] = reason
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cache = PartCache(FINALIZE_CACHE_BYTES, seed=self._staged)
        write_layout(self.group, plan, offsets, self.spec.dim, self.spec.dtype, chunk_frames, cache)
        write_checked(self.group, "offsets", offsets)
        write_checked(self.group, "status", status)
        ids = self.store.root[f"{UTTERANCES}/id"][:] if reasons else []
        counts = {Status(s).name.lower(): int((status == s).sum()) for s in Status}
        self.group.attrs.update(
            {
                "spec": self.spec.to_attrs(),
                "failures": {ids[int(i)]: r for i, r in reasons.items() if status[int(i)] == Status.FAILED},
                "notes": {ids[int(i)]: r for i, r in reasons.items() if status[int(i)] != Status.FAILED},
                "status_counts": counts,
                "finalized": True,  # last: everything above is in place
            }
        )
        remove(self.dir / PARTS)
        self._staged = PartCache(STAGED_CACHE_BYTES)
        return counts

    # ------------------------------------------------------------------ internals

    def _batch(self, items, features, status=None, reasons=None) -> tuple[np.ndarray, dict[str, Any]]:
        """A checked batch as (values in the store's dtype, the part's index attributes)."""
        items = np.asarray(items, dtype=np.int64)
        status = list(status) if status is not None else [Status.OK] * len(items)
        reasons = dict(reasons or {})
        lengths = np.array([0 if f is None else len(f) for f in features], dtype=np.int64)
        self._check_batch(items, features, status, lengths)
        rows = []
        for k, f in enumerate(features):
            if not lengths[k]:
                continue
            with np.errstate(over="ignore"):  # values beyond the dtype's range become inf: refused below
                frames = f.astype(self.spec.dtype, copy=False)
            if problem := _nonfinite_reason(f, frames):
                given = reasons.get(int(items[k]))
                reasons[int(items[k])] = f"{given}; {problem}" if given else problem
                status[k], lengths[k] = Status.FAILED, 0
                continue
            rows.append(frames)
        values = np.concatenate(rows) if rows else np.zeros((0, self.spec.dim), self.spec.dtype)
        return values, index_attrs(items, lengths, np.asarray(status, dtype=np.int8), reasons, values)

    def _check_batch(self, items, features, status, lengths) -> None:
        n = self.store.n_utterances
        if len(items) != len(features) or len(items) != len(status):
            raise ValueError("items, features and status differ in length")
        if len(items) and (items.min() < 0 or items.max() >= n):
            raise ValueError(f"item index out of range [0, {n})")
        for item, f, st, length in zip(items, features, status, lengths):
            if (Status(st) == Status.OK) != (length > 0):
                raise ValueError(f"item {item}: status {Status(st).name} with {length} frames")
            if f is not None and (f.ndim != 2 or f.shape[1] != self.spec.dim):
                raise ValueError(f"item {item}: features {f.shape}, expected [frames, {self.spec.dim}]")

    def _complete_parts(self) -> list[zarr.Group]:
        if PARTS not in self.group:
            return []
        parts = self.group[PARTS]
        return [parts[k] for k in sorted(parts.group_keys()) if parts[k].attrs.get("complete")]

    def _discard_debris(self) -> None:
        """Remove parts a killed writer left half-written; a finalized modality keeps no parts."""
        parts_dir = self.dir / PARTS
        if not parts_dir.is_dir():
            return
        for entry in parts_dir.iterdir():
            if not entry.is_dir():
                continue  # the `_parts` group's own zarr.json
            if not is_complete(entry) or self.group.attrs.get("finalized"):
                remove(entry)

    def _unfinalize(self) -> None:
        """Turn a finalized modality back into one staged part, so that new parts merge with it."""
        if not self.group.attrs.get("finalized"):
            return
        self.group.attrs["finalized"] = False
        status = self.group["status"][:]
        offsets = self.group["offsets"][:]
        keep = np.flatnonzero(status != Status.PENDING)
        base = self.group.require_group(PARTS).create_group("00000000000000000000-base")
        notes = {**self.group.attrs.get("failures", {}), **self.group.attrs.get("notes", {})}
        index = {u: i for i, u in enumerate(self.store.root[f"{UTTERANCES}/id"][:])}
        os.replace(self.dir / "values", self.dir / PARTS / base.basename / "values")
        base.attrs.update(
            {
                **index_attrs(keep, np.diff(offsets)[keep], status[keep], {index[u]: r for u, r in notes.items()}),
                "complete": True,
            }
        )
        for name in ("offsets", "status"):
            remove(self.dir / name)


def _nonfinite_reason(given: np.ndarray, stored: np.ndarray) -> str:
    """Why frames cannot be stored as ok ('' when they can): NaN/inf after conversion to the
    store's dtype, which also catches finite values beyond its range (float16: 65504)."""
    bad = int(np.count_nonzero(nonfinite_mask(stored)))
    if not bad:
        return ""
    reason = f"{bad} of {stored.size} encoder output values are not finite (NaN/inf)"
    overflow = bad - int(np.count_nonzero(nonfinite_mask(np.asarray(given))))
    return reason + (f", {overflow} of them beyond the range of {stored.dtype}" if overflow else "")

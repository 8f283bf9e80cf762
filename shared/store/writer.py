"""The only code that writes feature stores.

Crash safety rests on two rules:
1. Extracted frames land in *staged parts* (`<modality>/_parts/<part>/`): a values array, then
   the part's index (items, lengths, status) and its completion mark in one metadata write.
   A part without the mark is debris from a kill and is discarded; its items are simply
   extracted again.
2. `finalize` lays the parts out in utterance order (values, offsets, status, checksums) and sets
   the modality's `finalized` flag *last*. A store whose flag is unset reads as incomplete and
   `finalize` can always be re-run from the parts.
Concurrent writers (one per process or worker) each write their own parts, so no two writers
ever touch the same chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from cmarr.shared.errors import StoreError
from cmarr.shared.labels import LabelSet
from cmarr.shared.provenance import now_utc, software
from cmarr.shared.store.checksums import block_crc, chunk_row_ranges, write_checked
from cmarr.shared.store.schema import (
    CRC_ATTR,
    PARTS,
    SCHEMA_ATTR,
    SCHEMA_VERSION,
    UTTERANCES,
    ModalitySpec,
    Status,
    UtteranceTable,
)

# Decoded parts kept in memory while finalizing; parts come from length-sorted batches, so
# utterance order visits them in random order and a cache that holds them all reads each once.
FINALIZE_CACHE_BYTES = 4 << 30
# Values of the parts this writer staged, kept for finalize so that it need not read them back
# (a small corpus's finalize is otherwise mostly re-reading what was just written).
STAGED_CACHE_BYTES = 256 << 20


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
        """Write a new store; an existing store at `path` is an error (use `open` to resume)."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: a store already exists here (resume with it, or remove it)")
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
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
                "table_complete": False,
                **(extra_attrs or {}),
            }
        )
        group = root.create_group(UTTERANCES)
        for name, column in table.columns.items():
            write_checked(group, name, column)
        root.attrs["table_complete"] = True  # last: an interrupted create reads as incomplete
        return cls(path, root)

    @classmethod
    def open(cls, path: str | Path) -> StoreWriter:
        """Reopen an existing directory store for writing (resume, add a modality)."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: no feature store here")
        root = zarr.open_group(str(path), mode="r+")
        version = root.attrs.get(SCHEMA_ATTR)
        if version != SCHEMA_VERSION:
            raise StoreError(f"{path}: store schema v{version}; this cmarr writes v{SCHEMA_VERSION}")
        if not root.attrs.get("table_complete"):
            raise StoreError(f"{path}: the utterance table was never completed; remove the store and re-create it")
        return cls(path, root)

    @property
    def n_utterances(self) -> int:
        return self.root[f"{UTTERANCES}/id"].shape[0]

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
            _remove(self.path / name)
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
        self._staged = _PartCache(0 if attached else STAGED_CACHE_BYTES)  # attached writers never finalize
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
            items, _, part_status = _part_index(part)
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
            if tag in tags and _is_complete(entry):
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
        (zero frames) with a non-ok status. `writer_id` (no dashes) names the writer in the
        part's name; it defaults to the process id. Returns the part's name."""
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
            extra = _MemoryPart(f"{self.name}/{PARTS}/unstaged", index, values)
            self._unfinalize()
        if self.group.attrs.get("finalized"):
            return dict(self.group.attrs["status_counts"])  # nothing staged since (write_part unfinalizes)
        plan = self._plan(extra)
        n = self.store.n_utterances
        lengths = np.zeros(n, dtype=np.int64)
        status = np.full(n, Status.PENDING, dtype=np.int8)
        reasons: dict[str, str] = {}
        for i, (_part, _row, length, st, reason) in plan.items():
            lengths[i], status[i] = length, st
            if reason:
                reasons[str(i)] = reason
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._write_values(plan, offsets, chunk_frames)
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
        _remove(self.dir / PARTS)
        self._staged = _PartCache(STAGED_CACHE_BYTES)
        return counts

    # ------------------------------------------------------------------ internals

    def _batch(self, items, features, status=None, reasons=None) -> tuple[np.ndarray, dict[str, Any]]:
        """A checked batch as (values in the store's dtype, the part's index attributes)."""
        items = np.asarray(items, dtype=np.int64)
        if status is None:
            status = [Status.OK] * len(items)
        lengths = np.array([0 if f is None else len(f) for f in features], dtype=np.int64)
        self._check_batch(items, features, status, lengths)
        rows = [f.astype(self.spec.dtype, copy=False) for f in features if f is not None and len(f)]
        values = np.concatenate(rows) if rows else np.zeros((0, self.spec.dim), self.spec.dtype)
        return values, _index_attrs(items, lengths, np.asarray(status, dtype=np.int8), reasons or {})

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
            if not _is_complete(entry) or self.group.attrs.get("finalized"):
                _remove(entry)

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
                **_index_attrs(keep, np.diff(offsets)[keep], status[keep], {index[u]: r for u, r in notes.items()}),
                "complete": True,
            }
        )
        for name in ("offsets", "status"):
            _remove(self.dir / name)

    def _plan(self, extra: _MemoryPart | None = None) -> dict[int, tuple[zarr.Group, int, int, int, str]]:
        """Item -> (part, first row, frames, status, reason); a later part wins, except that a
        failure never replaces an earlier success. `extra` is newest."""
        plan: dict[int, tuple[zarr.Group, int, int, int, str]] = {}
        for part in self._complete_parts() + ([extra] if extra else []):
            items, lengths, status = _part_index(part)
            rows = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
            reasons = part.attrs.get("reasons", {})
            for item, row, length, st in zip(items, rows, lengths, status):
                prev = plan.get(int(item))
                if prev is not None and prev[3] == Status.OK and st != Status.OK:
                    continue
                plan[int(item)] = (part, int(row), int(length), int(st), reasons.get(str(item), ""))
        return plan

    def _write_values(self, plan, offsets: np.ndarray, chunk_frames: int) -> None:
        total, dim = int(offsets[-1]), self.spec.dim
        values = self.group.create_array(
            "values", shape=(total, dim), dtype=self.spec.dtype, chunks=(chunk_frames, dim), overwrite=True
        )
        cache = _PartCache(FINALIZE_CACHE_BYTES, seed=self._staged)
        order = sorted(plan)
        cursor = 0  # index into `order` of the next utterance to copy
        crcs = []
        for start, stop in chunk_row_ranges(total, chunk_frames):
            block = np.empty((stop - start, dim), dtype=self.spec.dtype)
            filled = 0
            while filled < len(block):
                item = order[cursor]
                part, row, length, _, _ = plan[item]
                lo = max(offsets[item], start) - offsets[item]  # rows of this item inside the block
                hi = min(offsets[item + 1], stop) - offsets[item]
                block[filled : filled + hi - lo] = cache.get(part)[row + lo : row + hi]
                filled += hi - lo
                if offsets[item + 1] <= stop:
                    cursor += 1
            while cursor < len(order) and offsets[order[cursor] + 1] == offsets[order[cursor]]:
                cursor += 1  # zero-length items occupy no rows
            values[start:stop] = block
            crcs.append(block_crc(block))
        values.attrs[CRC_ATTR] = crcs


class _PartCache:
    """LRU of decoded part values under a byte budget."""

    def __init__(self, budget: int, seed: _PartCache | None = None):
        self.budget, self.used = budget, 0
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        for key, data in seed.items.items() if seed else ():
            self.put(key, data)

    def get(self, part: zarr.Group | _MemoryPart) -> np.ndarray:
        if isinstance(part, _MemoryPart):
            return part.values
        key = part.path
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        data = part["values"][:]
        self.put(key, data)
        return data

    def put(self, key: str, data: np.ndarray) -> None:
        if self.budget == 0:
            return
        self.items[key] = data
        self.used += data.nbytes
        while self.used > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.used -= old.nbytes


def _index_attrs(items, lengths, status, reasons: dict) -> dict[str, Any]:
    """A part's index, kept in its metadata: written together with the completion mark in one
    small write after the values, instead of three more arrays (each array is a round trip
    through zarr's event loop, and staging is on the critical path of every extraction)."""
    return {
        "items": np.asarray(items, np.int64).tolist(),
        "lengths": np.asarray(lengths, np.int64).tolist(),
        "status": np.asarray(status, np.int8).tolist(),
        "reasons": {str(k): v for k, v in reasons.items()},
    }


@dataclass
class _MemoryPart:
    """A batch handed to finalize directly, in the shape of a staged part."""

    path: str
    attrs: dict[str, Any]
    values: np.ndarray


def _part_index(part: zarr.Group | _MemoryPart) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, lengths, status) of a complete part. Parts staged by cmarr before the index moved
    into the metadata hold it as arrays; a store left half-written by that version resumes."""
    attrs = part.attrs
    if "items" in attrs:
        return (
            np.asarray(attrs["items"], np.int64),
            np.asarray(attrs["lengths"], np.int64),
            np.asarray(attrs["status"], np.int8),
        )
    return part["items"][:], part["lengths"][:], part["status"][:]


def _is_complete(part_dir: Path) -> bool:
    meta = part_dir / "zarr.json"
    try:
        return bool(meta.is_file() and json.loads(meta.read_text()).get("attributes", {}).get("complete"))
    except json.JSONDecodeError:  # metadata cut short by a kill
        return False


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()

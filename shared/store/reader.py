"""The only code that reads feature stores: lazily, from a directory, a `.zarr.zip` or a URL.

Opening a store reads its metadata and the (small) utterance table; feature frames are read on
demand. Random access to single utterances decodes a whole chunk each time, so epoch reading goes
through `iter_blocks`: contiguous runs of utterances, visited in a fresh random order every epoch,
each chunk decoded about once.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from cmarr.shared.errors import StoreError, StoreIncompleteError
from cmarr.shared.store.schema import (
    PARTS,
    SCHEMA_ATTR,
    SCHEMA_VERSION,
    UTTERANCE_COLUMNS,
    UTTERANCES,
    ModalitySpec,
    Status,
)
from zarr.storage import FsspecStore, LocalStore, ZipStore


def open_root(location: str | Path) -> zarr.Group:
    """Open the root group read-only from a directory, a zip file or an fsspec URL."""
    loc = str(location)
    try:
        if "://" in loc and not loc.startswith("file://"):
            store = FsspecStore.from_url(loc, read_only=True)
        elif loc.startswith("file://") or Path(loc).is_dir():
            path = loc.removeprefix("file://")
            if not (Path(path) / "zarr.json").is_file():
                raise StoreError(f"{path}: not a feature store (no zarr.json)")
            store = LocalStore(path, read_only=True)
        elif Path(loc).is_file():
            if not zipfile.is_zipfile(loc):
                raise StoreError(f"{loc}: not a readable zip file (truncated or not a .zarr.zip?)")
            store = ZipStore(loc, mode="r")
        else:
            raise StoreError(f"{loc}: no such store")
        return zarr.open_group(store, mode="r")
    except StoreError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, FileNotFoundError) as err:
        raise StoreError(f"{loc}: cannot open store: {err}") from None


def staged_parts(group: zarr.Group) -> int:
    """Parts a writer has staged in a modality group (zero once it is finalized)."""
    return len(list(group[PARTS].group_keys())) if PARTS in group else 0


class FeatureStore:
    """Read access to a schema-v1 store. `allow_incomplete` is for `verify` and `info` only."""

    def __init__(self, root: zarr.Group, location: str, allow_incomplete: bool = False):
        self.root = root
        self.location = location
        self.attrs: dict[str, Any] = dict(root.attrs)
        version = self.attrs.get(SCHEMA_ATTR)
        if version is None:
            raise StoreError(f"{location}: not a cmarr feature store (no {SCHEMA_ATTR} attribute)")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{location}: written with store schema v{version}, this cmarr reads up to "
                f"v{SCHEMA_VERSION}; upgrade cmarr"
            )
        if not self.attrs.get("table_complete"):
            raise StoreIncompleteError(f"{location}: incomplete store (its utterance table was never finished)")
        if not allow_incomplete:
            unfinished = [m for m in self.modality_names if not self._group(m).attrs.get("finalized")]
            if unfinished:
                raise StoreIncompleteError(
                    f"{location}: incomplete store: modality {', '.join(unfinished)} not finalized "
                    "(an extraction was interrupted; re-run it to complete the store)"
                )

    @classmethod
    def open(cls, location: str | Path, allow_incomplete: bool = False) -> FeatureStore:
        return cls(open_root(location), str(location), allow_incomplete)

    # ------------------------------------------------------------------ metadata

    @property
    def corpus(self) -> str:
        return self.attrs.get("corpus", "")

    @property
    def classes(self) -> list[str]:
        return list(self.attrs["label_set"]["classes"])

    @property
    def modality_names(self) -> list[str]:
        return list(self.attrs.get("modalities", {}))

    @cached_property
    def utterances(self) -> dict[str, np.ndarray]:
        """The utterance table as numpy columns (small: read once)."""
        group = self._group(UTTERANCES)
        cols = {}
        for name in UTTERANCE_COLUMNS:
            if name not in group:
                raise StoreError(f"{self.location}: missing array {UTTERANCES}/{name}")
            cols[name] = np.asarray(group[name][:])
        return cols

    def __len__(self) -> int:
        return len(self.utterances["id"])

    def modality(self, name: str) -> ModalityReader:
        if name not in self.modality_names:
            raise StoreError(f"{self.location}: no modality {name!r} (has {self.modality_names})")
        return ModalityReader(self._group(name), name, f"{self.location}/{name}")

    def fingerprint(self) -> str:
        """A hash of the provenance and every recorded chunk checksum: equal stores, equal prints."""
        digest = hashlib.sha256(json.dumps(self.attrs, sort_keys=True, default=str).encode())
        for path in [f"{UTTERANCES}/{c}" for c in UTTERANCE_COLUMNS] + [
            f"{m}/{a}" for m in self.modality_names for a in ("values", "offsets", "status")
        ]:
            if path in self.root:
                digest.update(json.dumps(self.root[path].attrs.get("cmarr_crc32", [])).encode())
        return digest.hexdigest()[:16]

    def provenance(self) -> dict[str, Any]:
        """Root attributes without the bulky config text, plus the fingerprint."""
        keep = {k: v for k, v in self.attrs.items() if k != "config_toml"}
        return {**keep, "fingerprint": self.fingerprint(), "location": self.location}

    def _group(self, name: str) -> zarr.Group:
        try:
            return self.root[name]
        except KeyError:
            raise StoreError(f"{self.location}: missing group {name!r}") from None

    # ------------------------------------------------------------------ epochs

    def iter_blocks(
        self,
        modalities: Sequence[str],
        rng: np.random.Generator,
        indices: np.ndarray | None = None,
        block_frames: int = 16384,
    ) -> Iterator[tuple[np.ndarray, dict[str, list[np.ndarray]]]]:
        """Yield (utterance indices, {modality: [frames per utterance]}) for contiguous blocks of
        utterances, blocks in a random order and utterances shuffled inside each block.
        `indices` restricts the epoch to a subset (e.g. a training fold)."""
        readers = [self.modality(m) for m in modalities]
        wanted = np.zeros(len(self), dtype=bool)
        wanted[np.arange(len(self)) if indices is None else indices] = True
        bounds = _block_bounds(readers, block_frames)
        for b in rng.permutation(len(bounds) - 1):
            lo, hi = bounds[b], bounds[b + 1]
            members = np.flatnonzero(wanted[lo:hi]) + lo
            if not len(members):
                continue
            members = rng.permutation(members)
            yield members, {r.name: r.read_range(lo, hi, members) for r in readers}


def _block_bounds(readers: list[ModalityReader], block_frames: int) -> np.ndarray:
    """Utterance boundaries so that each block spans about `block_frames` rows of the largest modality."""
    n = len(readers[0].offsets) - 1
    rows = np.max([r.offsets for r in readers], axis=0)  # cumulative rows, worst modality
    cuts = np.searchsorted(rows, np.arange(block_frames, rows[-1] + block_frames, block_frames))
    return np.unique(np.concatenate([[0], np.clip(cuts, 0, n), [n]]))


class ModalityReader:
    """One modality: offsets and status in memory, values read lazily."""

    def __init__(self, group: zarr.Group, name: str, where: str):
        self.group = group
        self.name = name
        self.where = where
        for array in ("values", "offsets", "status"):
            if array not in group:
                raise StoreError(f"{where}: missing array {array!r}")
        self.values = group["values"]
        self.offsets = np.asarray(group["offsets"][:], dtype=np.int64)
        self.status = np.asarray(group["status"][:], dtype=np.int8)

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec.from_attrs(self.group.attrs["spec"])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def available(self) -> np.ndarray:
        """Boolean [n]: the modality is present (status ok) for the utterance."""
        return self.status == Status.OK

    def get(self, i: int) -> np.ndarray:
        """Frames of utterance `i` as [frames, dim] (zero frames when the modality is missing)."""
        return self.values[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def read_range(self, lo: int, hi: int, members: np.ndarray | None = None) -> list[np.ndarray]:
        """Frames of utterances lo..hi-1 (or of `members` among them) in one contiguous read."""
        base = int(self.offsets[lo])
        block = self.values[base : int(self.offsets[hi])]
        members = np.arange(lo, hi) if members is None else members
        return [block[self.offsets[i] - base : self.offsets[i + 1] - base] for i in members]

    def get_many(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames of several utterances, merging neighbours into contiguous reads."""
        order = np.argsort(indices, kind="stable")
        out: list[np.ndarray | None] = [None] * len(indices)
        sorted_idx = np.asarray(indices)[order]
        start = 0
        while start < len(sorted_idx):
            stop = start + 1
            while stop < len(sorted_idx) and sorted_idx[stop] <= sorted_idx[stop - 1] + 1:
                stop += 1
            run = self.read_range(int(sorted_idx[start]), int(sorted_idx[stop - 1]) + 1, sorted_idx[start:stop])
            for k, arr in zip(order[start:stop], run):
                out[k] = arr
            start = stop
        return out  # type: ignore[return-value]

    def load_all(self) -> np.ndarray:
        """All frames in memory (for stores small enough to hold once per run)."""
        return self.values[:]

    def to_dask(self):
        """The values as a dask array (for distributed jobs over a shared store)."""
        import dask.array as da

        return da.from_zarr(self.values)

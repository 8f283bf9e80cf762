"""The only code that reads feature stores: lazily, from a directory, a `.zarr.zip` or a URL.

Opening a store reads its metadata and the (small) utterance table; feature frames are read on
demand. Every chunk read is checked against the CRC32 recorded when it was written, and the
offsets and status against each other, so damaged data raises `StoreDamagedError` naming the
array and chunk instead of reaching a model. Random access to single utterances decodes a whole
chunk (the last few are kept), so epoch reading goes through `iter_blocks`: contiguous runs of
utterances, visited in a fresh random order every epoch, each chunk decoded about once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from cmarr.shared.errors import StoreDamagedError, StoreError, StoreIncompleteError
from cmarr.shared.store.checksums import CheckedArray, nonfinite_mask
from cmarr.shared.store.locations import open_root
from cmarr.shared.store.schema import (
    CRC_ATTR,
    PARTS,
    SCHEMA_ATTR,
    SCHEMA_VERSION,
    UTTERANCE_COLUMNS,
    UTTERANCES,
    ModalitySpec,
    Status,
)

# Root attributes that say when and by which build a store was written, not what it holds:
# left out of the fingerprint, so two extractions of the same data with the same config match.
VOLATILE_ATTRS = ("created", "software")


def staged_parts(group: zarr.Group) -> int | None:
    """Parts a writer has staged in a modality group (zero once it is finalized; None when the
    parts' metadata is unreadable: a kill while staging, which the next writer cleans up)."""
    try:
        return len(list(group[PARTS].group_keys())) if PARTS in group else 0
    except Exception:  # zarr raises JSON or validation errors for metadata cut short
        return None


def node(group: zarr.Group, key: str, location: str, where: str) -> Any:
    """`group[key]` (an array or group), with a missing or unreadable node as a `StoreError`
    naming it (`where`: its path in the store)."""
    try:
        return group[key]
    except KeyError:
        raise StoreDamagedError(location, f"{where} is missing") from None
    except Exception as err:  # garbage zarr.json: zarr raises JSON, validation or type errors
        raise StoreDamagedError(location, f"{where}/zarr.json is unreadable ({type(err).__name__}: {err})") from None


class FeatureStore:
    """Read access to a schema-v1 store. `allow_incomplete` is for `verify` and `info` only."""

    def __init__(self, root: zarr.Group, location: str, allow_incomplete: bool = False, notes: Sequence[str] = ()):
        self.root = root
        self.location = location
        self.notes = list(notes)  # things a user should know about this copy (e.g. a deflated zip)
        self._groups: dict[str, zarr.Group] = {}
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
            unfinished = [m for m in self.modality_names if not self.group(m).attrs.get("finalized")]
            if unfinished:
                raise StoreIncompleteError(
                    f"{location}: incomplete store: modality {', '.join(unfinished)} not finalized "
                    "(an extraction was interrupted; re-run it to complete the store)"
                )

    @classmethod
    def open(cls, location: str | Path, allow_incomplete: bool = False) -> FeatureStore:
        root, notes = open_root(location)
        return cls(root, str(location), allow_incomplete, notes)

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

    @property
    def degradation(self) -> dict[str, dict[str, Any]]:
        """{modality: how its media were degraded before the encoder} (`cmarr-extract --degrade`); {} when clean."""
        specs = self.attrs.get("modalities", {})
        return {m: spec["degradation"] for m, spec in specs.items() if spec.get("degradation")}

    @cached_property
    def utterances(self) -> dict[str, np.ndarray]:
        """The utterance table as numpy columns (small: read once, verified)."""
        cols = {name: self._column(name) for name in UTTERANCE_COLUMNS}
        lengths = {name: len(col) for name, col in cols.items()}
        if len(set(lengths.values())) > 1:
            raise StoreDamagedError(self.location, f"{UTTERANCES} columns differ in length: {lengths}")
        return cols

    def _column(self, name: str) -> np.ndarray:
        try:
            return self.array(f"{UTTERANCES}/{name}").read_all()
        except StoreDamagedError:
            if f"{name}.new" in self.group(UTTERANCES):  # see table.py: a kill between two renames
                raise StoreIncompleteError(
                    f"{self.location}: an update of the utterance column {name!r} was interrupted; "
                    "re-run the command that made it (opening the store for writing completes it)"
                ) from None
            raise

    def __len__(self) -> int:
        return len(self.utterances["id"])

    @cached_property
    def labels(self) -> np.ndarray:
        """[n] int64 class index per utterance into `classes` (-1: unlabelled), checked against the
        table's `label_name` column (StoreDamagedError otherwise): the class list sits in the root
        metadata, which no checksum covers, and a reordered or renamed list would relabel every
        utterance while every check passes."""
        if problems := label_problems(self.classes, self.utterances):
            raise StoreDamagedError(self.location, problems[0])
        return self.utterances["label"].astype(np.int64)

    def modality(self, name: str) -> ModalityReader:
        if name not in self.modality_names:
            raise StoreError(f"{self.location}: no modality {name!r} (has {self.modality_names})")
        return ModalityReader(self, name)

    def group(self, name: str) -> zarr.Group:
        """The group `name` (a modality or the utterance table), its metadata read once."""
        if name not in self._groups:
            self._groups[name] = node(self.root, name, self.location, name)
        return self._groups[name]

    def reasons(self, name: str) -> dict[str, str]:
        """{utterance id: reason} of every item of modality `name` whose extraction recorded one: a
        failure's cause, why the modality is missing, or a note on an item extracted ok."""
        attrs = self.group(name).attrs
        return {**attrs.get("notes", {}), **attrs.get("failures", {})}

    def array(self, path: str) -> CheckedArray:
        """The array at `path` (e.g. `audio/values`), read through its recorded checksums; its group's
        metadata is read (and so checked) on the way."""
        group, _, name = path.rpartition("/")
        return CheckedArray(node(self.group(group), name, self.location, path), path, self.location)

    def fingerprint(self) -> str:
        """A hash of what the store holds: every array's recorded per-chunk CRC32s (which every read
        checks the data against), shape and dtype, the root attributes except when and by which
        build it was written (`VOLATILE_ATTRS`), and each modality's attributes (encoder spec,
        failure reasons). Equal data and provenance give equal prints; any changed value, label
        or setting gives another. Reads metadata only."""
        root = {k: v for k, v in self.attrs.items() if k not in VOLATILE_ATTRS}
        digest = hashlib.sha256(json.dumps(root, sort_keys=True, default=str).encode())
        paths = [f"{UTTERANCES}/{c}" for c in UTTERANCE_COLUMNS]
        for m in self.modality_names:
            attrs = dict(self.group(m).attrs)
            digest.update(json.dumps([m, attrs], sort_keys=True, default=str).encode())
            if attrs.get("finalized"):
                paths += [f"{m}/{a}" for a in ("values", "offsets", "status")]
        for path in paths:
            group, _, name = path.rpartition("/")
            arr = node(self.group(group), name, self.location, path)
            record = [path, list(arr.shape), str(arr.dtype), list(arr.chunks), arr.attrs.get(CRC_ATTR)]
            digest.update(json.dumps(record).encode())
        return digest.hexdigest()[:16]

    def provenance(self) -> dict[str, Any]:
        """Root attributes without the bulky config text, plus the fingerprint."""
        keep = {k: v for k, v in self.attrs.items() if k != "config_toml"}
        return {**keep, "fingerprint": self.fingerprint(), "location": self.location}

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


def label_problems(classes: Sequence[str], table: dict[str, np.ndarray]) -> list[str]:
    """Where the utterance table's class indices disagree with the store's class list: an index
    outside it, a class name that is not the list's class at that index, or an unlabelled
    utterance (-1) named one of the classes. Empty when they agree."""
    label, label_name, ids = table["label"], table["label_name"], table["id"]
    names = np.array([str(x) for x in label_name.tolist()], dtype=object)
    label = np.asarray(label, dtype=np.int64)
    inside = (label >= 0) & (label < len(classes))
    expected = np.array([*classes, ""], dtype=object)[np.where(inside, label, len(classes))]
    listed = ", ".join(classes)
    changed = (  # the metadata edited by hand, or a relabel killed between its two columns
        f"the store's class list (label_set: {listed}) disagrees with its utterance table: it was edited after "
        "extraction, or an update of the labels was interrupted (re-running the extraction completes it)"
    )
    problems = []
    if len(outside := np.flatnonzero(~inside & (label != -1))):
        first = int(outside[0])
        problems.append(
            f"{len(outside)} utterances hold a class index outside the store's class list (label_set: {listed}; "
            f"{ids[first]}: {label[first]})"
        )
    if len(wrong := np.flatnonzero(inside & (names != expected))):
        first = int(wrong[0])
        problems.append(
            f"{changed}: {len(wrong)} utterances' class index disagrees with their label name ({ids[first]}: "
            f"index {label[first]} is {classes[label[first]]} in the list, the utterance says {names[first]})"
        )
    if len(unnamed := np.flatnonzero((label == -1) & np.isin(names, list(classes)))):
        first = int(unnamed[0])
        problems.append(
            f"{changed}: {len(unnamed)} unlabelled utterances are named one of its classes "
            f"({ids[first]}: {names[first]})"
        )
    return problems


def layout_problems(
    name: str, spec: dict, values: CheckedArray, offsets: np.ndarray, status: np.ndarray, n: int
) -> list[str]:
    """What is wrong with a finalized modality's layout (empty when it is sound): values shaped and
    typed as the spec says, offsets that fit them, monotone offsets, known status codes, and frames
    exactly for ok items."""
    problems = []
    values_shape = values.shape
    if len(values_shape) != 2 or values_shape[1] != spec.get("dim"):
        problems.append(f"{name}/values: shape {values_shape} disagrees with dim {spec.get('dim')}")
    if str(values.dtype) != spec.get("dtype"):
        problems.append(f"{name}/values: dtype {values.dtype} disagrees with spec {spec.get('dtype')}")
    if offsets.shape != (n + 1,) or status.shape != (n,):
        return problems + [f"{name}: offsets {offsets.shape} / status {status.shape} do not fit {n} utterances"]
    if offsets[0] != 0 or offsets[-1] != values_shape[0]:
        problems.append(f"{name}/offsets: run from {offsets[0]} to {offsets[-1]}, values have {values_shape[0]} rows")
    if np.any(np.diff(offsets) < 0):
        problems.append(
            f"{name}/offsets: not monotone (first drop at utterance {int(np.argmax(np.diff(offsets) < 0))})"
        )
    if not np.isin(status, [int(s) for s in Status]).all():
        problems.append(
            f"{name}/status: unknown status codes {sorted(set(status.tolist()) - {int(s) for s in Status})}"
        )
    bad = np.flatnonzero((status == Status.OK) != (np.diff(offsets) > 0))
    if len(bad):
        problems.append(
            f"{name}/status: {len(bad)} utterances whose status disagrees with their frame count "
            f"(first: index {bad[0]})"
        )
    return problems


def nonfinite_per_utterance(
    values: CheckedArray, offsets: np.ndarray | None, on_damage: Callable[[str], None] | None = None
) -> np.ndarray:
    """Counts of non-finite values (NaN/inf) per utterance, [n] (or [1], a total, when `offsets` is
    None), reading every chunk of `values` once, verified. A damaged chunk raises, or with
    `on_damage` is handed to it (the damage, without the store's location) and skipped."""
    counts = np.zeros(1 if offsets is None else len(offsets) - 1, np.int64)
    for k in range(values.n_chunks):
        try:
            block = values.chunk(k)
        except StoreError as err:
            if on_damage is None:
                raise
            on_damage(err.detail if isinstance(err, StoreDamagedError) else str(err))
            continue
        per_row = np.count_nonzero(nonfinite_mask(block), axis=1)
        rows = np.flatnonzero(per_row)
        if len(rows) and offsets is not None:
            rows_in_store = values.chunk_rows_of(k)[0] + rows
            np.add.at(counts, np.searchsorted(offsets, rows_in_store, side="right") - 1, per_row[rows])
        elif len(rows):
            counts[0] += per_row.sum()
    return counts


class ModalityReader:
    """One modality: offsets and status in memory (checked against each other), values read lazily
    through their checksums."""

    def __init__(self, store: FeatureStore, name: str):
        self.name = name
        self.where = f"{store.location}/{name}"
        self.group = store.group(name)
        self.values = store.array(f"{name}/values")
        self.offsets = store.array(f"{name}/offsets").read_all().astype(np.int64)
        self.status = store.array(f"{name}/status").read_all().astype(np.int8)
        spec = self.group.attrs.get("spec", {})
        problems = layout_problems(name, spec, self.values, self.offsets, self.status, len(store))
        if problems:
            raise StoreDamagedError(store.location, "; ".join(problems))

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
    def present(self) -> np.ndarray:
        """Boolean [n]: the store holds the modality (status ok) for the utterance."""
        return self.status == Status.OK

    def get(self, i: int) -> np.ndarray:
        """Frames of utterance `i` as [frames, dim] (zero frames when the modality is missing)."""
        return self.values.read(int(self.offsets[i]), int(self.offsets[i + 1]))

    def read_range(self, lo: int, hi: int, members: np.ndarray | None = None) -> list[np.ndarray]:
        """Frames of utterances lo..hi-1 (or of `members` among them) in one contiguous read."""
        base = int(self.offsets[lo])
        block = self.values.read(base, int(self.offsets[hi]))
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
        return self.values.read_all()

    def nonfinite_counts(self) -> np.ndarray:
        """[n] counts of NaN/inf values per utterance (reads every chunk; cmarr never writes any)."""
        return nonfinite_per_utterance(self.values, self.offsets)

"""The store as training data: per-fold normalisation, each epoch's batches, padded batches.

The store is read once per run: into memory when it is small enough (`max_memory_bytes`),
otherwise batches are read lazily in contiguous blocks (the reader's `iter_blocks`).
Padding happens only here, at collate time; which utterances share a batch is `train/batching.py`'s.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store import FeatureStore, Status
from cmarr.train.batch import Batch
from cmarr.train.batching import Batching, bucketed_batches, length_bands


@dataclass
class Normaliser:
    """Per-feature z-scoring with statistics of the training part of a fold only."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]  # 1 for features constant over the training frames (as StandardScaler)


class RunningMoments:
    """Mean and variance per feature over blocks of frames, merged exactly (Chan et al.'s pairwise
    update), so that the result does not suffer the cancellation of sum-of-squares formulas."""

    def __init__(self, dim: int):
        self.n, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)

    def update(self, x: np.ndarray) -> None:
        """Add frames x (N, dim)."""
        if not len(x):
            return
        x = x.astype(np.float64, copy=False)
        n_b, mean_b = len(x), x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) as float32; std is 1 where the feature is constant up to rounding (scikit-learn's
        StandardScaler rule), so a constant training feature never turns a test value into z = 1e4."""
        var = self.m2 / max(self.n, 1)
        eps = np.finfo(np.float64).eps
        constant = var <= self.n * eps * var + (self.n * self.mean * eps) ** 2
        std = np.where(constant, 1.0, np.sqrt(var))
        return self.mean.astype(np.float32), std.astype(np.float32)


class StoreData:
    """Features of every utterance in one store, with availability (status ok) per modality."""

    def __init__(
        self,
        store: FeatureStore,
        max_memory_bytes: int = 8 << 30,
        non_finite: str = "error",
        absent_dims: dict[str, int] | None = None,
        block_frames: int = 16384,
    ):
        """`non_finite`: what to do with utterances whose features hold NaN/inf: "error" refuses the
        store (StoreError naming the modality and the utterances), "missing" treats that modality as
        missing for them (listed in `self.non_finite`). `absent_dims`: the feature width of each
        modality the store may lack entirely (prediction from a store without video, say): such a
        modality is missing for every utterance. Training needs all three (StoreError otherwise).
        `block_frames`: rows of the largest modality per block read at once when reading lazily."""
        self.store = store
        absent = [m for m in MODALITIES if m not in store.modality_names]
        if unknown := [m for m in absent if m not in (absent_dims or {})]:
            from cmarr.shared.errors import StoreError

            raise StoreError(
                f"{store.location}: the store has no {', '.join(unknown)} features (training needs all three)"
            )
        self.readers = {m: store.modality(m) for m in MODALITIES if m not in absent}
        self.labels = store.labels  # checked against the utterances' label names
        n = len(self.labels)
        self.present = {
            m: self.readers[m].status == Status.OK if m in self.readers else np.zeros(n, bool) for m in MODALITIES
        }
        self.dims = {m: self.readers[m].dim if m in self.readers else absent_dims[m] for m in MODALITIES}
        self.lengths = {  # (N,) frames per utterance, 0 where the modality is not ok
            m: np.diff(self.readers[m].offsets) * self.present[m] if m in self.readers else np.zeros(n, np.int64)
            for m in MODALITIES
        }
        size = sum(int(r.offsets[-1]) * r.dim * 4 for r in self.readers.values())
        self.in_memory = size <= max_memory_bytes
        self._values = {m: r.load_all().astype(np.float32) for m, r in self.readers.items()} if self.in_memory else None
        from cmarr.shared.store.reader import _block_bounds

        self.block_bounds = _block_bounds(list(self.readers.values()), block_frames)  # lazy reading unit
        self._block_of = np.searchsorted(self.block_bounds, np.arange(len(self.labels)), side="right") - 1
        self._cache: OrderedDict[tuple[str, int], list[np.ndarray]] = OrderedDict()
        self.cache_blocks = 8  # decoded blocks kept per run when reading lazily (bounded memory)
        self.blocks_read = 0  # blocks decoded so far when reading lazily (what a batching costs in reads)
        self.non_finite = self._refuse_non_finite(non_finite)

    def _refuse_non_finite(self, policy: str) -> dict[str, list[str]]:
        """Scan every ok item once for NaN/inf (a store written before the extractor checked, or
        edited since); refuse it, or mark those modalities missing. Returns {modality: utterance ids}."""
        ids = self.store.utterances["id"]
        found = {}
        for m in self.readers:
            rows = np.flatnonzero(self.present[m])
            bad = [
                int(i)
                for lo in range(0, len(rows), 256)
                for i, x in zip(rows[lo : lo + 256], self.frames(m, rows[lo : lo + 256]))
                if not np.isfinite(x).all()
            ]
            if bad:
                found[m] = [str(ids[i]) for i in bad]
                self.present[m][bad] = False
        if found and policy == "error":
            from cmarr.shared.errors import StoreError

            lines = [f"{m}: {len(u)} utterance(s), e.g. {', '.join(u[:5])}" for m, u in found.items()]
            raise StoreError(
                f"{self.store.location}: features with non-finite values (NaN/inf), which would train to NaN:\n  "
                + "\n  ".join(lines)
                + '\n  re-extract those items, or set train.non_finite = "missing" to treat them as missing'
            )
        return found

    def __len__(self) -> int:
        return len(self.labels)

    def frames(self, m: str, indices: np.ndarray) -> list[np.ndarray]:
        if not len(indices):
            return []  # also for a modality the store lacks (prediction from a partial store)
        r = self.readers[m]
        if self._values is not None:
            v = self._values[m]
            return [v[r.offsets[i] : r.offsets[i + 1]] for i in indices]
        out = []
        for i in indices:  # lazily: whole contiguous blocks, decoded once and cached
            b = int(self._block_of[i])
            frames = self._block(m, b)
            out.append(frames[int(i) - int(self.block_bounds[b])])
        return out

    def _block(self, m: str, b: int) -> list[np.ndarray]:
        key = (m, b)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        lo, hi = int(self.block_bounds[b]), int(self.block_bounds[b + 1])
        self.blocks_read += 1
        frames = [x.astype(np.float32) for x in self.readers[m].read_range(lo, hi)]
        self._cache[key] = frames
        while len(self._cache) > self.cache_blocks * len(MODALITIES):
            self._cache.popitem(last=False)
        return frames

    def epoch_order(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A new random order each epoch: a plain permutation in memory; when reading lazily, blocks
        in a random order with rows shuffled inside each, so consecutive batches share blocks."""
        if self.in_memory:
            return rng.permutation(rows)
        blocks = self._block_of[rows]
        order = []
        for b in rng.permutation(np.unique(blocks)):
            order.append(rng.permutation(rows[blocks == b]))
        return np.concatenate(order) if order else rows

    @property
    def length_key(self) -> np.ndarray:
        """(N,) what bucketing groups by: an utterance's stored values, frames x width summed over
        its modalities (the speech frames, mostly: what padding costs the most of)."""
        return sum(self.lengths[m] * self.dims[m] for m in MODALITIES)

    def epoch_batches(self, rows: np.ndarray, batch_size: int, rng: np.random.Generator, batching: Batching):
        """This epoch's training batches over `rows` (train/batching.py): `shuffled`, the epoch order
        cut into batches (a last one of a single row dropped); `bucketed`, length-bucketed over all
        rows in memory, or within windows of a few blocks' rows when reading lazily."""
        if batching.kind == "shuffled":
            order = self.epoch_order(rows, rng)
            batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
            return [b for b in batches if len(b) >= 2]  # contrastive terms need at least two rows
        windows = [rows] if self.in_memory else self._windows(self.epoch_order(rows, rng), batch_size)
        key = self.length_key
        return [b for w in windows for b in bucketed_batches(length_bands(w, key, batching.buckets), batch_size, rng)]

    @property
    def dialog_codes(self) -> np.ndarray:
        """(N,) int64 a code per dialog of the store's `dialog` column; a row without one (empty) is
        a dialog of its own."""
        if getattr(self, "_dialog_codes", None) is None:
            names = np.asarray(self.store.utterances["dialog"], dtype=object).astype(str)
            _, codes = np.unique(names, return_inverse=True)
            alone = names == ""
            codes = codes.astype(np.int64)
            codes[alone] = codes.max(initial=0) + 1 + np.flatnonzero(alone)
            self._dialog_codes = codes
        return self._dialog_codes

    def dialogs(self, rows: np.ndarray) -> list[np.ndarray]:
        """`rows` grouped into their dialogs, each in time order (`start`, ties in row order), the
        dialogs in the order of their first row (what a model that `reads_dialogs` is batched by)."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return []
        start = np.nan_to_num(np.asarray(self.store.utterances["start"], np.float64)[rows], nan=0.0)
        codes = self.dialog_codes[rows]
        order = np.lexsort((rows, start, codes))  # by dialog, then start, then row
        ranked = rows[order]
        cuts = np.flatnonzero(np.diff(codes[order])) + 1
        groups = np.split(ranked, cuts)
        return sorted(groups, key=lambda g: int(np.flatnonzero(np.isin(rows, g))[0]))

    def whole_dialogs(self, rows: np.ndarray) -> list[np.ndarray]:
        """The store's complete dialogs that hold `rows` (their context at evaluation)."""
        return self.dialogs(np.flatnonzero(np.isin(self.dialog_codes, self.dialog_codes[rows])))

    def dialog_batches(self, rows: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """This epoch's training batches of whole dialogs of `rows`: the dialogs in a random order,
        `batch_size` dialogs per batch (a batch is a set of conversations)."""
        groups = self.dialogs(rows)
        order = rng.permutation(len(groups))
        cuts = range(0, len(groups), batch_size)
        return [np.concatenate([groups[k] for k in order[lo : lo + batch_size]]) for lo in cuts]

    def speaker_ranks(self, indices: np.ndarray) -> np.ndarray:
        """(B,) each row's speaker among its dialog's speakers in `indices`, by sorted speaker id."""
        speakers = np.asarray(self.store.utterances["speaker"], dtype=object).astype(str)[indices]
        codes = self.dialog_codes[indices]
        out = np.zeros(len(indices), np.int64)
        for c in np.unique(codes):
            at = np.flatnonzero(codes == c)
            out[at] = np.unique(speakers[at], return_inverse=True)[1]
        return out

    def _windows(self, order: np.ndarray, batch_size: int, batches: int = 8) -> list[np.ndarray]:
        """The block-local `order` in windows of whole batches, at least `batches` of them (fewer
        make no buckets) and as many as the cached blocks hold; the cache grows to hold a window's
        blocks, so that bucketing inside it decodes each block about once."""
        per_block = max(1.0, len(order) / max(len(np.unique(self._block_of[order])), 1))  # rows per block
        size = batch_size * max(batches, int((self.cache_blocks - 1) * per_block) // batch_size)
        self.cache_blocks = max(self.cache_blocks, int(np.ceil(size / per_block)) + 2)  # + the straddled edges
        windows = [order[lo : lo + size] for lo in range(0, len(order), size)]
        if len(windows) > 1 and len(windows[-1]) < batch_size:  # a short tail joins the window before it
            windows[-2:] = [np.concatenate(windows[-2:])]
        return windows

    def normaliser(self, train_idx: np.ndarray) -> Normaliser:
        """Per-feature mean and std over the frames of the training utterances `train_idx` only."""
        mean, std = {}, {}
        for m in MODALITIES:
            idx = np.sort(train_idx[self.present[m][train_idx]])  # sorted: lazy reads visit each block once
            moments = RunningMoments(self.dims[m])
            for lo in range(0, len(idx), 256):
                frames = self.frames(m, idx[lo : lo + 256])
                moments.update(np.concatenate(frames) if frames else np.zeros((0, self.dims[m])))
            mean[m], std[m] = moments.mean_std()
        return Normaliser(mean, std)

    def batch(
        self,
        indices: np.ndarray,
        given: dict[str, np.ndarray],
        norm: Normaliser,
        device,
        known: dict[str, np.ndarray] | None = None,
        full_length: bool = False,
        dialogs: bool = False,
    ) -> Batch:
        """Padded, normalised features of `indices` (B,). `given[m]` (B,) bool: rows that give m.
        `known[m]` (B,) bool: rows whose true features to load (default: `given`, as at evaluation;
        training passes every really-present modality). A modality that is not known for a row is
        all zeros with an all-False mask: its frames are not even read. `full_length`: pad each
        modality to the longest recording of the batch the store holds, known or not (the padding
        a model that reads it sees in training, and the peers' datasets give at evaluation).
        `dialogs`: `indices` are whole dialogs, each contiguous (`dialogs()`); the batch carries each
        row's dialog and speaker (`Batch.dialog`, `Batch.speaker`)."""
        known = given if known is None else known
        steps = {m: int(self.lengths[m][indices].max(initial=0)) for m in MODALITIES} if full_length else None
        seqs, kept = {}, {}
        for m in MODALITIES:
            kept[m] = known[m] & self.present[m][indices]
            seqs[m] = [np.zeros((0, self.dims[m]), np.float32)] * len(indices)
            wanted = np.flatnonzero(kept[m])
            for k, f in zip(wanted, self.frames(m, indices[wanted])):
                seqs[m][k] = (f - norm.mean[m]) / norm.std[m]
        given = {m: given[m] & self.present[m][indices] for m in MODALITIES}
        batch = collate(seqs, self.dims, given, kept, self.labels[indices], device, steps)
        if dialogs:
            codes = self.dialog_codes[indices]
            batch.dialog = torch.from_numpy(np.r_[0, np.cumsum(codes[1:] != codes[:-1])].astype(np.int64)).to(device)
            batch.speaker = torch.from_numpy(self.speaker_ranks(indices)).to(device)
        return batch


def collate(
    seqs: dict[str, list[np.ndarray]],
    dims: dict[str, int],
    given: dict[str, np.ndarray],
    known: dict[str, np.ndarray],
    labels: np.ndarray,
    device,
    steps: dict[str, int] | None = None,
) -> Batch:
    """The one padding every trainer (and `StoreDataset.collate`) uses: per modality m the B sequences
    `seqs[m]` ((T_i, F_m) float32 each, (0, F_m) where not known) zero-padded to the longest (at least
    one step, at least `steps[m]` where given) with a mask of their valid steps; `given`/`known` (B,)
    bool and `labels` (B,) as they are."""
    x, mask = {}, {}
    for m, rows in seqs.items():
        T = max(1, max((len(s) for s in rows), default=0), (steps or {}).get(m, 0))
        xb = np.zeros((len(rows), T, dims[m]), np.float32)
        mb = np.zeros((len(rows), T), bool)
        for k, s in enumerate(rows):
            xb[k, : len(s)] = s
            mb[k, : len(s)] = True
        x[m] = torch.from_numpy(xb).to(device)
        mask[m] = torch.from_numpy(mb).to(device)
    as_tensor = lambda d: {m: torch.from_numpy(np.asarray(v, bool)).to(device) for m, v in d.items()}  # noqa: E731
    return Batch(x, mask, as_tensor(given), as_tensor(known), torch.from_numpy(np.asarray(labels, np.int64)).to(device))

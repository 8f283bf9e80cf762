"""Per-chunk CRC32 checksums: recorded from the exact arrays written, checked on every read.

Checksums are over decoded chunk contents, so a garbage chunk file is caught whether it fails to
decode or decodes to different numbers, and a deleted chunk file (which zarr reads back as the
fill value, zeros) is caught because zeros do not match what was written.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import zarr
from cmarr.shared.errors import StoreDamagedError, StoreError
from cmarr.shared.store.schema import CRC_ATTR

# Decoded, verified chunks kept per array, so that reading neighbouring utterances one at a time
# (`get(i)`, `get(i + 1)`, ...) decodes and checks each chunk once instead of once per utterance.
CHUNK_CACHE_BYTES = 32 << 20


def block_crc(block: np.ndarray) -> int:
    """CRC32 of an array block; strings are hashed as NUL-joined UTF-8."""
    if block.dtype.kind in "OTU":
        return zlib.crc32("\x00".join(str(x) for x in block.ravel()).encode("utf-8"))
    return zlib.crc32(np.ascontiguousarray(block).view(np.uint8).reshape(-1))  # no copy when contiguous


def chunk_row_ranges(n_rows: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """Row ranges of the chunks along axis 0 (cmarr arrays are only ever chunked there)."""
    for start in range(0, n_rows, chunk_rows):
        yield start, min(start + chunk_rows, n_rows)


def array_crcs(data: np.ndarray, chunk_rows: int) -> list[int]:
    return [block_crc(data[a:b]) for a, b in chunk_row_ranges(len(data), chunk_rows)]


def nonfinite_mask(block: np.ndarray) -> np.ndarray:
    """Boolean mask of NaN/inf (all False for non-float data), from the exponent bits (all ones):
    about twice as fast as `np.isfinite` on float16, the store's usual dtype."""
    if block.dtype.kind != "f":
        return np.zeros(block.shape, bool)
    bits = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}
    if block.dtype.itemsize not in bits:
        return ~np.isfinite(block)
    kind, exponent = bits[block.dtype.itemsize]
    return (np.ascontiguousarray(block).view(kind) & kind(exponent)) == kind(exponent)


def write_checked(group: zarr.Group, name: str, data: np.ndarray, chunk_rows: int | None = None) -> zarr.Array:
    """Create `name` in `group` holding `data`, with the per-chunk CRCs recorded in its attrs."""
    chunk_rows = chunk_rows or max(1, len(data))
    dtype = str if data.dtype == object else data.dtype
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=dtype,
        chunks=(chunk_rows,) + data.shape[1:],
        overwrite=True,
        attributes={CRC_ATTR: array_crcs(data, chunk_rows)},
    )
    if len(data):
        arr[...] = data
    return arr


class CheckedArray:
    """A zarr array read in whole chunks, each checked against the CRC32 recorded when it was written.

    `name` is the array's path inside the store (`audio/values`) and `location` the store's, for
    messages. Any damage raises `StoreDamagedError` naming the chunk and its rows. Reads return
    fresh arrays (never views of the cache)."""

    def __init__(self, array: zarr.Array, name: str, location: str, cache_bytes: int = CHUNK_CACHE_BYTES):
        self.array, self.name, self.location = array, name, location
        self.shape, self.dtype = array.shape, array.dtype
        self.chunk_rows = int(array.chunks[0]) if array.shape else 0
        n_chunks = len(range(0, self.shape[0], self.chunk_rows)) if self.chunk_rows else 0
        recorded = array.attrs.get(CRC_ATTR)
        if not array.shape or tuple(array.chunks[1:]) != tuple(array.shape[1:]):
            self._fail(f"{name} has chunks {array.chunks} for shape {array.shape}; cmarr chunks along rows only")
        if recorded is None:
            self._fail(f"{name} has no recorded checksums")
        if len(recorded) != n_chunks:
            self._fail(f"{name} has {n_chunks} chunks but {len(recorded)} checksums recorded (resized or truncated)")
        self.crcs: list[int] = list(recorded)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes, self._cache_budget = 0, cache_bytes
        self._lock = threading.Lock()  # readers may run on a prefetch thread

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_chunks(self) -> int:
        return len(self.crcs)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1, from the verified chunks that hold them."""
        if hi <= lo:
            return np.empty((0,) + tuple(self.shape[1:]), self.dtype)
        first, last = lo // self.chunk_rows, (hi - 1) // self.chunk_rows
        runs = self._runs(first, last + 1)
        pos = first * self.chunk_rows  # row of the first run's first row
        if len(runs) == 1:
            data, fresh = runs[0]
            return data[lo - pos : hi - pos] if fresh else data[lo - pos : hi - pos].copy()
        out = np.empty((hi - lo,) + tuple(self.shape[1:]), self.dtype)
        for data, _ in runs:
            a, b = max(lo, pos), min(hi, pos + len(data))
            out[a - lo : b - lo] = data[a - pos : b - pos]
            pos += len(data)
        return out

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0])

    def chunk(self, k: int) -> np.ndarray:
        """Chunk `k`, decoded and verified (not cached: for scans such as `verify`)."""
        return self._decode_run(k, k + 1)

    def chunk_rows_of(self, k: int) -> tuple[int, int]:
        return k * self.chunk_rows, min((k + 1) * self.chunk_rows, self.shape[0])

    # ------------------------------------------------------------------ internals

    def _runs(self, first: int, stop: int) -> list[tuple[np.ndarray, bool]]:
        """Chunks first..stop-1, verified, as consecutive (rows, decoded now) runs: a cached chunk
        is a run of its own; each stretch of uncached chunks is decoded in one zarr read (which
        fetches them concurrently). Reads of one or two chunks (an utterance at a time) use the cache
        and keep what they decode (copies: decoded runs are handed to the caller), since the next
        utterance is likely in the same chunk; longer reads neither use nor fill it: re-decoding a
        boundary chunk costs less than assembling the result from pieces."""
        small = stop - first <= 2
        with self._lock:
            cached = {k: self._cache[k] for k in range(first, stop) if small and k in self._cache}
            for k in cached:
                self._cache.move_to_end(k)
        runs, k = [], first
        while k < stop:
            if k in cached:
                runs.append((cached[k], False))
                k += 1
                continue
            end = next((e for e in range(k, stop) if e in cached), stop)
            data = self._decode_run(k, end)
            runs.append((data, True))
            for j in range(k, end) if small else ():
                a, b = self.chunk_rows_of(j)
                self._remember(j, data[a - k * self.chunk_rows : b - k * self.chunk_rows].copy())
            k = end
        return runs

    def _decode_run(self, first: int, stop: int) -> np.ndarray:
        """Rows of chunks first..stop-1, decoded in one read, each chunk checked; names the first
        damaged one."""
        lo, hi = first * self.chunk_rows, self.chunk_rows_of(stop - 1)[1]
        try:
            data = np.asarray(self.array[lo:hi])
        except OSError as err:  # the storage failed (network, permissions): not damage
            raise StoreError(f"{self.location}: cannot read {self.name} rows {lo}-{hi - 1}: {err}") from None
        except Exception as err:  # a codec error (zstd, vlen-utf8) or unreadable file: find which chunk
            if stop - first > 1:
                return np.concatenate([self._decode_run(k, k + 1) for k in range(first, stop)])
            self._fail_chunk(first, f"cannot be decoded: {type(err).__name__}: {err}")
        for k in range(first, stop):
            a, b = self.chunk_rows_of(k)
            block = data[a - lo : b - lo]
            if block_crc(block) != self.crcs[k]:
                gone = bool(np.all(block == self.array.fill_value))  # what zarr returns for a missing file
                self._fail_chunk(k, "is missing (reads back as the fill value: its chunk file is gone)" if gone else "")
        return data

    def _remember(self, k: int, block: np.ndarray) -> None:
        with self._lock:
            if block.nbytes > self._cache_budget or k in self._cache:
                return
            self._cache[k] = block
            self._cached_bytes += block.nbytes
            while self._cached_bytes > self._cache_budget:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes

    def _fail_chunk(self, k: int, what: str) -> None:
        a, b = self.chunk_rows_of(k)
        self._fail(f"{self.name} chunk {k} (rows {a}-{b - 1}) " + (what or "is damaged (checksum mismatch)"))

    def _fail(self, detail: str) -> None:
        raise StoreDamagedError(self.location, detail)

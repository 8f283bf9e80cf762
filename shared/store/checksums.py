"""Per-chunk CRC32 checksums, computed from the exact arrays written and re-computed by `verify`.

Checksums are over decoded chunk contents, so a garbage chunk file is caught whether it fails to
decode or decodes to different numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import zarr


def block_crc(block: np.ndarray) -> int:
    """CRC32 of an array block; strings are hashed as NUL-joined UTF-8."""
    if block.dtype.kind in "OTU":
        data = "\x00".join(str(x) for x in block.ravel()).encode("utf-8")
    else:
        data = np.ascontiguousarray(block).tobytes()
    return zlib.crc32(data)


def chunk_row_ranges(n_rows: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """Row ranges of the chunks along axis 0 (cmarr arrays are only ever chunked there)."""
    for start in range(0, n_rows, chunk_rows):
        yield start, min(start + chunk_rows, n_rows)


def array_crcs(data: np.ndarray, chunk_rows: int) -> list[int]:
    return [block_crc(data[a:b]) for a, b in chunk_row_ranges(len(data), chunk_rows)]


def write_checked(group: zarr.Group, name: str, data: np.ndarray, chunk_rows: int | None = None) -> zarr.Array:
    """Create `name` in `group` holding `data`, with the per-chunk CRCs recorded in its attrs."""
    from cmarr.shared.store.schema import CRC_ATTR

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

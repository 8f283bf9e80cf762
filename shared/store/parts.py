"""Staged parts and the finalized layout made from them (the writer's crash-safe half).

A part (`<modality>/_parts/<name>/`) holds one batch's frames as a values array; its index
(items, lengths, status, reasons, the values' CRC32) and its completion mark are written together
in one metadata update after the values, so a part without the mark is debris from a kill.
`plan_layout` decides which part supplies each utterance and `write_layout` copies the frames
into utterance order, chunk by chunk, recording each chunk's CRC32.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from cmarr.shared.errors import StoreDamagedError
from cmarr.shared.store.checksums import block_crc, chunk_row_ranges
from cmarr.shared.store.schema import CRC_ATTR, Status

# Decoded parts kept in memory while finalizing; parts come from length-sorted batches, so
# utterance order visits them in random order and a cache that holds them all reads each once.
FINALIZE_CACHE_BYTES = 4 << 30
# Values of the parts this writer staged, kept for finalize so that it need not read them back
# (a small corpus's finalize is otherwise mostly re-reading what was just written).
STAGED_CACHE_BYTES = 256 << 20

# item -> (part, first row in the part, frames, status, reason)
Plan = dict[int, tuple[Any, int, int, int, str]]


@dataclass
class MemoryPart:
    """A batch handed to finalize directly, in the shape of a staged part."""

    path: str
    attrs: dict[str, Any]
    values: np.ndarray


def index_attrs(items, lengths, status, reasons: dict, values: np.ndarray | None = None) -> dict[str, Any]:
    """A part's index, kept in its metadata: written together with the completion mark in one
    small write after the values, instead of three more arrays (each array is a round trip
    through zarr's event loop, and staging is on the critical path of every extraction)."""
    index = {
        "items": np.asarray(items, np.int64).tolist(),
        "lengths": np.asarray(lengths, np.int64).tolist(),
        "status": np.asarray(status, np.int8).tolist(),
        "reasons": {str(k): v for k, v in reasons.items()},
    }
    return index if values is None else {**index, "crc32": block_crc(values)}


def part_index(part: zarr.Group | MemoryPart) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, lengths, status) of a complete part."""
    attrs = part.attrs
    return (
        np.asarray(attrs["items"], np.int64),
        np.asarray(attrs["lengths"], np.int64),
        np.asarray(attrs["status"], np.int8),
    )


def is_complete(part_dir: Path) -> bool:
    meta = part_dir / "zarr.json"
    try:
        return bool(meta.is_file() and json.loads(meta.read_text()).get("attributes", {}).get("complete"))
    except json.JSONDecodeError:  # metadata cut short by a kill
        return False


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class PartCache:
    """LRU of decoded part values under a byte budget; parts read from disk are checked against
    the CRC32 recorded when they were staged."""

    def __init__(self, budget: int, seed: PartCache | None = None):
        self.budget, self.used = budget, 0
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        for key, data in seed.items.items() if seed else ():
            self.put(key, data)

    def get(self, part: zarr.Group | MemoryPart) -> np.ndarray:
        if isinstance(part, MemoryPart):
            return part.values
        key = part.path
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        data = part["values"][:]
        recorded = part.attrs.get("crc32")  # absent in parts a finalized layout was turned back into
        if recorded is not None and block_crc(data) != recorded:
            where = str(getattr(part.store, "root", part.store))
            raise StoreDamagedError(
                where, f"staged part {key} is damaged (checksum mismatch)", "remove it and re-run to redo its items"
            )
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


def plan_layout(parts: list[zarr.Group | MemoryPart]) -> Plan:
    """Item -> (part, first row, frames, status, reason), parts oldest first: a later part wins,
    except that a failure never replaces an earlier success."""
    plan: Plan = {}
    for part in parts:
        items, lengths, status = part_index(part)
        rows = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        reasons = part.attrs.get("reasons", {})
        for item, row, length, st in zip(items, rows, lengths, status):
            prev = plan.get(int(item))
            if prev is not None and prev[3] == Status.OK and st != Status.OK:
                continue
            plan[int(item)] = (part, int(row), int(length), int(st), reasons.get(str(item), ""))
    return plan


def write_layout(
    group: zarr.Group, plan: Plan, offsets: np.ndarray, dim: int, dtype: str, chunk_frames: int, cache: PartCache
) -> None:
    """Write `group/values` [offsets[-1], dim]: the planned items' frames in utterance order,
    assembled one chunk at a time, with every chunk's CRC32 recorded."""
    total = int(offsets[-1])
    values = group.create_array("values", shape=(total, dim), dtype=dtype, chunks=(chunk_frames, dim), overwrite=True)
    order = sorted(plan)
    cursor = 0  # index into `order` of the next utterance to copy
    crcs = []
    for start, stop in chunk_row_ranges(total, chunk_frames):
        block = np.empty((stop - start, dim), dtype=dtype)
        filled = 0
        while filled < len(block):
            item = order[cursor]
            part, row, _, _, _ = plan[item]
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

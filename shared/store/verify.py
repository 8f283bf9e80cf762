"""`verify`: prove a store is complete and reads back exactly what was written.

Checks, in order: the schema version and the utterance table; per modality the finalized flag,
array shapes and dtypes, offsets (start at 0, monotone, end at the frame count), status codes
consistent with lengths; and every chunk of every array against the CRC32 recorded at write time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr
from cmarr.shared.errors import StoreError
from cmarr.shared.store.checksums import block_crc, chunk_row_ranges
from cmarr.shared.store.reader import FeatureStore, staged_parts
from cmarr.shared.store.schema import CRC_ATTR, UTTERANCE_COLUMNS, UTTERANCES, Status


@dataclass
class VerifyReport:
    location: str
    problems: list[str] = field(default_factory=list)  # corruption: reads would be wrong
    incomplete: list[str] = field(default_factory=list)  # an interrupted write: re-run to finish
    chunks_checked: int = 0

    @property
    def state(self) -> str:
        return "corrupt" if self.problems else "incomplete" if self.incomplete else "ok"

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def verify_store(location: str, checksums: bool = True) -> VerifyReport:
    """Verify the store at `location`; never raises for a damaged store, reports instead."""
    report = VerifyReport(str(location))
    try:
        store = FeatureStore.open(location, allow_incomplete=True)
    except StoreError as err:
        (report.incomplete if "incomplete" in str(err) else report.problems).append(str(err))
        return report
    n = _verify_table(store, report, checksums)
    for name in store.modality_names:
        _verify_modality(store, name, n, report, checksums)
    return report


def _verify_table(store: FeatureStore, report: VerifyReport, checksums: bool) -> int:
    lengths = set()
    for column in UTTERANCE_COLUMNS:
        path = f"{UTTERANCES}/{column}"
        arr = _array(store.root, path, report)
        if arr is None:
            continue
        lengths.add(arr.shape[0])
        if checksums:
            _check_chunks(arr, path, report)
    if len(lengths) > 1:
        report.problems.append(f"{UTTERANCES}: columns differ in length {sorted(lengths)}")
    return min(lengths) if lengths else 0


def _verify_modality(store: FeatureStore, name: str, n: int, report: VerifyReport, checksums: bool) -> None:
    if name not in store.root:
        report.problems.append(f"{name}: listed in the store's modalities but its group is missing")
        return
    group = store.root[name]
    if not group.attrs.get("finalized"):
        report.incomplete.append(
            f"{name}: not finalized ({staged_parts(group)} staged parts); re-run extraction to complete it"
        )
        return
    arrays = {a: _array(store.root, f"{name}/{a}", report) for a in ("values", "offsets", "status")}
    if any(a is None for a in arrays.values()):
        return
    values, offsets_arr, status_arr = arrays["values"], arrays["offsets"], arrays["status"]
    spec = group.attrs.get("spec", {})
    if values.ndim != 2 or values.shape[1] != spec.get("dim"):
        report.problems.append(f"{name}/values: shape {values.shape} disagrees with dim {spec.get('dim')}")
    if str(values.dtype) != spec.get("dtype"):
        report.problems.append(f"{name}/values: dtype {values.dtype} disagrees with spec {spec.get('dtype')}")
    try:
        offsets, status = offsets_arr[:], status_arr[:]
    except Exception as err:  # a damaged chunk of a small array; the checksum pass names it
        report.problems.append(f"{name}: cannot read offsets/status: {err}")
        offsets = status = None
    if offsets is not None:
        _check_offsets(name, offsets, status, n, values.shape[0], report)
    if checksums:
        for a, arr in arrays.items():
            _check_chunks(arr, f"{name}/{a}", report)


def _check_offsets(name, offsets, status, n, frames, report) -> None:
    if offsets.shape != (n + 1,) or status.shape != (n,):
        report.problems.append(f"{name}: offsets {offsets.shape} / status {status.shape} do not fit {n} utterances")
        return
    if offsets[0] != 0 or offsets[-1] != frames:
        report.problems.append(f"{name}/offsets: run from {offsets[0]} to {offsets[-1]}, values have {frames} rows")
    if np.any(np.diff(offsets) < 0):
        report.problems.append(
            f"{name}/offsets: not monotone (first drop at utterance {int(np.argmax(np.diff(offsets) < 0))})"
        )
    if not np.isin(status, [int(s) for s in Status]).all():
        report.problems.append(
            f"{name}/status: unknown status codes {sorted(set(status.tolist()) - {int(s) for s in Status})}"
        )
    lengths = np.diff(offsets)
    bad = np.flatnonzero((status == Status.OK) != (lengths > 0))
    if len(bad):
        report.problems.append(
            f"{name}/status: {len(bad)} utterances whose status disagrees with their frame count "
            f"(first: index {bad[0]})"
        )
    pending = int((status == Status.PENDING).sum())
    if pending:
        report.incomplete.append(f"{name}: {pending} utterances still pending")


def _array(root: zarr.Group, path: str, report: VerifyReport) -> zarr.Array | None:
    try:
        return root[path]
    except Exception as err:  # missing or unreadable metadata
        report.problems.append(f"{path}: missing or unreadable array ({type(err).__name__})")
        return None


def _check_chunks(arr: zarr.Array, path: str, report: VerifyReport) -> None:
    recorded = arr.attrs.get(CRC_ATTR)
    if recorded is None:
        report.problems.append(f"{path}: no checksums recorded")
        return
    ranges = list(chunk_row_ranges(arr.shape[0], arr.chunks[0]))
    if len(ranges) != len(recorded):
        report.problems.append(f"{path}: {len(ranges)} chunks but {len(recorded)} checksums recorded")
        return
    for k, ((a, b), crc) in enumerate(zip(ranges, recorded)):
        report.chunks_checked += 1
        try:
            block = arr[a:b]
        except Exception as err:
            report.problems.append(f"{path}: chunk {k} (rows {a}-{b - 1}) cannot be decoded: {err}")
            continue
        if block_crc(np.asarray(block)) != crc:
            report.problems.append(f"{path}: chunk {k} (rows {a}-{b - 1}) checksum mismatch")

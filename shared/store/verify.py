"""`verify`: prove a store is complete and reads back exactly what was written.

Checks, in order: the store opens (root metadata, schema version); every column of the utterance
table, and its labels against the store's class list; per modality the finalized flag, the layout
(values shape and dtype against the spec, offsets and status against each other, see
`layout_problems`) and every chunk of every array against the CRC32 recorded at write time,
counting non-finite values in ok items' frames; last,
that every modality the store's config asked for was written. It goes on past damage, so one run
lists all of it; readers stop at the first damaged chunk they meet.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import numpy as np
from cmarr.shared.console import some_named
from cmarr.shared.errors import StoreDamagedError, StoreError, StoreIncompleteError
from cmarr.shared.store.checksums import CheckedArray
from cmarr.shared.store.reader import (
    FeatureStore,
    label_problems,
    layout_problems,
    nonfinite_per_utterance,
    staged_parts,
)
from cmarr.shared.store.schema import UTTERANCE_COLUMNS, UTTERANCES, Status

MAX_LISTED = 10  # utterances named per kind of problem; the rest are counted


@dataclass
class VerifyReport:
    location: str
    problems: list[str] = field(default_factory=list)  # corruption: reads would be wrong
    incomplete: list[str] = field(default_factory=list)  # an interrupted write: re-run to finish
    notes: list[str] = field(default_factory=list)  # neither: things worth knowing (a slow zip)
    chunks_checked: int = 0

    @property
    def state(self) -> str:
        return "corrupt" if self.problems else "incomplete" if self.incomplete else "ok"

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def verify_store(location: str, checksums: bool = True) -> VerifyReport:
    """Verify the store at `location`; never raises for a damaged or incomplete store, reports
    instead (a location that holds no store, or one it cannot reach, raises `StoreError`).
    `checksums=False` skips reading the feature values (the bulk of the store)."""
    report = VerifyReport(str(location))
    try:
        store = FeatureStore.open(location, allow_incomplete=True)
    except StoreIncompleteError as err:
        report.incomplete.append(str(err))
        return report
    except StoreDamagedError as err:
        report.problems.append(str(err))
        return report
    report.notes += store.notes
    n = _verify_table(store, report)
    ids = None if report.problems else [str(u) for u in store.utterances["id"].tolist()]  # the table read clean
    for name in store.modality_names:
        _verify_modality(store, name, n, ids, report, checksums)
    report.incomplete += [
        f"{m}: asked for by the store's config (extract.modalities) but never written; "
        "re-run the extraction to complete the store"
        for m in expected_modalities(store)
        if m not in store.modality_names
    ]
    if not store.modality_names and not report.incomplete:
        report.incomplete.append("no modality has been written yet; re-run the extraction to complete the store")
    return report


def expected_modalities(store: FeatureStore) -> list[str]:
    """The modalities the extraction that made the store was asked for (its recorded config's
    `extract.modalities`); none for stores made otherwise (an MMIN import)."""
    try:
        config = tomllib.loads(store.attrs.get("config_toml") or "")
    except tomllib.TOMLDecodeError:
        return []
    return list(config.get("extract", {}).get("modalities", []))


def _verify_table(store: FeatureStore, report: VerifyReport) -> int:
    lengths = set()
    for column in UTTERANCE_COLUMNS:
        arr = _checked(store, f"{UTTERANCES}/{column}", report)
        if arr is not None:
            lengths.add(arr.shape[0])
            _scan(arr, report)
    if len(lengths) > 1:
        report.problems.append(f"{UTTERANCES}: columns differ in length {sorted(lengths)}")
    elif lengths and not report.problems:  # the columns read back as written: do they agree with the class list?
        report.problems += label_problems(store.classes, store.utterances)
    return min(lengths) if lengths else 0


def _verify_modality(
    store: FeatureStore, name: str, n: int, ids: list[str] | None, report: VerifyReport, checksums: bool
) -> None:
    try:
        group = store.group(name)
    except StoreError as err:
        report.problems.append(_detail(err))
        return
    if not group.attrs.get("finalized"):
        parts = staged_parts(group)
        report.incomplete.append(
            f"{name}: not finalized ({'unreadable' if parts is None else parts} staged parts); "
            "re-run extraction to complete it"
        )
        return
    arrays = {a: _checked(store, f"{name}/{a}", report) for a in ("values", "offsets", "status")}
    if any(a is None for a in arrays.values()):
        return
    values, offsets, status = arrays["values"], _read(arrays["offsets"], report), _read(arrays["status"], report)
    layout_ok = offsets is not None and status is not None
    if layout_ok:
        problems = layout_problems(name, group.attrs.get("spec", {}), values, offsets, status, n)
        report.problems += problems
        layout_ok = not problems
        if pending := int((status == Status.PENDING).sum()):
            report.incomplete.append(f"{name}: {pending} utterances still pending")
        if not problems and ids is not None:
            report.problems += _reason_problems(name, group.attrs, ids, status)
    if checksums:
        report.chunks_checked += values.n_chunks
        counts = nonfinite_per_utterance(values, offsets if layout_ok else None, report.problems.append)
        _report_nonfinite(store, name, counts, report)


def _reason_problems(name: str, attrs, ids: list[str], status: np.ndarray) -> list[str]:
    """The recorded reasons against the status column (finalize writes both from one plan): a
    failure's reason belongs to a failed item, a note to one that did not fail, both to an
    utterance of the store. Metadata has no checksum; a hand edit shows here."""
    row = {u: i for i, u in enumerate(ids)}
    problems = []
    for kind, belongs, said in (("failures", True, "failed"), ("notes", False, "did not fail")):
        recorded = attrs.get(kind, {})
        unknown = [u for u in recorded if u not in row]
        wrong = [u for u in recorded if u in row and (status[row[u]] == Status.FAILED) != belongs]
        if unknown:
            problems.append(
                f"{name}: {kind} name {len(unknown)} utterances the store does not hold ({some_named(unknown)})"
            )
        if wrong:
            problems.append(
                f"{name}: {kind} hold reasons for {len(wrong)} utterances whose status says otherwise (a reason "
                f"there belongs to an item that {said}): {some_named(wrong)}"
            )
    return problems


def _report_nonfinite(store: FeatureStore, name: str, counts: np.ndarray, report: VerifyReport) -> None:
    """One line per utterance whose (ok) frames hold NaN/inf, up to MAX_LISTED, then a total."""
    bad = np.flatnonzero(counts)
    if not len(bad):
        return
    try:
        ids = store.utterances["id"]
    except StoreError:  # damaged table, reported already: name utterances by index
        ids = [f"#{i}" for i in range(len(counts))]
    if len(counts) != len(ids):  # the offsets were unusable: only a total is known
        report.problems.append(f"{name}/values: {int(counts.sum())} non-finite values (NaN/inf)")
        return
    for i in bad[:MAX_LISTED]:
        report.problems.append(f"{name}: utterance {ids[i]} (status ok) holds {counts[i]} non-finite values (NaN/inf)")
    if len(bad) > MAX_LISTED:
        report.problems.append(f"{name}: {len(bad) - MAX_LISTED} more utterances hold non-finite values")


def _checked(store: FeatureStore, path: str, report: VerifyReport) -> CheckedArray | None:
    try:
        return store.array(path)
    except StoreError as err:
        report.problems.append(_detail(err))
        return None


def _read(arr: CheckedArray, report: VerifyReport) -> np.ndarray | None:
    """A small array whole (every chunk verified), or None with the damage reported."""
    report.chunks_checked += arr.n_chunks
    try:
        return arr.read_all()
    except StoreError as err:
        report.problems.append(_detail(err))
        return None


def _scan(arr: CheckedArray, report: VerifyReport) -> None:
    for k in range(arr.n_chunks):
        report.chunks_checked += 1
        try:
            arr.chunk(k)
        except StoreError as err:
            report.problems.append(_detail(err))


def _detail(err: StoreError) -> str:
    return err.detail if isinstance(err, StoreDamagedError) else str(err)

"""The store an extraction writes into, kept in step with the corpus it comes from.

A new store is created from the corpus. An existing one is resumed when it holds the same
utterances (ids, in order, and label set); what the corpus now says about them is compared
column by column with the store's utterance table on every run:
- labels, speakers, sessions and the other descriptive columns that differ are brought up to date
  in the store (a label corrected in a manifest reaches the store without re-extraction);
- start/end times that differ would need the features re-cut: refused, naming the utterances,
  unless `overwrite`, with which every modality of the store is extracted again; an utterance
  that no modality settled (every one failed or is pending) takes its new times, and the run
  retries it with them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.degrade import degradation_key
from cmarr.shared.config import EXTRACTION_SECTIONS, DegradeConfig, PipelineConfig, config_hash, to_toml
from cmarr.shared.console import some_named
from cmarr.shared.errors import StoreError
from cmarr.shared.labels import LabelSet
from cmarr.shared.store import FeatureStore, ModalitySpec, StoreWriter, UtteranceTable
from cmarr.shared.store.schema import UTTERANCE_COLUMNS
from cmarr.shared.store.writer import ModalityWriter

TIMES = ("start", "end")  # columns whose change makes the stored features stale


def open_store(
    path: Path,
    records: list[UtteranceRecord],
    corpus: str,
    label_set: LabelSet,
    cfg: PipelineConfig,
    overwrite: bool = False,
) -> tuple[StoreWriter, dict[str, int]]:
    """The writer of the store at `path` (created when absent), and per utterance-table column the
    number of utterances whose value was brought up to date from the corpus."""
    table = UtteranceTable.from_records([r.table_row(label_set.classes) for r in records])
    if not (path / "zarr.json").is_file():
        recorded = to_toml(cfg, EXTRACTION_SECTIONS), config_hash(cfg, EXTRACTION_SECTIONS)
        return StoreWriter.create(path, table, corpus, label_set, *recorded), {}
    writer = StoreWriter.open(path)
    store = FeatureStore.open(path, allow_incomplete=True)
    _check_same_utterances(path, store, table, label_set)
    _check_same_degradation(path, store, cfg)
    changed = {c: _differ(store.utterances[c], table[c]) for c in UTTERANCE_COLUMNS if c != "id"}
    changed = {c: rows for c, rows in changed.items() if len(rows)}
    moved = sorted({int(i) for c in TIMES for i in changed.get(c, [])})
    settled = _settled(writer, store) if moved else None
    if stale := [i for i in moved if settled[i]]:
        _check_times_may_change(path, store, table["id"][stale].tolist(), overwrite, cfg.extract.modalities)
    if changed:
        writer.update_utterances({c: table[c] for c in changed})
    return writer, {c: len(rows) for c, rows in changed.items()}


def _check_same_utterances(path: Path, store: FeatureStore, table: UtteranceTable, label_set: LabelSet) -> None:
    stored, now = [str(i) for i in store.utterances["id"].tolist()], [str(i) for i in table["id"].tolist()]
    if stored != now:
        in_store, in_corpus = set(stored), set(now)
        added, gone = [i for i in now if i not in in_store], [i for i in stored if i not in in_corpus]
        parts = [f"{len(added)} the corpus now reads that the store lacks ({some_named(added)})"] if added else []
        parts += [f"{len(gone)} the store holds that the corpus no longer reads ({some_named(gone)})"] if gone else []
        what = "; ".join(parts) or "the same utterances in another order"
        raise StoreError(
            f"{path}: this store holds a different utterance list than the corpus now reads: {what} (another "
            "corpus, label set or filter; a label corrected into the label set adds its utterance). A store's "
            "utterances are fixed when it is created (--overwrite re-extracts them, it does not change them): "
            "extract into another --out, or remove this store"
        )
    if store.classes != list(label_set.classes):
        raise StoreError(
            f"{path}: this store was written with the classes {','.join(store.classes)}, this run reads "
            f"{','.join(label_set.classes)}; use the same --label-set, or another --out"
        )


def _check_same_degradation(path: Path, store: FeatureStore, cfg: PipelineConfig) -> None:
    """A degraded store and its clean twin (or another degradation's) are separate stores, even with
    --overwrite: the store records the degradation it was created with."""
    stored = tomllib.loads(store.attrs.get("config_toml") or "").get("extract", {}).get("degrade", {})
    before, now = degradation_key(DegradeConfig(**stored)), degradation_key(cfg.extract.degrade)
    if before != now:
        raise StoreError(
            f"{path}: this store was extracted {f'with --degrade {before}' if before else 'clean'}, this run asks "
            f"for {f'--degrade {now}' if now else 'clean media'}; a degraded store and its clean twin are separate "
            "stores: extract into another --out (to resume this one, give its own --degrade and seed)"
        )


def _check_times_may_change(path: Path, store, ids: list[str], overwrite: bool, modalities: list[str]) -> None:
    """Changed times are refused unless `overwrite` re-extracts every modality the store holds."""
    named = some_named(ids)
    if not overwrite:
        raise StoreError(
            f"{path}: the corpus now gives other start/end times for {len(ids)} utterances ({named}); their "
            "features were cut at the old times: pass --overwrite to extract the store's modalities again"
        )
    if stale := [m for m in store.modality_names if m not in modalities]:
        raise StoreError(
            f"{path}: start/end changed for {len(ids)} utterances ({named}) and the store's {', '.join(stale)} "
            "features were cut at the old times: include them in --modalities to extract them again"
        )


def _settled(writer: StoreWriter, store: FeatureStore) -> np.ndarray:
    """Boolean [n]: utterances some modality of the store settled (features, or a missing outcome)
    at their stored times. Failed and pending items hold nothing cut at those times and are tried
    again on the next run, so new times for them need no re-extraction (a span corrected after
    its item failed)."""
    settled = np.zeros(len(store), dtype=bool)
    for name in store.modality_names:
        spec = ModalitySpec.from_attrs(store.group(name).attrs["spec"])
        settled |= ModalityWriter(writer, name, spec, attached=True).settled()  # reads only
    return settled


def _differ(stored: np.ndarray, now: np.ndarray) -> np.ndarray:
    """Rows whose values differ (NaN equals NaN: utterances without times)."""
    if stored.dtype.kind == "f":
        same = (stored == now) | (np.isnan(stored) & np.isnan(now.astype(float)))
    else:  # strings come back as numpy's StringDType, the table holds objects
        same = np.array([str(a) == str(b) for a, b in zip(stored.tolist(), now.tolist())], dtype=bool)
    return np.flatnonzero(~same)

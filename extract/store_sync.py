"""The store an extraction writes into: created from the corpus, or resumed when it holds the
same utterances.
"""

from __future__ import annotations

from pathlib import Path

from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.shared.config import PipelineConfig, config_hash, to_toml
from cmarr.shared.errors import StoreError
from cmarr.shared.labels import LabelSet
from cmarr.shared.store import FeatureStore, StoreWriter, UtteranceTable

try:
    from cmarr.shared.store.writer import store_lock
except ImportError:  # TODO(store helper): remove this stand-in once store_lock is on main
    import contextlib

    @contextlib.contextmanager
    def store_lock(path: Path):
        yield


def open_store(
    path: Path,
    records: list[UtteranceRecord],
    corpus: str,
    label_set: LabelSet,
    cfg: PipelineConfig,
    overwrite: bool = False,
) -> tuple[StoreWriter, dict[str, int]]:
    """Resume an existing store built from the same utterances, or create a new one. Returns the
    writer and, per utterance-table column, how many utterances' values were brought up to date."""
    if (path / "zarr.json").is_file():
        writer = StoreWriter.open(path)
        stored = FeatureStore.open(path, allow_incomplete=True).utterances["id"].tolist()
        if stored != [r.id for r in records]:
            raise StoreError(
                f"{path}: this store holds a different utterance list than the corpus now reads "
                "(different corpus, label set or filters); choose another --out or remove it"
            )
        return writer, {}
    table = UtteranceTable.from_records([r.table_row(label_set.classes) for r in records])
    return StoreWriter.create(path, table, corpus, label_set, to_toml(cfg), config_hash(cfg)), {}

"""The feature store (schema v1): one writer, one reader, verification and interchange.

Layout (one Zarr v3 group per corpus)::

    utterances/<column>         1-D arrays of equal length n (id, label, session, ...)
    <modality>/values           [total_frames, dim], utterance i = values[offsets[i]:offsets[i+1]]
    <modality>/offsets          [n + 1] int64
    <modality>/status           [n] int8 (see `Status`)
    <modality>/_parts/<id>/...  staged writes, present only while a modality is being written

Only `StoreWriter` and `FeatureStore` (and the modules they are built from) touch Zarr; everything
else goes through them. Writers run inside `store_lock(path)`; every read is checked against the
CRC32 of each chunk recorded when it was written.
"""

from cmarr.shared.store.reader import FeatureStore, ModalityReader
from cmarr.shared.store.schema import SCHEMA_VERSION, ModalitySpec, Status, UtteranceTable
from cmarr.shared.store.verify import VerifyReport, verify_store
from cmarr.shared.store.writer import ModalityWriter, StoreWriter, store_lock

__all__ = [
    "SCHEMA_VERSION",
    "FeatureStore",
    "ModalityReader",
    "ModalitySpec",
    "ModalityWriter",
    "Status",
    "StoreWriter",
    "UtteranceTable",
    "VerifyReport",
    "store_lock",
    "verify_store",
]

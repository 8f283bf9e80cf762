"""Store contracts: what is written reads back bit-exact, from every location kind, lazily."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store import FeatureStore, ModalitySpec, Status, StoreWriter
from cmarr.shared.store.pack import pack_store
from cmarr.shared.store.synthetic import synthetic_table

from tests.conftest import assert_same


def _ragged(rng, n, dim, dtype):
    """Random sequences of 0..40 frames, with extremes (largest, smallest subnormal, -0.0) to prove
    bit-exactness. (NaN/inf are refused as ok values: see test_store_writer.py.)"""
    info = np.finfo(dtype)
    out = []
    for i in range(n):
        length = 0 if i % 5 == 0 else int(rng.integers(1, 41))
        x = (rng.standard_normal((length, dim)) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
        if length > 2:
            x[0, 0], x[1, 0], x[2, 0] = info.max, info.smallest_subnormal, -0.0
        out.append(x if length else None)
    return out


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("chunk_frames", [1, 7, 4096])
def test_ragged_roundtrip_is_bit_exact(tmp_path, dtype, chunk_frames):
    rng = np.random.default_rng(0)
    n = 37
    writer = StoreWriter.create(tmp_path / "s.zarr", synthetic_table(n), "t", FOUR_CLASS)
    mw = writer.modality("audio", ModalitySpec("enc", 5, dtype))
    feats = _ragged(rng, n, 5, dtype)
    # parts arrive in a shuffled, uneven order, as length-sorted batches do
    order = rng.permutation(n)
    for items in np.array_split(order, 6):
        mw.write_part(
            items,
            [feats[i] for i in items],
            [Status.OK if feats[i] is not None else Status.MISSING_INPUT for i in items],
        )
    counts = mw.finalize(chunk_frames)
    assert counts["ok"] == sum(f is not None for f in feats)
    reader = FeatureStore.open(tmp_path / "s.zarr").modality("audio")
    for i in range(n):
        assert_same(feats[i], reader.get(i))
    assert (reader.status == [Status.OK if f is not None else Status.MISSING_INPUT for f in feats]).all()
    for got, i in zip(reader.get_many([9, 3, 4, 4, 36, 0]), [9, 3, 4, 4, 36, 0]):
        assert_same(feats[i], got)


def test_utterance_table_roundtrip(small_store):
    path, _ = small_store
    store = FeatureStore.open(path)
    table = synthetic_table(60, seed=1)
    for name, column in table.columns.items():
        assert np.array_equal(store.utterances[name], column), name
    assert store.classes == list(FOUR_CLASS.classes)


def test_zip_and_url_read_the_same(small_store, tmp_path):
    path, written = small_store
    zipped = pack_store(path, tmp_path / "shared.zarr.zip")
    for location in (str(path), str(zipped), f"file://{path}"):
        store = FeatureStore.open(location)
        for name, feats in written.items():
            reader = store.modality(name)
            for i in (0, 17, 59):
                assert_same(feats[i], reader.get(i))
        assert store.fingerprint() == FeatureStore.open(path).fingerprint()


def test_reading_one_utterance_touches_few_chunks(small_store, monkeypatch):
    """Opening a store and reading one utterance must not load the whole store."""
    path, written = small_store
    fetched: list[str] = []
    original = zarr.storage.LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        fetched.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    store = FeatureStore.open(path)
    reader = store.modality("audio")
    n_chunks = len(list((path / "audio" / "values" / "c").iterdir()))
    fetched.clear()
    assert_same(written["audio"][30], reader.get(30))
    value_chunks = [k for k in fetched if k.startswith("audio/values/c/")]
    assert n_chunks > 10 and 1 <= len(value_chunks) <= 2


def test_shuffled_blocks_cover_each_utterance_once_in_a_new_order(small_store):
    path, written = small_store
    store = FeatureStore.open(path)
    rng = np.random.default_rng(0)
    subset = np.arange(0, 60, 2)
    orders = []
    for _ in range(2):
        seen = []
        for idx, frames in store.iter_blocks(["audio", "video"], rng, subset, block_frames=64):
            for k, i in enumerate(idx):
                assert_same(written["audio"][i], frames["audio"][k])
                assert_same(written["video"][i], frames["video"][k])
            seen.extend(idx.tolist())
        assert sorted(seen) == subset.tolist()
        orders.append(seen)
    assert orders[0] != orders[1]

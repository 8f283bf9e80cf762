"""The store as training data: normalisation statistics and values the trainer must refuse."""

from __future__ import annotations

import numpy as np
import pytest
from cmarr.shared.errors import StoreError
from cmarr.shared.store import FeatureStore
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.train.data import RunningMoments, StoreData

MODS = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4), "video": SyntheticModality(3, 2)}


def test_running_moments_match_numpy_over_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(1000, 4)) + 1e6  # a large offset: sum-of-squares formulas cancel here
    m = RunningMoments(4)
    for lo in range(0, 1000, 137):
        m.update(x[lo : lo + 137])
    mean, std = m.mean_std()
    assert np.allclose(mean, x.mean(0), rtol=1e-7) and np.allclose(std, x.std(0), rtol=1e-4)


def test_a_constant_feature_gets_scale_one():
    """StandardScaler's rule: a feature constant over the training frames is not divided by ~0."""
    x = np.ones((50, 3)) * [0.02, 7.0, 0.0]
    x[:, 2] = np.random.default_rng(0).normal(size=50)
    m = RunningMoments(3)
    m.update(x[:20])
    m.update(x[20:])
    mean, std = m.mean_std()
    assert std[0] == 1.0 and std[1] == 1.0 and 0.5 < std[2] < 1.5
    assert np.allclose(mean[:2], [0.02, 7.0])


def _store_with_nan(path, which="audio"):
    """A store whose `which` features of utterances 4 and 7 were edited to hold NaN / inf after it was
    written (checksums recomputed, as a careless edit or an older writer would leave it)."""
    import zarr
    from cmarr.shared.store.checksums import array_crcs
    from cmarr.shared.store.schema import CRC_ATTR

    write_synthetic_store(path, 10, MODS, dtype="float32", seed=5, chunk_frames=8)
    group = zarr.open_group(str(path / which), mode="r+")
    values, offsets = group["values"][:], group["offsets"][:]
    values[offsets[4] + 1, 0] = np.nan
    values[offsets[7], 2] = np.inf
    group["values"][:] = values
    group["values"].attrs[CRC_ATTR] = array_crcs(values, group["values"].chunks[0])
    return FeatureStore.open(path).utterances["id"]


def test_non_finite_features_are_refused_by_name(tmp_path):
    ids = _store_with_nan(tmp_path / "s.zarr")
    with pytest.raises(StoreError) as err:
        StoreData(FeatureStore.open(tmp_path / "s.zarr"))
    message = str(err.value)
    assert "audio: 2 utterance(s)" in message and ids[4] in message and ids[7] in message
    assert 'train.non_finite = "missing"' in message


def test_non_finite_features_can_be_treated_as_missing(tmp_path):
    ids = _store_with_nan(tmp_path / "s.zarr")
    data = StoreData(FeatureStore.open(tmp_path / "s.zarr"), non_finite="missing")
    assert data.non_finite == {"audio": [ids[4], ids[7]]}
    assert not data.present["audio"][[4, 7]].any() and data.present["audio"].sum() == 8
    norm = data.normaliser(np.arange(10))
    assert all(np.isfinite(v).all() for v in norm.mean.values())


def test_lazy_and_in_memory_reading_agree_on_statistics(tmp_path):
    write_synthetic_store(tmp_path / "s.zarr", 40, MODS, dtype="float16", seed=2, chunk_frames=16)
    eager = StoreData(FeatureStore.open(tmp_path / "s.zarr"))
    lazy = StoreData(FeatureStore.open(tmp_path / "s.zarr"), max_memory_bytes=0)
    a, b = eager.normaliser(np.arange(0, 40, 2)), lazy.normaliser(np.arange(0, 40, 2))
    for m in MODS:
        assert np.array_equal(a.mean[m], b.mean[m]) and np.array_equal(a.std[m], b.std[m])

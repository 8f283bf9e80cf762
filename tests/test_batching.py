"""Training batches (train/batching.py) as contracts: every training utterance exactly once per
epoch, seeded, the same for every system, less padding than shuffled batches on skewed lengths,
shuffled within and across buckets, block-local when reading lazily, and in the run id."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from cmarr.shared.config import PipelineConfig
from cmarr.shared.store import FeatureStore
from cmarr.shared.store.synthetic import IEMOCAP_TIMED, SyntheticModality, write_synthetic_store
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batching import Batching, bucketed_batches, length_bands, padding_share
from cmarr.train.data import StoreData
from cmarr.train.missing import build_sampler
from cmarr.train.run import run_hash
from cmarr.train.stage import SplitContext, make_optimizer, train_epoch
from cmarr.train.systems import get_system

# short, tied lengths (log-normal, skewed) at small widths: quick to write, a real spread to bucket
MODS = {
    m: replace(mod, dim=3 if m != "video" else 2, mean_frames=mod.mean_frames / 5) for m, mod in IEMOCAP_TIMED.items()
}
BUCKETED, SHUFFLED = Batching("bucketed", 10), Batching("shuffled")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("batching") / "s.zarr"
    write_synthetic_store(path, 400, MODS, dtype="float32", seed=3, chunk_frames=64, class_signal=0.5)
    return path


@pytest.fixture(scope="module")
def data(store):
    return StoreData(FeatureStore.open(store))


def _skewed(n=2000, seed=0):
    return np.maximum(1, np.random.default_rng(seed).lognormal(np.log(200), 0.6, n).round()).astype(np.int64)


@pytest.mark.parametrize("n", [1, 2, 3, 31, 32, 33, 65, 100])
@pytest.mark.parametrize("buckets", [1, 3, 10])
def test_every_utterance_is_in_exactly_one_batch(n, buckets):
    rows = np.arange(1000, 1000 + n)
    key = np.zeros(1000 + n, np.int64)
    key[rows] = _skewed(n)
    batches = bucketed_batches(length_bands(rows, key, buckets), 16, np.random.default_rng(0))
    got = np.concatenate(batches) if batches else np.zeros(0, int)
    if n < 2:
        assert batches == []  # one utterance makes no batch (in-batch terms need two rows)
        return
    assert sorted(got.tolist()) == rows.tolist()
    sizes = sorted(len(b) for b in batches)
    assert all(s >= 2 for s in sizes) and sizes[-1] <= 17 and sum(s != 16 for s in sizes) <= 1


@pytest.mark.parametrize("lazy", [False, True])
def test_an_epoch_visits_every_training_row_once_in_memory_and_lazily(store, lazy):
    data = StoreData(FeatureStore.open(store), max_memory_bytes=0 if lazy else 8 << 30)
    assert data.in_memory is not lazy
    rows = np.arange(0, 400, 2)  # a training part: every other utterance
    for seed in range(3):
        batches = data.epoch_batches(rows, 16, np.random.default_rng(seed), BUCKETED)
        assert sorted(np.concatenate(batches).tolist()) == rows.tolist()


def test_seeded_the_same_batches_another_seed_others(data):
    rows = np.arange(len(data))
    a, b, c = (data.epoch_batches(rows, 16, np.random.default_rng(s), BUCKETED) for s in (5, 5, 6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_buckets_pad_less_than_random_batches_on_skewed_lengths():
    key = _skewed()
    rows, rng = np.arange(len(key)), np.random.default_rng(0)
    shuffled = np.split(rng.permutation(rows), range(128, len(rows), 128))
    bucketed = bucketed_batches(length_bands(rows, key, 10), 128, rng)
    random_pad, bucket_pad = padding_share(key, shuffled), padding_share(key, bucketed)
    assert random_pad > 0.6 and bucket_pad < random_pad / 2.5, (random_pad, bucket_pad)
    one_band = bucketed_batches(length_bands(rows, key, 1), 128, rng)  # one bucket: random batches again
    assert padding_share(key, one_band) > 0.6


def test_shuffled_within_and_across_buckets():
    """Batch order is not the length order, the bands come in another order each epoch, and a band's
    utterances meet others in each epoch (not a fixed partition into batches)."""
    key = _skewed(640)
    rows = np.arange(len(key))
    bands = length_bands(rows, key, 5)
    epochs = [bucketed_batches(bands, 32, np.random.default_rng(s)) for s in range(2)]
    means = [[key[b].mean() for b in e] for e in epochs]
    assert means[0] != sorted(means[0]) and means[0] != means[1]
    pairs = [{frozenset(b[:2].tolist()) for b in e} for e in epochs]
    first = {tuple(sorted(b.tolist())) for b in epochs[0]}
    assert first != {tuple(sorted(b.tolist())) for b in epochs[1]} and pairs[0] != pairs[1]
    for batch in epochs[0]:  # a batch holds one band, or neighbouring ones where cuts straddle them
        held = sorted(k for k, band in enumerate(bands) if np.isin(batch, band).any())
        assert held == list(range(held[0], held[-1] + 1))
    assert len(bands) == 5 and len(bands[0]) > len(bands[-1])  # equal total length: the tail's bands hold fewer


def test_lazy_bucketing_keeps_reading_block_local(store):
    """Bucketing within windows of fewer blocks than are cached: each block decoded about once per
    epoch, as the shuffled (block-local) order reads them."""
    reads = {}
    for batching in (SHUFFLED, BUCKETED):
        lazy = StoreData(FeatureStore.open(store), max_memory_bytes=0, block_frames=256)
        lazy.cache_blocks = 3
        rows = np.arange(len(lazy))
        norm = lazy.normaliser(rows[:50])
        before = lazy.blocks_read
        for batch in lazy.epoch_batches(rows, 16, np.random.default_rng(0), batching):
            lazy.batch(batch, {m: np.ones(len(batch), bool) for m in lazy.dims}, norm, "cpu")
        reads[batching.kind] = lazy.blocks_read - before
    blocks = 3 * (len(lazy.block_bounds) - 1)  # per modality
    assert len(lazy.block_bounds) > 8  # many blocks: the check means something
    assert reads["shuffled"] <= 1.2 * blocks and reads["bucketed"] <= 1.5 * blocks, (reads, blocks)


def test_lazy_buckets_pad_less_than_shuffled(store):
    lazy = StoreData(FeatureStore.open(store), max_memory_bytes=0, block_frames=256)
    rows = np.arange(len(lazy))
    share = {
        b.kind: padding_share(lazy.lengths["audio"], lazy.epoch_batches(rows, 16, np.random.default_rng(0), b))
        for b in (SHUFFLED, BUCKETED)
    }
    assert share["bucketed"] < share["shuffled"] / 2, share


def _recorded_batches(system_name: str, data: StoreData, batching: Batching) -> list[list[int]]:
    """The rows of every batch one epoch of `system_name`'s first stage trains on (batch 8)."""
    cfg = PipelineConfig().train
    stage = get_system(system_name, cfg).stages[0]
    stage = replace(stage, optim=stage.optim.model_copy(update={"batch_size": 8}))
    rows = np.arange(0, 64)
    model = stage.build(data.dims, 4)
    ctx = SplitContext(data, rows, rows, rows, data.normaliser(rows), 0, torch.device("cpu"), batching=batching)
    seen, build = [], data.batch

    def spy(indices, *args, **kwargs):
        seen.append(indices.tolist())
        return build(indices, *args, **kwargs)

    data.batch = spy
    try:
        opt, scaler = make_optimizer(stage.optim, model), torch.amp.GradScaler("cpu", enabled=False)
        sums = train_epoch(model, stage, build_sampler("none"), ctx, rows, opt, scaler, np.random.default_rng(1))
    finally:
        del data.batch
    assert 0 <= sums["padded"] < 1
    return seen


def test_every_system_trains_on_the_same_batches(data):
    """One sampler for every system: two systems with the same batch size and seed see the same rows
    together, in the same order."""
    for batching in (BUCKETED, SHUFFLED):
        assert _recorded_batches("utt-fusion", data, batching) == _recorded_batches("cra", data, batching)


def test_the_batching_is_in_the_run_id_and_shuffled_keeps_the_ids_before_it():
    def hash_of(**train):
        cfg = PipelineConfig(train=TrainConfig(**train))
        return run_hash(cfg, get_system("cm-arr", cfg.train))

    default = hash_of()
    assert hash_of(batching="bucketed") == default  # bucketed is the default
    assert hash_of(batching="shuffled") != default and hash_of(length_buckets=4) != default
    assert hash_of(batching="shuffled", length_buckets=4) == hash_of(batching="shuffled")  # unused there
    # shuffled is what every run before the batching keys trained with: their ids are unchanged
    import json

    from cmarr.shared.provenance import text_sha256

    cfg = PipelineConfig(train=TrainConfig(batching="shuffled"))
    keys = ("val_rule", "val_fraction", "include_full_condition", "amp", "non_finite")
    system = get_system("cm-arr", cfg.train)
    before = {"protocol": {k: getattr(cfg.train, k) for k in keys}, "system": system.name, **system.config}
    assert hash_of(batching="shuffled") == text_sha256(json.dumps(before, sort_keys=True))


def test_the_synthetic_store_draws_as_before_unless_tied():
    """IEMOCAP_LIKE stores (every test store) keep their features; IEMOCAP_TIMED ties the lengths."""
    from cmarr.shared.store.synthetic import synthetic_lengths

    mod = SyntheticModality(225, 4, 0.6)
    old = np.maximum(1, np.random.default_rng(0).lognormal(np.log(225) - 0.18, 0.6, 50).round().astype(np.int64))
    assert np.array_equal(synthetic_lengths(50, mod, np.random.default_rng(0), np.zeros(50)), old)
    duration = np.random.default_rng(1).standard_normal(3000)
    tied = {m: synthetic_lengths(3000, v, np.random.default_rng(2), duration) for m, v in IEMOCAP_TIMED.items()}
    assert np.corrcoef(np.log(tied["audio"]), np.log(tied["video"]))[0, 1] > 0.99
    assert 0.7 < np.corrcoef(np.log(tied["audio"]), np.log(tied["text"]))[0, 1] < 0.9
    assert abs(tied["audio"].mean() / 225 - 1) < 0.05

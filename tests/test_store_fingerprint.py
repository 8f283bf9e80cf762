"""The fingerprint names the content: equal data and provenance give equal prints, whenever and by
whichever build they were written; any changed value, label or setting gives another."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store import FeatureStore, ModalitySpec, Status, StoreWriter
from cmarr.shared.store.synthetic import synthetic_table

N = 12


def _build(path, label_of_3=None, value_of_5=None, encoder="enc", config="[extract]\n"):
    table = synthetic_table(N)
    if label_of_3 is not None:
        table.columns["label"][3] = label_of_3
    writer = StoreWriter.create(path, table, "t", FOUR_CLASS, config_toml=config)
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((i % 4 + 1, 3)).astype(np.float32) for i in range(N)]
    if value_of_5 is not None:
        feats[5][0, 0] = value_of_5
    mw = writer.modality("audio", ModalitySpec(encoder, 3, "float32"))
    mw.write_part(range(N), feats, [Status.OK] * N)
    mw.finalize(chunk_frames=8)
    return FeatureStore.open(path).fingerprint()


@pytest.fixture
def varying_clock_and_build(monkeypatch):
    """Each store gets its own creation time and git sha, as two real extractions would."""
    tick = itertools.count()
    monkeypatch.setattr("cmarr.shared.store.writer.now_utc", lambda: f"2026-01-01T00:00:{next(tick):02d}+00:00")
    monkeypatch.setattr(
        "cmarr.shared.store.writer.software", lambda: {"cmarr_version": "0.1.0", "git_sha": f"sha{next(tick)}"}
    )


def test_the_same_store_built_twice_has_one_fingerprint(tmp_path, varying_clock_and_build):
    a, b = _build(tmp_path / "a.zarr"), _build(tmp_path / "b.zarr")
    assert (
        FeatureStore.open(tmp_path / "a.zarr").attrs["created"]
        != FeatureStore.open(tmp_path / "b.zarr").attrs["created"]
    )
    assert a == b


@pytest.mark.parametrize(
    "change",
    [{"label_of_3": 2}, {"value_of_5": 0.125}, {"encoder": "other-enc"}, {"config": "[extract]\ncpu_threads = 2\n"}],
    ids=["one label", "one value", "encoder", "config"],
)
def test_any_change_of_content_changes_the_fingerprint(tmp_path, varying_clock_and_build, change):
    assert synthetic_table(N)["label"][3] != change.get("label_of_3")
    assert _build(tmp_path / "a.zarr") != _build(tmp_path / "b.zarr", **change)

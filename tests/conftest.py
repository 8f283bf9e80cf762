"""Shared fixtures: small synthetic stores built fresh for each test that needs one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from cmarr.shared.store import FeatureStore, StoreWriter
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store

SMALL = {
    "text": SyntheticModality(6, 8, missing_rate=0.1),
    "audio": SyntheticModality(20, 12, missing_rate=0.1),
    "video": SyntheticModality(5, 6, missing_rate=0.2),
}


@pytest.fixture(scope="session")
def _small_store_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "small.zarr"
    written = write_synthetic_store(path, 60, SMALL, dtype="float32", seed=1, batch=7, chunk_frames=32)
    return path, written


@pytest.fixture
def small_store(_small_store_template, tmp_path):
    """(path, written features) for a private copy of a 60-utterance store with 3 modalities
    and really-missing items; tests may damage their copy."""
    template, written = _small_store_template
    path = tmp_path / "small.zarr"
    shutil.copytree(template, path)
    return path, written


@pytest.fixture
def cpu_bf16(monkeypatch) -> list[str]:
    """The training and evaluation loops under CPU bf16 autocast: cmarr's GPU default path, which
    `devices.autocast` leaves off on the CPU (`train.amp=bf16` there runs fp32). Returns the amp modes
    the loops asked for, so a test can assert they ran."""
    from cmarr.train import evaluation, stage

    used: list[str] = []

    def bf16(device, amp):
        used.append(amp)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(stage, "autocast", bf16)
    monkeypatch.setattr(evaluation, "autocast", bf16)
    return used


def assert_same(a: np.ndarray | None, b: np.ndarray) -> None:
    """Bit-exact equality (NaN-safe), with a missing item read back as zero frames."""
    if a is None:
        assert b.shape[0] == 0
    else:
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def shuffle_session_labels(path, session: str, seed: int) -> None:
    """Permute the labels of one session's utterances in the store at `path`, through the writer
    and in both label columns, as a relabel writes them (verify checks that they agree)."""
    store = FeatureStore.open(path)
    labels = store.utterances["label"].copy()
    held = np.flatnonzero(store.utterances["session"] == session)
    labels[held] = np.random.default_rng(seed).permutation(labels[held])
    names = [store.classes[k] for k in labels]
    StoreWriter.open(path).update_utterances({"label": labels, "label_name": names})

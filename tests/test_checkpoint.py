"""Checkpoints and resume states: plain data and tensors only, never code; damage is a one-line error."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from cmarr.train.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint, save_state


class _Payload:
    """Unpickling this runs a command (what a crafted checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _valid(path):
    save_checkpoint(path, {"w": torch.ones(3)}, {"system": "cm-arr", "stage": "cm-arr", "dims": {"text": 3}})


def test_round_trip(tmp_path):
    _valid(tmp_path / "c.pt")
    state, meta = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(state["w"], torch.ones(3)) and meta["dims"] == {"text": 3}
    rng = {"torch": torch.get_rng_state()}
    progress = {"epoch": 3, "rng": {"state": 2**100}}  # numpy's PCG64 state holds 128-bit integers
    save_state(tmp_path / "s.pt", {"model": {}, "optimizer": {}, "schedule": {}, "rng": rng, "progress": progress})
    assert load_state(tmp_path / "s.pt")["progress"]["rng"]["state"] == 2**100


@pytest.mark.parametrize("legacy", [False, True])
def test_a_payload_never_runs(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    path = tmp_path / "checkpoint.pt"
    if legacy:
        path.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    else:
        torch.save({"format": "cmarr-checkpoint/2", "model": _Payload(marker), "meta": {}}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert not marker.exists()
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda b: b[: len(b) // 2], "truncated or damaged"),
        (lambda b: b"", "empty file"),
    ],
    ids=["truncated", "empty"],
)
def test_damaged_files_give_one_line_naming_the_file(tmp_path, damage, words):
    _valid(tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage((tmp_path / "good.pt").read_bytes()))
    with pytest.raises(CheckpointError, match=words) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_random_bytes_of_any_kind_give_one_line_naming_the_file(tmp_path):
    """Garbage reaches the weights-only unpickler, which fails in many ways (UnpicklingError,
    IndexError, KeyError, ...): every one is a CheckpointError."""
    bad = tmp_path / "bad.pt"
    for seed in range(200):
        size = int(np.random.default_rng(seed).integers(1, 5000))
        bad.write_bytes(np.random.default_rng(seed).bytes(size))
        with pytest.raises(CheckpointError, match="not a checkpoint cmarr can read|damaged") as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_foreign_and_incomplete_files_are_refused(tmp_path):
    torch.save({"foo": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a cmarr-checkpoint/2 file: it has no format marker"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "cmarr-checkpoint/1"}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="it is a 'cmarr-checkpoint/1' file"):
        load_checkpoint(tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="not a cmarr-state/2 file: it is a 'cmarr-checkpoint/1' file") as err:
        load_state(tmp_path / "old.pt")
    assert f"delete {tmp_path / 'old.pt'} to train the stage again from its start" in str(err.value)
    torch.save({"format": "cmarr-checkpoint/2", "model": {}}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="incomplete: missing meta"):
        load_checkpoint(tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_kill_during_a_save_leaves_the_previous_file(tmp_path, monkeypatch):
    _valid(tmp_path / "c.pt")

    def dies(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(3)}, {})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")[0]["w"], torch.ones(3))


def test_every_cuda_devices_random_state_is_saved_and_restored(tmp_path, monkeypatch):
    """A resumed CUDA run is the uninterrupted run only if each device's generator is restored: the
    state file holds them (CUDA simulated: two devices, as torch.cuda reports them)."""
    from cmarr.train.checkpoint import restore_rng, rng_state

    devices = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [d.clone() for d in devices])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    save_state(tmp_path / "s.pt", {"model": {}, "optimizer": {}, "schedule": {}, "rng": rng_state(), "progress": {}})
    saved = load_state(tmp_path / "s.pt")["rng"]
    assert [torch.equal(a, b) for a, b in zip(saved["cuda"], devices)] == [True, True]
    restore_rng(saved)
    assert len(restored) == 2 and all(torch.equal(a, b) for a, b in zip(restored, devices))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CheckpointError, match="saved with 2 CUDA devices, this machine has 1"):
        restore_rng(saved)

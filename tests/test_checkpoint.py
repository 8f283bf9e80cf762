"""Checkpoints and resume states: plain data and tensors only, never code; damage is a one-line error."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from cmarr.train.checkpoint import (
    CheckpointError,
    UnverifiedCheckpoint,
    content_sha256,
    load_checkpoint,
    load_state,
    read_checkpoint,
    save_checkpoint,
    save_state,
)


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


META = {"system": "cm-arr", "stage": "cm-arr", "classes": ["ang", "hap", "neu", "sad"], "val_score": 0.5,
        "norm": {"mean": {"text": [0.1, 0.2]}, "std": {"text": [1.0, 2.0]}}}  # fmt: skip


def _trained(path):
    """A checkpoint whose middle bytes are weights (so a flip there lands in a tensor), and its content."""
    weights = {"enc.weight": torch.linspace(-1, 1, 50_000), "classifier.weight": torch.ones(4, 8)}
    save_checkpoint(path, weights, META)
    return torch.load(path, weights_only=True)


def _flip_middle_byte(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _edited(change):
    def edit(path):
        data = torch.load(path, weights_only=True)  # keeps the digest recorded when it was saved
        change(data)
        torch.save(data, path)

    return edit


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(_flip_middle_byte(p.read_bytes())),
        _edited(lambda d: d["model"].update({"classifier.weight": -d["model"]["classifier.weight"]})),
        _edited(lambda d: d["model"]["enc.weight"].mul_(50)),
        _edited(lambda d: d["meta"].update(classes=d["meta"]["classes"][::-1])),
        _edited(lambda d: d["meta"]["norm"]["std"].update(text=[1.0, 1.0])),
        _edited(lambda d: d["model"].pop("classifier.weight")),
        _edited(lambda d: d["model"].update({"extra": torch.zeros(1)})),
        _edited(lambda d: d["model"].update({"classifier.weight": d["model"]["classifier.weight"].double()})),
    ],
    ids=[
        "byteflip",
        "tampered_head",
        "tampered_weights",
        "tampered_classes",
        "tampered_norm",
        "removed",
        "added",
        "retyped",
    ],  # fmt: skip
)
def test_damage_or_edits_that_still_unpickle_are_refused(tmp_path, damage):
    """Field case checkpoint-integrity: each of these used to predict silently (a flipped byte changed
    probabilities in their 8th digit; negated classifier weights or reversed classes changed the label)."""
    path = tmp_path / "split0" / "cm-arr" / "checkpoint.pt"
    _trained(path)
    damage(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: changed since training: its weights or metadata") and "\n" not in message
    retrain = f"train the split again: delete {tmp_path / 'split0'} and run the run's cmarr-train command with --resume"
    assert retrain in message


def test_the_same_tensors_saved_on_another_device_load(tmp_path, monkeypatch):
    """Field case cuda_saved: torch.save on a GPU tags every storage cuda:0; the file's bytes differ,
    its content does not, so it loads (the digest is over content, not over the file's bytes)."""
    import torch.serialization as ser

    path = tmp_path / "checkpoint.pt"
    data = _trained(path)
    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")
    torch.save(data, tmp_path / "cuda.pt")
    monkeypatch.undo()
    assert (tmp_path / "cuda.pt").read_bytes() != path.read_bytes()
    state, meta = load_checkpoint(tmp_path / "cuda.pt")
    assert torch.equal(state["enc.weight"], data["model"]["enc.weight"]) and meta == META
    assert read_checkpoint(tmp_path / "cuda.pt").sha256 == read_checkpoint(path).sha256 == data["sha256"]


def test_the_digest_is_over_content_of_every_kind(tmp_path):
    """Every dtype torch stores (bfloat16 and bool included), 0-d, empty and non-contiguous tensors,
    nested plain values and key order: a saved file verifies; any one value changed changes it."""
    base = torch.arange(12.0).reshape(3, 4)
    weights = {"bf16": torch.ones(3, dtype=torch.bfloat16), "mask": torch.tensor([True, False]),
               "step": torch.tensor(7), "empty": torch.zeros(0, 5), "view": base.t(),
               "half": torch.ones(2).half()}  # fmt: skip
    meta = {"b": [1, 2.5, None, True, "x"], "a": {"n": (1, 2)}, "big": 2**100}
    save_checkpoint(tmp_path / "c.pt", weights, meta)
    assert read_checkpoint(tmp_path / "c.pt").sha256 == content_sha256({"format": "cmarr-checkpoint/2",
                                                                         "model": weights, "meta": meta})  # fmt: skip
    digest = content_sha256({"m": meta, "w": weights})
    assert content_sha256({"w": dict(reversed(weights.items())), "m": meta}) == digest  # key order is no content
    assert content_sha256({"m": meta, "w": {**weights, "view": base.t().contiguous()}}) == digest  # layout neither
    changes = [{"big": 2**100 + 1}, {"b": [1, 2.5, None, 1, "x"]}, {"a": {"n": [1, 2, 3]}}, {"a": {"n": (1, 2.0)}}]
    for changed in ({**meta, **change} for change in changes):
        assert content_sha256({"m": changed, "w": weights}) != digest
    flipped = {**weights, "mask": torch.tensor([False, False])}
    assert content_sha256({"m": meta, "w": flipped}) != digest
    assert content_sha256({"m": meta, "w": {**weights, "step": torch.tensor(7.0)}}) != digest  # dtype is content


def test_a_checkpoint_from_before_digests_loads_with_a_warning(tmp_path):
    """An old run keeps working: its files record no digest, so they load unchecked, and say so."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "cmarr-checkpoint/2", "model": {"w": torch.ones(3)}, "meta": META}, path)
    with pytest.warns(UnverifiedCheckpoint, match="records no sha256 of its content") as seen:
        state, meta = load_checkpoint(path)
        assert read_checkpoint(path).sha256 is None
    assert str(path) in str(seen[0].message) and meta == META and torch.equal(state["w"], torch.ones(3))
    state_path = tmp_path / "state.pt"
    torch.save({"format": "cmarr-state/2", "model": {}, "optimizer": {}, "schedule": {}, "rng": {}, "progress": {}},
               state_path)  # fmt: skip
    with pytest.warns(UnverifiedCheckpoint, match="state.pt"):
        load_state(state_path)


def test_an_edited_resume_state_is_refused_with_how_to_go_on(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"model": {"w": torch.ones(3)}, "optimizer": {}, "schedule": {}, "rng": {},
                      "progress": {"epoch": 3}})  # fmt: skip
    _edited(lambda d: d["progress"].update(epoch=30))(path)
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    message = str(err.value)
    assert message.startswith(f"{path}: changed since training") and "train the split again" not in message
    assert f"--resume cannot continue this stage from it: delete {path} to train the stage again" in message

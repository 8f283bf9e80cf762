"""Writer contracts: no NaN stored as ok, atomic creation, one writer at a time, label updates
that survive a kill."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cmarr.shared.errors import StoreBusyError, StoreError, StoreIncompleteError
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store import FeatureStore, ModalitySpec, Status, StoreWriter, store_lock, verify_store
from cmarr.shared.store.synthetic import synthetic_table

from tests.conftest import assert_same

SPEC = ModalitySpec("enc", 4, dtype="float16")


def _store(path, n=6):
    return StoreWriter.create(path, synthetic_table(n), "t", FOUR_CLASS)


# ---------------------------------------------------------------------- non-finite values


def test_nan_or_inf_in_an_ok_item_is_staged_as_failed_with_the_count(tmp_path):
    mw = _store(tmp_path / "s.zarr").modality("audio", SPEC)
    good = np.ones((3, 4), np.float32)
    nan = np.ones((5, 4), np.float32)
    nan[1, :3] = np.nan
    overflow = np.ones((2, 4), np.float32)
    overflow[0, 0], overflow[1, 1] = 1e6, np.inf  # 1e6 is finite in float32, inf in float16
    mw.write_part([0, 1, 2], [good, nan, overflow], reasons={2: "clip.wav"})
    counts = mw.finalize()
    store = FeatureStore.open(tmp_path / "s.zarr", allow_incomplete=True)
    reader, ids = store.modality("audio"), store.utterances["id"]
    assert reader.status[:3].tolist() == [Status.OK, Status.FAILED, Status.FAILED]
    assert counts["ok"] == 1 and counts["failed"] == 2
    assert_same(good.astype(np.float16), reader.get(0))
    assert reader.get(1).shape == (0, 4) and reader.get(2).shape == (0, 4)
    assert reader.group.attrs["failures"] == {
        ids[1]: "3 of 20 encoder output values are not finite (NaN/inf)",
        ids[2]: "clip.wav; 2 of 8 encoder output values are not finite (NaN/inf), "
        "1 of them beyond the range of float16",
    }
    assert verify_store(str(tmp_path / "s.zarr")).problems == []


def test_an_unstaged_last_batch_is_checked_too(tmp_path):
    mw = _store(tmp_path / "s.zarr").modality("audio", SPEC)
    bad = np.full((2, 4), np.nan, np.float32)
    counts = mw.finalize(last_batch=([4], [bad], [Status.OK], {}))
    assert counts["failed"] == 1 and counts["ok"] == 0


# ---------------------------------------------------------------------- atomic creation

KILLED_CREATE = textwrap.dedent(
    """
    import sys, time
    import cmarr.shared.store.writer as writer
    from cmarr.shared.labels import FOUR_CLASS
    from cmarr.shared.store.synthetic import synthetic_table
    original = writer.write_checked
    def slow(group, name, data, *a):
        original(group, name, data, *a)
        print("wrote", name, flush=True)
        time.sleep(30)
    writer.write_checked = slow
    writer.StoreWriter.create(sys.argv[1], synthetic_table(5), "t", FOUR_CLASS)
    """
)


def test_a_kill_during_create_leaves_no_store_and_the_next_create_works(tmp_path):
    path = tmp_path / "out" / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CREATE, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("wrote id")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in path.parent.iterdir()]
    assert not path.exists() and leftovers == [f".s.zarr.building.{socket.gethostname()}.{proc.pid}"]
    with pytest.raises(StoreError, match="no feature store here"):
        StoreWriter.open(path)  # what a re-run tries first: nothing to resume, so it creates
    _store(path)
    assert verify_store(str(path)).incomplete == [
        "no modality has been written yet; re-run the extraction to complete the store"
    ]
    assert [p.name for p in path.parent.iterdir()] == ["s.zarr"]  # the dead writer's temporary is gone


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".s.zarr.building.{socket.gethostname()}.{sleeper.pid}"
        theirs.mkdir()
        _store(tmp_path / "s.zarr")
        assert theirs.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_disk_full_during_create_leaves_nothing(tmp_path, monkeypatch):
    import cmarr.shared.store.writer as writer

    def full(group, name, data, *args):
        if name == "label":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(group, name, data, *args)

    original = writer.write_checked
    monkeypatch.setattr(writer, "write_checked", full)
    with pytest.raises(OSError, match="No space left"):
        _store(tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_is_refused_an_empty_folder_is_used(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    _store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="a store already exists here"):
        _store(tmp_path / "s.zarr")


# ---------------------------------------------------------------------- the writer lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from cmarr.shared.store import store_lock
    with store_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path):
    path = tmp_path / "k" / "demo.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError) as busy:
            with store_lock(path):
                pass
        assert str(busy.value) == (
            f"{path}: another process (pid {holder.pid} on {socket.gethostname()}) is writing this store; "
            "wait for it to finish, or stop it"
        )
    finally:
        holder.send_signal(signal.SIGKILL)  # a lock dies with its process, even on kill -9
        holder.wait()
    with store_lock(path):
        assert (tmp_path / "k" / "demo.zarr.lock").is_file()
    assert not (tmp_path / "k" / "demo.zarr.lock").exists()


def test_the_lock_is_not_reentrant_within_a_process(tmp_path):
    with store_lock(tmp_path / "s.zarr"):
        with pytest.raises(StoreBusyError, match=f"pid {os.getpid()}"):
            with store_lock(tmp_path / "s.zarr"):
                pass


# ---------------------------------------------------------------------- updating the table


def test_update_utterances_rewrites_only_changed_columns(tmp_path):
    path = tmp_path / "s.zarr"
    writer = _store(path)
    before = FeatureStore.open(path)
    print_before = before.fingerprint()
    labels, speakers = before.utterances["label"].copy(), before.utterances["speaker"].copy()
    labels[2] = (labels[2] + 1) % 4
    names = [before.classes[k] for k in labels]  # a relabel changes both (verify checks they agree)
    speaker_chunk = path / "utterances" / "speaker" / "c" / "0"
    inode = speaker_chunk.stat().st_ino
    changed = writer.update_utterances({"label": labels, "label_name": names, "speaker": speakers, "gender": ["X"] * 6})
    assert changed == ["label", "label_name", "gender"]
    after = FeatureStore.open(path)
    assert after.utterances["label"].tolist() == labels.tolist()
    assert after.utterances["gender"].tolist() == ["X"] * 6
    assert speaker_chunk.stat().st_ino == inode  # the unchanged column was not rewritten
    assert after.fingerprint() != print_before
    assert verify_store(str(path)).problems == []
    assert writer.update_utterances({"label": labels}) == []


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"id": ["a"] * 6}, "cannot update utterance column 'id'"),
        ({"mood": ["a"] * 6}, "cannot update utterance column 'mood'"),
        ({"label": [0] * 5}, "'label': 5 values for 6 rows"),
        ({"label": [4] * 6}, "class indices below 4"),
        ({"label": [0.5] * 6}, "class indices below 4"),
    ],
)
def test_update_utterances_refuses_bad_columns_before_writing(tmp_path, columns, message):
    writer = _store(tmp_path / "s.zarr")
    before = FeatureStore.open(tmp_path / "s.zarr").fingerprint()
    with pytest.raises(ValueError, match=message):
        writer.update_utterances({"speaker": ["s"] * 6, **columns})
    assert FeatureStore.open(tmp_path / "s.zarr").fingerprint() == before


@pytest.mark.parametrize("killed_at", ["writing the new column", "between the renames"])
def test_a_kill_during_an_update_leaves_the_old_or_the_new_column(tmp_path, monkeypatch, killed_at):
    import cmarr.shared.store.table as table

    path = tmp_path / "s.zarr"
    writer = _store(path)
    old = FeatureStore.open(path).utterances["speaker"].astype(object)
    new = np.array([f"{s}-renamed" for s in old], dtype=object)

    class Killed(BaseException):
        pass

    def write_then_die(group, name, data, *args):
        original_write(group, name, data[:3] if killed_at == "writing the new column" else data, *args)
        if killed_at == "writing the new column":
            raise Killed

    real_rename = os.rename

    def rename_then_die(a, b):
        real_rename(a, b)
        if killed_at == "between the renames":
            raise Killed

    original_write = table.write_checked
    monkeypatch.setattr(table, "write_checked", write_then_die)
    monkeypatch.setattr(table.os, "rename", rename_then_die)
    with pytest.raises(Killed):
        writer.update_utterances({"speaker": new})
    monkeypatch.undo()
    if killed_at == "between the renames":
        with pytest.raises(StoreIncompleteError, match="update of the utterance column 'speaker' was interrupted"):
            assert FeatureStore.open(path).utterances
    StoreWriter.open(path)  # a re-run opens the store for writing
    got = FeatureStore.open(path).utterances["speaker"].astype(object)
    assert got.tolist() == (new if killed_at == "between the renames" else old).tolist()
    assert verify_store(str(path)).problems == []
    assert sorted(p.name for p in (path / "utterances").iterdir()) == sorted(
        [*FeatureStore.open(path).utterances, "zarr.json"]
    )

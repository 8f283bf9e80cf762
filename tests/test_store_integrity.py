"""Store failure modes: corruption, interrupted writes, foreign or newer stores, encoder changes."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from cmarr.shared.errors import StoreError, StoreIncompleteError
from cmarr.shared.store import FeatureStore, ModalitySpec, Status, StoreWriter, verify_store
from cmarr.shared.store.pack import pack_store

from tests.conftest import assert_same


def test_verify_accepts_a_good_store(small_store):
    report = verify_store(str(small_store[0]))
    assert report.ok and report.chunks_checked > 20


def test_garbage_chunk_is_named(small_store):
    path, _ = small_store
    chunk = path / "audio" / "values" / "c" / "3" / "0"
    chunk.write_bytes(random.Random(0).randbytes(chunk.stat().st_size))
    report = verify_store(str(path))
    assert report.state == "corrupt"
    assert any(p.startswith("audio/values chunk 3 (rows") for p in report.problems), report.problems


def test_same_size_valid_but_wrong_chunk_fails_checksum(small_store):
    """A chunk that decodes fine but holds other numbers is caught by the recorded CRC."""
    path, _ = small_store
    c2, c3 = (path / "audio" / "values" / "c" / k / "0" for k in ("2", "3"))
    c3.write_bytes(c2.read_bytes())
    report = verify_store(str(path))
    assert any("audio/values chunk 3 " in p and "checksum mismatch" in p for p in report.problems)


def test_offsets_tampering_is_found(small_store):
    path, _ = small_store
    group = __import__("zarr").open_group(str(path / "video"), mode="r+")
    offsets = group["offsets"][:]
    offsets[5], offsets[6] = offsets[6], offsets[5]
    group["offsets"][:] = offsets
    report = verify_store(str(path))
    assert any("video/offsets chunk 0 " in p for p in report.problems)


def test_missing_array_is_named(small_store):
    path, _ = small_store
    import shutil

    shutil.rmtree(path / "text" / "offsets")
    with pytest.raises(StoreError, match="text.*offsets"):
        FeatureStore.open(path).modality("text")
    assert any("text/offsets" in p for p in verify_store(str(path)).problems)


def test_newer_schema_is_refused(small_store):
    path, _ = small_store
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["cmarr_schema"] = 2
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema v2.*upgrade cmarr"):
        FeatureStore.open(path)


def test_truncated_zip_is_a_clear_error(small_store, tmp_path):
    zipped = pack_store(small_store[0], tmp_path / "s.zarr.zip")
    data = zipped.read_bytes()
    zipped.write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(zipped)
    with pytest.raises(StoreError, match="not a readable zip"):
        FeatureStore.open(zipped)


def test_changed_encoder_is_refused_unless_overwrite(small_store):
    path, _ = small_store
    writer = StoreWriter.open(path)
    other = ModalitySpec("another-encoder", 12, "float32")
    with pytest.raises(StoreError, match="(?s)different encoder config.*--overwrite"):
        writer.modality("audio", other)
    mw = writer.modality("audio", other, overwrite=True)
    assert not mw.settled().any()


def test_adding_a_modality_leaves_the_others_untouched(small_store):
    path, written = small_store
    before = FeatureStore.open(path).fingerprint()
    crcs = {m: FeatureStore.open(path).root[f"{m}/values"].attrs["cmarr_crc32"] for m in written}
    mw = StoreWriter.open(path).modality("pose", ModalitySpec("pose-enc", 3, "float32"))
    mw.write_part(range(60), [np.ones((2, 3), np.float32)] * 60)
    mw.finalize()
    store = FeatureStore.open(path)
    assert store.fingerprint() != before and "pose" in store.modality_names
    for m in written:
        assert store.root[f"{m}/values"].attrs["cmarr_crc32"] == crcs[m]
        assert_same(written[m][7], store.modality(m).get(7))


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from cmarr.shared.store import ModalitySpec, Status, StoreWriter
    path, n, slow = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "slow"
    mw = StoreWriter.open(path).modality("audio", ModalitySpec("enc", 4, "float32"))
    todo = np.flatnonzero(~mw.settled())
    for lo in range(0, len(todo), 5):
        items = todo[lo:lo + 5]
        # features depend only on the item, as a deterministic encoder's do
        mw.write_part(items, [np.full((int(i) % 7 + 1, 4), float(i), np.float32) for i in items])
        print("part", flush=True)
        if slow:
            time.sleep(0.3)
    mw.finalize(chunk_frames=16)
    print("done", flush=True)
    """
)


def _writer(path, slow):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path), "60", "slow" if slow else "fast"],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_kill_during_write_then_resume_gives_the_same_store(tmp_path):
    from cmarr.shared.labels import FOUR_CLASS
    from cmarr.shared.store.synthetic import synthetic_table

    stores = {}
    for name in ("killed", "clean"):
        StoreWriter.create(tmp_path / name, synthetic_table(60), "t", FOUR_CLASS)
        stores[name] = tmp_path / name
    proc = _writer(stores["killed"], slow=True)
    for _ in range(4):
        assert proc.stdout.readline().strip() == "part"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = verify_store(str(stores["killed"]))
    assert report.state == "incomplete", report
    with pytest.raises(StoreIncompleteError):
        FeatureStore.open(stores["killed"])
    done_before = StoreWriter.open(stores["killed"]).modality("audio", ModalitySpec("enc", 4, "float32")).settled()
    assert 20 <= done_before.sum() < 60  # the finished parts survive the kill
    assert _writer(stores["killed"], slow=False).communicate()[0].count("part") == (60 - done_before.sum() + 4) // 5
    assert _writer(stores["clean"], slow=False).wait() == 0
    a, b = (FeatureStore.open(stores[k]).modality("audio") for k in ("killed", "clean"))
    assert verify_store(str(stores["killed"])).ok
    for i in range(60):
        assert_same(b.get(i), a.get(i))
    assert (a.status == Status.OK).all()


def test_retry_of_a_failed_item_merges_with_finalized_data(small_store):
    path, written = small_store
    spec = FeatureStore.open(path).modality("audio").spec
    mw = StoreWriter.open(path).modality("audio", spec)
    mw.write_part([3], [None], [Status.FAILED], {3: "decoder error"})
    mw.finalize(32)
    reader = FeatureStore.open(path).modality("audio")
    assert_same(written["audio"][3], reader.get(3))  # an earlier success is never replaced by a failure
    fresh = np.ones((4, spec.dim), np.float32)
    mw = StoreWriter.open(path).modality("audio", spec)
    mw.write_part([3], [fresh])
    mw.finalize(32)
    reader = FeatureStore.open(path).modality("audio")
    assert_same(fresh, reader.get(3))
    assert_same(written["audio"][4], reader.get(4))
    assert verify_store(str(path)).ok


def test_finalize_without_new_parts_keeps_the_data(small_store):
    path, written = small_store
    spec = FeatureStore.open(path).modality("text").spec
    before = FeatureStore.open(path).fingerprint()
    counts = StoreWriter.open(path).modality("text", spec).finalize(32)
    assert counts["ok"] == sum(f is not None for f in written["text"])
    assert FeatureStore.open(path).fingerprint() == before


def _empty_store(path):
    from cmarr.shared.labels import FOUR_CLASS
    from cmarr.shared.store.synthetic import synthetic_table

    return StoreWriter.create(path, synthetic_table(8), "test", FOUR_CLASS)


SPEC = ModalitySpec("enc", 4, dtype="float32")


def test_finalize_from_memory_equals_finalize_from_disk(tmp_path):
    """Three ways to the same store: finalize reading every part back (a fresh writer), from the
    values this writer staged, and with the last batch handed to finalize unstaged."""
    rng = np.random.default_rng(0)
    batches = [
        ([5, 1, 7], [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 1, 6)]),
        ([0, 2], [rng.standard_normal((9, 4)).astype(np.float32), None]),
    ]
    args = [
        (
            items,
            feats,
            [Status.OK if f is not None else Status.MISSING_INPUT for f in feats],
            {} if feats[-1] is not None else {2: "empty transcript"},
        )
        for items, feats in batches
    ]
    for way in ("disk", "staged", "unstaged"):
        mw = _empty_store(tmp_path / f"{way}.zarr").modality("text", SPEC)
        for batch in args[:-1] if way == "unstaged" else args:
            mw.write_part(*batch)
        if way == "disk":  # a fresh writer has staged nothing itself: it reads every part back
            mw = StoreWriter.open(tmp_path / f"{way}.zarr").modality("text", SPEC)
        mw.finalize(4, last_batch=args[-1] if way == "unstaged" else None)
    store = FeatureStore.open(tmp_path / "disk.zarr", allow_incomplete=True)
    disk, second_id = store.modality("text"), store.utterances["id"][2]
    assert_same(batches[0][1][0], disk.get(5))
    for way in ("staged", "unstaged"):
        other = FeatureStore.open(tmp_path / f"{way}.zarr", allow_incomplete=True).modality("text")
        assert other.offsets.tolist() == disk.offsets.tolist() and other.status.tolist() == disk.status.tolist()
        assert other.load_all().tobytes() == disk.load_all().tobytes()
        assert other.group.attrs["notes"] == disk.group.attrs["notes"] == {second_id: "empty transcript"}
        assert not (tmp_path / f"{way}.zarr" / "text" / "_parts").exists()


def test_an_unstaged_last_batch_merges_with_a_finalized_modality(small_store):
    path, written = small_store
    spec = FeatureStore.open(path).modality("audio").spec
    fresh = np.full((2, spec.dim), 7, np.float32)
    StoreWriter.open(path).modality("audio", spec).finalize(32, last_batch=([4], [fresh], [Status.OK], {}))
    reader = FeatureStore.open(path).modality("audio")
    assert_same(fresh, reader.get(4))
    assert_same(written["audio"][3], reader.get(3))
    assert verify_store(str(path)).ok


CONFIG = '[extract]\nmodalities = ["text", "audio"]\n'


@pytest.mark.parametrize("finalized", [[], ["text"], ["text", "audio"]])
def test_verify_calls_a_store_missing_asked_for_modalities_incomplete(tmp_path, finalized):
    """An extraction killed before (or between) modalities leaves a store that reads fine but lacks
    what its config asked for: verify says incomplete, exit 1."""
    from cmarr.shared.cli import app
    from cmarr.shared.labels import FOUR_CLASS
    from cmarr.shared.store.synthetic import synthetic_table
    from typer.testing import CliRunner

    writer = StoreWriter.create(tmp_path / "s.zarr", synthetic_table(4), "t", FOUR_CLASS, config_toml=CONFIG)
    for name in finalized:
        mw = writer.modality(name, SPEC)
        mw.write_part(range(4), [np.ones((2, 4), np.float32)] * 4)
        mw.finalize()
    report = verify_store(str(tmp_path / "s.zarr"))
    missing = [m for m in ("text", "audio") if m not in finalized]
    assert report.state == ("incomplete" if missing else "ok"), report
    for m in missing:
        assert any(line.startswith(f"{m}: asked for by the store's config") for line in report.incomplete)
    assert CliRunner().invoke(app, ["verify", str(tmp_path / "s.zarr")]).exit_code == (1 if missing else 0)


def test_a_store_without_a_config_needs_one_modality(tmp_path):
    """Stores made otherwise (an MMIN import) record no config: any finalized modality is complete."""
    writer = _empty_store(tmp_path / "s.zarr")
    assert verify_store(str(tmp_path / "s.zarr")).incomplete == [
        "no modality has been written yet; re-run the extraction to complete the store"
    ]
    mw = writer.modality("video", SPEC)
    mw.write_part(range(8), [np.ones((1, 4), np.float32)] * 8)
    mw.finalize()
    assert verify_store(str(tmp_path / "s.zarr")).ok

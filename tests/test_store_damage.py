"""Every kind of damage is named, wherever the store is read: verify lists it, every read raises
`StoreError` naming the store, the array and the chunk, and `info`/`pack` end with that error
instead of a traceback. (The field case `train-damaged-store/` damages a demo store in 8 of
these ways; trainers relied on reads that never checked.)"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import zarr
from cmarr.shared.cli import app
from cmarr.shared.errors import StoreDamagedError, StoreError
from cmarr.shared.store import FeatureStore, Status, verify_store
from cmarr.shared.store.checksums import write_checked
from typer.testing import CliRunner

from tests.conftest import assert_same

runner = CliRunner()


def _flip(path, pos=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if pos is None else pos] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_json(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _rewrite(store, name, change, chunk_rows=None):
    """Rewrite an array *with* fresh checksums, as a buggy writer would: only the layout checks see it."""
    group = zarr.open_group(str(store / name.rsplit("/", 1)[0]), mode="r+")
    data = group[name.rsplit("/", 1)[1]][:]
    change(data)
    write_checked(group, name.rsplit("/", 1)[1], data, chunk_rows)


def _zarr_write(store, name, rows, value):
    """Change rows through zarr itself (chunk rewritten, recorded checksums left as they were)."""
    arr = zarr.open_array(str(store / name), mode="r+")
    arr[rows] = value


def _swap(data, i, j):
    data[i], data[j] = data[j].copy(), data[i].copy()


# name -> (damage(store path), what the message names)
DAMAGES = {
    "values_chunk_deleted": (lambda p: os.remove(p / "audio/values/c/1/0"), "audio/values chunk 1 (rows 32-63)"),
    "values_chunk_flipped": (lambda p: _flip(p / "audio/values/c/1/0"), "audio/values chunk 1 (rows 32-63)"),
    "values_chunk_truncated": (
        lambda p: os.truncate(p / "audio/values/c/1/0", 10),
        "audio/values chunk 1 (rows 32-63)",
    ),
    "values_chunk_emptied": (lambda p: os.truncate(p / "audio/values/c/1/0", 0), "audio/values chunk 1 (rows 32-63)"),
    "values_chunk_swapped": (
        lambda p: shutil.copy(p / "audio/values/c/2/0", p / "audio/values/c/1/0"),
        "audio/values chunk 1 (rows 32-63) is damaged (checksum mismatch)",
    ),
    "values_rewritten": (lambda p: _zarr_write(p, "audio/values", slice(40, 41), 0.5), "audio/values chunk 1"),
    "offsets_chunk_deleted": (lambda p: os.remove(p / "audio/offsets/c/0"), "audio/offsets chunk 0"),
    "offsets_rewritten": (lambda p: _zarr_write(p, "audio/offsets", slice(3, 4), 1), "audio/offsets chunk 0"),
    "status_chunk_deleted": (lambda p: os.remove(p / "text/status/c/0"), "text/status chunk 0"),
    "status_rewritten": (lambda p: _zarr_write(p, "text/status", slice(0, 1), Status.FAILED), "text/status chunk 0"),
    "label_chunk_deleted": (lambda p: os.remove(p / "utterances/label/c/0"), "utterances/label chunk 0"),
    "label_rewritten": (lambda p: _zarr_write(p, "utterances/label", slice(0, 10), 3), "utterances/label chunk 0"),
    "id_chunk_flipped": (lambda p: _flip(p / "utterances/id/c/0", 50), "utterances/id chunk 0"),
    "id_chunk_deleted": (lambda p: os.remove(p / "utterances/id/c/0"), "utterances/id chunk 0"),
    "group_json_garbage": (lambda p: (p / "audio/zarr.json").write_text("xx"), "audio/zarr.json is unreadable"),
    "values_json_garbage": (
        lambda p: (p / "audio/values/zarr.json").write_text("xx"),
        "audio/values/zarr.json is unreadable",
    ),
    "table_json_garbage": (lambda p: (p / "utterances/zarr.json").write_text("{"), "utterances/zarr.json"),
    "column_json_garbage": (
        lambda p: (p / "utterances/label/zarr.json").write_text("[]"),
        "utterances/label/zarr.json is unreadable",
    ),
    "root_json_garbage": (lambda p: (p / "zarr.json").write_text("xx"), "root zarr.json is unreadable"),
    "offsets_json_emptied": (lambda p: (p / "video/offsets/zarr.json").write_text("{}"), "video/offsets/zarr.json"),
    "values_array_removed": (lambda p: shutil.rmtree(p / "audio/values"), "audio/values is missing"),
    "column_removed": (lambda p: shutil.rmtree(p / "utterances/speaker"), "utterances/speaker is missing"),
    "group_removed": (lambda p: shutil.rmtree(p / "video"), "video is missing"),
    "values_shape_truncated": (
        lambda p: _edit_json(p / "audio/values/zarr.json", lambda m: m["shape"].__setitem__(0, 40)),
        "audio/values has 2 chunks but",
    ),
    "checksums_removed": (
        lambda p: _edit_json(p / "audio/values/zarr.json", lambda m: m["attributes"].pop("cmarr_crc32")),
        "audio/values has no recorded checksums",
    ),
    "values_dtype_changed": (
        lambda p: _edit_json(p / "audio/values/zarr.json", lambda m: m.__setitem__("data_type", "int32")),
        "audio/values: dtype int32 disagrees with spec float32",
    ),
    "class_list_reordered": (  # root metadata, which no checksum covers: the labels' names catch it
        lambda p: _edit_json(p / "zarr.json", lambda m: m["attributes"]["label_set"]["classes"].reverse()),
        "disagrees with its utterance table",
    ),
    "offsets_not_monotone": (lambda p: _rewrite(p, "audio/offsets", lambda d: _swap(d, 5, 6)), "audio/offsets"),
    "status_disagrees_with_frames": (
        lambda p: _rewrite(p, "text/status", lambda d: d.__setitem__(slice(None), Status.OK)),
        "text/status: ",
    ),
}


def _read_everything(path) -> None:
    """What a trainer does: the table, its labels, every modality's offsets and status, every frame."""
    store = FeatureStore.open(path)
    assert len(store.utterances["id"]) == len(store) == len(store.labels)
    for name in store.modality_names:
        reader = store.modality(name)
        reader.load_all()
        for i in range(len(store)):
            reader.get(i)


@pytest.fixture(params=sorted(DAMAGES))
def damaged(request, small_store):
    damage, names = DAMAGES[request.param]
    path = small_store[0]
    damage(path)
    return path, names


def test_verify_names_the_damage(damaged):
    path, names = damaged
    report = verify_store(str(path))
    assert report.state == "corrupt"
    assert any(names in p for p in report.problems), report.problems


def test_every_read_names_the_damage(damaged):
    path, names = damaged
    with pytest.raises(StoreError) as caught:
        _read_everything(path)
    assert str(caught.value).startswith(f"{path}: ") and names in str(caught.value)


@pytest.mark.parametrize("command", ["info", "pack"])
def test_commands_end_with_the_error_not_a_traceback(damaged, command, tmp_path):
    path, names = damaged
    args = [command, str(path)] + (["--out", str(tmp_path / "x.zip")] if command == "pack" else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: " in result.stderr and names in result.stderr
    assert not (tmp_path / "x.zip").exists()


def test_training_refuses_the_damaged_store_and_writes_no_run(damaged, tmp_path):
    """The field case train-damaged-store/: cmarr-train used to train to the end on such stores."""
    from cmarr.train.cli import train_app

    path, names = damaged
    out = tmp_path / "runs"
    args = ["--store", str(path), "--folds", "2", "--out", str(out), "--set", "train.cm_arr.optim.epochs=1"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: " in result.stderr and names in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_partial_read_verifies_the_whole_chunk(small_store):
    """Damage in rows nobody asked for still stops the read: the chunk is checked as a whole."""
    path, written = small_store
    reader = FeatureStore.open(path).modality("audio")
    first_in_chunk_1 = int(np.searchsorted(reader.offsets, 32, side="right"))  # starts in chunk 1
    _zarr_write(path, "audio/values", slice(63, 64), 0.25)  # the chunk's last row
    reader = FeatureStore.open(path).modality("audio")
    with pytest.raises(StoreDamagedError, match="audio/values chunk 1 "):
        reader.get(first_in_chunk_1)


def test_verified_chunks_are_cached_not_reread(small_store, monkeypatch):
    """Reading utterances one by one decodes and checks each chunk once (neighbours share chunks)."""
    path, written = small_store
    reader = FeatureStore.open(path).modality("text")
    assert reader.lengths.max() < reader.values.chunk_rows  # every utterance within two chunks
    decoded = []
    original = type(reader.values)._decode_run
    monkeypatch.setattr(
        type(reader.values), "_decode_run", lambda self, a, b: decoded.extend(range(a, b)) or original(self, a, b)
    )
    for i in range(len(reader.status)):
        assert_same(written["text"][i], reader.get(i))
    assert decoded == list(range(reader.values.n_chunks))


def test_nan_in_an_ok_item_is_found_by_verify_and_counted_by_info(small_store):
    path, written = small_store
    store = FeatureStore.open(path)
    i = next(k for k, f in enumerate(written["video"]) if f is not None and len(f) >= 2)
    row = int(store.modality("video").offsets[i])

    def poison(values):
        values[row, :3] = np.nan
        values[row + 1, 0] = np.inf

    _rewrite(path, "video/values", poison, chunk_rows=32)
    report = verify_store(str(path))
    uid = store.utterances["id"][i]
    assert report.state == "corrupt"
    assert f"video: utterance {uid} (status ok) holds 4 non-finite values (NaN/inf)" in report.problems
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    counts = {m: v["nonfinite_values"] for m, v in json.loads(result.stdout)["modalities"].items()}
    assert counts == {"text": 0, "audio": 0, "video": 4}
    assert runner.invoke(app, ["verify", str(path)]).exit_code == 1


def test_verify_checks_the_recorded_reasons_against_the_status(small_store):
    """Reasons sit in metadata no checksum covers: one for an utterance the store lacks, or a
    failure's reason on an item whose status is ok, is reported (reads do not use them to decide
    anything, so only verify, and pack through it, say so)."""
    path, _ = small_store
    store = FeatureStore.open(path)
    ok = str(store.utterances["id"][int(np.flatnonzero(store.modality("audio").status == Status.OK)[0])])
    _edit_json(path / "audio/zarr.json", lambda m: m["attributes"]["failures"].update({"nobody": "x", ok: "y"}))
    problems = verify_store(str(path)).problems
    assert any("audio: failures name 1 utterances the store does not hold (nobody)" in p for p in problems), problems
    said = f"whose status says otherwise (a reason there belongs to an item that failed): {ok}"
    assert any(said in p for p in problems), problems
    assert len(problems) == 2

"""`cmarr-store` as a user runs it: info --json counts, verify exit codes, pack, MMIN commands."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
from cmarr.shared.cli import app
from cmarr.shared.store.synthetic import synthetic_table
from typer.testing import CliRunner

from tests.test_mmin import build_mmin

runner = CliRunner()


def test_info_json_reports_counts(small_store):
    path, written = small_store
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    table = synthetic_table(60, seed=1)
    assert info["utterances"] == 60
    assert info["per_class"] == {
        c: int((table["label"] == k).sum()) for k, c in enumerate(("ang", "hap", "neu", "sad"))
    }
    assert info["per_session"] == {f"Ses0{s}": 12 for s in range(1, 6)}
    assert info["per_speaker"] == dict(sorted(Counter(table["speaker"].tolist()).items()))
    assert len(info["per_speaker"]) == 10
    for name, feats in written.items():
        m = info["modalities"][name]
        ok = sum(f is not None for f in feats)
        assert m["dim"] == feats[next(i for i, f in enumerate(feats) if f is not None)].shape[1]
        assert m["frames"] == sum(len(f) for f in feats if f is not None)
        assert m["status"]["ok"] == ok and m["status"]["missing-input"] == 60 - ok
    assert info["provenance"]["software"]["cmarr_version"]
    assert len(info["provenance"]["fingerprint"]) == 16


def test_info_piped_prints_whole_tables(small_store):
    """Piped or in CI (stdout not a terminal), no header or encoder name is cut to fit 80 columns."""
    result = runner.invoke(app, ["info", str(small_store[0])])
    assert result.exit_code == 0, result.output
    for word in ("modality", "encoder", "mean frames", "missing", "failed", "pending", "fingerprint"):
        assert word in result.stdout, word
    for name in ("text", "audio", "video"):
        assert f"synthetic-{name}" in result.stdout
    assert "…" not in result.stdout


def test_verify_exit_codes(small_store):
    path, _ = small_store
    assert runner.invoke(app, ["verify", str(path)]).exit_code == 0
    chunk = path / "video" / "values" / "c" / "1" / "0"
    chunk.write_bytes(random.Random(0).randbytes(chunk.stat().st_size))
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 1
    assert "video/values chunk 1 (rows 32-63)" in result.output
    quick = runner.invoke(app, ["verify", "--quick", str(path)])  # reads no feature value: cannot see it
    assert quick.exit_code == 0 and "ok (quick: " in quick.output and "no feature value read" in quick.output


def test_verify_passes_failed_items_but_names_them(tmp_path):
    """Failed items are no damage (exit 0), yet the store is not all there: verify says which."""
    from cmarr.shared.store import Status

    from tests.test_train_integrity import make_store

    failed = np.isin(np.arange(8), [2, 5])
    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 4, np.arange(8) % 2, {"audio": failed}, outcome=Status.FAILED)
    result = runner.invoke(app, ["verify", str(store)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "audio: 2 items failed extraction (u002, u005) and read as missing" in said
    assert "text:" not in said and "video:" not in said


def test_missing_store_is_a_message_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "nope.zarr")])
    assert result.exit_code == 1 and "no such store" in result.output and "Traceback" not in result.output


def test_pack_then_verify_the_zip(small_store, tmp_path):
    path, _ = small_store
    out = tmp_path / "x.zarr.zip"
    first = runner.invoke(app, ["pack", str(path), "--out", str(out)])
    assert first.exit_code == 0 and "replacing" not in first.output
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    again = runner.invoke(app, ["pack", str(path), "--out", str(out)])  # said, not silent
    assert again.exit_code == 0 and "replacing the zip that was there" in " ".join(again.output.split())
    zipped = runner.invoke(app, ["pack", str(out)])  # a usage mistake (exit 2), not a failure
    assert zipped.exit_code == 2 and "a .zarr.zip is packed already" in " ".join(zipped.output.split())


def test_import_and_export_commands(tmp_path):
    build_mmin(tmp_path / "mmin", np.random.default_rng(0))
    r = runner.invoke(
        app, ["import-mmin", str(tmp_path / "mmin"), "--out", str(tmp_path / "s.zarr"), "--dtype", "float32"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export-h5", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "h5")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h5" / "A" / "comparE.h5").is_file()


def test_export_h5_leaves_nothing_half_written(small_store, tmp_path):
    """A damaged chunk met half way (after L/ and A/ were written) fails the export with nothing
    left at --out or beside it; an --out that holds files is refused, and kept as it was."""
    path, _ = small_store
    video_chunk = path / "video/values/c/0/0"
    data = bytearray(video_chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video_chunk.write_bytes(bytes(data))
    out = tmp_path / "exports" / "h5"
    r = runner.invoke(app, ["export-h5", str(path), "--out", str(out)])
    assert r.exit_code == 1 and "video/values chunk 0" in r.stderr, r.output
    assert list((tmp_path / "exports").iterdir()) == []  # no export, no partial folder beside it
    (out / "mine").mkdir(parents=True)
    r = runner.invoke(app, ["export-h5", str(path), "--out", str(out)])
    assert r.exit_code == 2 and "exists and is not empty" in r.stderr, r.output
    assert [p.name for p in out.iterdir()] == ["mine"]


def test_pack_cut_short_leaves_no_zip(small_store, tmp_path, monkeypatch):
    import errno
    import zipfile

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", full)
    result = runner.invoke(app, ["pack", str(small_store[0]), "--out", str(tmp_path / "x.zarr.zip")])
    assert result.exit_code == 1 and f"while writing {tmp_path / 'x.zarr.zip'};" in result.stderr
    assert list(tmp_path.iterdir()) == [small_store[0]]

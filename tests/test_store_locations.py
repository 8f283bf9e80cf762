"""Where stores are read from: zips as people make them, and URLs whose backend is not installed."""

from __future__ import annotations

import importlib.util
import os
import zipfile

import pytest
from cmarr.shared.cli import app
from cmarr.shared.errors import StoreError
from cmarr.shared.store import FeatureStore, verify_store
from typer.testing import CliRunner

from tests.conftest import assert_same

runner = CliRunner()


def _zip(store, out, top="", compression=zipfile.ZIP_DEFLATED, junk=False):
    """What `cd dir && zip -r x.zarr.zip x.zarr` makes (with top=x.zarr): folder entries, every
    file under the top folder, deflated; `junk` adds the __MACOSX folder macOS's Compress adds."""
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        if top:
            zf.writestr(top + "/", "")
        for root, dirs, files in os.walk(store):
            rel = os.path.relpath(root, store)
            prefix = "/".join(p for p in (top, "" if rel == "." else rel) if p)
            for d in dirs:
                zf.writestr(f"{prefix}/{d}/".lstrip("/"), "")
            for name in files:
                zf.write(os.path.join(root, name), f"{prefix}/{name}".lstrip("/"))
        if junk:
            zf.writestr("__MACOSX/x.zarr/._zarr.json", "junk")
    return out


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED], ids=["deflated", "stored"])
def test_a_zip_with_the_store_in_one_top_folder_opens(small_store, tmp_path, compression):
    path, written = small_store
    zipped = _zip(path, tmp_path / "x.zarr.zip", top="x.zarr", compression=compression, junk=True)
    store = FeatureStore.open(zipped)
    for name, feats in written.items():
        reader = store.modality(name)
        for i in (0, 31, 59):
            assert_same(feats[i], reader.get(i))
    assert store.fingerprint() == FeatureStore.open(path).fingerprint()
    report = verify_store(str(zipped))
    assert report.ok, report
    slow = [n for n in report.notes if "are compressed (deflated)" in n and "cmarr-store pack" in n]
    assert len(slow) == (compression == zipfile.ZIP_DEFLATED)


def test_info_says_a_deflated_zip_is_slow(small_store, tmp_path):
    zipped = _zip(small_store[0], tmp_path / "x.zarr.zip", top="x.zarr")
    result = runner.invoke(app, ["info", str(zipped), "--quick"])
    assert result.exit_code == 0, result.output
    assert "note: " in result.stderr and "inflated again on every read" in result.stderr


@pytest.mark.parametrize(
    "layout, message",
    [("two", r"stores in several top folders \(a.zarr, b.zarr\)"), ("none", "no zarr.json at its top")],
)
def test_a_zip_that_is_not_one_store_says_how_to_repack(small_store, tmp_path, layout, message):
    out = tmp_path / "x.zip"
    if layout == "two":
        _zip(small_store[0], tmp_path / "a.zip", top="a.zarr")
        _zip(small_store[0], tmp_path / "b.zip", top="b.zarr")
        with zipfile.ZipFile(out, "w") as zf:
            for part in ("a", "b"):
                with zipfile.ZipFile(tmp_path / f"{part}.zip") as src:
                    for member in src.namelist():
                        zf.writestr(member, src.read(member))
    else:
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr("readme.txt", "hello")
    with pytest.raises(StoreError, match=message + ".*re-pack the store directory with `cmarr-store pack DIR`"):
        FeatureStore.open(out)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_a_url_whose_backend_is_missing_names_the_package(tmp_path):
    with pytest.raises(StoreError, match=r"s3://bucket/x.zarr: .* needs the package s3fs.*pip install s3fs"):
        FeatureStore.open("s3://bucket/x.zarr")
    result = runner.invoke(app, ["info", "s3://bucket/x.zarr"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "pip install s3fs" in result.stderr


def test_an_unknown_url_scheme_is_one_line(tmp_path):
    result = runner.invoke(app, ["verify", "nosuch://bucket/x.zarr"])
    assert result.exit_code == 1 and result.stderr == "error: nosuch://bucket/x.zarr: Protocol not known: nosuch\n"
    assert "Traceback" not in result.output

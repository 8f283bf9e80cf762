"""Where a store can be read from: a directory, a zip file, or an fsspec URL.

Zips: `cmarr-store pack` writes the store's files at the top of an uncompressed zip. A zip made
the usual way (`cd dir && zip -r x.zarr.zip x.zarr`) has them under one top folder and deflated:
it opens too (the group is opened at that folder); deflated members are inflated again on every
read (measured: a few percent slower than stored, since zstd chunks barely deflate); `open_root`
says so.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import zarr
from cmarr.shared.errors import StoreDamagedError, StoreError
from zarr.storage import FsspecStore, LocalStore, ZipStore

REPACK = "re-pack the store directory with `cmarr-store pack DIR`"


def open_root(location: str | Path) -> tuple[zarr.Group, list[str]]:
    """Open the root group read-only; returns it and notes for the user (e.g. a slow zip)."""
    loc = str(location)
    notes: list[str] = []
    try:
        if "://" in loc and not loc.startswith("file://"):
            return zarr.open_group(_url_store(loc), mode="r"), notes
        path = loc.removeprefix("file://")
        if Path(path).is_dir():
            if not (Path(path) / "zarr.json").is_file():
                raise StoreError(f"{path}: not a feature store (no zarr.json)")
            return zarr.open_group(LocalStore(path, read_only=True), mode="r"), notes
        if Path(path).is_file():
            folder, notes = _zip_layout(path)
            return zarr.open_group(ZipStore(path, mode="r"), mode="r", path=folder), notes
        raise StoreError(f"{loc}: no such store")
    except StoreError:
        raise
    except FileNotFoundError:  # zarr's GroupNotFoundError is one
        raise StoreError(f"{loc}: no feature store there (no zarr.json)") from None
    except OSError as err:
        raise StoreError(f"{loc}: cannot open store: {err}") from None
    except Exception as err:  # garbage metadata: zarr raises JSON, validation or type errors
        raise StoreDamagedError(loc, f"the root zarr.json is unreadable ({type(err).__name__}: {err})") from None


def _url_store(url: str) -> FsspecStore:
    """An fsspec store; a missing backend package (s3fs, gcsfs, aiohttp) is named with how to install it."""
    try:
        return FsspecStore.from_url(url, read_only=True)
    except ImportError as err:
        package = getattr(err.__cause__ or err, "name", None) or "the fsspec backend for it"
        protocol = url.split("://", 1)[0]
        raise StoreError(
            f"{url}: reading {protocol}:// stores needs the package {package}, which is not installed: "
            f"pip install {package}"
        ) from None
    except ValueError as err:  # "Protocol not known"
        raise StoreError(f"{url}: {err}") from None


def _zip_layout(path: str) -> tuple[str, list[str]]:
    """The folder inside the zip that holds the store ('' = the top) and notes on its compression."""
    if not zipfile.is_zipfile(path):
        raise StoreError(f"{path}: not a readable zip file (truncated or not a .zarr.zip?)")
    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    names = {m.filename for m in members}
    if "zarr.json" in names:
        folder = ""
    else:
        tops = sorted({n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/zarr.json")})
        if len(tops) != 1:
            found = f"stores in several top folders ({', '.join(tops)})" if tops else "no zarr.json at its top"
            raise StoreError(f"{path}: {found}, so it is not one zipped feature store; {REPACK}")
        folder = tops[0]
    deflated = sum(m.compress_type != zipfile.ZIP_STORED for m in members)
    notes = []
    if deflated:
        notes.append(
            f"{path}: {deflated} of {len(members)} members are compressed (deflated); they are inflated again "
            "on every read, a little slower than a stored zip, whose members are read in place; "
            "`cmarr-store pack DIR` writes one"
        )
    return folder, notes

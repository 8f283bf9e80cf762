"""Pack a finished directory store into one uncompressed `.zarr.zip` for sharing.

The zip is written beside the target under a temporary name and renamed into place, so an
interrupted pack never leaves a half-written zip under the final name.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from cmarr.shared.errors import ConfigError, StoreError
from cmarr.shared.store.verify import verify_store


def zip_path(directory: str | Path, out: str | Path | None = None) -> Path:
    """The zip `pack_store` writes: `out`, or `<directory>.zip` beside the store."""
    directory = Path(directory)
    return Path(out) if out else directory.with_name(directory.name + ".zip")


def pack_store(directory: str | Path, out: str | Path | None = None) -> Path:
    """Zip `directory` into `out` (default: `<directory>.zip`, an existing one replaced) once `verify`
    finds it complete and sound. Raises ConfigError for a `directory` that is no folder, StoreError
    for a store that is not complete and sound (nothing written)."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "no such folder" if not directory.exists() else "a file (a .zarr.zip is packed already)"
        raise ConfigError(f"{directory}: pack takes a directory store; this is {what}")
    report = verify_store(str(directory))  # a shared store is a proven one: damage is not copied on
    if not report.ok:
        lines = report.problems + report.incomplete
        more = f" (and {len(lines) - 1} more; cmarr-store verify lists them)" if len(lines) > 1 else ""
        raise StoreError(f"{directory}: not packed: the store is {report.state}: {lines[0]}{more}")
    out = zip_path(directory, out)
    tmp = out.with_name(out.name + ".partial")
    # Stored, not deflated: chunks are already compressed, and stored members can be read
    # in place by offset, which is what makes a zip usable as a Zarr store.
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for root, dirs, files in os.walk(directory):
                dirs.sort()
                for name in sorted(files):
                    path = Path(root) / name
                    zf.write(path, path.relative_to(directory).as_posix())
        os.replace(tmp, out)
    except BaseException:  # a full disk or Ctrl-C: no half-written zip is left behind
        tmp.unlink(missing_ok=True)
        raise
    return out

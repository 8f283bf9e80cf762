"""Owning a store path: the writer lock, and directories that appear only when complete.

`store_lock` keeps two writers off one store: an fcntl lock on the sibling `<name>.lock`, which
the kernel drops when its process dies (even by kill -9), so a crash never leaves a store locked.
`atomic_directory` builds a new directory under a temporary sibling name and renames it into
place, so a kill or a full disk leaves nothing at the final path; the temporary is named after
its owner (host, pid), and the next build of the same path removes it once that process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from cmarr.shared.errors import StoreBusyError, StoreError


@contextlib.contextmanager
def store_lock(path: str | Path) -> Iterator[None]:
    """Hold the writer lock of the store at `path` for the `with` block. Raises `StoreBusyError` at
    once (no waiting) when another process, or another `store_lock` in this one, holds it."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        if _same_file(fd, lock):  # removed while still held, so no one can be waiting on this inode
            lock.unlink()
        os.close(fd)


def _acquire(lock: Path, store: Path) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreBusyError(
                f"{store}: another process{holder} is writing this store; wait for it to finish, or stop it"
            ) from None
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # the holder removed the file between our open and lock: lock the new one


def _holder(fd: int) -> str:
    """' (pid 1234 on host)' from the lock file, or '' when the holder has not written it yet."""
    pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    return f" (pid {pid} on {host})" if pid.isdigit() else ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (not yet created) to build a directory in; when the block
    completes it is renamed to `path` (atomic on one filesystem), on an error it is removed.
    `path` must not exist, or be an empty directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path)
    tmp = path.with_name(f"{_prefix(path)}{socket.gethostname()}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier process with our pid
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError as err:  # ENOTEMPTY/EEXIST: someone made `path` meanwhile
            raise StoreError(f"{path}: appeared while this one was being built; nothing was replaced ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prefix(path: Path) -> str:
    return f".{path.name}.building."


def _remove_abandoned(path: Path) -> None:
    """Remove temporaries of `path` whose owner, on this host, is gone."""
    prefix = _prefix(path)
    for entry in path.parent.glob(glob.escape(prefix) + "*"):
        host, _, pid = entry.name[len(prefix) :].rpartition(".")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

"""What produced an artifact: cmarr's version, the git commit, hashes of configs and files."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import cmarr


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the cmarr source tree (suffixed `-dirty` with local edits), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """sha256 of a file, streamed so large checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def software() -> dict[str, str]:
    """The version record stamped on every store and run directory."""
    return {"cmarr_version": cmarr.__version__, "git_sha": git_sha()}

"""Expected failures and the exit codes every cmarr command uses.

Commands catch `CmarrError` at the top and print its message without a traceback: a corrupt
store or a typo in `pipeline.toml` is the user's data talking, not a bug in cmarr.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and found a problem (corrupt store, failed check)
EXIT_USAGE = 2  # bad options or a bad config file
EXIT_ITEMS_FAILED = 3  # the command finished, but some items failed (extraction) or were unusable (prediction)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class CmarrError(Exception):
    """An expected failure with a message for the user and an exit code."""

    exit_code = EXIT_FAILURE


class CmarrWarning(UserWarning):
    """Something the user should know that does not stop the command (commands print `warning: <message>`)."""


class ConfigError(CmarrError):
    """A config file or option that cannot be used (unknown key, wrong type, bad value)."""

    exit_code = EXIT_USAGE


class StoreError(CmarrError):
    """A feature store that cannot be opened or read as schema v1."""


class StoreIncompleteError(StoreError):
    """A store whose write was interrupted: re-run the writer to complete it."""


class StoreDamagedError(StoreError):
    """Stored data that differs from what was written (checksum mismatch, undecodable chunk or
    metadata, missing file). `detail` is the message without the store's location."""

    def __init__(self, location: str, detail: str, hint: str = "cmarr-store verify lists all damage"):
        super().__init__(f"{location}: {detail}" + (f"; {hint}" if hint else ""))
        self.location, self.detail = location, detail


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


class InputDataError(CmarrError):
    """A corpus or input file in the wrong format; the message names the file and line."""

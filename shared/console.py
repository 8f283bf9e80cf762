"""Console helpers every command uses: error reporting with exit codes, output and progress display.

Progress is a rich bar on a terminal and a log line every few seconds elsewhere (CI logs,
cluster job files), so long work is visible without flooding files with bar redraws.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from cmarr.shared.errors import EXIT_FAILURE, EXIT_INTERRUPTED, CmarrError, CmarrWarning
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

# Messages stay one line in logs; no emoji codes: a key like `video:fog:` or a file name is printed as written.
err_console = Console(stderr=True, soft_wrap=True, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])
# Width of command output that goes to a pipe, a file or a CI log: wide enough that no table column
# is cut to "moda…" (rich assumes 80 columns when stdout is not a terminal).
PIPED_WIDTH = 400
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
RESUME = "finished work is kept: free some space and run the same command again to resume"
INTERRUPTED = "interrupted: finished work is kept; run the same command again to resume"


def reports_errors(fn: F | None = None, *, output: str | None = None) -> Any:
    """Decorate a command so that expected failures end it with a message and an exit code, never a
    traceback: a `CmarrError` prints `error: <message>` (its exit code), a `CmarrWarning` prints
    `warning: <message>` (not Python's file:line form, and the command goes on); a full disk or quota
    (ENOSPC, EDQUOT, also when wrapped in another exception) prints where and how to resume (exit 1);
    Ctrl-C prints how to resume (exit 130). `output` names the command's parameter holding the path
    it writes, named in the disk-full message when the error itself names no file.
    Use as `@reports_errors` or `@reports_errors(output="out")`."""
    if fn is None:
        return functools.partial(reports_errors, output=output)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tolerant_output()
        try:
            with warnings.catch_warnings():  # restores Python's printer when the command ends
                warnings.showwarning = _warning_printer(warnings.showwarning)
                return fn(*args, **kwargs)
        except CmarrError as err:
            print_error(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print(INTERRUPTED, highlight=False, markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as err:
            full = _disk_full(err)
            if full is None:
                raise
            where = full.filename or (kwargs.get(output) if output else None)
            print_error(f"no space left on the device{f' while writing {where}' if where else ''}; {RESUME}")
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]


def _warning_printer(python_printer: Callable[..., None]) -> Callable[..., None]:
    """`warnings.showwarning` that prints a CmarrWarning as `warning: <message>` on stderr."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, CmarrWarning):
            return python_printer(message, category, filename, lineno, file, line)
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

    return show


def some_named(names, shown: int = 5) -> str:
    """The first `shown` of `names` (utterance ids, say), comma-separated, and how many more: for
    messages that name what they are about without listing thousands."""
    names = [str(n) for n in names]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def print_error(message: str) -> None:
    """`error: <message>` on stderr; the message is printed as written (brackets are not markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _disk_full(err: BaseException) -> OSError | None:
    """The disk-full OSError in `err`'s chain of causes, if any (zarr and thread pools re-raise)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return err
        err = err.__cause__ or err.__context__
    return None


def stdout_console() -> Console:
    """The console for a command's output: the terminal's width on a terminal; elsewhere (pipe, file,
    CI log) wide enough that tables print whole. Call it when printing: stdout may be swapped."""
    if sys.stdout.isatty():
        return Console(emoji=False)
    return Console(width=PIPED_WIDTH, soft_wrap=True, emoji=False)


def plain(value: object) -> Text:
    """A table cell or title printed as written: file names, ids and transcripts may hold `[`, `]` or
    `*`, which a str cell would read as markup."""
    return Text(str(value))


def tolerant_output() -> None:
    """Let a console whose encoding cannot write a character (LANG=C, PYTHONIOENCODING=ascii, a
    Windows code page) print a replacement for it instead of ending the command with a
    UnicodeEncodeError: cmarr's tables hold ±, ² and box lines, a user's names anything."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding not in ("utf8", "utf16", "utf32") and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # a closed or detached stream: nothing to print to anyway
                pass


class ProgressReporter:
    """`update(task, done, total)`: a rich bar per task on a terminal, a plain line per task every
    `interval_s` seconds otherwise (and when a task completes, unless `end_lines` is False: a
    training epoch's own log line says it ended; `transient`: bars leave the terminal when the
    command ends, for work whose result is what the user reads). `finish(task)` takes a task's bar away (an epoch
    is done). While entered it is the command's active reporter: code deep in a long step reports
    to it with `report_progress` (as `logging` reaches its handlers) without a parameter on every
    function between; library calls and dask workers have none, and report nothing."""

    INTERVAL_S = 10.0  # between plain lines of one task (CI logs, cluster job files): visible, not flooding

    def __init__(
        self,
        unit: str = "items",
        interval_s: float | None = None,
        enabled: bool = True,
        end_lines: bool = True,
        transient: bool = False,
    ):
        self.unit, self.enabled, self.end_lines, self.transient = unit, enabled, end_lines, transient
        self.interval_s = self.INTERVAL_S if interval_s is None else interval_s
        self.tty = sys.stderr.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._token: contextvars.Token | None = None

    def __enter__(self) -> ProgressReporter:
        if self.enabled and self.tty:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=err_console,
                transient=self.transient,
            )
            self._progress.__enter__()
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, task: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        start = self._start.setdefault(task, now)
        rate = _rate(done, now - start, self.unit)
        if self._progress is not None:
            if task not in self._tasks:
                self._tasks[task] = self._progress.add_task(task, total=total, rate="")
            self._progress.update(self._tasks[task], completed=done, total=total, rate=rate)
        elif self.end_lines if done >= total else now - self._last.get(task, start) >= self.interval_s:
            self._last[task] = now
            err_console.print(
                f"{task}: {done}/{total} {self.unit}" + (f" ({rate})" if rate else ""), highlight=False, markup=False
            )

    def finish(self, task: str) -> None:
        """Take `task` away: its bar leaves the terminal; the same name later starts afresh."""
        self._start.pop(task, None)
        self._last.pop(task, None)
        if self._progress is not None and task in self._tasks:
            self._progress.remove_task(self._tasks.pop(task))


_ACTIVE: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar("cmarr_progress", default=None)


def report_progress(task: str, done: int, total: int) -> None:
    """Tell the command's active ProgressReporter that `task` has `done` of `total` units done;
    nothing when none is active (a library call, a test, a dask worker's job)."""
    if (reporter := _ACTIVE.get()) is not None:
        reporter.update(task, done, total)


def finish_progress(task: str) -> None:
    """The active reporter's `finish(task)`; nothing when none is active."""
    if (reporter := _ACTIVE.get()) is not None:
        reporter.finish(task)


def _rate(done: int, seconds: float, unit: str) -> str:
    """'12.5 batches/s', or for slow work '37.2 s per batch' (a CPU step of a big model): never '0.0 /s'."""
    if seconds <= 0.5 or done <= 0:
        return ""
    per_second = done / seconds
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    one = unit[:-2] if unit.endswith(("ches", "shes", "sses", "xes")) else unit.removesuffix("s")  # batches: batch
    return f"{seconds / done:.1f} s per {one}"

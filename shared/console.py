"""Console helpers both stages use: error reporting with exit codes, and progress display.

Progress is a rich bar on a terminal and a log line every few seconds elsewhere (CI logs,
cluster job files), so long work is visible without flooding files with bar redraws.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from cmarr.shared.errors import CmarrError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(fn: F) -> F:
    """Turn expected failures (CmarrError) into a one-paragraph message and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CmarrError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


class ProgressReporter:
    """`update(task, done, total)`; a rich bar on a terminal, periodic lines otherwise."""

    def __init__(self, unit: str = "items", interval_s: float = 10.0, enabled: bool = True):
        self.unit, self.interval_s, self.enabled = unit, interval_s, enabled
        self.tty = sys.stderr.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def __enter__(self) -> ProgressReporter:
        if self.enabled and self.tty:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=err_console,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, task: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        start = self._start.setdefault(task, now)
        rate = f"{done / (now - start):.1f} {self.unit}/s" if now - start > 0.5 else ""
        if self._progress is not None:
            if task not in self._tasks:
                self._tasks[task] = self._progress.add_task(task, total=total, rate="")
            self._progress.update(self._tasks[task], completed=done, total=total, rate=rate)
        elif done >= total or now - self._last.get(task, start) >= self.interval_s:
            self._last[task] = now
            err_console.print(f"{task}: {done}/{total} {self.unit} ({rate})", highlight=False)

"""What every command does with failures it cannot fix: a message and an exit code, no traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import typer
from cmarr.shared.console import reports_errors, stdout_console
from cmarr.shared.errors import EXIT_INTERRUPTED, StoreError
from rich.table import Table
from typer.testing import CliRunner

runner = CliRunner()


def _app(failure: BaseException) -> typer.Typer:
    """A command that writes to `--out` and fails with `failure`."""
    app = typer.Typer()

    @app.command()
    @reports_errors(output="out")
    def write(out: Path = Path("out/store.zarr")) -> None:
        raise failure

    @app.command()
    def other() -> None:  # a second command, so that typer keeps `write` as a subcommand
        pass

    return app


def _run(failure: BaseException, *args: str):
    return runner.invoke(_app(failure), ["write", *args])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_names_the_file_and_how_to_resume(code):
    result = _run(OSError(code, "No space left on device", "/data/s.zarr/audio/c/3/0"))
    assert result.exit_code == 1
    assert "error: no space left on the device while writing /data/s.zarr/audio/c/3/0" in result.stderr
    assert "finished work is kept: free some space and run the same command again to resume" in result.stderr
    assert "Traceback" not in result.output


def test_disk_full_without_a_file_names_the_commands_output():
    result = _run(OSError(errno.ENOSPC, "No space left on device"), "--out", "runs/x")
    assert result.exit_code == 1 and "while writing runs/x;" in result.stderr


def test_disk_full_wrapped_in_another_error_is_still_found():
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "/d/part")
    except OSError as inner:
        wrapped = RuntimeError("worker failed")
        wrapped.__cause__ = inner
    result = _run(wrapped)
    assert result.exit_code == 1 and "while writing /d/part" in result.stderr


def test_other_os_errors_are_not_disguised_as_disk_full():
    result = _run(OSError(errno.EACCES, "Permission denied", "/x"))
    assert result.exit_code == 1 and isinstance(result.exception, PermissionError)
    assert "no space" not in result.output


def test_ctrl_c_says_how_to_resume_and_exits_130():
    result = _run(KeyboardInterrupt())
    assert result.exit_code == EXIT_INTERRUPTED == 130
    assert result.stderr.strip() == "interrupted: finished work is kept; run the same command again to resume"


def test_brackets_in_a_message_are_printed_not_taken_for_markup():
    result = _run(StoreError("s.zarr: see [extract.video] and [bold]x[/bold]"))
    assert result.exit_code == 1
    assert "error: s.zarr: see [extract.video] and [bold]x[/bold]" in result.stderr


def test_tables_printed_to_a_pipe_are_not_cut():
    headers = [f"long header number {k}" for k in range(8)]
    app = typer.Typer()

    @app.command()
    def show() -> None:
        stdout_console().print(Table(*headers))

    result = runner.invoke(app, [])
    assert result.exit_code == 0
    for header in headers:
        assert header in result.stdout


def test_a_disk_full_extraction_names_its_output(tmp_path, monkeypatch):
    """cmarr-extract (as cmarr-train run and cmarr-fer train) names its `--out` when the OS error
    names no file."""
    from cmarr.extract import pipeline
    from cmarr.extract.cli import app as extract_app

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "extract_corpus", full)
    out = tmp_path / "stores"
    result = runner.invoke(extract_app, ["demo", "--out", str(out)])
    assert result.exit_code == 1 and f"no space left on the device while writing {out};" in result.stderr

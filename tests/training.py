"""`cmarr-train` as the tests run it: in this process, through typer's CliRunner.

`from training import train, last_run` (pytest puts tests/ on sys.path); each test file keeps its own
settings (tiny models, epochs, folds) as argument lists and passes them to `train`."""

from __future__ import annotations

from pathlib import Path

from cmarr.train.cli import train_app
from typer.testing import CliRunner, Result

runner = CliRunner()


def train(store, out, *args: str, expect: int | None = 0) -> Result:
    """Run `cmarr-train --store STORE --out OUT ARGS...` and return the runner's result (exit_code, output,
    stderr); unless `expect` is None, assert that it exited with `expect` (the failure shows the output)."""
    result = runner.invoke(train_app, ["--store", str(store), "--out", str(out), *args])
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


def last_run(out: Path) -> Path:
    """The run directory under `out` whose name sorts last."""
    return sorted(p for p in out.iterdir() if p.is_dir())[-1]

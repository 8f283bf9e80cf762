"""Progress of long work: a bar on a terminal, a plain line every few seconds when piped, reported
from deep in a step (each training epoch's batches, each system's fold models in evaluation, the
extraction of new recordings to predict) to the command's active ProgressReporter."""

from __future__ import annotations

import io
import re

import pytest
from cmarr.shared import console
from cmarr.shared.console import ProgressReporter, finish_progress, report_progress
from cmarr.shared.store.synthetic import write_synthetic_store
from cmarr.train.cli import train_app
from rich.console import Console
from typer.testing import CliRunner

from tests.test_comparison import MODS, TINY
from tests.training import train


@pytest.fixture
def every_line(monkeypatch):
    """Piped output (pytest's stderr is no terminal) with a line at every update, not every 10 s."""
    monkeypatch.setattr(ProgressReporter, "INTERVAL_S", 0.0)


def test_piped_lines_come_periodically_and_the_end_line_only_when_asked(every_line, capsys):
    with ProgressReporter("batches"):
        for k in range(1, 4):
            report_progress("fold1 main epoch 1", k, 3)
    with ProgressReporter("batches", end_lines=False):
        for k in range(1, 4):
            report_progress("[x] epoch 2", k, 3)  # markup characters print as written
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "epoch 1" in line] == [
        "fold1 main epoch 1: 1/3 batches",
        "fold1 main epoch 1: 2/3 batches",
        "fold1 main epoch 1: 3/3 batches",
    ]
    assert [line for line in err.splitlines() if "epoch 2" in line] == [
        "[x] epoch 2: 1/3 batches",
        "[x] epoch 2: 2/3 batches",
    ]


def test_without_an_active_reporter_nothing_is_reported(every_line, capsys):
    report_progress("t", 1, 2)  # a library call, a test, a dask worker's job
    finish_progress("t")
    with ProgressReporter("items") as outer:
        with ProgressReporter("items", enabled=False):
            report_progress("inner", 1, 2)
        assert console._ACTIVE.get() is outer  # the inner one's exit gave the outer back
    assert console._ACTIVE.get() is None
    assert "inner" not in capsys.readouterr().err


def test_rates_read_for_fast_and_slow_work():
    assert console._rate(50, 4.0, "batches") == "12.5 batches/s"
    assert console._rate(2, 74.4, "batches") == "37.2 s per batch"  # a CPU step of a paper-size model
    assert console._rate(1, 40.0, "utterances") == "40.0 s per utterance"
    assert console._rate(0, 10.0, "batches") == "" and console._rate(5, 0.1, "batches") == ""


def test_a_terminal_shows_a_bar_per_task_and_finished_tasks_leave(monkeypatch):
    screen = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(console, "err_console", screen)
    with ProgressReporter("batches") as reporter:
        reporter.tty = True  # pytest's stderr is no terminal
        reporter.__enter__()  # entered again, now as on a terminal: the bar display starts
        report_progress("ses01 main epoch 1", 1, 4)
        report_progress("ses01 main epoch 1", 4, 4)
        assert [t.description for t in reporter._progress.tasks] == ["ses01 main epoch 1"]
        finish_progress("ses01 main epoch 1")
        assert reporter._progress.tasks == []
        report_progress("ses01 main epoch 2", 2, 4)
        assert [(t.description, t.completed) for t in reporter._progress.tasks] == [("ses01 main epoch 2", 2)]
        reporter.__exit__(None, None, None)
    assert "ses01 main epoch 1" in screen.file.getvalue()


def test_training_reports_every_epochs_batches(every_line, tmp_path):
    write_synthetic_store(tmp_path / "s.zarr", 60, MODS, dtype="float32", seed=3, class_signal=1.0)
    result = train(
        tmp_path / "s.zarr", tmp_path / "runs", "--only-folds", "1", "--systems", "cm-arr,utt-fusion",
        "--set=train.cm_arr.optim.epochs=2", "--set=train.cm_arr.optim.batch_size=8", "--epochs", "2", *TINY,
    )  # fmt: skip
    lines = [x for x in result.stderr.splitlines() if re.search(r" epoch \d+: \d+/\d+ batches", x)]
    seen = {re.sub(r": \d+/\d+ batches.*", "", x) for x in lines}
    for stage in ("Ses01 cm-arr", "Ses01 utt-fusion"):
        assert {f"{stage} epoch 1", f"{stage} epoch 2"} <= seen, (stage, sorted(seen))
    cm_arr = [x for x in lines if x.startswith("Ses01 cm-arr epoch 1:")]
    counts = [tuple(map(int, re.search(r"(\d+)/(\d+)", x).groups())) for x in cm_arr]
    total = counts[0][1]
    assert total > 2 and [k for k, _ in counts] == list(range(1, total))  # every step but the last, in order
    assert "Ses01 cm-arr epoch 1: loss" in result.stdout  # the epoch's own line says it ended


def test_evaluation_reports_each_systems_fold_models(every_line, tmp_path):
    write_synthetic_store(tmp_path / "s.zarr", 60, MODS, dtype="float32", seed=3, class_signal=1.0)
    train(tmp_path / "s.zarr", tmp_path / "runs", "--only-folds", "1,2", "--epochs", "1", *TINY)
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    result = CliRunner().invoke(train_app, ["evaluate", "--run", str(run), "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "evaluate cm-arr on clean: 1/2 fold models" in result.stderr

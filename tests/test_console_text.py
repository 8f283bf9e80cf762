"""Text from any terminal: names with markup characters print as written, and a console that cannot
encode a character prints a replacement instead of ending the command."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

from cmarr.predict.request import _table
from cmarr.shared.console import stdout_console, tolerant_output
from rich.console import Console


def test_a_console_that_cannot_encode_prints_a_replacement(monkeypatch):
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    tolerant_output()
    stdout_console().print("UAR 73.47 ± 2.76, MMD²")
    out.flush()
    assert out.buffer.getvalue().decode("ascii").strip() == "UAR 73.47 ? 2.76, MMD?"


def test_store_info_prints_a_bracketed_non_ascii_path_on_an_ascii_console(small_store, tmp_path):
    path = tmp_path / "séance [bold]1[/] *x*.zarr"
    shutil.move(small_store[0], path)
    cmarr_store = os.path.join(os.path.dirname(sys.executable), "cmarr-store")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    r = subprocess.run([cmarr_store, "info", str(path), "--quick"], capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr.decode("ascii", "replace")
    assert "s?ance [bold]1[/] *x*.zarr" in r.stdout.decode("ascii")


class _Prediction:
    id = "clip [red]1[/] *take*"
    label = "hap"
    probabilities = {"ang": 0.1, "hap": 0.9}
    used = ["audio"]
    dropped = {}
    notes = {"text": "transcript [sic] cut"}


def test_prediction_tables_print_ids_and_notes_as_written():
    console = Console(width=200, file=io.StringIO(), emoji=False)
    console.print(_table([_Prediction()], ["ang", "hap"], "run [x] :fog:"))
    text = console.file.getvalue()
    assert "clip [red]1[/] *take*" in text and "transcript [sic] cut" in text and "run [x] :fog:" in text

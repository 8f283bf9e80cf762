"""Interrupted or concurrent extractions lose nothing and never leave something that passes for
complete: demo corpus generation is atomic, one writer at a time holds a store, and a full disk
stops the run with the disk's error (the command turns it into a message)."""

from __future__ import annotations

import errno
import subprocess
import sys
import time

import pytest
from cmarr.extract.corpora import demo
from cmarr.extract.corpora.demo import MARKER, ensure_demo_corpus, generate_demo_corpus
from cmarr.shared.errors import ConfigError
from typer.testing import CliRunner

from tests.test_extract_cli import extract, small_manifest

runner = CliRunner()


def _fail_at_session(monkeypatch, session: int, error: BaseException):
    real = demo._write_video

    def write_video(path, *args, **kwargs):
        if f"Session{session}" in str(path):
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(demo, "_write_video", write_video)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_an_interrupted_generation_leaves_no_corpus(tmp_path, monkeypatch, error):
    _fail_at_session(monkeypatch, 2, error)
    with pytest.raises(type(error)):
        generate_demo_corpus(tmp_path / "corpus", sessions=2, utterances_per_dialog=2)
    assert list(tmp_path.iterdir()) == []  # neither a half corpus nor the partial folder (its space is back)


def test_a_killed_generation_is_redone_whole(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial = tmp_path / f".corpus.partial-{dead.pid}"
    (partial / "Session1").mkdir(parents=True)  # what SIGKILL leaves behind
    root = ensure_demo_corpus(tmp_path / "corpus", 2, None, log=lambda _: None)
    assert not partial.exists() and (root / MARKER).is_file()
    assert sorted(p.name for p in root.glob("Session*")) == [f"Session{s}" for s in range(1, 6)]


def test_a_folder_that_is_not_a_complete_demo_corpus_is_refused(tmp_path):
    (tmp_path / "corpus" / "Session1").mkdir(parents=True)  # e.g. left by an older cmarr's interrupted run
    with pytest.raises(ConfigError, match=f"not a complete demo corpus \\(no {MARKER}\\)"):
        ensure_demo_corpus(tmp_path / "corpus", None, None)
    generate_demo_corpus(tmp_path / "other", sessions=1, utterances_per_dialog=2)
    assert ensure_demo_corpus(tmp_path / "other", None, None) == tmp_path / "other"  # used as generated
    with pytest.raises(ConfigError, match="generated with {'utterances_per_dialog': 2}"):
        ensure_demo_corpus(tmp_path / "other", 4, None)


def test_a_store_being_written_is_refused_to_a_second_writer(tmp_path):
    manifest = small_manifest(tmp_path)
    store = tmp_path / "out" / "c.zarr"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from cmarr.shared.store.lock import store_lock\n"
            f"with store_lock(__import__('pathlib').Path({str(store)!r})):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = extract(manifest, tmp_path / "out", "--modalities", "text")
        assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output, result.output
        assert not (store / "zarr.json").exists()  # the second writer wrote nothing
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert extract(manifest, tmp_path / "out", "--modalities", "text").exit_code == 0  # free again

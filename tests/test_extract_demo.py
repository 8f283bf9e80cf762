"""Extraction end to end on the generated demo corpus (real reader, cropping, MTCNN, encoders)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cmarr.extract.cli import app
from cmarr.extract.corpora.demo import generate_demo_corpus
from cmarr.shared.store import FeatureStore, Status, verify_store
from typer.testing import CliRunner

runner = CliRunner()
UTTS = 4  # labelled utterances per dialog: 5 dialogs -> 20 utterances


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(corpus root, store path) of one uninterrupted extraction."""
    root = tmp_path_factory.mktemp("demo")
    corpus = generate_demo_corpus(root / "corpus", utterances_per_dialog=UTTS)
    result = runner.invoke(app, ["demo", "--out", str(root / "out"), "--corpus-dir", str(corpus), "--num-workers", "2"])
    assert result.exit_code == 0, result.output
    return corpus, root / "out" / "demo.zarr"


def test_demo_store_is_complete_and_verified(demo):
    _, path = demo
    assert verify_store(str(path)).ok
    store = FeatureStore.open(path)
    assert len(store) == 5 * UTTS and sorted(store.modality_names) == ["audio", "text", "video"]
    for name, dim in (("text", 384), ("audio", 64), ("video", 48)):
        reader = store.modality(name)
        assert reader.dim == dim and (reader.status == Status.OK).all()
    # frame counts follow the encoders' rates: wav2vec2 50 Hz, faces at the demo's 4 fps
    utt = store.utterances
    seconds = utt["end"] - utt["start"]
    assert np.allclose(store.modality("audio").lengths, seconds * 50, atol=1.5)
    assert (np.abs(store.modality("video").lengths - seconds * 4) <= 1.5).all()
    assert store.attrs["config_toml"] and "demo" in store.attrs["config_toml"]


def test_dry_run_prints_counts_and_runs_no_encoder(demo, tmp_path):
    corpus, _ = demo
    result = runner.invoke(app, ["iemocap", "--root", str(corpus), "--out", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_utterances"] == 5 * UTTS
    assert summary["per_class"] == {c: 5 for c in ("ang", "hap", "neu", "sad")}
    assert summary["excluded_labels"] == {"fru": 5, "xxx": 5}
    assert not any(tmp_path.iterdir())  # nothing written


def _damage(corpus):
    """A truncated wav, an avi that decodes to nothing, an empty transcript, a face-less video."""
    wav = next((corpus / "Session1/sentences/wav").rglob("*.wav"))
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    avi = next((corpus / "Session2/dialog/avi/DivX").glob("*.avi"))
    avi.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + random.Random(0).randbytes(4096))
    tr = next((corpus / "Session3/dialog/transcriptions").glob("*.txt"))
    lines = tr.read_text().splitlines(keepends=True)
    head, _, _ = lines[0].partition("]: ")
    lines[0] = head + "]: \n"
    tr.write_text("".join(lines))
    blank = next((corpus / "Session4/dialog/avi/DivX").glob("*.avi"))
    _black_video(blank, seconds=15)
    return wav.stem, avi.stem, lines[0].split()[0], blank.stem


def _black_video(path, seconds):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 720, 480, "yuv420p"
        for _ in range(seconds * 10):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((480, 720, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_bad_inputs_become_item_statuses(demo, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(demo[0], corpus)
    bad_wav, bad_dialog, empty_text, faceless_dialog = _damage(corpus)
    result = runner.invoke(
        app, ["demo", "--out", str(tmp_path / "out"), "--corpus-dir", str(corpus), "--num-workers", "0"]
    )
    assert result.exit_code == 3, result.output
    store = FeatureStore.open(tmp_path / "out" / "demo.zarr")
    ids = store.utterances["id"].tolist()
    audio, video, text = (store.modality(m) for m in ("audio", "video", "text"))
    assert audio.status[ids.index(bad_wav)] == Status.FAILED
    assert "truncated WAV" in store.root["audio"].attrs["failures"][bad_wav]
    for i, u in enumerate(ids):
        if u.startswith(bad_dialog):
            assert video.status[i] == Status.FAILED
            assert f"{bad_dialog}.avi" in store.root["video"].attrs["failures"][u]  # the reason names the file
        if u.startswith(faceless_dialog):
            assert video.status[i] == Status.NO_FACE
    assert text.status[ids.index(empty_text)] == Status.MISSING_INPUT
    assert (text.status == Status.OK).sum() == len(ids) - 1
    assert verify_store(str(tmp_path / "out" / "demo.zarr")).ok  # failures are data, not damage
    assert "items failed" in result.output


@pytest.mark.slow
def test_kill_during_video_and_resume_gives_the_same_store(demo, tmp_path):
    """SIGKILL while video batches are being staged, then a re-run: the store equals an
    uninterrupted run's. Small video batches, so that the kill lands midway: at the default
    budget the demo's video is one batch, which goes straight into finalize unstaged."""
    corpus, _ = demo
    cmd = [
        sys.executable,
        "-m",
        "cmarr.extract",
        "demo",
        "--corpus-dir",
        str(corpus),
        "--num-workers",
        "0",
        "--modalities",
        "video",
        "--set",
        "extract.video.frames_per_batch=16",
    ]
    assert subprocess.run(cmd + ["--out", str(tmp_path / "reference")], capture_output=True).returncode == 0
    out = tmp_path / "out"
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "demo.zarr" / "video" / "_parts"
    deadline = time.time() + 120
    while time.time() < deadline and not (parts.is_dir() and len([p for p in parts.iterdir() if p.is_dir()]) >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert verify_store(str(out / "demo.zarr")).state == "incomplete"
    assert subprocess.run(cmd + ["--out", str(out)], capture_output=True).returncode == 0
    a = FeatureStore.open(out / "demo.zarr").modality("video")
    b = FeatureStore.open(tmp_path / "reference" / "demo.zarr").modality("video")
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.status, b.status)
    assert a.load_all().tobytes() == b.load_all().tobytes()


def test_changed_encoder_config_is_refused_unless_overwrite(demo, tmp_path):
    corpus, reference = demo
    out = tmp_path / "out"
    shutil.copytree(reference, out / "demo.zarr")
    args = [
        "demo",
        "--out",
        str(out),
        "--corpus-dir",
        str(corpus),
        "--modalities",
        "text",
        "--num-workers",
        "0",
        "--set",
        "extract.text.layer=-2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "different encoder config" in result.output
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    layer2 = FeatureStore.open(out / "demo.zarr").modality("text")
    assert layer2.spec.layer == -2
    assert layer2.get(0).tobytes() != FeatureStore.open(reference).modality("text").get(0).tobytes()
    assert (
        FeatureStore.open(out / "demo.zarr").modality("audio").load_all().tobytes()
        == FeatureStore.open(reference).modality("audio").load_all().tobytes()
    )


def test_missing_real_models_say_how_to_get_them(demo, tmp_path):
    corpus, _ = demo
    base = ["iemocap", "--root", str(corpus), "--out", str(tmp_path), "--num-workers", "0"]
    r = runner.invoke(app, base + ["--modalities", "text", "--set", f"extract.text.model={tmp_path}/no-bert"])
    assert r.exit_code == 2 and "cannot load the text encoder" in r.output and "--profile demo" in r.output
    r = runner.invoke(app, base + ["--modalities", "video", "--set", f"extract.video.checkpoint={tmp_path}/none.pt"])
    assert r.exit_code == 2 and "cmarr-fer train" in r.output

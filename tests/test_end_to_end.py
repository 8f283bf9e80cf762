"""extract -> store -> train -> report -> predict, on a few generated utterances with the demo's tiny
encoders: the whole chain a user runs, and prediction on new recordings equal to prediction from
the store for the same utterance."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from cmarr.extract.cli import app as extract_app
from cmarr.extract.corpora.iemocap import read_iemocap, video_half
from cmarr.predict.cli import app as predict_app
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store import FeatureStore
from cmarr.train.cli import train_app
from typer.testing import CliRunner

pytestmark = pytest.mark.slow
runner = CliRunner()
TINY = [
    f"--set=train.cm_arr.model.{k}"
    for k in ("width=16", "heads=2", "latent_dim=8", "latent_len=6", "flow_steps=2", "flow_hidden=8",
              "rcab_blocks=1", "rcab_reduction=4", "fusion_heads=2", "proj_dim=8")
]  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A demo corpus of 5 dialogs x 4 utterances, extracted, verified, trained (5 folds, 2 epochs)."""
    root = tmp_path_factory.mktemp("e2e")
    out = root / "store"
    r = runner.invoke(extract_app, ["demo", "--out", str(out), "--utterances-per-dialog", "4", "--set",
                                    "extract.cpu_threads=1", "--num-workers", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output + "".join(__import__("traceback").format_exception(r.exception))
    store = out / "demo.zarr"
    args = ["--store", str(store), "--folds", "5", "--preset", "fast", "--out", str(root / "runs")]
    r = runner.invoke(train_app, [*args, "--set", "train.cm_arr.optim.epochs=2", "--set", "train.device=cpu", *TINY])
    assert r.exit_code == 0, r.output + "".join(__import__("traceback").format_exception(r.exception))
    [run] = [p for p in (root / "runs").iterdir() if p.is_dir()]
    records = {rec.id: rec for rec in read_iemocap(out / "demo-corpus", FOUR_CLASS).records}
    return {"root": root, "store": store, "run": run, "records": records}


def test_the_run_reports_table2(chain):
    md = (chain["run"] / "results.md").read_text()
    assert "| {s,v,t} |" in md and "| Avg. |" in md
    assert len(list(chain["run"].glob("seed0/fold*/split0/predictions.csv"))) == 5


def _predict(chain, *args) -> dict:
    r = runner.invoke(predict_app, [str(chain["run"]), *args, "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output + "".join(__import__("traceback").format_exception(r.exception))
    return json.loads(r.stdout)  # stderr may hold warnings (e.g. predicting the run's own store)


def _by_id(payload: dict) -> dict:
    return {p["id"]: p for p in payload["predictions"]}


@pytest.mark.parametrize("given", ["audio,text", "video,text"])
def test_new_recordings_predict_as_the_store_does(chain, given):
    """Extracting an utterance anew through the run's recorded encoders gives the store's features,
    so the fold-averaged probabilities equal those of --store for it."""
    uid, rec = next(iter(chain["records"].items()))
    media = ["--text", rec.text]
    if "audio" in given:
        media += ["--audio", str(rec.audio.path)]
    else:
        media += ["--video", str(rec.video.path), "--start", str(rec.video.start), "--end", str(rec.video.end),
                  "--video-half", video_half(uid)]  # fmt: skip
    new = _predict(chain, *media)
    [p] = new["predictions"]
    assert p["used"] == [m for m in ("text", "audio", "video") if m in given] and p["label"]
    assert "average of 5 fold models" in new["model"]
    stored = _by_id(_predict(chain, "--store", str(chain["store"]), "--modalities", given))[uid]
    assert stored["used"] == p["used"]
    for c, prob in stored["probabilities"].items():
        assert p["probabilities"][c] == pytest.approx(prob, abs=1e-4)


def test_speech_alone_and_an_unusable_input(chain, tmp_path):
    rec = next(iter(chain["records"].values()))
    [p] = _predict(chain, "--audio", str(rec.audio.path))["predictions"]
    assert p["used"] == ["audio"] and abs(sum(p["probabilities"].values()) - 1) < 1e-5
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    [q] = _predict(chain, "--audio", str(silent), "--text", rec.text)["predictions"]
    assert q["used"] == ["text"] and "silent" in q["dropped"]["audio"]
    assert (p["id"], q["id"]) == (rec.audio.path.stem, "silent")  # the row names the recording
    # nothing usable at all: the row says why, and the exit code says so to a script (an empty
    # --text is a given input, not a missing option)
    for args in (["--audio", str(silent)], ["--text", ""]):
        r = runner.invoke(predict_app, [str(chain["run"]), *args, "--json", "--device", "cpu"])
        assert r.exit_code == 3 and "1 of 1 utterance had nothing usable" in r.stderr, r.output
        [row] = json.loads(r.stdout)["predictions"]
        assert row["label"] is None and row["used"] == [] and row["dropped"], row


def test_an_input_used_in_part_is_noted(chain):
    """--end past the recording's end reads as far as the file goes (as extraction does), and the
    prediction says so: its notes, and a warning on stderr (it used to be silent); so does a
    transcript cut to extract.text.max_length."""
    rec = next(iter(chain["records"].values()))
    length = sf.info(rec.audio.path).duration
    args = ["--audio", str(rec.audio.path), "--start", "0", "--end", f"{length + 2:.2f}", "--json", "--device", "cpu"]
    r = runner.invoke(predict_app, [str(chain["run"]), *args])
    assert r.exit_code == 0, r.output
    [p] = json.loads(r.stdout)["predictions"]
    assert p["used"] == ["audio"] and "runs 2.0 s past its end" in p["notes"]["audio"], p
    assert "warning: " in r.stderr and "past its end" in r.stderr
    inside = _predict(chain, "--audio", str(rec.audio.path), "--start", "0", "--end", f"{length / 2:.2f}")
    assert inside["predictions"][0]["notes"] == {}
    # a transcript longer than extract.text.max_length is cut to it, and said so the same way
    [long] = _predict(chain, "--text", "so " * 600)["predictions"]
    assert long["notes"]["text"].startswith("transcript cut to its first 510 of 600 word pieces"), long


def test_a_manifest_writes_a_csv(chain, tmp_path):
    recs = list(chain["records"].values())[:3]
    manifest = tmp_path / "new.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "audio"])
        for i, rec in enumerate(recs):
            w.writerow([f"new{i}", rec.text if i != 1 else "", rec.audio.path])
    out = tmp_path / "p.csv"
    r = runner.invoke(
        predict_app, [str(chain["run"]), "--manifest", str(manifest), "--out", str(out), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output + "".join(__import__("traceback").format_exception(r.exception))
    rows = list(csv.DictReader(open(out)))
    assert [row["id"] for row in rows] == ["new0", "new1", "new2"]
    assert rows[0]["used"] == "text,audio" and rows[1]["used"] == "audio"
    assert [row["not_used"] for row in rows] == ["", "text: empty transcript", ""]  # its empty cell, said
    assert "text: empty transcript" in r.output and "…" not in r.output  # piped, the table prints whole
    assert all(abs(sum(float(row[f"p_{c}"]) for c in FOUR_CLASS.classes) - 1) < 1e-4 for row in rows)


def test_the_python_api_takes_a_waveform(chain):
    import cmarr

    rec = next(iter(chain["records"].values()))
    wav, rate = sf.read(rec.audio.path, dtype="float32")
    predictor = cmarr.load_predictor(chain["run"], device="cpu")
    from_array = predictor.predict(audio=wav, sample_rate=rate, text=rec.text)
    from_file = predictor.predict(audio=rec.audio.path, text=rec.text)
    assert from_array.used == from_file.used == ["text", "audio"]
    for c in predictor.classes:
        assert from_array.probabilities[c] == pytest.approx(from_file.probabilities[c], abs=1e-4)
    # a span past its end is noted as for a file, naming the waveform, not its temporary file
    past = predictor.predict(audio=wav, sample_rate=rate, start=0.0, end=len(wav) / rate + 1)
    assert past.notes["audio"].startswith("the waveform is ") and "past its end" in past.notes["audio"], past


def test_the_python_api_takes_waveforms_as_audio_libraries_give_them(chain, tmp_path):
    """Field case predict-api-arrays: channels first (torchaudio, torchcodec), a torch tensor, (1, N),
    float64, int16 and a list predict as the file holding the same samples; a mistaken argument is a
    ConfigError (it used to be a LibsndfileError about a temporary file, a TypeError, an AttributeError)."""
    import cmarr
    import torch
    from cmarr.shared.errors import ConfigError

    rec = next(iter(chain["records"].values()))
    mono, rate = sf.read(rec.audio.path, dtype="int16")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([mono, mono // 2], axis=1), rate, subtype="PCM_16")
    predictor = cmarr.load_predictor(chain["run"], device="cpu")
    reference = {"mono": predictor.predict(audio=rec.audio.path), "stereo": predictor.predict(audio=stereo)}
    floats = sf.read(stereo, dtype="float32")[0]  # (N, 2)
    given = {
        "mono": [mono, mono.astype(np.float64) / 32768, (mono / 32768).tolist(), torch.from_numpy(mono[None] / 32768)],
        "stereo": [floats, floats.T.copy(), torch.from_numpy(floats.T.copy()), np.stack([mono, mono // 2])],
    }  # the last: (2, N) int16
    for name, arrays in given.items():
        for audio in arrays:
            p = predictor.predict(audio=audio, sample_rate=np.int64(rate))
            assert p.used == ["audio"], (name, type(audio))
            for c in predictor.classes:
                assert p.probabilities[c] == pytest.approx(reference[name].probabilities[c], abs=1e-5), (name, c)
    mistakes = [
        {"audio": np.zeros((16, 24000), np.float32), "sample_rate": rate},
        {"audio": np.stack([mono] * 3)[None], "sample_rate": rate},
        {"audio": mono, "sample_rate": -16000},
        {"audio": mono, "sample_rate": 16000.5},
        {"text": b"hello"},
        {"text": 123},
    ]
    for kwargs in mistakes:
        with pytest.raises(ConfigError):
            predictor.predict(**kwargs)


def test_features_from_another_encoder_are_refused(chain, tmp_path):
    """A store whose text came from another BERT layer has the same width but other features."""
    out = tmp_path / "other"
    corpus = chain["root"] / "store" / "demo-corpus"
    args = ["demo", "--out", str(out), "--corpus-dir", str(corpus), "--modalities", "text"]
    r = runner.invoke(extract_app, [*args, "--set", "extract.text.layer=1", "--set", "extract.cpu_threads=1"])
    assert r.exit_code == 0, r.output + "".join(__import__("traceback").format_exception(r.exception))
    assert FeatureStore.open(out / "demo.zarr").modality_names == ["text"]
    r = runner.invoke(predict_app, [str(chain["run"]), "--store", str(out / "demo.zarr"), "--modalities", "text"])
    assert r.exit_code == 2 and "text: layer: -1 -> 1" in r.output
    new = runner.invoke(predict_app, [str(chain["run"]), "--text", "hello", "--set", "extract.text.layer=1"])
    said = " ".join(new.output.split())
    assert new.exit_code == 2 and "text: layer: -1 -> 1" in said, new.output
    assert "the recordings, extracted with the run's settings and --set's: features from other encoders" in said
    assert "inputs.zarr" not in said  # prediction's temporary store means nothing to a user

"""Training on corpora that make numbers meaningless, and files that must never run code."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch
from cmarr.predict.cli import app as predict_app
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store import ModalitySpec, Status, StoreWriter, UtteranceTable
from training import train
from typer.testing import CliRunner

runner = CliRunner()
DIMS = {"text": 3, "audio": 4, "video": 2}
FAST = [
    *("--set", "train.device=cpu", "--set", "train.amp=none", "--set", "train.cm_arr.optim.epochs=1"),
    *(f"--set=train.cm_arr.model.{k}" for k in ("width=8", "heads=2", "latent_dim=4", "latent_len=3",
                                                 "flow_steps=1", "flow_hidden=4", "rcab_blocks=1", "rcab_reduction=2",
                                                 "fusion_heads=2", "proj_dim=4")),
]  # fmt: skip


def make_store(path, sessions, labels, missing=None, seed=0, outcome=Status.NO_FACE, reason=None, notes=None):
    """A store with the given session and label per utterance; `missing[m]` marks utterances whose
    modality m is really missing (no face, no transcript), or whose extraction failed (`outcome`),
    each with the recorded `reason` if one is given; `notes[m]` = {row: note} on items extracted ok."""
    n = len(sessions)
    rows = [
        {"id": f"u{i:03d}", "label": int(labels[i]), "label_name": FOUR_CLASS.classes[labels[i]],
         "session": sessions[i], "speaker": f"{sessions[i]}{'FM'[i % 2]}", "split_group": sessions[i]}
        for i in range(n)
    ]  # fmt: skip
    writer = StoreWriter.create(path, UtteranceTable.from_records(rows), "synthetic", FOUR_CLASS)
    rng = np.random.default_rng(seed)
    for m, dim in DIMS.items():
        gone = np.zeros(n, bool) if missing is None or m not in missing else np.asarray(missing[m])
        feats = [None if gone[i] else (rng.normal(size=(3, dim)) + labels[i]).astype(np.float32) for i in range(n)]
        status = [outcome if gone[i] else Status.OK for i in range(n)]
        mw = writer.modality(m, ModalitySpec(encoder=f"synthetic-{m}", dim=dim, dtype="float32"))
        why = {i: reason for i in range(n) if gone[i]} if reason else {}
        why |= (notes or {}).get(m, {})
        mw.write_part(list(range(n)), feats, status, why or None)
        mw.finalize(64)
    return path


def test_one_session_is_a_clear_error(tmp_path):
    store = make_store(tmp_path / "s.zarr", ["A"] * 12, np.arange(12) % 2)
    r = train(store, tmp_path / "runs", *FAST, expect=2)
    assert "at least 2 sessions" in r.output and "Traceback" not in r.output


def test_one_class_is_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr", ["A", "B", "C"] * 6, np.zeros(18, int))
    r = train(store, tmp_path / "runs", *FAST, "--folds", "3", expect=2)
    assert "1 class (ang)" in r.output and "at least two classes" in r.output
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("results.json"))


def test_a_fold_without_a_class_is_warned_about(tmp_path):
    sessions = ["A"] * 8 + ["B"] * 8 + ["C"] * 8
    labels = np.array([0, 1] * 4 + [0, 1] * 4 + [0, 0, 0, 0, 1, 1, 1, 1])
    labels[16:20] = 2  # class 'neu' only in session C: fold C's training part lacks it
    r = train(make_store(tmp_path / "s.zarr", sessions, labels), tmp_path / "runs", *FAST, "--folds", "3")
    assert "fold C: the training part has no neu utterance" in r.output
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert "fold C: the training part has no neu" in (run / "results.md").read_text()


def test_conditions_without_test_utterances_read_n_a(tmp_path):
    sessions = ["A", "B"] * 10
    labels = np.arange(20) % 2
    r = train(make_store(tmp_path / "s.zarr", sessions, labels, {"video": np.ones(20, bool)}), tmp_path / "r", *FAST)
    [run] = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    table = json.loads((run / "results.json").read_text())["table"]
    md = (run / "results.md").read_text()
    for row in ("{v}", "{v,t}", "{s,v}", "{s,v,t}"):
        assert np.isnan(table[row]["uar_mean"]) and f"| {row} | n/a |" in md
    assert not np.isnan(table["{s,t}"]["uar_mean"]) and not np.isnan(table["Avg."]["uar_mean"])
    assert "nan" not in r.output and "n/a" in r.output  # the console's table says it as results.md does
    why = "video: no utterance used has it (none was extracted ok): every condition giving video reads n/a"
    assert why in " ".join(r.output.split()) and why in " ".join(md.split())


def test_items_whose_extraction_failed_are_warned_about(tmp_path):
    """A failed item trains as a missing modality; the run says which, not only the extraction."""
    sessions, failed = ["A", "B"] * 10, np.zeros(20, bool)
    failed[[3, 5]] = True
    store = make_store(tmp_path / "s.zarr", sessions, np.arange(20) % 2, {"audio": failed}, outcome=Status.FAILED)
    r = train(store, tmp_path / "r", *FAST)
    why = "audio: 2 utterances failed extraction (u003, u005) and train as missing audio"
    assert why in " ".join(r.output.split())
    assert "video: no utterance" not in r.output and "text: " not in r.output


def test_rows_over_fewer_fold_runs_say_so(tmp_path):
    """Session C has no video: the video rows are means over 2 of the 3 fold runs, and the report says it."""
    sessions = ["A", "B", "C"] * 6
    no_video = np.array([s == "C" for s in sessions])
    store = make_store(tmp_path / "s.zarr", sessions, np.arange(18) % 2, {"video": no_video})
    r = train(store, tmp_path / "r", *FAST, "--folds", "3")
    [run] = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    table = json.loads((run / "results.json").read_text())["table"]
    assert {row: table[row]["runs"] for row in ("{v}", "{s,v,t}", "{t}", "{s,t}", "Avg.")} == {
        "{v}": 2, "{s,v,t}": 2, "{t}": 3, "{s,t}": 3, "Avg.": 3}  # fmt: skip
    note = "rows over fewer than the 3 fold runs (the others have no test utterance with those modalities): "
    md = (run / "results.md").read_text()
    assert note + "{v} 2, {v,t} 2, {s,v} 2, {s,v,t} 2;" in md
    assert "rows over fewer than the 3 fold runs" in " ".join(r.output.split())  # the console's table too


def test_require_names_the_session_it_removes(tmp_path):
    sessions = ["A", "B", "C"] * 6
    no_video = np.array([s == "C" for s in sessions])
    store = make_store(tmp_path / "s.zarr", sessions, np.arange(18) % 2, {"video": no_video})
    r = train(store, tmp_path / "r", *FAST, "--folds", "3", "--require", "video", expect=2)
    assert "after --require video (which leaves no utterance in C)" in r.output and "2 sessions (A, B)" in r.output


def test_batch_size_one_is_a_config_error(tmp_path):
    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 6, np.arange(12) % 2)
    r = train(store, tmp_path / "r", *FAST, "--set", "train.cm_arr.optim.batch_size=1", expect=2)
    assert "train.cm_arr.optim.batch_size" in r.output


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_predict_never_runs_a_checkpoint(tmp_path, legacy):
    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 6, np.arange(12) % 2)
    marker, split = tmp_path / "PWNED", tmp_path / "split0"
    split.mkdir()
    if legacy:
        (split / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Payload(marker)}))
    else:
        torch.save({"model": _Payload(marker)}, split / "checkpoint.pt")
    r = runner.invoke(predict_app, [str(split), "--store", str(store), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 1 and not marker.exists()
    assert "checkpoint.pt" in r.output and "Traceback" not in r.output


def test_resume_never_runs_a_state_file(tmp_path):
    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 8, np.arange(16) % 2)
    train(store, tmp_path / "r", *FAST, "--set", "train.cm_arr.optim.epochs=2")
    [run] = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    split = run / "seed0/fold1/split0"
    (split / "result.json").unlink()
    (split / "cm-arr/checkpoint.pt").unlink()
    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker)}, split / "cm-arr/state.pt")
    (run / "ledger.jsonl").write_text("")
    r = train(store, tmp_path / "r", *FAST, "--set", "train.cm_arr.optim.epochs=2", "--resume", expect=1)
    assert not marker.exists()
    assert "state.pt: refused" in r.output and "to train the stage again from its start" in r.output


def test_predict_checks_the_output_before_any_work(tmp_path):
    """--out's folder is made (as extraction and training make theirs) or refused before the run is
    even read; here the run is no run, so reaching the work would fail differently."""
    (tmp_path / "a-file").write_text("")
    for out, message in [
        (tmp_path / "a-file" / "p.csv", "cannot make the folder"),
        (tmp_path, "is a folder; give the CSV file to write"),
    ]:
        r = runner.invoke(predict_app, [str(tmp_path), "--store", "x.zarr", "--out", str(out)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(predict_app, [str(tmp_path), "--store", "x.zarr", "--out", str(tmp_path / "new/deeper/p.csv")])
    assert (tmp_path / "new/deeper").is_dir() and "cannot make" not in r.output


def test_predict_refuses_mistaken_arguments_before_any_work(tmp_path):
    """One prediction's arguments that can only be mistakes exit 2 before the run is read (here it is
    no run): a named file that does not exist (a typo used to leave that modality out of an otherwise
    successful prediction, exit 0), a span that is no span, a half without a video, a cut of a manifest."""
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("id\n")
    for args, message in [
        (["--audio", str(tmp_path / "nothere.wav"), "--text", "hello"], "nothere.wav: no such file"),
        (["--audio", str(tmp_path / "a.wav"), "--start", "2", "--end", "1"], "a span needs 0 <= start < end"),
        (["--audio", str(tmp_path / "a.wav"), "--start", "-1", "--end", "1"], "a span needs 0 <= start < end"),
        (["--audio", str(tmp_path / "a.wav"), "--video-half", "left"], "no video given to crop"),
        (["--manifest", str(tmp_path / "m.csv"), "--start", "0", "--end", "1"], "not a manifest or a store"),
        (["--manifest", str(tmp_path / "m.csv"), "--end", "1"], "not a manifest or a store"),
        (["--audio", str(tmp_path / "a.wav"), "--start", "1"], "give both start and end"),
    ]:
        r = runner.invoke(predict_app, [str(tmp_path), *args])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)


def test_predicting_from_a_store_says_why_a_modality_was_not_used(tmp_path):
    """Each utterance whose modality the store lacks gets the reason the extraction recorded (or
    its status), in the JSON and the CSV; a modality not asked for (--modalities) is not listed."""
    labels = np.arange(16) % 2
    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 8, labels)
    train(store, tmp_path / "r", *FAST, "--set", "train.cm_arr.optim.epochs=1")
    [run] = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    video = np.arange(16) < 3
    text = np.arange(16) == 5
    new = make_store(tmp_path / "n.zarr", ["A", "B"] * 8, labels, {"video": video})
    make_store(tmp_path / "t.zarr", ["A", "B"] * 8, labels, {"text": text}, outcome=Status.MISSING_INPUT,
               reason="empty transcript")  # fmt: skip
    r = runner.invoke(predict_app, [str(run), "--store", str(new), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = {p["id"]: p for p in json.loads(r.stdout)["predictions"]}
    assert {uid: p["dropped"] for uid, p in rows.items() if p["dropped"]} == {
        f"u{i:03d}": {"video": "no-face"} for i in range(3)
    }
    assert rows["u000"]["used"] == ["text", "audio"]
    out = tmp_path / "p.csv"
    args = [str(run), "--store", str(tmp_path / "t.zarr"), "--modalities", "text,audio", "--out", str(out)]
    assert runner.invoke(predict_app, [*args, "--device", "cpu"]).exit_code == 0
    not_used = {row["id"]: row["not_used"] for row in csv.DictReader(open(out)) if row["not_used"]}
    assert not_used == {"u005": "text: empty transcript"}
    assert "the store this run was trained on" not in r.stderr  # another store, but the same utterances:
    said = " ".join(r.stderr.split())
    assert "16 of the 16 utterances" in said and "are utterances the run was trained on" in said
    assert "cmarr-train evaluate --run" in said
    own = runner.invoke(predict_app, [str(run), "--store", str(store), "--out", str(tmp_path / "o.csv")])
    assert own.exit_code == 0 and "is the store this run was trained on" in " ".join(own.stderr.split())


def test_predicting_from_a_store_carries_its_extraction_notes(tmp_path):
    """An item extracted ok with a note (its span ran past the file's end) was used, but not as its
    manifest asked: the prediction says so (JSON, CSV, a warning), the other rows have no note."""
    labels = np.arange(16) % 2
    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 8, labels)
    train(store, tmp_path / "r", *FAST, "--set", "train.cm_arr.optim.epochs=1")
    [run] = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    note = "u002.wav is 3.1 s, span 1-9 s runs 5.9 s past its end (features cover 1-3.1 s)"
    new = make_store(tmp_path / "n.zarr", ["A", "B"] * 8, labels, notes={"audio": {2: note}})
    out = tmp_path / "p.csv"
    r = runner.invoke(predict_app, [str(run), "--store", str(new), "--json", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = {p["id"]: p for p in json.loads(r.stdout)["predictions"]}
    assert {uid: p["notes"] for uid, p in rows.items() if p["notes"]} == {"u002": {"audio": note}}
    assert rows["u002"]["used"] == ["text", "audio", "video"] and rows["u002"]["dropped"] == {}
    assert {row["id"]: row["notes"] for row in csv.DictReader(open(out)) if row["notes"]} == {"u002": f"audio: {note}"}
    assert f"warning: u002: audio: {note}" in " ".join(r.stderr.split())
    without = runner.invoke(predict_app, [str(run), "--store", str(new), "--modalities", "text,video", "--json"])
    assert all(not p["notes"] for p in json.loads(without.stdout)["predictions"])  # audio not given


def test_weights_that_do_not_fit_are_named(tmp_path):
    """A checkpoint whose weights lack a key, hold an extra one and one of another shape: the
    message names each (field case predict-inputs, missing_weights), exit 1 like every refused
    checkpoint, no traceback."""
    from cmarr.train.checkpoint import load_checkpoint, save_checkpoint

    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 6, np.arange(12) % 2)
    train(store, tmp_path / "r", *FAST)
    [ckpt] = (tmp_path / "r").glob("*/seed0/fold1/split0/cm-arr/checkpoint.pt")
    state, meta = load_checkpoint(ckpt)
    state.pop("prior")
    state["extra.weight"] = torch.zeros(1)
    state["classifier.0.bias"] = torch.zeros(3)
    save_checkpoint(ckpt, state, meta)
    r = runner.invoke(predict_app, [str(ckpt.parent.parent), "--store", str(store), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    message = " ".join(r.output.split())
    assert "1 missing (prior)" in message and "1 unexpected (extra.weight)" in message
    assert "classifier.0.bias is (3,), expected (128,)" in message


def test_resume_says_what_changed_since_the_run(tmp_path):
    """A run id is corpus-system-settings-store-seeds: --resume that finds no run names the part that
    moved (the store re-extracted or relabelled since; other settings) instead of only 'no run'."""
    from cmarr.shared.errors import ConfigError
    from cmarr.train.run import run_dir_for

    for name in ("my-corpus-cm-arr-aaaaaaaa-11111111-s0", "my-corpus-cm-arr-cccccccc-11111111-s0-2"):
        (tmp_path / name).mkdir()
    assert run_dir_for(tmp_path, "my-corpus-cm-arr-aaaaaaaa-11111111-s0", True) == tmp_path / (
        "my-corpus-cm-arr-aaaaaaaa-11111111-s0"
    )
    expected = {
        "my-corpus-cm-arr-aaaaaaaa-22222222-s0": "on a store of fingerprint 11111111, and the store now reads 22222222",
        "my-corpus-cm-arr-bbbbbbbb-11111111-s0": "other settings (settings hash aaaaaaaa, now bbbbbbbb)",
        "my-corpus-cm-arr-bbbbbbbb-33333333-s0": "",  # nothing alike: no guess
        "my-corpus-cm-arr-aaaaaaaa-22222222-s1": "",  # other seeds
    }
    for name, why in expected.items():
        with pytest.raises(ConfigError) as refused:
            run_dir_for(tmp_path, name, True)
        message = str(refused.value)
        assert message.startswith(f"--resume: no run at {tmp_path / name} to resume")
        assert why in message if why else message.endswith("to resume"), message
    with pytest.raises(ConfigError, match="to resume$"):
        run_dir_for(tmp_path / "absent", "my-corpus-cm-arr-aaaaaaaa-11111111-s0", True)


def test_a_changed_checkpoint_never_predicts_silently(tmp_path, monkeypatch):
    """Field case checkpoint-integrity, through cmarr-predict: each split's result.json records its
    checkpoint's content sha256; an edited checkpoint (here its classes reversed, which used to flip
    the label silently), or one copied from another split, exits 1 naming the file and how to train
    the split again; the same tensors saved on a GPU (storages tagged cuda:0) predict as before; a run
    from before digests still predicts, with a warning."""
    import torch.serialization as ser
    from cmarr.train.checkpoint import read_checkpoint

    store = make_store(tmp_path / "s.zarr", ["A", "B"] * 6, np.arange(12) % 2)
    train(store, tmp_path / "r", *FAST)
    run = next(p for p in (tmp_path / "r").iterdir() if p.is_dir())
    split, other = run / "seed0/fold1/split0", run / "seed0/fold2/split0"
    ckpt = split / "cm-arr/checkpoint.pt"
    for s in (split, other):
        assert json.loads((s / "result.json").read_text())["checkpoints"] == {
            "cm-arr": read_checkpoint(s / "cm-arr/checkpoint.pt").sha256
        }
    original = ckpt.read_bytes()

    def predict():
        r = runner.invoke(predict_app, [str(split), "--store", str(store), "--json", "--device", "cpu"])
        return r, " ".join(r.output.split())

    reference, _ = predict()
    assert reference.exit_code == 0, reference.output
    data = torch.load(ckpt, weights_only=True)
    data["meta"]["classes"] = data["meta"]["classes"][::-1]
    torch.save(data, ckpt)
    r, said = predict()
    assert r.exit_code == 1 and "Traceback" not in said and said.startswith(f"error: {ckpt}: changed since training")
    assert f"delete {split} and run the run's cmarr-train command with --resume" in said
    ckpt.write_bytes((other / "cm-arr/checkpoint.pt").read_bytes())
    r, said = predict()
    assert r.exit_code == 1 and f"{ckpt}: not the checkpoint its split was trained with" in said, said
    assert f"{split / 'result.json'} records sha256" in said
    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")
    torch.save(torch.load(io.BytesIO(original), weights_only=True), ckpt)
    monkeypatch.undo()
    assert ckpt.read_bytes() != original
    r, _ = predict()
    assert r.exit_code == 0 and r.stdout == reference.stdout, r.output
    legacy = {k: v for k, v in torch.load(io.BytesIO(original), weights_only=True).items() if k != "sha256"}
    torch.save(legacy, ckpt)
    result = json.loads((split / "result.json").read_text())
    (split / "result.json").write_text(json.dumps({k: v for k, v in result.items() if k != "checkpoints"}))
    r, said = predict()
    assert r.exit_code == 0 and r.stdout == reference.stdout, r.output
    assert f"warning: {ckpt}: written by an older cmarr, it records no sha256 of its content" in said
    assert "UnverifiedCheckpoint" not in said and "warnings.warn" not in said  # no Python file:line form

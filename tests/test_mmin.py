"""MMIN interchange: an HDF5 set built in MMIN's exact layout imports and exports without loss;
every target layout MMIN's loaders read imports; nothing is written until the input checks out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.store import FeatureStore, Status, verify_store
from cmarr.shared.store.mmin import export_h5, import_mmin

CLASSES = ("ang", "hap", "neu", "sad")


def _ids():
    """Four IEMOCAP-style utterances per speaker, two sessions, two speakers each."""
    return [f"Ses0{s}F_impro01_{g}{k:03d}" for s in (1, 2) for g in "FM" for k in range(4)]


def build_mmin(root, rng, missing=("Ses01F_impro01_M002",)):
    ids = _ids()
    dims = {"A": ("comparE", 10), "V": ("denseface", 6), "L": ("bert_large", 8)}
    feats = {}
    for letter, (stem, dim) in dims.items():
        (root / letter).mkdir(parents=True)
        with h5py.File(root / letter / f"{stem}.h5", "w") as h5:
            for u in ids:
                if letter == "V" and u in missing:
                    continue  # no face: MMIN leaves the id out
                x = rng.standard_normal((int(rng.integers(1, 9)), dim)).astype(np.float32)
                h5.create_dataset(u, data=x)
                feats[(letter, u)] = x
    labels = {u: int(rng.integers(0, 4)) for u in ids}
    # MMIN folds: cv 2k-1 tests one speaker of session k and validates on the other; 2k swaps.
    cv = 0
    for s in (1, 2):
        for test_g, val_g in (("F", "M"), ("M", "F")):
            cv += 1
            folder = root / "target" / str(cv)
            folder.mkdir(parents=True)
            groups = {
                "tst": [u for u in ids if u.startswith(f"Ses0{s}") and u[-4] == test_g],
                "val": [u for u in ids if u.startswith(f"Ses0{s}") and u[-4] == val_g],
                "trn": [u for u in ids if not u.startswith(f"Ses0{s}")],
            }
            for split, names in groups.items():
                np.save(folder / f"{split}_label.npy", np.eye(4, dtype=np.float32)[[labels[u] for u in names]])
                np.save(folder / f"{split}_int2name.npy", np.array([u.encode() for u in names]).reshape(-1, 1))
    return ids, feats, labels


def test_import_then_export_roundtrips_values_and_folds(tmp_path):
    rng = np.random.default_rng(0)
    ids, feats, labels = build_mmin(tmp_path / "mmin", rng)
    counts = import_mmin(tmp_path / "mmin", tmp_path / "s.zarr", CLASSES, dtype="float32", corpus="iemocap").counts
    assert counts["video"]["missing_input"] == 1 and counts["audio"]["ok"] == len(ids)
    assert verify_store(str(tmp_path / "s.zarr")).ok
    store = FeatureStore.open(tmp_path / "s.zarr")
    utt = store.utterances
    for i, u in enumerate(utt["id"]):
        assert utt["label"][i] == labels[u] and utt["session"][i] == u[:5]
        assert utt["speaker"][i] == u[:5] + u[-4]
        for letter, name in (("A", "audio"), ("V", "video"), ("L", "text")):
            got = store.modality(name).get(i)
            if (letter, u) in feats:
                assert got.tobytes() == feats[(letter, u)].tobytes()
            else:
                assert got.shape == (0, 6) and store.modality(name).status[i] == Status.MISSING_INPUT

    export_h5(str(tmp_path / "s.zarr"), tmp_path / "out")
    for letter, stem in (("A", "comparE"), ("V", "denseface"), ("L", "bert_large")):
        with (
            h5py.File(tmp_path / "mmin" / letter / f"{stem}.h5") as a,
            h5py.File(tmp_path / "out" / letter / f"{stem}.h5") as b,
        ):
            assert sorted(a.keys()) == sorted(b.keys())
            for k in a:
                assert a[k][()].tobytes() == b[k][()].tobytes()
    for cv in range(1, 5):
        for split in ("trn", "val", "tst"):
            src, dst = (p / "target" / str(cv) for p in (tmp_path / "mmin", tmp_path / "out"))
            names_a = np.load(src / f"{split}_int2name.npy")[:, 0].tolist()
            names_b = np.load(dst / f"{split}_int2name.npy")[:, 0].tolist()
            assert sorted(names_a) == sorted(names_b), (cv, split)
            la = dict(zip(names_a, np.load(src / f"{split}_label.npy").argmax(1)))
            lb = dict(zip(names_b, np.load(dst / f"{split}_label.npy").argmax(1)))
            assert la == lb


def test_float16_import_is_the_rounded_values(tmp_path):
    rng = np.random.default_rng(1)
    _, feats, _ = build_mmin(tmp_path / "mmin", rng)
    import_mmin(tmp_path / "mmin", tmp_path / "s.zarr", CLASSES)
    store = FeatureStore.open(tmp_path / "s.zarr")
    i = 3
    u = store.utterances["id"][i]
    assert np.array_equal(store.modality("audio").get(i), feats[("A", u)].astype(np.float16))


def test_wrong_one_hot_width_names_the_file(tmp_path):
    build_mmin(tmp_path / "mmin", np.random.default_rng(2))
    with pytest.raises(InputDataError, match=r"trn_label.npy: shape \(8, 4\), expected \[8, 6\]"):
        import_mmin(tmp_path / "mmin", tmp_path / "s.zarr", ("a", "b", "c", "d", "e", "f"))


# ---------------------------------------------------------------------- what MMIN's releases hold


def _field_case() -> Path:
    root = os.environ.get("CMARR_HANDBOOK_DIR")
    if not root:
        pytest.skip("CMARR_HANDBOOK_DIR is not set (.ci/run sets it to ../shared)")
    return Path(root) / "field-cases" / "mmin-import" / "iemocap_feats"


def test_the_published_iemocap_layout_imports_without_options(tmp_path):
    """A/ holds comparE.h5 and MMIN's normalisation file comparE_mean_std.h5: the latter is skipped, and said so."""
    done = import_mmin(_field_case(), tmp_path / "st.zarr")
    assert set(done.counts) == {"audio", "video", "text"} and all(c["ok"] == 4 for c in done.counts.values())
    assert any("comparE_mean_std.h5: MMIN's per-cv normalisation statistics" in n for n in done.notes)
    store = FeatureStore.open(tmp_path / "st.zarr")
    assert store.modality("audio").spec.extra["mmin_file"] == "comparE"
    # each cv tests one utterance; the two validation-only ones are a test item of no cv
    assert store.utterances["split_group"].tolist() == ["1", "", "2", ""]
    assert verify_store(str(tmp_path / "st.zarr")).ok


def _write_targets(root, cvs, labels_of, as_indices=False, as_bytes=True, column=True):
    """target/<cv>/ files: `cvs` maps cv -> {split: names}; labels one-hot (IEMOCAP) or indices (MSP)."""
    for cv, splits in cvs.items():
        folder = root / "target" / str(cv)
        folder.mkdir(parents=True)
        for split in ("trn", "val", "tst"):
            names = splits.get(split, [])
            labels = np.array([labels_of[u] for u in names], dtype=np.int64)
            np.save(folder / f"{split}_label.npy", labels if as_indices else np.eye(4, dtype=np.float32)[labels])
            ids = np.array([u.encode() if as_bytes else u for u in names], dtype="S" if as_bytes else "U")
            np.save(folder / f"{split}_int2name.npy", ids.reshape(-1, 1) if column else ids)


def _write_h5(path, ids, dim, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        for u in ids:
            h5.create_dataset(u, data=rng.standard_normal((3, dim)).astype(np.float32))


def test_the_msp_improv_layout_imports(tmp_path):
    """MSP-IMPROV: 12 cvs (a speaker each), class indices [n], ids as [n] unicode strings."""
    rng = np.random.default_rng(0)
    ids = [f"MSP-IMPROV-S0{k % 4 + 1}A-{g}0{s}-P-FM0{k}" for s in range(1, 7) for g in "FM" for k in range(2)]
    labels = {u: int(rng.integers(0, 4)) for u in ids}
    speakers = sorted({u.split("-")[3] for u in ids})
    cvs = {
        cv: {"tst": [u for u in ids if f"-{spk}-" in u], "trn": [u for u in ids if f"-{spk}-" not in u]}
        for cv, spk in enumerate(speakers, start=1)
    }
    _write_targets(tmp_path / "msp", cvs, labels, as_indices=True, as_bytes=False, column=False)
    _write_h5(tmp_path / "msp" / "A" / "IS10.h5", ids, 5, rng)
    done = import_mmin(tmp_path / "msp", tmp_path / "s.zarr", corpus="msp-improv")
    assert len(cvs) == 12 and done.counts["audio"]["ok"] == len(ids)
    utt = FeatureStore.open(tmp_path / "s.zarr").utterances
    for i, u in enumerate(utt["id"]):
        assert utt["label"][i] == labels[u]
        assert utt["session"][i] == f"session{int(u.split('-')[3][1:])}" and utt["speaker"][i] == u.split("-")[3]
        assert utt["split_group"][i] == str(speakers.index(u.split("-")[3]) + 1)


@pytest.mark.parametrize("layout", ["indices [n, 1]", "bytes [n]", "empty val"])
def test_other_target_layouts_import(tmp_path, layout):
    rng = np.random.default_rng(1)
    ids = [f"Ses0{s}F_impro01_{g}00{k}" for s in (1, 2) for g in "FM" for k in range(2)]
    labels = {u: k % 4 for k, u in enumerate(ids)}
    cvs = {
        s: {
            "tst": [u for u in ids if u.startswith(f"Ses0{s}")],
            "val": [] if layout == "empty val" else [u for u in ids if not u.startswith(f"Ses0{s}")][:1],
            "trn": [u for u in ids if not u.startswith(f"Ses0{s}")][0 if layout == "empty val" else 1 :],
        }
        for s in (1, 2)
    }
    _write_targets(tmp_path / "m", cvs, labels, as_indices=layout == "indices [n, 1]", column=layout != "bytes [n]")
    _write_h5(tmp_path / "m" / "L" / "bert.h5", ids, 4, rng)
    import_mmin(tmp_path / "m", tmp_path / "s.zarr")
    utt = FeatureStore.open(tmp_path / "s.zarr").utterances
    assert utt["id"].tolist() == sorted(ids) and [labels[u] for u in utt["id"]] == utt["label"].tolist()


def _assert_nothing_written(tmp_path, out):
    assert not out.exists() and sorted(p.name for p in out.parent.iterdir() if p.name.startswith((".s", "s."))) == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            "second feature file",
            r"A: several feature files \(comparE, egemaps\); choose one with --audio comparE or --audio egemaps",
        ),
        ("unknown --audio", r"A/IS09.h5: not found \(--audio IS09; .*A has comparE"),
        ("one dataset another width", r"V/denseface.h5: datasets differ in feature width \[6, 7\]"),
        ("a group for an id", r"L/bert_large.h5: Ses01F_impro01_F000 is a group, expected \[frames, dim\]"),
        ("features of another corpus", r"L/bert_large.h5: holds features for none of the 16 utterances"),
        ("pickled names", r"trn_int2name.npy: holds Python objects \(a pickle\)"),
        ("not one-hot", r"1/val_label.npy: row 0 is not one-hot"),
        ("two test cvs", r"2/tst_int2name.npy: Ses01F_impro01_F000 is a test item of cv 1 too"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, damage, message):
    root = tmp_path / "mmin"
    build_mmin(root, np.random.default_rng(3))
    first = "Ses01F_impro01_F000"
    audio = None
    if damage == "second feature file":
        shutil.copy(root / "A" / "comparE.h5", root / "A" / "egemaps.h5")
    elif damage == "unknown --audio":
        audio = "IS09"
    elif damage == "one dataset another width":
        with h5py.File(root / "V" / "denseface.h5", "a") as h5:
            del h5[first]
            h5.create_dataset(first, data=np.zeros((2, 7), np.float32))
    elif damage == "a group for an id":
        with h5py.File(root / "L" / "bert_large.h5", "a") as h5:
            del h5[first]
            h5.create_group(first)
    elif damage == "features of another corpus":
        shutil.rmtree(root / "L")
        _write_h5(root / "L" / "bert_large.h5", ["other_1", "other_2"], 8, np.random.default_rng(0))
    elif damage == "pickled names":
        np.save(root / "target" / "1" / "trn_int2name.npy", np.array(["a", "b"], dtype=object), allow_pickle=True)
    elif damage == "not one-hot":
        np.save(root / "target" / "1" / "val_label.npy", np.full((4, 4), 0.25, np.float32))
    elif damage == "two test cvs":
        names = np.load(root / "target" / "2" / "tst_int2name.npy")
        names[0, 0] = first.encode()
        np.save(root / "target" / "2" / "tst_int2name.npy", names)
    out = tmp_path / "s.zarr"
    usage = damage in ("second feature file", "unknown --audio")  # the options must change: exit 2
    with pytest.raises(ConfigError if usage else InputDataError, match=message):
        import_mmin(root, out, files={"A": audio} if audio else None)
    _assert_nothing_written(tmp_path, out)


def test_an_import_cut_short_leaves_no_store_and_a_rerun_works(tmp_path, monkeypatch):
    import cmarr.shared.store.mmin as mmin

    build_mmin(tmp_path / "mmin", np.random.default_rng(4))
    original = mmin._import_modality

    def fail_on_video(writer, letter, *args):
        if letter == "V":
            raise KeyboardInterrupt
        return original(writer, letter, *args)

    monkeypatch.setattr(mmin, "_import_modality", fail_on_video)
    with pytest.raises(KeyboardInterrupt):
        import_mmin(tmp_path / "mmin", tmp_path / "s.zarr")
    _assert_nothing_written(tmp_path, tmp_path / "s.zarr")
    monkeypatch.undo()
    assert set(import_mmin(tmp_path / "mmin", tmp_path / "s.zarr").counts) == {"audio", "video", "text"}


# ---------------------------------------------------------------------- export, then import back

MANIFEST_CLASSES = ("ang", "sad", "neu")


def _manifest_like_store(path):
    """What `cmarr-extract manifest` writes: split_group == session, ids as users write them ("/"
    and "%" in some), a class with a single utterance, an utterance whose audio is missing."""
    from cmarr.shared.labels import LabelSet
    from cmarr.shared.store import ModalitySpec, StoreWriter, UtteranceTable

    ids = ["id/with/slash", "plain", "other", "other2", "x%2Fy", "deep/a/b", "b3"]
    sessions = ["A", "A", "B", "B", "A", "B", "B"]
    labels = [0, 1, 0, 1, 0, 2, 0]
    table = UtteranceTable.from_records(
        [
            {"id": u, "label": c, "label_name": MANIFEST_CLASSES[c], "session": s, "speaker": f"p{s}", "split_group": s}
            for u, s, c in zip(ids, sessions, labels)
        ]
    )
    writer = StoreWriter.create(path, table, "rt", LabelSet("custom", MANIFEST_CLASSES))
    rng = np.random.default_rng(5)
    for name, dim in (("text", 4), ("audio", 3)):
        feats = [rng.standard_normal((k + 1, dim)).astype(np.float32) for k in range(len(ids))]
        if name == "audio":
            feats[2] = None
        mw = writer.modality(name, ModalitySpec(f"enc-{name}", dim, "float32"))
        mw.write_part(range(len(ids)), feats, [Status.MISSING_INPUT if f is None else Status.OK for f in feats])
        mw.finalize()
    return FeatureStore.open(path)


def test_a_manifest_store_exports_for_mmin_loaders_and_imports_back(tmp_path):
    store = _manifest_like_store(tmp_path / "rt.zarr")
    utt = store.utterances
    done = export_h5(str(tmp_path / "rt.zarr"), tmp_path / "h5")
    assert any("3 ids hold '/'" in n for n in done.notes)
    cvs = sorted(p.name for p in (tmp_path / "h5" / "target").iterdir())
    assert cvs == ["1", "2"]
    for letter, name in (("L", "text"), ("A", "audio")):
        reader = store.modality(name)
        with h5py.File(tmp_path / "h5" / letter / f"enc-{name}.h5") as h5:
            assert all(isinstance(h5[k], h5py.Dataset) for k in h5)  # no id became nested groups
            for cv in cvs:
                tested = set()
                for split in ("trn", "val", "tst"):  # as MMIN's loader reads a split
                    folder = tmp_path / "h5" / "target" / cv
                    int2name = np.load(folder / f"{split}_int2name.npy")
                    label = np.argmax(np.load(folder / f"{split}_label.npy"), axis=1)
                    assert len(int2name) > 0, (cv, split)  # val too, though its session has one group
                    for k in range(len(int2name)):
                        key = int2name[k][0].decode()
                        i = [_escape_like_export(u) for u in utt["id"]].index(key)
                        assert label[k] == utt["label"][i]
                        if reader.status[i] == Status.OK:
                            assert h5[key][()].tobytes() == reader.get(i).tobytes()
                        if split == "tst":
                            tested.add(utt["session"][i])
                assert tested == {"AB"[int(cv) - 1]}
    back = import_mmin(tmp_path / "h5", tmp_path / "back.zarr", MANIFEST_CLASSES, dtype="float32")
    assert back.counts["audio"]["missing_input"] == 1
    again = FeatureStore.open(tmp_path / "back.zarr")
    order = np.argsort(utt["id"])
    for column in ("id", "label", "label_name", "split_group", "session"):
        assert again.utterances[column].tolist() == utt[column][order].tolist(), column
    for name in ("text", "audio"):
        for k, i in enumerate(order):
            assert again.modality(name).get(k).tobytes() == store.modality(name).get(i).tobytes()


def _escape_like_export(u: str) -> str:
    return u.replace("%", "%25").replace("/", "%2F")


def test_export_then_import_through_the_commands(tmp_path):
    """The field case export-roundtrip/ as commands (the store built here instead of extracted)."""
    from cmarr.shared.cli import app
    from typer.testing import CliRunner

    _manifest_like_store(tmp_path / "rt.zarr")
    runner = CliRunner()
    r = runner.invoke(app, ["export-h5", str(tmp_path / "rt.zarr"), "--out", str(tmp_path / "rt_h5")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["import-mmin", str(tmp_path / "rt_h5"), "--out", str(tmp_path / "back"), "--classes", "ang,sad,neu"]
    )
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["verify", str(tmp_path / "back")]).exit_code == 0

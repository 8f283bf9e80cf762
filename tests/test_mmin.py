"""MMIN interchange: an HDF5 set built in MMIN's exact layout imports and exports without loss."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from cmarr.shared.errors import InputDataError
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
    counts = import_mmin(tmp_path / "mmin", tmp_path / "s.zarr", CLASSES, dtype="float32", corpus="iemocap")
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

"""Interchange with MMIN's published HDF5 features (the layout most missing-modality papers use).

MMIN layout (one directory)::

    A/<name>.h5, V/<name>.h5, L/<name>.h5    one dataset per utterance id, [frames, dim] float32
    target/<cv>/{trn,val,tst}_label.npy       one-hot labels
    target/<cv>/{trn,val,tst}_int2name.npy    utterance ids as byte strings ([n] or [n, 1])

Import keeps, per utterance, the cv in which it is a test item as `split_group`; export rebuilds
the same target files from it (val of a cv = the other cv of the same session), so an
import -> export round trip gives MMIN's folds back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from cmarr.shared.errors import InputDataError
from cmarr.shared.labels import LabelSet
from cmarr.shared.provenance import file_sha256
from cmarr.shared.store.reader import FeatureStore
from cmarr.shared.store.schema import ModalitySpec, Status, UtteranceTable
from cmarr.shared.store.writer import StoreWriter

LETTER_TO_MODALITY = {"A": "audio", "V": "video", "L": "text"}
MODALITY_TO_LETTER = {v: k for k, v in LETTER_TO_MODALITY.items()}
SPLITS = ("trn", "val", "tst")


def import_mmin(
    root: str | Path,
    out: str | Path,
    classes: tuple[str, ...] = ("ang", "hap", "neu", "sad"),
    files: dict[str, str] | None = None,
    dtype: str = "float16",
    corpus: str = "mmin",
    chunk_frames: int = 2048,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, int]]:
    """Import an MMIN feature directory into a new store at `out`; returns status counts per modality.
    `files` picks the h5 per letter ({'A': 'comparE'}) when a folder holds several."""
    root = Path(root)
    table = _read_targets(root, classes)
    ids = table["id"]
    writer = StoreWriter.create(
        out,
        table,
        corpus,
        LabelSet("mmin", tuple(classes)),
        extra_attrs={"imported_from": {"format": "mmin-h5", "root": str(root)}},
    )
    counts = {}
    for letter, modality in LETTER_TO_MODALITY.items():
        h5_path = _pick_h5(root, letter, (files or {}).get(letter))
        if h5_path is None:
            continue
        counts[modality] = _import_modality(writer, modality, h5_path, ids, dtype, chunk_frames, progress)
    if not counts:
        raise InputDataError(f"{root}: no A/, V/ or L/ folder with an .h5 file")
    return counts


def export_h5(store_location: str, out: str | Path, modalities: list[str] | None = None) -> Path:
    """Write a store back out in MMIN's layout (float32 features, one dataset per id)."""
    store = FeatureStore.open(store_location)
    out = Path(out)
    ids = store.utterances["id"]
    for name in modalities or store.modality_names:
        reader = store.modality(name)
        letter = MODALITY_TO_LETTER.get(name, name)
        stem = store.root[name].attrs["spec"].get("extra", {}).get("mmin_file") or _safe(reader.spec.encoder)
        (out / letter).mkdir(parents=True, exist_ok=True)
        with h5py.File(out / letter / f"{stem}.h5", "w") as h5:
            for lo in range(0, len(ids), 512):
                hi = min(lo + 512, len(ids))
                for i, frames in zip(range(lo, hi), reader.read_range(lo, hi)):
                    if reader.status[i] == Status.OK:
                        h5.create_dataset(ids[i], data=np.asarray(frames, dtype=np.float32))
    _write_targets(store, out / "target")
    return out


# ---------------------------------------------------------------------- import helpers


def _read_targets(root: Path, classes: tuple[str, ...]) -> UtteranceTable:
    target = root / "target"
    cvs = (
        sorted((d for d in target.iterdir() if d.is_dir()), key=lambda d: _natural_key(d.name))
        if target.is_dir()
        else []
    )
    if not cvs:
        raise InputDataError(f"{target}: no target/<cv>/ folders with *_label.npy and *_int2name.npy")
    labels: dict[str, int] = {}
    test_cv: dict[str, str] = {}
    for cv in cvs:
        for split in SPLITS:
            names, onehot = _load_split(cv, split, len(classes))
            for name, label in zip(names, onehot.argmax(axis=1)):
                if labels.setdefault(name, int(label)) != label:
                    raise InputDataError(
                        f"{cv}/{split}_label.npy: {name} labelled {classes[label]} here, "
                        f"{classes[labels[name]]} elsewhere"
                    )
                if split == "tst":
                    test_cv[name] = cv.name
    records = [_record(name, labels[name], classes, test_cv.get(name, "")) for name in sorted(labels)]
    return UtteranceTable.from_records(records)


def _load_split(cv: Path, split: str, n_classes: int) -> tuple[list[str], np.ndarray]:
    label_path, name_path = cv / f"{split}_label.npy", cv / f"{split}_int2name.npy"
    if not label_path.is_file() or not name_path.is_file():
        raise InputDataError(f"{cv}: missing {label_path.name} or {name_path.name}")
    try:
        onehot = np.load(label_path)
        raw = np.load(name_path, allow_pickle=False)
    except ValueError as err:
        raise InputDataError(f"{name_path}: cannot read ({err})") from None
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw.reshape(len(raw), -1)[:, 0]]
    if onehot.ndim != 2 or onehot.shape[1] != n_classes or len(onehot) != len(names):
        raise InputDataError(
            f"{label_path}: shape {onehot.shape}, expected [{len(names)}, {n_classes}] one-hot "
            f"(pass the label classes if the corpus has {onehot.shape[-1]})"
        )
    return names, onehot


_IEMOCAP = re.compile(r"^(Ses0\d)([FM])_(.+)_([FM])\d{3}$")
_MSP = re.compile(r"^MSP-IMPROV-S\d\d[A-Z]-([FM])(\d\d)-")


def _record(name: str, label: int, classes: tuple[str, ...], cv: str) -> dict:
    """Speaker, session and dialog from the id when it follows IEMOCAP or MSP-IMPROV naming."""
    rec = {"id": name, "label": label, "label_name": classes[label], "split_group": cv, "session": cv}
    if m := _IEMOCAP.match(name):
        rec.update(session=m[1], speaker=m[1] + m[4], gender=m[4], dialog=name.rsplit("_", 1)[0])
    elif m := _MSP.match(name):
        rec.update(session=f"session{int(m[2])}", speaker=m[1] + m[2], gender=m[1])
    return rec


def _pick_h5(root: Path, letter: str, stem: str | None) -> Path | None:
    folder = root / letter
    if not folder.is_dir():
        return None
    if stem:
        path = folder / f"{stem}.h5"
        if not path.is_file():
            raise InputDataError(f"{path}: not found")
        return path
    found = sorted(folder.glob("*.h5"))
    if len(found) > 1:
        raise InputDataError(f"{folder}: several .h5 files ({', '.join(p.stem for p in found)}); choose one")
    return found[0] if found else None


def _import_modality(writer, modality, h5_path, ids, dtype, chunk_frames, progress) -> dict[str, int]:
    with h5py.File(h5_path, "r") as h5:
        dims = {h5[k].shape[-1] for k in list(h5.keys())[:50] if isinstance(h5[k], h5py.Dataset)}
        if len(dims) != 1:
            raise InputDataError(f"{h5_path}: expected datasets [frames, dim] with one dim, found dims {sorted(dims)}")
        spec = ModalitySpec(
            encoder=f"mmin:{h5_path.parent.name}/{h5_path.name}",
            dim=dims.pop(),
            dtype=dtype,
            weights_sha256=file_sha256(h5_path),
            extra={"mmin_file": h5_path.stem},
        )
        mw = writer.modality(modality, spec)
        for lo in range(0, len(ids), 256):
            batch = range(lo, min(lo + 256, len(ids)))
            feats, status = [], []
            for i in batch:
                data = np.asarray(h5[ids[i]][()]) if ids[i] in h5 else np.zeros((0, spec.dim))
                data = data.reshape(-1, spec.dim) if data.size else np.zeros((0, spec.dim))
                feats.append(data if len(data) else None)
                status.append(Status.OK if len(data) else Status.MISSING_INPUT)
            mw.write_part(list(batch), feats, status)
            if progress:
                progress(modality, batch.stop, len(ids))
    return mw.finalize(chunk_frames)


# ---------------------------------------------------------------------- export helpers


def _write_targets(store: FeatureStore, target: Path) -> None:
    """One cv per split_group: tst = the group, val = the other group(s) of its session."""
    utt = store.utterances
    groups, sessions = utt["split_group"], utt["session"]
    n_classes = len(store.classes)
    onehot = np.eye(n_classes, dtype=np.float32)[np.clip(utt["label"], 0, None)]
    for g in sorted(set(groups.tolist()) - {""}, key=_natural_key):
        tst = groups == g
        same_session = np.isin(sessions, sessions[tst])
        val = same_session & ~tst
        trn = ~same_session
        folder = target / g
        folder.mkdir(parents=True, exist_ok=True)
        for split, mask in zip(SPLITS, (trn, val, tst)):
            np.save(folder / f"{split}_label.npy", onehot[mask])
            np.save(
                folder / f"{split}_int2name.npy",
                np.array([s.encode() for s in utt["id"][mask]], dtype="S").reshape(-1, 1),
            )


def _natural_key(s: str) -> list:
    """Sort '2' before '10' (cv folders are numbered)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "features"

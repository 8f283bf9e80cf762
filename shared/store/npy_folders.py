"""Interchange with GCNet's and MERTools' feature folders (zeroQiaoba/GCNet, zeroQiaoba/MERTools).

Their layout, as their loaders read it::

    features/<name>-FRA/<utterance id>.npy   [frames, dim] float32 (frame level), or
    features/<name>-UTT/<utterance id>.npy   [dim] (utterance level: the mean over frames)
    <CORPUS>_features_raw_<K>way.pkl         GCNet: a list [videoIDs, videoLabels, videoSpeakers,
                                             videoSentence, trainVid, testVid]; dicts keyed by dialog,
                                             utterances in time order; speakers 'F'/'M' (the two
                                             parties); labels class indices; trainVid/testVid sets
    label_<K>way.npz                         MERTools: whole_corpus = {id: {'emo': k, 'val': -10}}

Both loaders need a file for every utterance they name, so an item that is not ok (a really
missing modality) is written as zeros, GCNet's own filler for a face it did not find; the sidecar
`cmarr_export.json` lists those items with the store's table, label set and specs, so that an
import gives the store back. The utterance level keeps the mean over frames only: lossy by design.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.labels import LabelSet
from cmarr.shared.store.interchange import (
    check_classes,
    chosen_fold,
    dump_pickle,
    load_data_pickle,
    missing_notes,
    read_sidecar,
    recorded_status,
    restored_spec,
    restored_table,
    save_object_npz,
    sidecar,
    write_new_folder,
    write_sidecar,
)
from cmarr.shared.store.lock import store_lock
from cmarr.shared.store.mmin import EXPORT_META, Interchange, _escape, _record, _safe
from cmarr.shared.store.mmin_targets import natural_key
from cmarr.shared.store.reader import FeatureStore
from cmarr.shared.store.schema import ModalitySpec, Status, UtteranceTable
from cmarr.shared.store.writer import StoreWriter

LEVELS = {"frame": "FRA", "utterance": "UTT"}  # MERTools names a folder <model>-FRA or <model>-UTT
GCNET_FOUR = ("hap", "sad", "neu", "ang")  # the class order of GCNet's IEMOCAP_features_raw_4way.pkl
GCNET_KEYS = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentence", "trainVid", "testVid")
PARTIES = ("F", "M")  # GCNet's speakermap: {'F': 0, 'M': 1}
FORMAT = "cmarr-npy"

Progress = Callable[[str, int, int], None] | None


# ---------------------------------------------------------------------- export


def export_npy(
    store_location: str,
    out: str | Path,
    level: str = "frame",
    fold: str | None = None,
    progress: Progress = None,
) -> Interchange:
    """Write a store as GCNet/MERTools feature folders, GCNet's conversation pickle (testVid: the
    dialogs of split group `fold`, default the last), MERTools' label file and the sidecar into the
    new folder `out`, which appears only when whole."""
    if level not in LEVELS:
        raise ConfigError(f"--level {level}: choose frame or utterance")
    store = FeatureStore.open(store_location)
    test_group, _ = chosen_fold(store.utterances, fold)
    notes = write_new_folder(Path(out), lambda partial: _write_export(store, partial, level, test_group, progress))
    return Interchange(Path(out), notes=notes)


def _write_export(store: FeatureStore, out: Path, level: str, test_group: str, progress: Progress) -> list[str]:
    utt = store.utterances
    keys = [_escape(u) for u in utt["id"]]
    folders: dict[str, str] = {}
    for name in store.modality_names:
        folders[name] = _folder_name(store.modality(name).spec, name, level, set(folders.values()))
        _write_features(store.modality(name), out / "features" / folders[name], keys, level, progress)
    k = len(store.classes)
    notes = _write_conversations(
        utt, keys, test_group, out / f"{(store.corpus or 'cmarr').upper()}_features_raw_{k}way.pkl"
    )
    corpus = {key: {"emo": int(c), "val": -10} for key, c in zip(keys, utt["label"]) if c >= 0}
    save_object_npz(out / f"label_{k}way.npz", whole_corpus=corpus)
    write_sidecar(sidecar(store, FORMAT, store.modality_names, level=level, folders=folders), out / EXPORT_META)
    if (unlabelled := int((utt["label"] < 0).sum())) > 0:
        notes.append(f"{unlabelled} unlabelled utterances: their features are written, the label files leave them out")
    if escaped := [key for key, u in zip(keys, utt["id"]) if key != u]:
        notes.append(f"{len(escaped)} ids hold '/' or '%', their files named with %2F / %25 (e.g. {escaped[0]})")
    if prefixed := _prefixes(keys):
        notes.append(
            f"{len(prefixed)} ids begin another id (e.g. {prefixed[0]}): GCNet's loader globs <id>* and stops "
            "on two files; MERTools reads them"
        )
    return notes


def _folder_name(spec: ModalitySpec, modality: str, level: str, taken: set[str]) -> str:
    name = f"{spec.extra.get('npy_stem') or _safe(spec.encoder)}-{LEVELS[level]}"
    return name if name not in taken else f"{modality}-{name}"


def _write_features(reader, folder: Path, keys: list[str], level: str, progress: Progress) -> None:
    """One float32 .npy per utterance; zeros for one that is not ok, as the peers need a file."""
    folder.mkdir(parents=True)
    zeros = np.zeros(reader.dim if level == "utterance" else (1, reader.dim), np.float32)
    for lo in range(0, len(keys), 512):
        hi = min(lo + 512, len(keys))
        for i, frames in zip(range(lo, hi), reader.read_range(lo, hi)):
            x = np.asarray(frames, dtype=np.float32)
            if reader.status[i] != Status.OK:
                x = zeros
            elif level == "utterance":
                x = x.mean(axis=0)
            np.save(folder / f"{keys[i]}.npy", x)
        if progress:
            progress(f"export {reader.name}", hi, len(keys))


def _write_conversations(utt: dict[str, np.ndarray], keys: list[str], test_group: str, path: Path) -> list[str]:
    """GCNet's pickle: labelled utterances per dialog in time order, dialogs sorted (GCNet sorts
    them), each dialog's two parties as F/M; testVid the dialogs of `test_group`."""
    by_vid: dict[str, list[int]] = {}
    for i in np.flatnonzero(utt["label"] >= 0):
        by_vid.setdefault(utt["dialog"][i] or keys[i], []).append(int(i))  # no dialog: a conversation of one
    videos: dict[str, dict] = {key: {} for key in GCNET_KEYS[:4]}
    notes, test = [], set()
    for vid in sorted(by_vid, key=natural_key):
        rows = sorted(by_vid[vid], key=lambda i: (np.isnan(utt["start"][i]), np.nan_to_num(utt["start"][i]), i))
        parties, note = _parties([utt["speaker"][i] for i in rows], [utt["gender"][i] for i in rows], vid)
        notes += [note] if note else []
        videos["videoIDs"][vid] = [keys[i] for i in rows]
        videos["videoLabels"][vid] = [int(utt["label"][i]) for i in rows]
        videos["videoSpeakers"][vid] = [parties[utt["speaker"][i]] for i in rows]
        videos["videoSentence"][vid] = ["" for _ in rows]  # the store holds no transcripts
        if utt["split_group"][rows[0]] == test_group:
            test.add(vid)
    dump_pickle([*videos.values(), set(by_vid) - test, test], path)
    return notes[:3] + ([f"... and {len(notes) - 3} more dialogs like these"] if len(notes) > 3 else [])


def _parties(speakers: list[str], genders: list[str], vid: str) -> tuple[dict[str, str], str]:
    """Each speaker of a dialog as 'F' or 'M': their gender when the speakers' genders differ
    (IEMOCAP, MSP-IMPROV), else alternately in the order they first speak; and a note when a
    dialog has more than GCNet's two parties."""
    order = list(dict.fromkeys(speakers))
    gender = dict(zip(speakers, genders))
    if all(gender[s] in PARTIES for s in order) and len({gender[s] for s in order}) == len(order):
        return {s: gender[s] for s in order}, ""
    note = (
        f"dialog {vid} has {len(order)} speakers; GCNet's hold two parties, so they alternate F/M"
        if len(order) > 2
        else ""
    )
    return {s: PARTIES[k % 2] for k, s in enumerate(order)}, note


def _prefixes(keys: list[str]) -> list[str]:
    ordered = sorted(keys)
    return [a for a, b in zip(ordered, ordered[1:]) if b.startswith(a)]


# ---------------------------------------------------------------------- import


def import_npy(
    root: str | Path,
    out: str | Path,
    folders: dict[str, str] | None = None,
    labels: str | Path | None = None,
    classes: tuple[str, ...] | None = None,
    dtype: str | None = None,
    corpus: str | None = None,
    chunk_frames: int = 2048,
    progress: Progress = None,
) -> Interchange:
    """Import GCNet/MERTools feature folders under `root` (`folders`: modality -> folder under
    features/) with GCNet's conversation pickle into a new store at `out`. Everything is checked
    before anything is written; the store appears only when complete. A sidecar from export-npy
    gives back the store's table, order, label set, specs and missing items."""
    root, out = Path(root), Path(out)
    meta = read_sidecar(root / EXPORT_META)
    pickle_path = _label_pickle(root, labels)
    classes = _classes(classes, meta, pickle_path, root / EXPORT_META)
    peer = _read_conversations(pickle_path, classes)
    if meta:
        unescape = {_escape(u): u for u in meta["table"]["id"]}
        keep = {u for u, label in zip(meta["table"]["id"], meta["table"]["label"]) if label == -1}
        named = {unescape.get(key, key): label for key, (label, _) in peer.items()}
        table = restored_table(meta, root / EXPORT_META, named, pickle_path, keep)
    else:
        table = UtteranceTable.from_records(
            [{**f, "id": u, "label": lab, "label_name": classes[lab]} for u, (lab, f) in peer.items()]
        )
    ids = table["id"].tolist()
    keys = [_escape(u) for u in ids] if meta else ids
    sources = {m: _feature_folder(root, m, f, keys, meta) for m, f in _folders(root, folders, meta).items()}
    label_set = LabelSet(meta.get("label_set", {}).get("name", "npy"), classes)
    extra = {"imported_from": {"format": "npy-folders", "root": str(root), "labels": pickle_path.name}}
    corpus = corpus or meta.get("corpus") or "npy"
    with store_lock(out), StoreWriter.building(out, table, corpus, label_set, extra_attrs=extra) as writer:
        counts = {
            m: _import_modality(writer, m, folder, dim, keys, ids, meta, dtype, chunk_frames, progress)
            for m, (folder, dim) in sources.items()
        }
    return Interchange(out, counts, [] if meta else missing_notes(counts))


def _classes(given: tuple[str, ...] | None, meta: dict, pickle_path: Path, sidecar_path: Path) -> tuple[str, ...]:
    check_classes(tuple(given or ()), meta, bool(given), sidecar_path)
    recorded = tuple(meta.get("label_set", {}).get("classes", ()))
    if given or recorded:
        return tuple(given or recorded)
    if pickle_path.name.endswith("_4way.pkl"):
        return GCNET_FOUR
    raise ConfigError(f"{pickle_path}: name the label classes in label order with --classes (a,b,c,...)")


def _label_pickle(root: Path, given: str | Path | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise ConfigError(f"{given}: not found (--labels)")
        return Path(given)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    found = sorted(root.glob("*_features_raw_*way.pkl"))
    if len(found) != 1:
        have = ", ".join(p.name for p in found) or "none"
        raise ConfigError(f"{root}: expected one *_features_raw_<K>way.pkl (found {have}); name it with --labels")
    return found[0]


def _read_conversations(path: Path, classes: tuple[str, ...]) -> dict[str, tuple[int, dict]]:
    """{utterance id: (label, its other fields)} from GCNet's pickle, dialogs in GCNet's order
    (sorted), utterances in conversation order."""
    data = load_data_pickle(path)
    if not isinstance(data, list | tuple) or len(data) != 6:
        raise InputDataError(f"{path}: expected GCNet's list of six ({', '.join(GCNET_KEYS)}), found {_kind(data)}")
    ids, labels, speakers, _, train, test = data
    if not all(isinstance(d, dict) for d in (ids, labels, speakers)) or not all(
        isinstance(s, set | frozenset) for s in (train, test)
    ):
        raise InputDataError(f"{path}: videoIDs, videoLabels, videoSpeakers must be dicts and trainVid, testVid sets")
    rows: dict[str, tuple[int, dict]] = {}
    for vid in sorted(train | test):
        if vid not in ids:
            raise InputDataError(f"{path}: dialog {vid} is in trainVid/testVid but not in videoIDs")
        uids, labs, spks = ids[vid], labels.get(vid, []), speakers.get(vid, [])
        if not len(uids) == len(labs) == len(spks):
            raise InputDataError(
                f"{path}: dialog {vid} has {len(uids)} ids, {len(labs)} labels and {len(spks)} speakers"
            )
        for order, (uid, label, party) in enumerate(zip(uids, labs, spks)):
            if str(uid) in rows:
                raise InputDataError(f"{path}: {uid} appears twice (dialog {vid} and another)")
            rows[str(uid)] = (_label(path, uid, label, classes), _fields(str(uid), str(vid), party, order, test, path))
    if not rows:
        raise InputDataError(f"{path}: no utterances in any dialog")
    return rows


def _kind(data) -> str:
    return f"a {type(data).__name__} of {len(data)}" if isinstance(data, list | tuple) else f"a {type(data).__name__}"


def _label(path: Path, uid, label, classes: tuple[str, ...]) -> int:
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label < len(classes):
        raise InputDataError(
            f"{path}: {uid} has label {label!r}, outside the label set "
            f"(0..{len(classes) - 1}: {', '.join(classes)}; pass the classes with --classes)"
        )
    return int(label)


def _fields(uid: str, vid: str, party, order: int, test: set, path: Path) -> dict:
    """Session, speaker, gender from the id when it follows IEMOCAP or MSP-IMPROV naming, else the
    dialog's party; the position in the dialog as `start` (GCNet keeps the order, not the times)."""
    if party not in PARTIES:
        raise InputDataError(f"{path}: {uid} has speaker {party!r}; GCNet's speakers are 'F' or 'M'")
    rec = _record(uid, 0, ("",), "test" if vid in test else "train")
    rec.setdefault("speaker", f"{vid}:{party}")
    rec.setdefault("gender", party)
    rec["split_group"] = rec["session"]  # cmarr's folds: sessions from the id's naming, else GCNet's split
    return {k: v for k, v in rec.items() if k not in ("id", "label", "label_name")} | {
        "dialog": vid,
        "start": float(order),
    }


def _folders(root: Path, given: dict[str, str] | None, meta: dict) -> dict[str, str]:
    chosen = {m: f for m, f in (given or {}).items() if f} or dict(meta.get("folders", {}))
    if not chosen:
        features = _features_root(root)
        have = ", ".join(sorted(p.name for p in features.iterdir() if p.is_dir())) or "no folder"
        raise ConfigError(f"{root}: name the feature folders with --audio/--text/--video ({features} has {have})")
    return chosen


def _features_root(root: Path) -> Path:
    return root / "features" if (root / "features").is_dir() else root


def _feature_folder(root: Path, modality: str, name: str, keys: list[str], meta: dict) -> tuple[Path, int]:
    """(the folder, the feature width), every file's header checked. With the sidecar of an
    export (which wrote a file for every utterance), a missing file or another width is an error."""
    strict = bool(meta)
    expected = meta.get("modalities", {}).get(modality, {}).get("spec", {}).get("dim")
    folder = _features_root(root) / name
    if not folder.is_dir():
        have = ", ".join(sorted(p.name for p in folder.parent.iterdir() if p.is_dir())) or "no folder"
        raise ConfigError(f"{folder}: not found (--{modality} {name}; {folder.parent} has {have})")
    dims: dict[int, Path] = {}
    for key in keys:
        path = folder / f"{key}.npy"
        if (folder / key).is_dir():
            raise InputDataError(
                f"{folder / key}: a folder of per-face files (GCNet's face layout), which cmarr does not read; "
                f"stack them into {key}.npy as [frames, dim]"
            )
        if path.is_file():
            width = _npy_width(path)
            if expected is not None and width != expected:
                raise InputDataError(f"{path}: {width} features wide, but the export's {modality} is {expected}")
            dims.setdefault(width, path)
            if len(dims) > 1:
                (a, pa), (b, pb) = list(dims.items())[:2]
                raise InputDataError(f"{pb}: {b} features wide, but {pa.name} is {a} (one feature width per folder)")
        elif strict:
            raise InputDataError(f"{path}: missing (the export in {root} wrote a file for every utterance)")
    if not dims:
        raise InputDataError(
            f"{folder}: holds features for none of the {len(keys)} utterances the labels name "
            f"(expected <id>.npy, e.g. {keys[0]}.npy)"
        )
    return folder, next(iter(dims))


def _npy_width(path: Path) -> int:
    """The feature width of a [dim] or [frames, dim] .npy, from its header alone."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (OSError, ValueError) as err:
        raise InputDataError(f"{path}: not a readable .npy file ({err})") from None
    if dtype.kind not in "fiu" or len(shape) not in (1, 2) or shape[-1] == 0:
        raise InputDataError(f"{path}: {dtype} array of shape {shape}, expected [dim] or [frames, dim] numbers")
    return int(shape[-1])


def _import_modality(writer, modality, folder, dim, keys, ids, meta, dtype, chunk_frames, progress) -> dict[str, int]:
    stem = folder.name[:-4] if folder.name.endswith(("-FRA", "-UTT")) else folder.name
    fallback = ModalitySpec(encoder=f"npy:{folder.name}", dim=dim, dtype=dtype or "float16", extra={"npy_stem": stem})
    mw = writer.modality(modality, restored_spec(meta, modality, fallback, dtype))
    status_of, reasons_of = recorded_status(meta, modality)
    for lo in range(0, len(ids), 256):
        batch = range(lo, min(lo + 256, len(ids)))
        feats, status, reasons = [], [], {}
        for i in batch:
            path = folder / f"{keys[i]}.npy"
            if ids[i] in status_of or not path.is_file():
                feats.append(None)
                status.append(status_of.get(ids[i], Status.MISSING_INPUT))
            else:
                x = _load_npy(path)
                present = x.size and (meta or x.any())  # without the sidecar, all zeros is the peers' filler
                feats.append(x.reshape(-1, dim) if present else None)
                status.append(Status.OK if present else Status.MISSING_INPUT)
            if ids[i] in reasons_of:
                reasons[i] = reasons_of[ids[i]]
        mw.write_part(list(batch), feats, status, reasons)
        if progress:
            progress(modality, batch.stop, len(ids))
    return mw.finalize(chunk_frames)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputDataError(f"{path}: not a readable .npy file ({err})") from None

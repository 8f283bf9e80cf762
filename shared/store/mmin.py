"""Interchange with MMIN's published HDF5 features (the layout most missing-modality papers use).

MMIN layout (one directory), as AIM3-RUC/MMIN's loaders read it::

    A/<name>.h5, V/<name>.h5, L/<name>.h5    one dataset per utterance id, [frames, dim] float32
    A/comparE_mean_std.h5                     per-cv normalisation statistics (not features)
    target/<cv>/{trn,val,tst}_label.npy       labels: one-hot [n, K] (IEMOCAP) or class indices [n] (MSP-IMPROV)
    target/<cv>/{trn,val,tst}_int2name.npy    utterance ids: [n, 1] byte strings (IEMOCAP) or [n] strings (MSP)

cvs are numbered folders (10 for IEMOCAP, 12 for MSP-IMPROV). Import keeps, per utterance, the cv
in which it is a test item as `split_group`. Export writes numbered cvs, one per `split_group`
(val = the other groups of its session, or a stratified tenth of the training utterances when
there are none), and `cmarr_export.json` with what MMIN's layout cannot hold: which group each cv
tests and the ids whose "/" had to be escaped (HDF5 reads "/" as a group separator), so that
MMIN's loaders read the export and an import gives the store back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.labels import LabelSet
from cmarr.shared.provenance import file_sha256
from cmarr.shared.store.lock import store_lock
from cmarr.shared.store.mmin_targets import SPLITS, natural_key, read_targets
from cmarr.shared.store.reader import FeatureStore
from cmarr.shared.store.schema import ModalitySpec, Status, UtteranceTable
from cmarr.shared.store.writer import StoreWriter

LETTER_TO_MODALITY = {"A": "audio", "V": "video", "L": "text"}
MODALITY_TO_LETTER = {v: k for k, v in LETTER_TO_MODALITY.items()}
EXPORT_META = "cmarr_export.json"
NORMALISATION = "_mean_std"  # MMIN's per-cv mean/std files: A/comparE_mean_std.h5
VAL_FRACTION = 0.1  # of the training utterances, when a cv's session has no other group for val


@dataclass
class Interchange:
    """What an import or export did: where, per-modality status counts (import), notes for the user."""

    path: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Source:
    """An MMIN folder, read and checked; nothing written yet."""

    table: UtteranceTable
    keys: list[str]  # the dataset name of each utterance in the h5 files (its id, "/" escaped)
    files: dict[str, Path]  # letter -> the h5 file to import
    dims: dict[str, int]
    notes: list[str]


def import_mmin(
    root: str | Path,
    out: str | Path,
    classes: tuple[str, ...] = ("ang", "hap", "neu", "sad"),
    files: dict[str, str] | None = None,
    dtype: str = "float16",
    corpus: str = "mmin",
    chunk_frames: int = 2048,
    progress: Callable[[str, int, int], None] | None = None,
) -> Interchange:
    """Import an MMIN feature directory into a new store at `out`. Everything (targets, the h5
    choice, dims) is checked before anything is written, and the store appears at `out` only when
    complete, so a corrected re-run is never refused by a leftover. `files` picks the h5 per
    letter ({'A': 'comparE'}) when a folder holds several feature files."""
    root, out = Path(root), Path(out)
    source = _inspect(root, tuple(classes), files or {})
    label_set = LabelSet("mmin", tuple(classes))
    extra = {"imported_from": {"format": "mmin-h5", "root": str(root)}}
    with store_lock(out), StoreWriter.building(out, source.table, corpus, label_set, extra_attrs=extra) as writer:
        counts = {
            LETTER_TO_MODALITY[letter]: _import_modality(writer, letter, path, source, dtype, chunk_frames, progress)
            for letter, path in source.files.items()
        }
    return Interchange(out, counts, source.notes)


def export_h5(store_location: str, out: str | Path, modalities: list[str] | None = None) -> Interchange:
    """Write a store out in MMIN's layout (float32 features, one dataset per id, numbered cvs) into
    the new folder `out`. The export is written beside it and appears at `out` only when whole, so
    a failure (a damaged chunk met half way) leaves nothing behind; an `out` that exists and is not
    empty is refused (ConfigError) rather than written over."""
    store = FeatureStore.open(store_location)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not empty; export into a new folder (nothing is written over)")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        notes = _write_export(store, partial, modalities)
        if out.exists():
            out.rmdir()  # empty: checked above
        os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Interchange(out, notes=notes)


def _write_export(store: FeatureStore, out: Path, modalities: list[str] | None) -> list[str]:
    """The export's files under `out`; returns notes for the user."""
    ids = store.utterances["id"]
    keys = [_escape(u) for u in ids]
    for name in modalities or store.modality_names:
        reader = store.modality(name)
        letter = MODALITY_TO_LETTER.get(name, name)
        stem = reader.spec.extra.get("mmin_file") or _safe(reader.spec.encoder)
        (out / letter).mkdir(parents=True, exist_ok=True)
        with h5py.File(out / letter / f"{stem}.h5", "w") as h5:
            for lo in range(0, len(ids), 512):
                hi = min(lo + 512, len(ids))
                for i, frames in zip(range(lo, hi), reader.read_range(lo, hi)):
                    if reader.status[i] == Status.OK:
                        h5.create_dataset(keys[i], data=np.asarray(frames, dtype=np.float32))
    cv_groups, notes = _write_targets(store, keys, out / "target")
    escaped = {k: u for k, u in zip(keys, ids) if k != u}
    (out / EXPORT_META).write_text(json.dumps({"cv_groups": cv_groups, "escaped_ids": escaped}, indent=1))
    if escaped:
        notes.append(f"{len(escaped)} ids hold '/', written with it escaped as %2F (e.g. {next(iter(escaped))})")
    return notes


# ---------------------------------------------------------------------- import


def _inspect(root: Path, classes: tuple[str, ...], stems: dict[str, str]) -> _Source:
    meta = _export_meta(root)
    cv_groups, unescape = meta.get("cv_groups", {}), meta.get("escaped_ids", {})
    # (store id, dataset name, label, cv), in id order
    rows = sorted(
        (unescape.get(key, key), key, label, cv) for key, (label, cv) in read_targets(root / "target", classes).items()
    )
    table = UtteranceTable.from_records([_record(u, label, classes, cv_groups.get(cv, cv)) for u, _, label, cv in rows])
    keys = [key for _, key, _, _ in rows]
    notes: list[str] = []
    files = {}
    for letter in LETTER_TO_MODALITY:
        path = _pick_h5(root, letter, stems.get(letter), notes)
        if path is not None:
            files[letter] = path
    if not files:
        raise InputDataError(f"{root}: no A/, V/ or L/ folder with an .h5 feature file")
    return _Source(table, keys, files, {letter: _feature_dim(path, keys) for letter, path in files.items()}, notes)


def _export_meta(root: Path) -> dict:
    path = root / EXPORT_META
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path}: not readable JSON ({err})") from None


def _pick_h5(root: Path, letter: str, stem: str | None, notes: list[str]) -> Path | None:
    """The feature file of one letter; MMIN's normalisation files are skipped, and said so."""
    folder = root / letter
    if not folder.is_dir():
        return None
    option = f"--{LETTER_TO_MODALITY[letter]}"
    found = sorted(folder.glob("*.h5"))
    if stem:
        if not (folder / f"{stem}.h5").is_file():
            have = ", ".join(p.stem for p in found) or "no .h5 file"
            raise ConfigError(f"{folder / f'{stem}.h5'}: not found ({option} {stem}; {folder} has {have})")
        return folder / f"{stem}.h5"
    for p in found:
        if p.stem.endswith(NORMALISATION):
            notes.append(
                f"{p}: MMIN's per-cv normalisation statistics, not features: skipped "
                "(cmarr's trainer z-scores with training-fold statistics itself)"
            )
    features = [p for p in found if not p.stem.endswith(NORMALISATION)]
    if len(features) > 1:
        names = [p.stem for p in features]
        raise ConfigError(  # the command must choose: a usage error (exit 2), not bad data
            f"{folder}: several feature files ({', '.join(names)}); choose one with {option} {names[0]}"
            + "".join(f" or {option} {n}" for n in names[1:])
        )
    return features[0] if features else None


def _feature_dim(path: Path, keys: list[str]) -> int:
    """The one feature width of `path`'s datasets for these utterances, checked on all of them."""
    try:
        with h5py.File(path, "r") as h5:
            shapes = {k: h5[k].shape if isinstance(h5[k], h5py.Dataset) else None for k in keys if k in h5}
    except OSError as err:
        raise InputDataError(f"{path}: not a readable HDF5 file ({err})") from None
    if not shapes:
        raise InputDataError(
            f"{path}: holds features for none of the {len(keys)} utterances named in target/ "
            "(features of another corpus?)"
        )
    for key, shape in shapes.items():
        if shape is None or len(shape) not in (1, 2) or shape[-1] == 0:
            raise InputDataError(f"{path}: {key} is {'a group' if shape is None else shape}, expected [frames, dim]")
    dims = sorted({shape[-1] for shape in shapes.values()})
    if len(dims) > 1:
        raise InputDataError(f"{path}: datasets differ in feature width {dims}; expected one [frames, dim] layout")
    return dims[0]


def _import_modality(writer, letter, h5_path, source: _Source, dtype, chunk_frames, progress) -> dict[str, int]:
    dim, modality, keys = source.dims[letter], LETTER_TO_MODALITY[letter], source.keys
    spec = ModalitySpec(
        encoder=f"mmin:{letter}/{h5_path.name}",
        dim=dim,
        dtype=dtype,
        weights_sha256=file_sha256(h5_path),
        extra={"mmin_file": h5_path.stem},
    )
    mw = writer.modality(modality, spec)
    with h5py.File(h5_path, "r") as h5:
        for lo in range(0, len(keys), 256):
            batch = range(lo, min(lo + 256, len(keys)))
            feats = [np.asarray(h5[keys[i]][()]).reshape(-1, dim) if keys[i] in h5 else None for i in batch]
            feats = [f if f is not None and len(f) else None for f in feats]
            mw.write_part(list(batch), feats, [Status.OK if f is not None else Status.MISSING_INPUT for f in feats])
            if progress:
                progress(modality, batch.stop, len(keys))
    return mw.finalize(chunk_frames)


_IEMOCAP = re.compile(r"^(Ses0\d)([FM])_(.+)_([FM])\d{3}$")
_MSP = re.compile(r"^MSP-IMPROV-S\d\d[A-Z]-([FM])(\d\d)-")


def _record(name: str, label: int, classes: tuple[str, ...], group: str) -> dict:
    """Speaker, session and dialog from the id when it follows IEMOCAP or MSP-IMPROV naming."""
    rec = {"id": name, "label": label, "label_name": classes[label], "split_group": group, "session": group}
    if m := _IEMOCAP.match(name):
        rec.update(session=m[1], speaker=m[1] + m[4], gender=m[4], dialog=name.rsplit("_", 1)[0])
    elif m := _MSP.match(name):
        rec.update(session=f"session{int(m[2])}", speaker=m[1] + m[2], gender=m[1])
    return rec


# ---------------------------------------------------------------------- export


def _write_targets(store: FeatureStore, keys: list[str], target: Path) -> tuple[dict[str, str], list[str]]:
    """One numbered cv per split_group: tst = the group, val = the other group(s) of its session or,
    without one, a stratified tenth of the training utterances; returns {cv: group} and notes."""
    utt = store.utterances
    groups, labels = utt["split_group"], utt["label"]
    labelled = labels >= 0
    notes = [] if labelled.all() else [f"{int((~labelled).sum())} unlabelled utterances left out of target/"]
    onehot = np.eye(len(store.classes), dtype=np.float32)[np.clip(labels, 0, None)]
    names = np.array([k.encode() for k in keys], dtype="S").reshape(-1, 1)
    cv_groups = {}
    for cv, g in enumerate(fold_groups(groups), start=1):
        trn, val, tst = fold_masks(utt, g, cv)
        folder = target / str(cv)
        folder.mkdir(parents=True, exist_ok=True)
        for split, mask in zip(SPLITS, (trn, val, tst)):
            np.save(folder / f"{split}_label.npy", onehot[mask])
            np.save(folder / f"{split}_int2name.npy", names[mask])
        cv_groups[str(cv)] = g
    return cv_groups, notes


def fold_groups(groups: np.ndarray) -> list[str]:
    """The split groups in cv order (natural: Ses2 before Ses10); cv k tests the k-th."""
    return sorted(set(groups.tolist()) - {""}, key=natural_key)


def fold_masks(utt: dict[str, np.ndarray], group: str, cv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(trn, val, tst) masks of the labelled utterances for the cv numbered `cv` that tests `group`:
    tst = the group, val = the other group(s) of its session or, without one, a stratified tenth of
    the training utterances (drawn with seed `cv`), trn = the other sessions."""
    groups, sessions, labels = utt["split_group"], utt["session"], utt["label"]
    labelled = labels >= 0
    tst = (groups == group) & labelled
    same_session = np.isin(sessions, sessions[groups == group])
    val = same_session & ~tst & labelled
    trn = ~same_session & labelled
    if not val.any():
        val = _stratified_tenth(trn, labels, np.random.default_rng(cv))
        trn &= ~val
    return trn, val, tst


def _stratified_tenth(pool: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A validation mask: VAL_FRACTION of each class in `pool` (at least one of a class with two or more)."""
    val = np.zeros_like(pool)
    for c in np.unique(labels[pool]):
        members = np.flatnonzero(pool & (labels == c))
        k = max(1, round(VAL_FRACTION * len(members))) if len(members) >= 2 else 0
        val[rng.choice(members, k, replace=False)] = True
    if not val.any() and pool.sum() >= 2:  # every class a singleton: still give MMIN's loop one item
        val[rng.choice(np.flatnonzero(pool))] = True
    return val


def _escape(name: str) -> str:
    """An id as an HDF5 dataset name: "/" (a group separator there) as %2F, "%" as %25."""
    return name.replace("%", "%25").replace("/", "%2F")


def _safe(encoder: str) -> str:
    """A file stem from an encoder id or path: its last two components ('facebook/wav2vec2-base',
    '/home/me/models/minilm/model' -> 'minilm_model'), so no machine's folders end up in the name."""
    tail = "_".join(re.split(r"[/:\\]+", encoder.strip("/"))[-2:])
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tail).strip("_") or "features"

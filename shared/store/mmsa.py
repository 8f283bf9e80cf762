"""Interchange with MMSA's feature pickle (thuiar/MMSA), the layout its `MMDataset` reads::

    {'train' | 'valid' | 'test': {
        'text', 'audio', 'vision':        [n, T, d] float32, zero-padded at the end (one T per modality)
        'audio_lengths', 'vision_lengths': [n] frames of each item (MMSA masks the rest)
        'regression_labels':              [n] float32 (MMSA's target; here the class index)
        'classification_labels':          [n] class index
        'id', 'raw_text', 'annotations':  [n] str (annotations: the class name)
    }}

cmarr adds 'text_lengths' (MMSA's loader reads only the keys it knows). One fold makes the three
splits: test = one split group (`--fold`, default the last), valid and train as export-h5 makes
that group's cv. An item that is not ok is one zero frame (MMSA's sequence models cannot take a
length of 0); the sidecar `<FILE stem>.cmarr_export.json` records it, with the store's table,
label set and specs, so that an import gives the store back. Unlabelled utterances are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    sidecar,
    write_new_files,
    write_sidecar,
)
from cmarr.shared.store.lock import store_lock
from cmarr.shared.store.mmin import EXPORT_META, Interchange, fold_masks
from cmarr.shared.store.reader import FeatureStore
from cmarr.shared.store.schema import ModalitySpec, Status, UtteranceTable
from cmarr.shared.store.writer import StoreWriter

SPLITS = ("train", "valid", "test")
MMSA_NAME = {"text": "text", "audio": "audio", "video": "vision"}  # cmarr modality -> MMSA key
MMSA_THREE = ("negative", "neutral", "positive")  # MMSA's classification_labels: Negative(0), Neutral(1), Positive(2)
MAX_BYTES = 8 << 30  # padded arrays beyond this are refused before writing (held twice while pickling)
FORMAT = "cmarr-mmsa"

Progress = Callable[[str, int, int], None] | None


def sidecar_path(pkl: Path) -> Path:
    """`iemocap.pkl` -> `iemocap.cmarr_export.json` beside it."""
    return pkl.with_name(f"{pkl.stem}.{EXPORT_META}")


# ---------------------------------------------------------------------- export


def export_mmsa(
    store_location: str,
    out: str | Path,
    fold: str | None = None,
    max_frames: int | None = None,
    progress: Progress = None,
) -> Interchange:
    """Write a store as one MMSA pickle (float32, padded, one fold as train/valid/test) and its
    sidecar. Both appear only when whole; an existing file is refused (nothing is written over)."""
    store, out = FeatureStore.open(store_location), Path(out)
    utt = store.utterances
    group, cv = chosen_fold(utt, fold)
    rows = {split: np.flatnonzero(mask) for split, mask in zip(SPLITS, fold_masks(utt, group, cv))}
    mods = [m for m in MMSA_NAME if m in store.modality_names]
    if not mods:
        raise ConfigError(f"{store_location}: no text, audio or video modality, which is what MMSA's pickle holds")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames {max_frames}: must be at least 1")
    frames = {m: _frames_per_row(store.modality(m), max_frames) for m in mods}
    labelled = sum(len(r) for r in rows.values())
    size = sum(labelled * int(frames[m].max(initial=1)) * store.modality(m).dim * 4 for m in mods)
    if size > MAX_BYTES:
        raise ConfigError(
            f"{store_location}: MMSA's padded arrays would take {size / 2**30:.1f} GiB; cut the sequences with "
            f"--max-frames (MMSA's own pickles hold 50 frames)"
        )
    data = {split: _split(store, r, mods, frames, progress, split) for split, r in rows.items()}
    notes = _notes(store, mods, max_frames, len(utt["id"]) - labelled)
    meta = sidecar(store, FORMAT, mods, fold=group, max_frames=max_frames)
    write_new_files({out: lambda p: dump_pickle(data, p), sidecar_path(out): lambda p: write_sidecar(meta, p)})
    return Interchange(out, notes=notes)


def _frames_per_row(reader, max_frames: int | None) -> np.ndarray:
    """[n] frames each item will have in the pickle: its own (at most `max_frames`), 1 when not ok."""
    lengths = np.where(reader.status == Status.OK, reader.lengths, 1)
    return lengths if max_frames is None else np.minimum(lengths, max_frames)


def _split(
    store: FeatureStore, rows: np.ndarray, mods: list[str], frames: dict, progress: Progress, split: str
) -> dict:
    utt, labels = store.utterances, store.labels[rows]
    out: dict[str, Any] = {
        "id": np.array(utt["id"][rows].tolist(), dtype=object),
        "raw_text": np.array([""] * len(rows), dtype=object),  # the store holds no transcripts
        "annotations": np.array(utt["label_name"][rows].tolist(), dtype=object),
        "classification_labels": labels.astype(np.int64),
        "regression_labels": labels.astype(np.float32),
    }
    for m in mods:
        reader, lengths = store.modality(m), frames[m][rows]
        t = int(frames[m].max(initial=1))  # one T over all splits, as MMSA's pickles have it
        padded = np.zeros((len(rows), t, reader.dim), np.float32)  # (n, T, d)
        for lo in range(0, len(rows), 256):
            batch = rows[lo : lo + 256]
            for k, (i, x) in enumerate(zip(batch, reader.get_many(batch)), start=lo):
                if reader.status[i] == Status.OK:
                    padded[k, : lengths[k]] = x[: lengths[k]]
            if progress:
                progress(f"export {split} {m}", min(lo + 256, len(rows)), len(rows))
        out[MMSA_NAME[m]] = padded
        out[f"{MMSA_NAME[m]}_lengths"] = lengths.astype(np.int64)
    return out


def _notes(store: FeatureStore, mods: list[str], max_frames: int | None, unlabelled: int) -> list[str]:
    notes = [
        f"{m}: not exported (MMSA's pickle holds text, audio and vision)" for m in store.modality_names if m not in mods
    ]
    notes += [f"no {m}: MMSA's loader needs the key '{MMSA_NAME[m]}'" for m in MMSA_NAME if m not in mods]
    if unlabelled:
        notes.append(f"{unlabelled} unlabelled utterances left out (MMSA's splits are labelled)")
    for m in mods if max_frames else []:
        if cut := int((store.modality(m).lengths > max_frames).sum()):
            notes.append(f"{m}: {cut} items cut to their first {max_frames} frames (an import gives them back cut)")
    return notes


# ---------------------------------------------------------------------- import


def import_mmsa(
    path: str | Path,
    out: str | Path,
    classes: tuple[str, ...] | None = None,
    dtype: str | None = None,
    corpus: str | None = None,
    chunk_frames: int = 2048,
    progress: Progress = None,
) -> Interchange:
    """Import an MMSA pickle into a new store at `out`: every split's items, labels from
    'classification_labels'. Everything is checked before anything is written; the store appears
    only when complete. The sidecar from export-mmsa gives back the table, order, specs and missing items."""
    path, out = Path(path), Path(out)
    meta = read_sidecar(sidecar_path(path))
    check_classes(tuple(classes or ()), meta, bool(classes), sidecar_path(path))
    classes = tuple(classes or meta.get("label_set", {}).get("classes") or MMSA_THREE)
    splits = _read_splits(path, load_data_pickle(path), classes)
    where = {u: (s, k) for s, d in splits.items() for k, u in enumerate(d["id"])}
    labels = {u: int(splits[s]["label"][k]) for u, (s, k) in where.items()}
    if meta:
        table = restored_table(meta, sidecar_path(path), labels, path)
    else:
        table = UtteranceTable.from_records([_record(u, labels[u], classes, s) for u, (s, _) in where.items()])
    label_set = LabelSet(meta.get("label_set", {}).get("name", "mmsa"), classes)
    mods = [m for m in MMSA_NAME if all(MMSA_NAME[m] in d for d in splits.values())]
    extra = {"imported_from": {"format": "mmsa-pkl", "file": str(path)}}
    notes = (
        [f"{path}: audio held -inf values, read as 0 as MMSA's loader does"]
        if any(d.get("-inf") for d in splits.values())
        else []
    )
    with (
        store_lock(out),
        StoreWriter.building(
            out, table, corpus or meta.get("corpus") or "mmsa", label_set, extra_attrs=extra
        ) as writer,
    ):
        counts = {
            m: _import_modality(writer, m, splits, where, table["id"].tolist(), meta, dtype, chunk_frames, progress)
            for m in mods
        }
    return Interchange(out, counts, notes if meta else notes + missing_notes(counts))


def _read_splits(path: Path, data: Any, classes: tuple[str, ...]) -> dict[str, dict]:
    """Each split's ids, labels, and per modality (features [n, T, d], lengths [n]), checked."""
    if not isinstance(data, dict) or not set(SPLITS) <= set(data):
        have = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise InputDataError(f"{path}: expected MMSA's dict of {', '.join(SPLITS)} (found {have})")
    splits, dims, seen = {}, {}, set()
    for split in SPLITS:
        d = data[split]
        if not isinstance(d, dict) or "id" not in d:
            raise InputDataError(f"{path}: {split} is not a dict with 'id' and the features")
        ids = [str(u) for u in np.asarray(d["id"]).reshape(-1).tolist()]
        if twice := sorted(seen & set(ids)) or [u for u in set(ids) if ids.count(u) > 1]:
            raise InputDataError(f"{path}: {split}: id {twice[0]} appears twice (ids must be unique over the splits)")
        seen |= set(ids)
        got: dict[str, Any] = {"id": ids, "label": _labels(path, split, d, len(ids), classes)}
        for key in MMSA_NAME.values():
            if key in d:
                got[key] = _features(path, split, d, key, len(ids), dims)
        if "audio" in got and np.isneginf(got["audio"][0]).any():
            got["audio"][0][np.isneginf(got["audio"][0])] = 0  # as MMSA's loader reads them
            got["-inf"] = True
        splits[split] = got
    return splits


def _labels(path: Path, split: str, d: dict, n: int, classes: tuple[str, ...]) -> np.ndarray:
    if "classification_labels" not in d:
        raise InputDataError(f"{path}: {split} has no 'classification_labels' (cmarr's labels are classes)")
    raw = np.asarray(d["classification_labels"]).reshape(-1)
    if len(raw) != n or raw.dtype.kind not in "iuf" or (n and not np.array_equal(raw, np.round(raw))):
        raise InputDataError(
            f"{path}: {split}/classification_labels is {raw.dtype} {raw.shape}, expected {n} class indices"
        )
    if n and (raw.min() < 0 or raw.max() >= len(classes)):
        raise InputDataError(
            f"{path}: {split}/classification_labels {raw.min():g}..{raw.max():g}, outside the label set "
            f"(0..{len(classes) - 1}: {', '.join(classes)}; pass the classes with --classes)"
        )
    return raw.astype(np.int64)


def _features(path: Path, split: str, d: dict, key: str, n: int, dims: dict) -> tuple[np.ndarray, np.ndarray]:
    """([n, T, d] float32, [n] lengths) of one modality; without '<key>_lengths', every item is T long."""
    x = np.asarray(d[key])
    if x.ndim != 3 or len(x) != n or x.dtype.kind not in "fiu":
        raise InputDataError(f"{path}: {split}/{key} is {x.dtype} {x.shape}, expected [{n}, T, dim] numbers")
    if dims.setdefault(key, x.shape[2]) != x.shape[2]:
        raise InputDataError(f"{path}: {split}/{key} is {x.shape[2]} wide, another split's {key} {dims[key]}")
    lengths = np.asarray(d.get(f"{key}_lengths", np.full(n, x.shape[1]))).reshape(-1)
    if (
        len(lengths) != n
        or lengths.dtype.kind not in "iuf"
        or (n and (lengths.min() < 0 or lengths.max() > x.shape[1]))
    ):
        raise InputDataError(f"{path}: {split}/{key}_lengths: expected {n} lengths within 0..{x.shape[1]}")
    return x.astype(np.float32, copy=False), lengths.astype(np.int64)


def _record(uid: str, label: int, classes: tuple[str, ...], split: str) -> dict:
    """A row from MMSA's own fields: the split as session and fold group, the video of
    'video$_$clip' ids as the dialog."""
    return {
        "id": uid,
        "label": label,
        "label_name": classes[label],
        "session": split,
        "split_group": split,
        "dialog": uid.split("$_$")[0] if "$_$" in uid else "",
    }


def _import_modality(writer, modality, splits, where, ids, meta, dtype, chunk_frames, progress) -> dict[str, int]:
    key = MMSA_NAME[modality]
    dim = next(iter(splits.values()))[key][0].shape[2]
    fallback = ModalitySpec(encoder=f"mmsa:{key}", dim=dim, dtype=dtype or "float16")
    mw = writer.modality(modality, restored_spec(meta, modality, fallback, dtype))
    status_of, reasons_of = recorded_status(meta, modality)
    for lo in range(0, len(ids), 256):
        batch = range(lo, min(lo + 256, len(ids)))
        feats, status = [], []
        for i in batch:
            split, k = where[ids[i]]
            values, lengths = splits[split][key]
            x = values[k, : lengths[k]] if ids[i] not in status_of else values[k, :0]
            if not meta and not x.any():  # without the sidecar, all zeros is the export's filler
                x = x[:0]
            feats.append(x if len(x) else None)
            status.append(Status.OK if len(x) else status_of.get(ids[i], Status.MISSING_INPUT))
        reasons = {i: reasons_of[ids[i]] for i in batch if ids[i] in reasons_of}
        mw.write_part(list(batch), feats, status, reasons)
        if progress:
            progress(modality, batch.stop, len(ids))
    return mw.finalize(chunk_frames)

"""What the peer formats' import and export share: data pickles read without running their code,
exports written whole or not at all, and the sidecar that carries what a peer format cannot hold.

The peers (GCNet, MERTools, MMSA) ship labels and features as pickles. Unpickling may call any
importable function the file names, so `load_data_pickle` resolves only the handful of names
that plain data needs (containers, numbers, strings, numpy arrays); anything else is refused,
naming the file. The sidecar (`cmarr_export.json`) holds the store's utterance table, label set,
per-modality specs and every item that was not ok, so that an import gives the store back.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import math
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.store.mmin import fold_groups
from cmarr.shared.store.reader import FeatureStore
from cmarr.shared.store.schema import UTTERANCE_COLUMNS, ModalitySpec, Status, UtteranceTable

SIDECAR_FORMAT = 1  # version of the sidecar's layout
# (module, name) that a pickle of plain data refers to: numpy's array and scalar reconstruction
# (numpy 1 and 2 spell the module differently), Python 2 bytes, and builtin containers.
_DATA_GLOBALS = {
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),  # arrays in protocol 5
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    *(("builtins", n) for n in ("set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bytes")),
    ("collections", "OrderedDict"),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set) as the stock unpickler maps them; no Python 3 name is mapped
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in _DATA_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}")
        return super().find_class(module, name)


def load_data_pickle(path: Path) -> Any:
    """The contents of a pickle of plain data, read as the peers read theirs (`encoding='latin1'`,
    so Python 2 pickles load); a pickle naming any other code is an InputDataError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputDataError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return _DataUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if str(err).startswith("refers to"):
            raise InputDataError(
                f"{path}: {err}, which cmarr does not load (a data pickle holds lists, dicts, strings, "
                "numbers and numpy arrays only: loading anything else runs code from the file)"
            ) from None
        raise InputDataError(f"{path}: not a readable pickle ({err})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as err:
        raise InputDataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None


class _Numpy1Pickler(pickle._Pickler):  # the Python pickler: the C one calls no overridable save_global
    """Pickles numpy arrays under the names numpy 1 knows (`numpy.core.multiarray._reconstruct`):
    numpy 2 writes `numpy._core...`, which the numpy 1 the peers run on cannot import."""

    # the functions an array's and a scalar's reduce name, whatever numpy calls their module
    LEGACY = {
        id(np.empty(0).__reduce__()[0]): ("numpy.core.multiarray", "_reconstruct"),
        id(np.float64(0).__reduce__()[0]): ("numpy.core.multiarray", "scalar"),
    }

    def save_global(self, obj: Any, name: str | None = None) -> None:
        legacy = self.LEGACY.get(id(obj))
        if legacy is None:
            return super().save_global(obj, name)
        self.save(legacy[0])
        self.save(legacy[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)
        return None


def dump_pickle(obj: Any, path: Path) -> None:
    """`obj` pickled as the peers' published pickles are (protocol 4), readable by numpy 1 and 2."""
    with open(path, "wb") as f:
        _Numpy1Pickler(f, protocol=4).dump(obj)


def save_object_npz(path: Path, **objects: Any) -> None:
    """An .npz of 0-d object arrays, as `np.savez_compressed(path, name=a_dict)` writes it, with
    the arrays pickled for numpy 1 too (see `_Numpy1Pickler`)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, obj in objects.items():
            array = np.empty((), dtype=object)
            array[()] = obj
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(array))
            _Numpy1Pickler(buf, protocol=3).dump(array)  # the protocol np.save uses for objects
            zf.writestr(f"{name}.npy", buf.getvalue())


# ---------------------------------------------------------------------- writing whole or not at all


def refuse_existing(out: Path, kind: str = "folder") -> None:
    """An export never writes over anything: an existing file, or a folder that is not empty."""
    if out.exists() and (kind == "file" or not out.is_dir() or any(out.iterdir())):
        what = "exists" if kind == "file" else "exists and is not empty"
        raise ConfigError(f"{out}: {what}; export into a new {kind} (nothing is written over)")


def write_new_folder(out: Path, fill: Callable[[Path], Any]) -> Any:
    """Run `fill(partial)` on a fresh sibling folder of `out` and rename it to `out` when it
    returns, so that an error or Ctrl-C half way leaves nothing behind; returns what `fill` returns."""
    refuse_existing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result = fill(partial)
        if out.exists():
            out.rmdir()  # empty: checked above
        os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return result


def write_new_files(files: dict[Path, Callable[[Path], None]]) -> None:
    """Write each file through `write(partial path)` beside it, then rename them all into place:
    none appears until all are whole, and none may exist before."""
    for path in files:
        refuse_existing(path, "file")
        path.parent.mkdir(parents=True, exist_ok=True)
    partials = {path: path.with_name(f".{path.name}.partial-{os.getpid()}") for path in files}
    try:
        for path, write in files.items():
            write(partials[path])
        for path, partial in partials.items():
            os.replace(partial, path)
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the sidecar


def sidecar(store: FeatureStore, fmt: str, modalities: list[str], **fields: Any) -> dict[str, Any]:
    """What an export writes beside the peer's files: the store's table, label set, each
    modality's spec, and the status and recorded reason of every item that is not ok."""
    ids = store.utterances["id"]
    mods = {}
    for name in modalities:
        reader = store.modality(name)
        not_ok = np.flatnonzero(reader.status != Status.OK)
        mods[name] = {
            "spec": reader.spec.to_attrs(),
            "status": {str(ids[i]): int(reader.status[i]) for i in not_ok},
            "reasons": store.reasons(name),
        }
    return {
        "format": fmt,
        "version": SIDECAR_FORMAT,
        "corpus": store.corpus,
        "label_set": store.attrs["label_set"],
        "table": table_to_json(store.utterances),
        "modalities": mods,
        **fields,
    }


def write_sidecar(meta: dict, path: Path) -> None:
    path.write_text(json.dumps(meta, indent=1))


def read_sidecar(path: Path) -> dict:
    """The sidecar at `path`, or {} when there is none."""
    try:
        meta = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path}: not readable JSON ({err})") from None
    if meta and not isinstance(meta.get("table"), dict):
        raise InputDataError(f"{path}: not a cmarr export sidecar (no utterance table)")
    return meta


def table_to_json(columns: dict[str, np.ndarray]) -> dict[str, list]:
    """Utterance columns as JSON lists; NaN times as null."""
    out = {}
    for name, kind in UTTERANCE_COLUMNS.items():
        values = columns[name].tolist()
        out[name] = [None if isinstance(v, float) and math.isnan(v) else v for v in values] if kind != "str" else values
    return out


def table_from_json(meta: dict, path: Path) -> list[dict[str, Any]]:
    """The sidecar's records, in store order; a malformed table names the sidecar."""
    table = meta["table"]
    try:
        n = len(table["id"])
        if any(len(table[c]) != n for c in UTTERANCE_COLUMNS):
            raise ValueError("columns differ in length")
        return [{c: (np.nan if table[c][i] is None else table[c][i]) for c in UTTERANCE_COLUMNS} for i in range(n)]
    except (KeyError, TypeError, ValueError) as err:
        raise InputDataError(f"{path}: its utterance table is not cmarr's ({type(err).__name__}: {err})") from None


def restored_table(
    meta: dict, sidecar_path: Path, peer: dict[str, int], where: Path, keep: set[str] = frozenset()
) -> UtteranceTable:
    """The store's table from the sidecar, checked against the peer file (`peer`: {id: label} as it
    names them, `where` the file): every id the peer names must be in the sidecar with the same
    label (else the two were edited apart). Rows the peer file leaves out are kept only when in
    `keep` (their features are there, as for unlabelled utterances in a label file)."""
    records = table_from_json(meta, sidecar_path)
    known = {str(r["id"]): r for r in records}
    for uid, label in peer.items():
        rec = known.get(uid)
        if rec is None:
            raise InputDataError(
                f"{where}: {uid} is not in {sidecar_path.name} (the two are from different exports; "
                "remove the sidecar to import the peer file alone)"
            )
        if int(rec["label"]) != label:
            raise InputDataError(
                f"{where}: {uid} is labelled {label} here but {rec['label']} ({rec['label_name'] or 'unlabelled'}) "
                f"in {sidecar_path.name} (one was edited after the export; remove the sidecar to import the "
                "peer file alone)"
            )
    return UtteranceTable.from_records([r for r in records if str(r["id"]) in peer or str(r["id"]) in keep])


def restored_spec(meta: dict, modality: str, fallback: ModalitySpec, dtype: str | None) -> ModalitySpec:
    """The exported store's spec of `modality` (its dtype unless `dtype` is given), or `fallback`."""
    attrs = meta.get("modalities", {}).get(modality, {}).get("spec")
    if not attrs or attrs.get("dim") != fallback.dim:
        return fallback
    return ModalitySpec.from_attrs({**attrs, "dtype": dtype or attrs.get("dtype", fallback.dtype)})


def recorded_status(meta: dict, modality: str) -> tuple[dict[str, Status], dict[str, str]]:
    """({id: status} of the items that were not ok in the exported store, {id: recorded reason})."""
    mod = meta.get("modalities", {}).get(modality, {})
    return {str(k): Status(int(v)) for k, v in mod.get("status", {}).items()}, dict(mod.get("reasons", {}))


def missing_notes(counts: dict[str, dict[str, int]]) -> list[str]:
    """What an import without the sidecar read as missing, and why."""
    return [
        f"{m}: {c['missing_input']} items read as missing (none there, or all zeros: the filler an export writes)"
        for m, c in counts.items()
        if c["missing_input"]
    ]


def check_classes(classes: tuple[str, ...], meta: dict, given: bool, where: Path) -> None:
    """`--classes` and the sidecar's label set must agree (an import would relabel every utterance)."""
    recorded = tuple(meta.get("label_set", {}).get("classes", ()))
    if given and recorded and recorded != classes:
        raise ConfigError(
            f"--classes {','.join(classes)}: {where} records the classes {','.join(recorded)}; "
            "leave --classes out to use them"
        )


def chosen_fold(utt: dict[str, np.ndarray], fold: str | None) -> tuple[str, int]:
    """(the split group a one-fold export tests, its cv number as export-h5 numbers it): `fold`, or
    the last group (as GCNet's published pickle tests IEMOCAP's Session 5)."""
    groups = fold_groups(utt["split_group"])
    if not groups:
        raise ConfigError("the store's utterances have no split_group: no fold to export")
    if fold is None:
        return groups[-1], len(groups)
    if fold not in groups:
        raise ConfigError(f"--fold {fold}: not a split group of the store (it has {', '.join(groups)})")
    return fold, groups.index(fold) + 1

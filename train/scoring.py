"""Scoring a researcher's own predictions on cmarr's protocol, beside a run's systems.

A predictions file (CSV) has one row per (test utterance, condition): columns `id`, `condition`
(paper notation: {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, {s,v,t}) and `prediction` (a class name of the
store's label set), and `seed` when the run has several seeds (a `fold` column, if present, is
checked). It is scored as cmarr scores its own systems: per fold, WAR and UAR per condition over the
fold's test part, Avg. over the six missing conditions, mean ± std over folds x seeds; the rows go
into the run's Table 2 with the same Wilcoxon/Holm marks against CM-ARR.

Nothing held out can leak in: every id must be a test utterance of the fold it is scored in, under a
condition cmarr evaluates it in (its store holds each modality the condition gives), and every such
(utterance, condition) of the run's folds must be predicted once.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cmarr.shared.config import PipelineConfig
from cmarr.shared.console import some_named
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.provenance import text_sha256
from cmarr.shared.store import FeatureStore
from cmarr.shared.train_config import TrainConfig
from cmarr.train.comparison import comparison_file, write_comparison
from cmarr.train.data import StoreData
from cmarr.train.missing import ALL, eligible
from cmarr.train.protocol import make_splits
from cmarr.train.report import fold_metrics, summarize, write_reports
from cmarr.train.run import SystemRun, used_utterances
from cmarr.train.rundir import RunDir

CONDITION_NAMES = {c.name: c for c in ALL}


@dataclass
class _Joined:
    """The systems a score joins (their run directories), the comparison's kind and its folder."""

    runs: list[RunDir]
    kind: str
    folder: Path | None  # an existing comparison folder to rewrite; None: a new one beside the run


def score(run: str | Path, predictions: str | Path, name: str, store: str | None = None, log=print) -> Path:
    """Score the `predictions` file of the method `name` on the protocol of `run` (a system's run
    directory or a comparison folder, e.g. runs/demo-comparison-1234abcd), and write the comparison
    with `name` added (the same folder for a comparison; else a new one beside the run). `store`:
    where the run's store is now, if it moved (its fingerprint must match). Returns the comparison
    folder. InputDataError naming the file and the line for a predictions file that does not fit."""
    joined, predictions = joined_runs(Path(run)), Path(predictions)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name) or name in (taken := _systems(joined)):
        raise ConfigError(f"--name {name!r}: letters, digits and .-_+ only, and none of {', '.join(sorted(taken))}")
    first = joined.runs[0]
    cfg = _protocol(first)
    recorded = json.loads(first.store.read_text())
    data = StoreData(_store(store or recorded["location"], recorded["fingerprint"]), non_finite=cfg.train.non_finite)
    seeds = sorted({f["seed"] for f in first.read_results()["folds"]})
    folds = sorted({f["fold"] for f in first.read_results()["folds"]})
    indices, note = used_utterances(data, list(recorded.get("require", [])))
    splits = {s: make_splits(data, indices, None, cfg.train, s, note) for s in seeds}
    preds, fold_of = _read(predictions, data, seeds)
    per_fold = _per_fold(predictions, preds, fold_of, data, splits, folds)
    mine = _write_external(first.path.parent, name, predictions, data, per_fold, recorded, seeds, folds)
    n_folds = len(splits[seeds[0]])
    runs = [_system_run(r, n_folds) for r in joined.runs] + [SystemRun(name, mine, summarize(per_fold), folds, n_folds)]
    folder = write_comparison(first.path.parent, data.store.corpus, runs, joined.kind, data, folder=joined.folder)
    log(f"{name}: scored {sum(len(p) for p in preds.values())} predictions over {len(per_fold)} fold run(s)")
    return folder


def _protocol(run: RunDir) -> PipelineConfig:
    """The run's protocol keys (all the splits need; a plugin system's own section is not read)."""
    recorded = tomllib.loads(run.config.read_text())["train"]
    return PipelineConfig(train=TrainConfig(**{k: v for k, v in recorded.items() if k in TrainConfig.model_fields}))


def joined_runs(run: Path) -> _Joined:
    """The system runs of `run`: a run directory, or a comparison folder's runs (its table2 or table3)."""
    if RunDir(run).system.is_file():
        return _Joined([RunDir(run)], "table2", None)
    for kind in ("table2", "table3"):
        if comparison_file(run, kind).is_file():
            c = json.loads(comparison_file(run, kind).read_text())
            return _Joined([RunDir(run.parent / c["runs"][s]) for s in c["systems"]], kind, run)
    raise ConfigError(f"--run {run}: neither a run directory (no system.json) nor a comparison folder (no table2.json)")


def _systems(joined: _Joined) -> set[str]:
    return {json.loads(r.system.read_text())["system"] for r in joined.runs}


def _system_run(run: RunDir, n_folds: int) -> SystemRun:
    if not run.results("json").is_file():
        raise ConfigError(f"{run.path}: the run has no results.json yet (train it first)")
    results = run.read_results()
    folds = sorted({f["fold"] for f in results["folds"]})
    return SystemRun(json.loads(run.system.read_text())["system"], run.path, results["table"], folds, n_folds)


def _store(location: str, fingerprint: str) -> FeatureStore:
    store = FeatureStore.open(location)
    if store.fingerprint() != fingerprint:
        raise ConfigError(
            f"{location}: fingerprint {store.fingerprint()}, but the run was trained on {fingerprint} "
            "(another store, or changed since): give --store the one the run used"
        )
    return store


Key = tuple[int, str]  # (store row, condition name)


def _read(path: Path, data: StoreData, seeds: list[int]) -> tuple[dict[int, dict[Key, int]], dict[int, dict[Key, int]]]:
    """({seed: {key: predicted class}}, {seed: {key: the fold the file gives}}), each line checked."""
    rows = {str(u): i for i, u in enumerate(data.store.utterances["id"])}
    classes = {c: k for k, c in enumerate(data.store.classes)}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputDataError(f"{path}: cannot read the predictions ({err})") from None
    header = set(table[0]) if table else set()
    if missing := {"id", "condition", "prediction"} - header:
        raise InputDataError(f"{path}: no column {', '.join(sorted(missing))} (needs id, condition, prediction)")
    if len(seeds) > 1 and "seed" not in header:
        raise InputDataError(f"{path}: the run has seeds {seeds}: give a seed column")
    preds: dict[int, dict[Key, int]] = defaultdict(dict)
    fold_of: dict[int, dict[Key, int]] = defaultdict(dict)
    for line, r in enumerate(table, 2):
        where, seed = f"{path}, line {line}", int(r["seed"]) if r.get("seed") else seeds[0]
        for column, value, known in (("id", r["id"], rows), ("condition", r["condition"], CONDITION_NAMES),
                                     ("prediction", r["prediction"], classes)):  # fmt: skip
            if value not in known:
                choices = "the store's utterances" if column == "id" else ", ".join(known)
                raise InputDataError(f"{where}: {column} {value!r} is not one of {choices}")
        if seed not in seeds:
            raise InputDataError(f"{where}: seed {seed}, but the run has seeds {seeds}")
        key = (rows[r["id"]], r["condition"])
        if key in preds[seed]:
            raise InputDataError(f"{where}: a second prediction of {r['id']} under {r['condition']} (seed {seed})")
        preds[seed][key] = classes[r["prediction"]]
        if r.get("fold"):
            fold_of[seed][key] = int(r["fold"])
    return preds, fold_of


def _per_fold(path: Path, preds: dict, fold_of: dict, data: StoreData, splits: dict, folds: list[int]) -> list[dict]:
    """Per (seed, fold): the metrics of the predictions, once they are checked to cover exactly the
    fold's test utterances under every condition each is evaluated in."""
    ids, per_fold = data.store.utterances["id"], []
    for seed, given in preds.items():
        expected: set[Key] = set()
        for k in folds:
            results = [
                _split_test(path, split, given, fold_of[seed], k, seed, data, expected) for split in splits[seed][k - 1]
            ]
            speakers = data.store.utterances["speaker"]
            metrics = fold_metrics(results, data.labels, len(data.store.classes), speakers, (seed, k))
            per_fold.append(
                {"seed": seed, "fold": k, "session": splits[seed][k - 1][0].name.split("/")[0], "metrics": metrics}
            )
        if extra := sorted(set(given) - expected):
            named = some_named(np.array([f"{ids[i]} {c}" for i, c in extra]))
            raise InputDataError(
                f"{path}: {len(extra)} prediction(s) of utterances outside the run's test parts, or under a condition "
                f"their store cannot give (seed {seed}): {named}; a training utterance is never scored as held out"
            )
    return per_fold


def _split_test(path, split, given, fold_of, k, seed, data, expected) -> dict:
    """One split's `test` part in the form of a result.json, from the predictions."""
    ids, test = data.store.utterances["id"], {}
    for c in ALL:
        rows = [int(i) for i in split.test[eligible(data.present, split.test, c)]]
        expected |= {(i, c.name) for i in rows}
        if missing := [i for i in rows if (i, c.name) not in given]:
            raise InputDataError(
                f"{path}: no prediction of {len(missing)} test utterance(s) of fold {k} under {c.name} (seed {seed}): "
                f"{some_named(ids[missing])}"
            )
        if wrong := [i for i in rows if fold_of.get((i, c.name), k) != k]:
            raise InputDataError(
                f"{path}: {some_named(ids[wrong])} under {c.name}: in fold {k}'s test part, not the fold given"
            )
        test[c.name] = {"ids": rows, "pred": [given[(i, c.name)] for i in rows]}
    return {"test": test}


def _write_external(
    base: Path, name: str, predictions: Path, data: StoreData, per_fold, recorded, seeds, folds
) -> Path:
    """A run directory for the method: its results (as a system's), its predictions, the store's provenance."""
    digest = text_sha256(predictions.read_text(encoding="utf-8"))[:8]
    run = RunDir(base / f"{data.store.corpus}-{name}-external-{digest}-s{'_'.join(map(str, seeds))}")
    run.path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(predictions, run.predictions)
    run.store.write_text(json.dumps(recorded, indent=1, default=str))
    system = {"system": name, "title": f"{name} (scored from {predictions.name})", "options": {}, "external": True}
    run.system.write_text(json.dumps({**system, "stages": [{"name": "external"}]}, indent=1))
    title = f"{name} on {data.store.corpus}: scored from {predictions.name}, {len(folds)} folds x {len(seeds)} seed(s)"
    write_reports(run.path, summarize(per_fold), per_fold, data.store.classes, title, data.store.corpus)
    return run.path

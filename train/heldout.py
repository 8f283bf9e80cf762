"""Held-out scoring of a trained run on any store with the training store's utterances: a degraded
copy (`cmarr-extract --degrade`), a re-extraction, the store itself; and the missing-rate protocol.

Each fold's models score only that fold's held-out utterances, matched by utterance id: the test
part a split was scored on (its predictions.csv) is the part it scores again. An utterance of the
store outside every test part (a training utterance of every fold, or one the run never saw) is
never scored, and is counted in the report; so is a held-out utterance the store lacks.

Per store: each system's results (the run's report layout) under the seven conditions, Table 2
when the run is a comparison, and with missing rates the missing-rate table: each modality of each
test utterance dropped independently at the rate, at least one kept (`missing.rate_mask`, seeded),
scored per fold run and averaged as Table 2 is. `robustness.write_robustness` draws the figures.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.console import finish_progress, report_progress
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.provenance import text_sha256
from cmarr.shared.store import FeatureStore
from cmarr.train.comparison import write_comparison
from cmarr.train.data import StoreData
from cmarr.train.evaluation import evaluate, predict_proba
from cmarr.train.metrics import METRICS, confusion, scores
from cmarr.train.missing import ALL, MissingCondition, rate_mask
from cmarr.train.report import fold_metrics, summarize, write_reports
from cmarr.train.run import SystemRun
from cmarr.train.rundir import RunDir, SplitDir
from cmarr.train.scoring import joined_runs
from cmarr.train.trained import final_checkpoint, load_model, recorded_train_config

ENCODER_KEYS = ("encoder", "weights_sha256", "layer", "dim")  # what makes two stores' features alike


@dataclass
class Target:
    """A store under evaluation: its data, rows by utterance id, and how the report names it."""

    data: StoreData
    label: str  # "clean", or the degradation the store records
    tag: str  # its folder in the output
    rows: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, location: str | Path) -> Target:
        store = FeatureStore.open(location)
        label = degradation_label(store)
        tag = f"{store.corpus}-{store.fingerprint()[:8]}" + ("" if label == "clean" else "-degraded")
        rows = {str(u): i for i, u in enumerate(store.utterances["id"])}
        return cls(StoreData(store, non_finite="missing"), label, tag, rows)


def degradation_label(store: FeatureStore) -> str:
    """'clean', or each degraded modality's part of the SPEC it was extracted with, e.g.
    'audio:snr=0,video:blur=4' (`cmarr-extract --degrade`)."""
    return ",".join(r["spec"] for r in store.degradation.values()) or "clean"


@dataclass
class Evaluated:
    """One system's scores on one store: fold runs under the conditions, and per missing rate."""

    system: str
    run_dir: Path
    per_fold: list[dict]
    rates: dict[float, list[dict]]  # rate -> per fold run {"seed", "fold", "metrics": scores + confusion}
    notes: list[str]


def evaluate_run(
    run: str | Path,
    stores: list[str | Path] | None = None,
    out: Path | None = None,
    missing_rates: list[float] = (),
    device: torch.device | None = None,
    missing_seed: int = 0,
    log=print,
) -> Path:
    """Score `run` (a run directory or a comparison folder) on each of `stores` (default: the store
    it was trained on) and write the reports into `out` (default: <runs>/<corpus>-evaluation-<tag>):
    <out>/<store tag>/<run name>/results.*, <out>/<store tag>/table2.* for a comparison, and with
    `missing_rates` <out>/<store tag>/missing_rates.*; then robustness.md/.png over stores and
    rates. ConfigError for a store whose features another encoder made, or whose classes differ."""
    from cmarr.train.robustness import write_missing_rates, write_robustness

    joined, device = joined_runs(Path(run)), device or torch.device("cpu")
    first = joined.runs[0]
    recorded = json.loads(first.store.read_text())
    locations = [str(s) for s in stores] if stores else [recorded["location"]]
    tag = text_sha256(" ".join([str(run), *locations, *map(str, missing_rates)]))[:8]
    out = Path(out) if out else first.path.parent / f"{recorded['corpus']}-evaluation-{tag}"
    evaluated: dict[str, list[Evaluated]] = {}
    for location in locations:
        target = Target.open(location)
        log(f"{location}: {target.label}, {len(target.rows)} utterances")
        folder = out / target.tag
        done = [_evaluate_system(r, target, folder, missing_rates, missing_seed, device, log) for r in joined.runs]
        if joined.folder is not None:
            runs = [SystemRun(e.system, e.run_dir, summarize(e.per_fold), _folds(e), _folds(e)[-1]) for e in done]
            write_comparison(folder, target.data.store.corpus, runs, joined.kind, folder=folder)
        if missing_rates:
            write_missing_rates(folder, done, missing_seed)
        evaluated[target.label if target.label not in evaluated else f"{target.label} ({target.tag})"] = done
    write_robustness(out, evaluated, missing_rates)
    return out


def _folds(e: Evaluated) -> list[int]:
    return sorted({f["fold"] for f in e.per_fold})


def _evaluate_system(run: RunDir, target: Target, folder: Path, rates, seed: int, device, log) -> Evaluated:
    """One system's fold models on their held-out utterances of `target`; writes its reports."""
    system = json.loads(run.system.read_text())
    _check_features(run, target)
    held_out, notes, by_fold, by_rate = set(), [], defaultdict(list), defaultdict(lambda: defaultdict(list))
    masks = {r: rate_mask(target.data.present, r, seed) for r in rates}
    task, splits = f"evaluate {system['system']} on {target.label}", run.splits()
    report_progress(task, 0, len(splits))
    for k, split in enumerate(splits, 1):
        seed_k = _job(split)
        ids = _test_ids(split)
        held_out |= ids
        rows = np.array(sorted(target.rows[i] for i in ids if i in target.rows), dtype=np.int64)
        if lacking := len(ids) - len(rows):
            notes.append(f"{split.path.relative_to(run.path)}: {lacking} held-out utterance(s) not in the store")
        model, meta, norm = load_model(final_checkpoint(split.path))
        _check_classes(split.path, meta, target)
        amp = recorded_train_config(split.path, meta).amp
        model = model.to(device)
        by_fold[seed_k].append({"test": evaluate(model, target.data, rows, norm, device, ALL, amp)})
        for r in rates:
            by_rate[r][seed_k].append(_rate_predictions(model, target.data, rows, masks[r], norm, device, amp))
        report_progress(task, k, len(splits))
    finish_progress(task)
    if outside := len(set(target.rows) - held_out):
        notes.append(f"{outside} utterance(s) of the store are in no fold's test part of the run: not scored")
    log(f"{system['system']}: {len(held_out & set(target.rows))} held-out utterances scored on {target.label}")
    sessions = {(f["seed"], f["fold"]): f.get("session", "") for f in run.read_results()["folds"]}
    per_fold = _per_fold(by_fold, target, sessions)
    mine = RunDir(folder / run.path.name)
    _write_run(run, mine, target, per_fold, system, notes)
    rate_folds = {r: _rate_folds(by_rate[r], target) for r in rates}
    return Evaluated(system["system"], mine.path, per_fold, rate_folds, notes)


def _job(split: SplitDir) -> tuple[int, int]:
    """(seed, 1-based fold) of a split folder <run>/seed<S>/fold<K>/split<J>."""
    return int(split.path.parent.parent.name.removeprefix("seed")), int(split.path.parent.name.removeprefix("fold"))


def _test_ids(split: SplitDir) -> set[str]:
    """The utterance ids a split was tested on (every condition's), from its predictions.csv."""
    if not split.predictions.is_file():
        raise ConfigError(f"{split.path}: no {split.predictions.name} (an unfinished split): finish the run first")
    with open(split.predictions, newline="", encoding="utf-8") as f:
        return {row["id"] for row in csv.DictReader(f)}


def _check_features(run: RunDir, target: Target) -> None:
    trained = json.loads(run.store.read_text()).get("modalities", {})
    now = target.data.store.provenance().get("modalities", {})
    for m in MODALITIES:
        was, new = trained.get(m) or {}, now.get(m) or {}
        if was and new and (diff := [k for k in ENCODER_KEYS if was.get(k) != new.get(k)]):
            raise ConfigError(
                f"{target.data.store.location}: its {m} features differ from those {run.path.name} was trained on "
                f"({', '.join(f'{k} {new.get(k)!r}, trained on {was.get(k)!r}' for k in diff)}): extract it with the "
                "same encoders"
            )


def _check_classes(path: Path, meta: dict, target: Target) -> None:
    if list(meta["classes"]) != list(target.data.store.classes):
        raise ConfigError(
            f"{target.data.store.location}: classes {', '.join(target.data.store.classes)}, but {path} was trained on "
            f"{', '.join(meta['classes'])}"
        )


def _rate_predictions(model, data: StoreData, rows: np.ndarray, mask: dict, norm, device, amp) -> dict:
    """The rows' predictions when each gives the modalities its missing-rate mask keeps."""
    kept = np.stack([mask[m][rows] for m in MODALITIES], 1) if len(rows) else np.zeros((0, len(MODALITIES)), bool)
    ids, pred = [], []
    for combo in {tuple(k) for k in kept.tolist()}:
        if not any(combo):
            continue  # the store holds no modality of these rows
        condition = MissingCondition(frozenset(m for m, k in zip(MODALITIES, combo) if k))
        chosen = rows[(kept == np.array(combo)).all(1)]
        scored, probs = predict_proba(model, data, chosen, condition, norm, device, amp=amp)
        ids.append(scored)
        pred.append(probs.argmax(-1))
    return {"ids": np.concatenate(ids) if ids else rows[:0], "pred": np.concatenate(pred) if pred else rows[:0]}


def _per_fold(by_fold: dict, target: Target, sessions: dict) -> list[dict]:
    labels, n_classes = target.data.labels, len(target.data.store.classes)
    speakers = target.data.store.utterances["speaker"]
    return [
        {
            "seed": s,
            "fold": k,
            "session": sessions.get((s, k), ""),
            "metrics": fold_metrics(results, labels, n_classes, speakers, (s, k)),
        }
        for (s, k), results in sorted(by_fold.items())
    ]


def _rate_folds(by_job: dict, target: Target) -> list[dict]:
    labels, n_classes, out = target.data.labels, len(target.data.store.classes), []
    for (s, k), parts in sorted(by_job.items()):
        ids = np.concatenate([p["ids"] for p in parts]).astype(np.int64)
        pred = np.concatenate([p["pred"] for p in parts]).astype(np.int64)
        cm = confusion(labels[ids], pred, n_classes)
        out.append({"seed": s, "fold": k, "n": int(len(ids)), "confusion": cm, **_floats(scores(cm))})
    return out


def _floats(values: dict) -> dict[str, float]:
    return {k: float(values[k]) for k in METRICS}


def _write_run(run: RunDir, mine: RunDir, target: Target, per_fold: list[dict], system: dict, notes) -> None:
    """The evaluated system's folder: results as a run's, its system.json and config.toml, and the
    evaluated store's provenance as store.json."""
    mine.path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.system, mine.system)
    shutil.copyfile(run.config, mine.config)
    mine.store.write_text(json.dumps({**target.data.store.provenance(), "evaluated_run": str(run.path)}, default=str))
    folds = len({f["fold"] for f in per_fold})
    title = (
        f"{system.get('title', system['system'])} ({run.path.name}) scored held-out on {target.data.store.corpus} "
        f"({target.label}): {folds} folds"
    )
    write_reports(mine.path, summarize(per_fold), per_fold, target.data.store.classes, title, "", None, notes)

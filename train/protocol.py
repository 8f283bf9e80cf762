"""The paper's protocol: leave-one-session-out folds, a validation part that is never the test
fold, every stage of a system trained in turn, the final model tested under all seven conditions.

Validation: by default a stratified share of the training sessions; with `val_rule =
"other-speaker"` the held-out session's speakers take turns as validation and test (MMIN's
protocol), and the session's result joins both halves. The protocol knows nothing of any system:
it runs the stages the system declares (`train/systems/`).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.console import some_named
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store import Status
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batching import Batching
from cmarr.train.checkpoint import load_checkpoint, read_checkpoint
from cmarr.train.data import StoreData
from cmarr.train.evaluation import evaluate
from cmarr.train.missing import ALL, build_sampler, training_rows
from cmarr.train.rundir import SplitDir
from cmarr.train.stage import SplitContext, build_stage_model, run_stage
from cmarr.train.systems.base import System
from sklearn.model_selection import train_test_split


@dataclass
class Split:
    name: str  # the held-out session (and speaker, for other-speaker folds)
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_splits(
    data: StoreData, indices: np.ndarray, folds: int | None, cfg: TrainConfig, seed: int, note: str = ""
) -> list[list[Split]]:
    """Per fold (one per session), the list of splits whose test parts make up the session.
    `note` says how `indices` was narrowed (e.g. by --require), for the error messages."""
    sessions = data.store.utterances["session"]
    names = sorted(set(sessions[indices].tolist()))
    where = f"{note}, " if note else ""
    if len(names) < 2:
        raise ConfigError(
            f"leave-one-session-out needs at least 2 sessions; {where}the store has {len(names)} "
            f"({', '.join(names) or 'none'}). Give utterances of other sessions a different `session` value."
        )
    if folds is not None and folds != len(names):
        raise ConfigError(
            f"--folds {folds}, but {where}the store has {len(names)} sessions ({', '.join(names)}); "
            "folds are one per session"
        )
    out = []
    for s in names:
        held = indices[sessions[indices] == s]
        rest = indices[sessions[indices] != s]
        if cfg.val_rule == "stratified":
            train, val = _stratified(rest, data.labels[rest], cfg.val_fraction, seed)
            out.append([Split(s, train, val, held)])
        else:
            speakers = data.store.utterances["speaker"][held]
            spk = sorted(set(speakers.tolist()))
            if len(spk) < 2:
                raise ConfigError(f"val_rule other-speaker needs two speakers in session {s}, found {spk}")
            out.append([Split(f"{s}/{t}", rest, held[speakers != t], held[speakers == t]) for t in spk])
    return out


def _stratified(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    try:
        return train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify: fall back to a plain random split
        return train_test_split(idx, test_size=fraction, random_state=seed)


def class_coverage(data: StoreData, indices: np.ndarray, splits: list[list[Split]]) -> list[str]:
    """Refuse a corpus whose used utterances hold fewer than two classes (every UAR would be
    meaningless); return warnings: a class of the label set with no utterance at all (once), and a
    fold whose training or test part lacks a class the corpus has."""
    classes = data.store.classes
    present = sorted(set(data.labels[indices].tolist()))
    if len(present) < 2:
        names = ", ".join(classes[k] for k in present) or "none"
        raise ConfigError(
            f"{data.store.location}: the utterances used hold {len(present)} class ({names}) of the label set "
            f"{', '.join(classes)}; recognition needs at least two classes present"
        )
    warnings = []
    if absent := [classes[k] for k in range(len(classes)) if k not in present]:
        warnings.append(f"no utterance of class {', '.join(absent)} in the store: UAR averages the other classes")
    for fold in splits:
        for split in fold:
            for part, rows in (("training", split.train), ("test", split.test)):
                lacking = sorted(set(present) - set(data.labels[rows].tolist()))
                if lacking:
                    names = ", ".join(classes[k] for k in lacking)
                    effect = "cannot be learnt" if part == "training" else "are left out of its UAR"
                    warnings.append(f"fold {split.name}: the {part} part has no {names} utterance ({names} {effect})")
    return warnings


def modality_coverage(data: StoreData, indices: np.ndarray) -> list[str]:
    """Warnings about the modalities of the used utterances `indices`: items whose extraction failed
    (they train as missing that modality, though their recording may hold it) and a modality that
    no used utterance has (every condition giving it reads n/a)."""
    warnings, ids = [], data.store.utterances["id"]
    for m, reader in data.readers.items():
        failed = indices[reader.status[indices] == Status.FAILED]
        if len(failed):
            warnings.append(
                f"{m}: {len(failed)} utterance{'s' if len(failed) > 1 else ''} failed extraction "
                f"({some_named(ids[failed])}) and "
                f"train{'' if len(failed) > 1 else 's'} as missing {m}; fix the input and re-run the extraction "
                "(`cmarr-store info --json` gives the reasons)"
            )
    for m in MODALITIES:
        if not data.present[m][indices].any():
            where = "the store has no such modality" if m not in data.readers else "none was extracted ok"
            warnings.append(f"{m}: no utterance used has it ({where}): every condition giving {m} reads n/a")
    return warnings


def cannot_train(data: StoreData, system: System, splits: dict[int, list[list[Split]]], folds: list[int]) -> str | None:
    """Why `system` cannot train on the 1-based `folds` of the splits (per seed), or None: a stage
    left with fewer than two training utterances (a complete-data stage where no training utterance
    has every modality, say), which would train on nothing and report chance as a number."""
    for stage in system.stages:
        sampler = build_sampler(stage.sampler, rate=stage.sampler_rate)
        for per_fold in splits.values():
            for k in folds:
                for split in per_fold[k - 1]:
                    if len(training_rows(sampler, data.present, split.train)) >= 2:
                        continue
                    lacking = [m for m in MODALITIES if not data.present[m][split.train].any()]
                    need = "complete utterances" if sampler.full_data else "two training utterances"
                    has = f"no training utterance has {', '.join(lacking)}" if lacking else "fewer than two qualify"
                    return f"not trained: its stage {stage.name} needs {need}, and {has} (fold {k}, {split.name})"
    return None


def train_split(
    data: StoreData,
    split: Split,
    system: System,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    folder: SplitDir,
    meta: dict,
    log=print,
    report_test: bool = False,
    on_epoch=None,
) -> dict:
    """Train every stage of `system` on one split (resuming whatever was interrupted), then test
    the last stage's best model under all seven conditions. Returns (and writes) `result.json` (with
    each stage checkpoint's sha256, which loading it to predict checks);
    `predictions.csv` holds every test utterance's probabilities per condition."""
    folder.path.mkdir(parents=True, exist_ok=True)
    done = folder.result
    if done.is_file():
        return folder.read_result()
    norm = data.normaliser(split.train)
    norm_meta = {
        "mean": {m: v.tolist() for m, v in norm.mean.items()},
        "std": {m: v.tolist() for m, v in norm.std.items()},
    }
    ctx = SplitContext(
        data, split.train, split.val, split.test, norm, seed, device, cfg.amp, cfg.include_full_condition,
        report_test, {**meta, "split": split.name, "seed": seed, "norm": norm_meta}, log, on_epoch, Batching.of(cfg),
    )  # fmt: skip
    folders = {s.name: folder.stage(s.name) for s in system.stages}
    stages, digests = {}, {}
    for index, stage in enumerate(system.stages):
        checkpoint = read_checkpoint(run_stage(system, index, ctx, folders))
        stages[stage.name] = {k: v for k, v in checkpoint.meta.items() if k in ("best_epoch", "val_score")}
        digests[stage.name] = checkpoint.sha256  # recorded beside it: loading to predict checks it
    last = system.stages[-1]
    model = build_stage_model(last, ctx, folders).to(device)
    model.load_state_dict(load_checkpoint(folders[last.name].checkpoint)[0])
    test = evaluate(model, data, split.test, norm, device, ALL, cfg.amp)
    _write_predictions(folder.predictions, data, test)
    result = {"split": split.name, "stages": stages, "checkpoints": digests, "test": _without_probs(test)}
    tmp = done.with_name(done.name + ".partial")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, done)  # last: the split counts as finished only once its result is whole
    return result


def _write_predictions(path: Path, data: StoreData, test: dict) -> None:
    """One row per (test utterance, condition): id, condition, label, prediction, probabilities."""
    classes = data.store.classes
    ids = data.store.utterances["id"]
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "condition", "label", "prediction", *(f"p_{c}" for c in classes)])
        for cond, r in test.items():
            for i, pred, probs in zip(r["ids"], r["pred"], r["probs"]):
                w.writerow([ids[i], cond, classes[data.labels[i]], classes[pred], *(f"{p:.6f}" for p in probs)])
    os.replace(tmp, path)


def _without_probs(test: dict) -> dict:
    return {k: {f: v for f, v in r.items() if f != "probs"} for k, r in test.items()}

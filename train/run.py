"""A training run: folds x seeds over one store, into a run directory with its reports."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from cmarr.shared.config import PipelineConfig, config_hash, to_toml
from cmarr.shared.errors import ConfigError
from cmarr.shared.provenance import software
from cmarr.shared.store import FeatureStore
from cmarr.train.data import StoreData
from cmarr.train.protocol import make_splits, train_split
from cmarr.train.report import fold_metrics, summarize, write_reports


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_dir_for(base: Path, store: FeatureStore, cfg: PipelineConfig, seeds: list[int], resume: bool) -> Path:
    """A deterministic run id (corpus, variant, config, store, seeds); a new suffix unless resuming."""
    run_id = f"{store.corpus}-{cfg.train.variant}-{config_hash(cfg)[:8]}-{store.fingerprint()[:8]}-s{'_'.join(map(str, seeds))}"
    path = base / run_id
    if resume:
        if not path.is_dir():
            raise ConfigError(f"--resume: no run at {path} to resume")
        return path
    k = 2
    while path.exists():
        path, k = base / f"{run_id}-{k}", k + 1
    return path


def run_training(store_location: str, cfg: PipelineConfig, folds: int | None, seeds: list[int], out: Path,
                 require: list[str], device: torch.device, resume: bool = False, log=print) -> tuple[Path, dict]:
    store = FeatureStore.open(store_location)
    data = StoreData(store)
    indices = np.flatnonzero(data.labels >= 0)
    for m in require:
        if m not in data.present:
            raise ConfigError(f"--require {m}: the store has no modality {m!r}")
        indices = indices[data.present[m][indices]]
    run_dir = run_dir_for(out, store, cfg, seeds, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg))
    (run_dir / "store.json").write_text(json.dumps({**store.provenance(), "require": require, "n_used": int(len(indices)),
                                                    "software": software()}, indent=1, default=str))
    per_fold = []
    for seed in seeds:
        seed_everything(seed)
        for k, splits in enumerate(make_splits(data, indices, folds, cfg.train, seed)):
            results = [train_split(data, s, cfg.train, seed, device, run_dir / f"seed{seed}" / f"fold{k + 1}" / f"split{j}", log)
                       for j, s in enumerate(splits)]
            metrics = fold_metrics(results, data.labels, len(store.classes))
            per_fold.append({"seed": seed, "fold": k + 1, "session": splits[0].name.split("/")[0], "metrics": metrics})
    table = summarize(per_fold)
    title = f"CM-ARR ({cfg.train.variant}) on {store.corpus}: {len(per_fold) // len(seeds)} folds x {len(seeds)} seed(s)"
    write_reports(run_dir, table, per_fold, store.classes, title, store.corpus)
    return run_dir, table

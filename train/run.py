"""A training run: variants x seeds x folds over one store, one run directory per variant.

The grid's jobs run in this process or on a dask cluster (`train.grid`); either way the driver
assembles each variant's reports from the jobs' results in the same (seed, fold, split) order,
so the reports do not depend on where or in which order the jobs ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.config import PipelineConfig, config_hash, to_toml, with_overrides
from cmarr.shared.errors import ConfigError
from cmarr.shared.provenance import software
from cmarr.shared.store import FeatureStore
from cmarr.train.data import StoreData
from cmarr.train.grid import Job, finished, run_distributed, run_local
from cmarr.train.protocol import make_splits
from cmarr.train.report import ROWS, fold_metrics, summarize, write_reports


@dataclass
class VariantRun:
    variant: str
    run_dir: Path
    table: dict


def run_dir_for(base: Path, store: FeatureStore, cfg: PipelineConfig, seeds: list[int], resume: bool) -> Path:
    """A deterministic run id (corpus, variant, config, store, seeds); a new suffix unless resuming."""
    seed_tag = "_".join(map(str, seeds))
    run_id = f"{store.corpus}-{cfg.train.variant}-{config_hash(cfg)[:8]}-{store.fingerprint()[:8]}-s{seed_tag}"
    path = base / run_id
    if resume:
        if not path.is_dir():
            raise ConfigError(f"--resume: no run at {path} to resume")
        return path
    k = 2
    while path.exists():
        path, k = base / f"{run_id}-{k}", k + 1
    return path


def run_training(
    store_location: str,
    cfg: PipelineConfig,
    folds: int | None,
    seeds: list[int],
    out: Path,
    require: list[str],
    device: torch.device,
    resume: bool = False,
    log=print,
    variants: list[str] | None = None,
    client=None,
) -> list[VariantRun]:
    """Train every variant (default: the config's) for every seed and fold. With a dask `client`
    the jobs run on its workers, which must see `store_location` and `out` at the same paths."""
    store = FeatureStore.open(store_location)
    data = StoreData(store, 0 if client else 8 << 30, cfg.train.non_finite)  # the driver needs labels only
    indices = np.flatnonzero(data.labels >= 0)
    for m in require:
        if m not in data.present:
            raise ConfigError(f"--require {m}: the store has no modality {m!r}")
        indices = indices[data.present[m][indices]]
    cfgs = {v: with_overrides(cfg, {"train.variant": v}, "--ablations") for v in variants or [cfg.train.variant]}
    splits = {seed: make_splits(data, indices, folds, cfg.train, seed) for seed in seeds}
    run_dirs, jobs = {}, []
    for variant, vcfg in cfgs.items():
        run_dir = run_dirs[variant] = run_dir_for(out, store, vcfg, seeds, resume)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(vcfg))
        (run_dir / "store.json").write_text(
            json.dumps(
                {**store.provenance(), "require": require, "n_used": int(len(indices)), "software": software()},
                indent=1,
                default=str,
            )
        )
        done = finished(run_dir)
        jobs += [
            job
            for seed in seeds
            for k, fold in enumerate(splits[seed])
            for j, s in enumerate(fold)
            if (job := Job(variant, seed, k + 1, j, s, run_dir)).key not in done
        ]
    if jobs and client is not None:
        run_distributed(client, store_location, cfgs, jobs, log)
    elif jobs:
        run_local(data, cfgs, jobs, device, log)
    runs = []
    for variant, run_dir in run_dirs.items():
        per_fold = []
        for seed in seeds:
            for k, fold in enumerate(splits[seed]):
                results = [_result(Job(variant, seed, k + 1, j, s, run_dir)) for j, s in enumerate(fold)]
                metrics = fold_metrics(results, data.labels, len(store.classes))
                per_fold.append(
                    {"seed": seed, "fold": k + 1, "session": fold[0].name.split("/")[0], "metrics": metrics}
                )
        table = summarize(per_fold)
        title = f"CM-ARR ({variant}) on {store.corpus}: {len(per_fold) // len(seeds)} folds x {len(seeds)} seed(s)"
        write_reports(run_dir, table, per_fold, store.classes, title, store.corpus)
        runs.append(VariantRun(variant, run_dir, table))
    if len(runs) > 1:
        write_ablations(out, store, cfg, seeds, runs)
    return runs


def _result(job: Job) -> dict:
    path = job.folder / "result.json"
    if not path.is_file():
        raise ConfigError(f"{path}: job {job.key} has no result; re-run with --resume")
    return json.loads(path.read_text())


def write_ablations(
    out: Path, store: FeatureStore, cfg: PipelineConfig, seeds: list[int], runs: list[VariantRun]
) -> Path:
    """One table over the variants (the paper's Table 3 shape): UAR mean +- std per condition."""
    name = f"{store.corpus}-ablations-{config_hash(cfg)[:8]}-{store.fingerprint()[:8]}-s{'_'.join(map(str, seeds))}"
    lines = [
        f"# Ablations on {store.corpus} (UAR %, mean +- std over folds x seeds)\n",
        "| variant | " + " | ".join(ROWS) + " | run |",
        "|---" * (len(ROWS) + 2) + "|",
    ]
    for r in runs:
        cells = " | ".join(f"{r.table[row]['uar_mean']:.2f} +- {r.table[row]['uar_std']:.2f}" for row in ROWS)
        lines.append(f"| {r.variant} | {cells} | {r.run_dir.name} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(
        json.dumps({r.variant: {"run": r.run_dir.name, "table": r.table} for r in runs}, indent=1)
    )
    return out / f"{name}.md"

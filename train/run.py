"""A training run: systems x seeds x folds over one store, one run directory per system.

The grid's jobs run in this process or on a dask cluster (`train.grid`); either way the driver
assembles each system's reports from the jobs' results in the same (seed, fold, split) order,
so the reports do not depend on where or in which order the jobs ran.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.config import PipelineConfig, to_toml, with_overrides
from cmarr.shared.errors import ConfigError
from cmarr.shared.provenance import software, text_sha256
from cmarr.shared.store import FeatureStore
from cmarr.train.comparison import write_comparison
from cmarr.train.data import StoreData
from cmarr.train.grid import Job, finished, run_distributed, run_local
from cmarr.train.protocol import class_coverage, make_splits, modality_coverage
from cmarr.train.report import fold_metrics, summarize, write_reports
from cmarr.train.systems import System, count_parameters, get_system

# Keys of [train] that are not the protocol: the system choice, the preset (already applied to the
# sections), the seed (in the run id itself), and where it runs: the device and the CPU thread count
# (how fast, not what: a run resumes on a machine with other cores or a GPU, with cpu_threads = 1
# beside other work, or on a --jobs cluster, which resolves `auto` to the workers' device; both can
# change float rounding, nothing else); the per-system sections enter through the system.
_NOT_PROTOCOL = {
    "system",
    "preset",
    "seed",
    "device",
    "cpu_threads",
    "cm_arr",
    "mmin_family",
    "utt_fusion",
    "cra",
    "mmin",
    "if_mmin",
    "cif_mmin",
    "dicmor",
}


@dataclass
class SystemRun:
    system: str
    run_dir: Path
    table: dict
    folds: list[int]  # the 1-based folds its table holds (fewer than n_folds after --only-folds)
    n_folds: int


def run_hash(cfg: PipelineConfig, system: System) -> str:
    """Hash of what decides a system's numbers: the protocol keys and the config sections the
    system reads (changing another system's settings leaves this run's id alone)."""
    protocol = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in _NOT_PROTOCOL}
    return text_sha256(json.dumps({"protocol": protocol, "system": system.name, **system.config}, sort_keys=True))


def run_id(store: FeatureStore, cfg: PipelineConfig, system: System, seeds: list[int]) -> str:
    seed_tag = "_".join(map(str, seeds))
    return f"{store.corpus}-{system.name}-{run_hash(cfg, system)[:8]}-{store.fingerprint()[:8]}-s{seed_tag}"


def run_dir_for(base: Path, name: str, resume: bool) -> Path:
    """The run directory for run id `name`: a new suffix unless resuming."""
    path = base / name
    if resume:
        if not path.is_dir():
            raise ConfigError(f"--resume: no run at {path} to resume{_why_no_run(base, name)}")
        return path
    k = 2
    while path.exists():
        path, k = base / f"{name}-{k}", k + 1
    return path


def _why_no_run(base: Path, name: str) -> str:
    """What sets the runs in `base` of the same corpus, system and seeds apart from run id `name`
    (see `run_id`): another store fingerprint (the store changed since) or other settings."""
    head, settings, store, seeds = name.rsplit("-", 3)
    pattern = re.compile(rf"{re.escape(head)}-([0-9a-f]{{8}})-([0-9a-f]{{8}})-{re.escape(seeds)}")
    entries = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    found = [m.groups() for entry in entries if (m := pattern.fullmatch(entry))]
    if stores := sorted({f for h, f in found if h == settings}):
        return (
            f"; {base} holds this run on a store of fingerprint {', '.join(stores)}, and the store now reads "
            f"{store}: it changed since (re-extracted, relabelled, utterances updated). Train on it anew "
            "(without --resume), or point --store at the store that run used"
        )
    if hashes := sorted({h for h, f in found if f == store}):
        return (
            f"; {base} holds runs of this corpus, system and seeds on this store with other settings "
            f"(settings hash {', '.join(hashes)}, now {settings}): resume with the settings that run used "
            "(its config.toml, --config)"
        )
    return ""


def job_meta(data: StoreData, cfg: PipelineConfig, job: Job) -> dict:
    """What every checkpoint of a job records: enough to rebuild and use its model elsewhere, and to
    refuse features from another encoder."""
    store = data.store
    system = get_system(job.system, cfg.train)
    return {
        "system": job.system,
        "run": f"{job.system}-{run_hash(cfg, system)[:16]}-{store.fingerprint()}",
        "fold": job.fold,
        "classes": list(store.classes),
        "dims": dict(data.dims),
        "encoders": {m: store.attrs.get("modalities", {}).get(m) for m in data.dims},
        "store_config_toml": store.attrs.get("config_toml", ""),  # how the features were extracted
        "store_fingerprint": store.fingerprint(),
        "train_config": cfg.train.model_dump(mode="json"),
    }


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
    systems: list[str] | None = None,
    client=None,
    report_test: bool = False,
    comparison: str = "table2",
    only_folds: list[int] | None = None,
) -> list[SystemRun]:
    """Train every system (default: the config's) for every seed and fold. With a dask `client`
    the jobs run on its workers, which must see `store_location` and `out` at the same paths.
    `report_test`: also score the test part after every epoch, for the report only. With several
    systems, a comparison folder (`comparison`: table2, or table3 for ablations) is written too.
    `only_folds` (1-based) trains and reports those folds only, a first check; the run id does not
    depend on it, so `resume` without it later trains the other folds into the same run."""
    store = FeatureStore.open(store_location)
    data = StoreData(store, 0 if client else 8 << 30, cfg.train.non_finite)  # the driver needs labels only
    indices, note = _used(data, require)
    cfgs = {s: with_overrides(cfg, {"train.system": s}, "--systems") for s in systems or [cfg.train.system]}
    splits = {seed: make_splits(data, indices, folds, cfg.train, seed, note) for seed in seeds}
    warnings = class_coverage(data, indices, splits[seeds[0]]) + modality_coverage(data, indices)
    kept = _kept_folds(splits[seeds[0]], only_folds)
    for w in warnings:
        log(f"warning: {w}")
    if len(kept) < len(splits[seeds[0]]):
        log(f"training only fold(s) {_named(splits[seeds[0]], kept)} of {len(splits[seeds[0]])} (--only-folds)")
    run_dirs, jobs = {}, []
    for name, scfg in cfgs.items():
        system = get_system(name, scfg.train)
        run_dir = run_dirs[name] = run_dir_for(out, run_id(store, scfg, system, seeds), resume)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(scfg))
        provenance = {**store.provenance(), "require": require, "n_used": int(len(indices)), "software": software()}
        (run_dir / "store.json").write_text(json.dumps({**provenance, "warnings": warnings}, indent=1, default=str))
        (run_dir / "system.json").write_text(
            json.dumps(describe_system(system, data.dims, len(store.classes)), indent=1)
        )
        done = finished(run_dir)
        jobs += [
            job
            for seed in seeds
            for k, fold in enumerate(splits[seed])
            if k + 1 in kept
            for j, s in enumerate(fold)
            if (job := Job(name, seed, k + 1, j, s, run_dir)).key not in done
        ]
    if jobs and client is not None:
        run_distributed(client, store_location, cfgs, jobs, log, report_test)
    elif jobs:
        run_local(data, cfgs, jobs, device, log, report_test)
    runs = []
    for name, run_dir in run_dirs.items():
        # every fold the run has finished: those just trained, and (after --only-folds) earlier ones
        done, n_folds = finished(run_dir), len(splits[seeds[0]])
        reported = [
            k + 1
            for k in range(n_folds)
            if k + 1 in kept
            or all(Job(name, sd, k + 1, j, s, run_dir).key in done for sd in seeds for j, s in enumerate(splits[sd][k]))
        ]
        per_fold = []
        for seed in seeds:
            for k in (k - 1 for k in reported):
                fold = splits[seed][k]
                results = [_result(Job(name, seed, k + 1, j, s, run_dir)) for j, s in enumerate(fold)]
                metrics = fold_metrics(results, data.labels, len(store.classes))
                per_fold.append({"seed": seed, "fold": k + 1, "session": _session(fold), "metrics": metrics})
        table = summarize(per_fold)
        system = get_system(name, cfgs[name].train)
        notes = warnings + ([_subset_note(splits[seeds[0]], reported)] if len(reported) < n_folds else [])
        folds_in = f"{len(reported)} of {n_folds}" if len(reported) < n_folds else n_folds
        title = f"{system.title} on {store.corpus}: {folds_in} folds x {len(seeds)} seed(s)"
        write_reports(run_dir, table, per_fold, store.classes, title, store.corpus, system, notes)
        runs.append(SystemRun(name, run_dir, table, reported, n_folds))
    if len(runs) > 1:
        folder = write_comparison(out, store.corpus, runs, comparison, data, device)
        log(f"comparison: {folder}")
    return runs


def _kept_folds(folds: list, only: list[int] | None) -> list[int]:
    """The 1-based folds to train: `only` (checked against the store's folds), or all."""
    if not only:
        return list(range(1, len(folds) + 1))
    if bad := sorted({k for k in only if not 1 <= k <= len(folds)}):
        named = _named(folds, list(range(1, len(folds) + 1)))
        raise ConfigError(f"--only-folds {','.join(map(str, bad))}: the store has {len(folds)} folds: {named}")
    return sorted(set(only))


def _session(fold: list) -> str:
    """The session a fold tests on (its splits' names are the session, or session/speaker)."""
    return fold[0].name.split("/")[0]


def _named(folds: list, numbers: list[int]) -> str:
    """'1 (Ses01), 3 (Ses03)': 1-based fold numbers with the session each tests on."""
    return ", ".join(f"{k} ({_session(folds[k - 1])})" for k in numbers)


def _subset_note(folds: list, reported: list[int]) -> str:
    return (
        f"only fold(s) {_named(folds, reported)} of {len(folds)} in this table (--only-folds): a first check, "
        f"not the protocol's {len(folds)}-fold figure; --resume without --only-folds trains the rest into this run"
    )


def _used(data: StoreData, require: list[str]) -> tuple[np.ndarray, str]:
    """Labelled utterances holding every `--require`d modality, and a note on what was dropped."""
    indices = np.flatnonzero(data.labels >= 0)
    sessions = data.store.utterances["session"]
    before = set(sessions[indices].tolist())
    for m in require:
        if m not in data.present:
            raise ConfigError(f"--require {m}: the store has no modality {m!r}")
        indices = indices[data.present[m][indices]]
    if not require:
        return indices, ""
    gone = sorted(before - set(sessions[indices].tolist()))
    note = f"after --require {','.join(require)}" + (
        f" (which leaves no utterance in {', '.join(gone)})" if gone else ""
    )
    return indices, note


def describe_system(system: System, dims: dict[str, int], n_classes: int) -> dict:
    """A system's stages (sampler, loss weights, optimiser, links) and parameter counts at `dims`."""
    stages = []
    for stage in system.stages:
        counts = count_parameters(stage.build(dims, n_classes))
        links = [{"from": link.stage, "kind": link.kind, "modules": link.modules} for link in stage.links]
        stages.append(
            {
                "name": stage.name,
                "sampler": stage.sampler,
                "select_on": stage.select_on,
                "weights": stage.weights,
                "optim": stage.optim.model_dump(mode="json"),
                "links": links,
                "parameters": counts,
            }
        )
    return {"system": system.name, "title": system.title, "options": system.options, "stages": stages}


def _result(job: Job) -> dict:
    path = job.folder / "result.json"
    if not path.is_file():
        raise ConfigError(f"{path}: job {job.key} has no result; re-run with --resume")
    return json.loads(path.read_text())

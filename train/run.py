"""A training run: systems x seeds x folds over one store, one run directory per system.

The grid's jobs run in this process or on a dask cluster (`train.grid`); either way the driver
assembles each system's reports from the jobs' results in the same (seed, fold, split) order,
so the reports do not depend on where or in which order the jobs ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.config import PipelineConfig, recorded_toml, with_overrides
from cmarr.shared.errors import CmarrError, ConfigError, StoreError
from cmarr.shared.provenance import software, text_sha256
from cmarr.shared.store import FeatureStore
from cmarr.shared.store.summary import degradation_line
from cmarr.train.comparison import write_comparison
from cmarr.train.data import StoreData
from cmarr.train.grid import Job, finished, run_distributed, run_local
from cmarr.train.protocol import cannot_train, class_coverage, make_splits, modality_coverage
from cmarr.train.report import fold_metrics, summarize, write_reports
from cmarr.train.rundir import RunDir, run_dir_for
from cmarr.train.systems import SYSTEMS, System, count_parameters, get_system

# The keys of [train] that decide every system's numbers (an allow-list: a key added to [train] later
# stays out of every run id until it is added here). Not in it: the system choice (in the run id
# itself), the preset (already applied to the sections), the seed (in the run id itself), and where
# a run runs: the device and the CPU thread count (a run resumes on a machine with other cores or a
# GPU, or on a --jobs cluster; both can change float rounding, nothing else). A system's own
# sections enter through the system (`System.config`: the sections its registration reads).
PROTOCOL_KEYS = (
    "val_rule", "val_fraction", "include_full_condition", "amp", "non_finite", "batching", "length_buckets",
)  # fmt: skip
# The batching keys came after run ids existed: `batching = "shuffled"` is the batching every run before
# them trained with, so with it neither key is hashed and those runs keep their ids (--resume finds them).
BATCHING_KEYS = ("batching", "length_buckets")


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
    keys = [k for k in PROTOCOL_KEYS if cfg.train.batching != "shuffled" or k not in BATCHING_KEYS]
    protocol = {k: getattr(cfg.train, k) for k in keys}
    return text_sha256(json.dumps({"protocol": protocol, "system": system.name, **system.config}, sort_keys=True))


def run_id(store: FeatureStore, cfg: PipelineConfig, system: System, seeds: list[int]) -> str:
    seed_tag = "_".join(map(str, seeds))
    return f"{store.corpus}-{system.name}-{run_hash(cfg, system)[:8]}-{store.fingerprint()[:8]}-s{seed_tag}"


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
        "train_config": cfg.train.recorded(system.config),
    }


@dataclass(frozen=True)
class TrainingRequest:
    """What one `cmarr-train run` trains: systems x seeds x folds over one store."""

    store: str  # the store's location: a directory, a .zarr.zip or a URL
    cfg: PipelineConfig
    out: Path = Path("runs")  # the folder of run directories
    systems: tuple[str, ...] = ()  # empty: the config's train.system
    folds: int | None = None  # None: one per session
    seeds: tuple[int, ...] = (0,)
    require: tuple[str, ...] = ()  # keep only utterances holding these modalities
    only_folds: tuple[int, ...] = ()  # 1-based; empty: every fold (the run id does not depend on it)
    resume: bool = False
    report_test: bool = False  # also score the test part after every epoch, for the report only
    comparison: str = "table2"  # the comparison folder's kind with several systems: table2 or table3
    tracking: tuple[str, ...] = ()  # per-epoch metrics sinks: tensorboard, mlflow (train/tracking.py)
    allow_degraded: bool = False  # train on a store extracted with --degrade (refused otherwise)


@dataclass
class _Plan:
    """What every system of a request shares: the store, the utterances used, the splits per seed."""

    store: FeatureStore
    data: StoreData
    indices: np.ndarray
    splits: dict[int, list]  # seed -> folds -> splits
    kept: list[int]  # the 1-based folds to train
    warnings: list[str]

    @property
    def folds(self) -> list:
        return next(iter(self.splits.values()))


def run_training(request: TrainingRequest, device: torch.device | None, log=print, client=None) -> list[SystemRun]:
    """Train every requested system for every seed and fold, then write each system's reports (and,
    with several systems, a comparison folder). With a dask `client` the jobs run on its workers,
    which must see `request.store` and `request.out` at the same paths; `resume` trains only the jobs
    a run has not finished, so after `only_folds` it adds the other folds to the same run."""
    plan = _plan(request, client, log)
    cfgs, skipped = _trainable(request, plan, log)
    ids = {
        name: run_id(plan.store, cfg, get_system(name, cfg.train), list(request.seeds)) for name, cfg in cfgs.items()
    }
    resumed = _resumable(request, ids, log)
    run_dirs = {
        name: _prepare_run_dir(request, plan, name, cfg, ids[name], resumed[name]) for name, cfg in cfgs.items()
    }
    jobs = [job for name, run_dir in run_dirs.items() for job in _missing_jobs(request, plan, name, run_dir)]
    failed: dict[str, str] = {}
    if jobs and client is not None:
        run_distributed(client, request.store, cfgs, jobs, log, request.report_test, request.tracking, failed)
    elif jobs:
        run_local(plan.data, cfgs, jobs, device, log, request.report_test, request.tracking, failed)
    runs = [_report(request, plan, n, run_dir, cfgs[n]) for n, run_dir in run_dirs.items() if n not in failed]
    if runs and len(runs) + len(skipped) > 1:  # a comparison was asked for: it says who could not train
        folder = write_comparison(
            request.out, plan.store.corpus, runs, request.comparison, plan.data, device, skipped=skipped
        )
        log(f"comparison: {folder}")
    if failed:
        raise SystemsFailed(failed, runs)
    return runs


class SystemsFailed(CmarrError):
    """Some systems stopped (a diverged loss, a plugin's error); the others' reports were written."""

    def __init__(self, failed: dict[str, str], runs: list[SystemRun]):
        self.failed, self.runs = failed, runs
        done = f"; reports written for {', '.join(r.system for r in runs)}" if runs else ""
        lines = "\n  ".join(f"{name} ({SYSTEMS[name].source}): {why}" for name, why in failed.items())
        super().__init__(f"{len(failed)} system(s) stopped{done}:\n  {lines}\n  fix them and train them with --resume")


def _trainable(request: TrainingRequest, plan: _Plan, log) -> tuple[dict[str, PipelineConfig], dict[str, str]]:
    """The config of each requested system that can train on the store, and why the others cannot
    (said, and in the comparison); StoreError when none can."""
    names = request.systems or (request.cfg.train.system,)
    cfgs = {s: with_overrides(request.cfg, {"train.system": s}, "--systems") for s in names}
    skipped = {}
    for name, cfg in cfgs.items():
        if why := cannot_train(plan.data, get_system(name, cfg.train), plan.splits, plan.kept):
            skipped[name] = why
            log(f"warning: {name}: {why}")
    if len(skipped) == len(cfgs):
        raise StoreError(f"{plan.store.location}: " + "; ".join(f"{n}: {w}" for n, w in skipped.items()))
    return {n: c for n, c in cfgs.items() if n not in skipped}, skipped


def _plan(request: TrainingRequest, client, log) -> _Plan:
    store = FeatureStore.open(request.store)
    degraded = degradation_warnings(store, request.allow_degraded)
    data = StoreData(store, 0 if client else 8 << 30, request.cfg.train.non_finite)  # the driver needs labels only
    indices, note = used_utterances(data, list(request.require))
    splits = {s: make_splits(data, indices, request.folds, request.cfg.train, s, note) for s in request.seeds}
    folds = splits[request.seeds[0]]
    warnings = degraded + class_coverage(data, indices, folds) + modality_coverage(data, indices)
    kept = _kept_folds(folds, list(request.only_folds))
    for w in warnings:
        log(f"warning: {w}")
    if len(kept) < len(folds):
        log(f"training only fold(s) {_named(folds, kept)} of {len(folds)} (--only-folds)")
    return _Plan(store, data, indices, splits, kept, warnings)


def degradation_warnings(store: FeatureStore, allowed: bool) -> list[str]:
    """A degraded store (`cmarr-extract --degrade`) is for evaluating runs trained on clean data:
    training on it is refused unless `allowed`, and then said in the output and the reports."""
    if not store.degradation:
        return []
    what = degradation_line(store.degradation)
    if not allowed:
        raise ConfigError(
            f"{store.location}: a degraded store ({what}): its features come from media degraded on purpose "
            "(cmarr-extract --degrade), to evaluate runs trained on its clean twin; pass --allow-degraded to "
            "train on it"
        )
    return [f"trained on a degraded store (cmarr-extract --degrade): {what}"]


def _resumable(request: TrainingRequest, ids: dict[str, str], log) -> dict[str, bool]:
    """Which systems' runs to resume: with --resume, those that have one; a system with none yet is
    trained anew beside them (said), unless no system has a run (then nothing is resumed: refused,
    saying why, e.g. the store changed)."""
    have = {name: (request.out / run).is_dir() for name, run in ids.items()}
    if not request.resume:
        return dict.fromkeys(ids, False)
    if not any(have.values()):
        first = next(iter(ids.values()))
        run_dir_for(request.out, first, resume=True)  # raises, saying what moved
    for name in (n for n, found in have.items() if not found):
        log(f"--resume: {name} has no run yet ({ids[name]}): training it")
    return have


def _prepare_run_dir(
    request: TrainingRequest, plan: _Plan, name: str, cfg: PipelineConfig, run: str, resume: bool
) -> Path:
    """The system's run directory (a new one, or the run to resume), with its config, its store's
    provenance and its system's description written."""
    system = get_system(name, cfg.train)
    path = run_dir_for(request.out, run, resume)
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    run.config.write_text(recorded_toml(cfg, system.config))
    provenance = {**plan.store.provenance(), "require": list(request.require), "n_used": int(len(plan.indices))}
    provenance = {**provenance, "software": software(), "warnings": plan.warnings}
    run.store.write_text(json.dumps(provenance, indent=1, default=str))
    run.system.write_text(json.dumps(describe_system(system, plan.data.dims, len(plan.store.classes)), indent=1))
    return path


def _missing_jobs(request: TrainingRequest, plan: _Plan, name: str, run_dir: Path) -> list[Job]:
    """The jobs of the kept folds that the run directory has not finished."""
    done = finished(run_dir)
    return [
        job
        for seed in request.seeds
        for k, fold in enumerate(plan.splits[seed])
        if k + 1 in plan.kept
        for j, s in enumerate(fold)
        if (job := Job(name, seed, k + 1, j, s, run_dir)).key not in done
    ]


def _report(request: TrainingRequest, plan: _Plan, name: str, run_dir: Path, cfg: PipelineConfig) -> SystemRun:
    """Write the system's reports over every fold the run has finished: those just trained, and
    (after --only-folds) earlier ones."""
    done, n_folds, seeds = finished(run_dir), len(plan.folds), request.seeds
    reported = [
        k + 1
        for k in range(n_folds)
        if k + 1 in plan.kept
        or all(
            Job(name, sd, k + 1, j, s, run_dir).key in done for sd in seeds for j, s in enumerate(plan.splits[sd][k])
        )
    ]
    per_fold, speakers = [], plan.store.utterances["speaker"]
    for seed in seeds:
        for k in (k - 1 for k in reported):
            fold = plan.splits[seed][k]
            results = [Job(name, seed, k + 1, j, s, run_dir) for j, s in enumerate(fold)]
            results = [_result(job) for job in results]
            metrics = fold_metrics(results, plan.data.labels, len(plan.store.classes), speakers, (seed, k + 1))
            per_fold.append({"seed": seed, "fold": k + 1, "session": _session(fold), "metrics": metrics})
    table = summarize(per_fold)
    system = get_system(name, cfg.train)
    notes = plan.warnings + ([_subset_note(plan.folds, reported)] if len(reported) < n_folds else [])
    folds_in = f"{len(reported)} of {n_folds}" if len(reported) < n_folds else n_folds
    title = f"{system.title} on {plan.store.corpus}: {folds_in} folds x {len(seeds)} seed(s)"
    write_reports(run_dir, table, per_fold, plan.store.classes, title, plan.store.corpus, system, notes)
    return SystemRun(name, run_dir, table, reported, n_folds)


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


def used_utterances(data: StoreData, require: list[str]) -> tuple[np.ndarray, str]:
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
    if not job.folder.result.is_file():
        raise ConfigError(f"{job.folder.result}: job {job.key} has no result; re-run with --resume")
    return job.folder.read_result()

"""The experiment grid: every (system, seed, fold, split) is one independent job.

A job's result depends only on the store, the config, its system and its seed: `train_split`
seeds torch and numpy itself, and the splits are drawn from the seed alone. Jobs can therefore
run in any order, in this process or on dask workers, and give the same numbers. Each finished
job is appended to the run directory's ledger (`RunDir.ledger`); a resumed run does not submit
the jobs its ledger lists, and a job that was cut off resumes from its `state.pt`.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.cluster import GPU, worker_cache
from cmarr.shared.config import PipelineConfig
from cmarr.shared.devices import cpu_threads, resolve_device
from cmarr.shared.errors import CmarrError
from cmarr.shared.provenance import now_utc
from cmarr.train.protocol import Split, train_split
from cmarr.train.rundir import RunDir, SplitDir
from cmarr.train.tracking import Trackers


@dataclass(frozen=True, eq=False)
class Job:
    system: str
    seed: int
    fold: int  # 1-based, in session order
    split: int  # index among the fold's splits (several with val_rule = other-speaker)
    data: Split
    run_dir: Path  # the system's run directory

    @property
    def key(self) -> str:
        return f"{self.system}/seed{self.seed}/fold{self.fold}/split{self.split}"

    @property
    def folder(self) -> SplitDir:
        return RunDir(self.run_dir).split(self.seed, self.fold, self.split)


def finished(run_dir: Path) -> set[str]:
    """Keys of the jobs the ledger lists whose results are still in place."""
    path = RunDir(run_dir).ledger
    if not path.is_file():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if SplitDir(run_dir / entry["folder"]).result.is_file():
            keys.add(entry["job"])
    return keys


def record(job: Job, seconds: float, where: str) -> None:
    entry = {
        "job": job.key,
        "folder": str(job.folder.path.relative_to(job.run_dir)),
        "seconds": round(seconds, 3),
        "worker": where,
        "finished": now_utc(),
    }
    with open(RunDir(job.run_dir).ledger, "a") as f:
        f.write(json.dumps(entry) + "\n")


@contextlib.contextmanager
def seeded(seed: int):
    """Seed every RNG and switch torch to deterministic kernels for one job, then put the
    process's deterministic setting back (an in-process caller's later work must not change)."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def run_job(data, cfg: PipelineConfig, job: Job, device, log=print, report_test: bool = False, tracking=()) -> dict:
    """Train and test one job; the function both executors run. `tracking`: the metrics sinks to
    feed after every epoch (train/tracking.py)."""
    from cmarr.train.run import job_meta
    from cmarr.train.systems import get_system

    system = get_system(job.system, cfg.train)
    meta = job_meta(data, cfg, job)
    with cpu_threads(cfg.train.cpu_threads), seeded(job.seed):
        split = (data, job.data, system, cfg.train, job.seed, device, job.folder, meta, log, report_test)
        trackers = Trackers(tracking, RunDir(job.run_dir), job.key)
        try:
            return train_split(*split, on_epoch=trackers.epoch)
        finally:
            trackers.close()


def run_local(
    data,
    cfgs: dict[str, PipelineConfig],
    jobs: list[Job],
    device,
    log=print,
    report_test=False,
    tracking=(),
    failed: dict[str, str] | None = None,
):
    """Jobs one after the other in this process; {job key: result}. A system whose job fails (see
    `stops_system`) has its other jobs skipped and its error in `failed`; the others go on."""
    results, failed = {}, {} if failed is None else failed
    for job in jobs:
        if job.system in failed:
            continue
        start = time.perf_counter()
        try:
            results[job.key] = run_job(data, cfgs[job.system], job, device, log, report_test, tracking)
        except Exception as err:
            if not stops_system(job, err):
                raise
            failed[job.system] = f"{job.key}: {err}"
            log(f"{job.key}: failed, {job.system}'s other jobs are skipped: {err}")
            continue
        record(job, time.perf_counter() - start, "local")
    return results


def stops_system(job: Job, err: Exception) -> bool:
    """Whether a job's error stops its system only (the other systems train on): a cmarr error (a
    diverged loss, a damaged checkpoint) or any error of a plugin's system. A built-in system's
    other errors are bugs, and stop the run with their traceback."""
    from cmarr.train.systems import SYSTEMS

    return isinstance(err, CmarrError) or not SYSTEMS[job.system].builtin


def _remote_job(store_location: str, cfg: PipelineConfig, job: Job, report_test: bool, tracking=()) -> tuple:
    """On a worker: the store is loaded once per worker process and kept for its next jobs."""
    from cmarr.shared.store import FeatureStore
    from cmarr.train.data import StoreData
    from distributed import get_worker

    cache = worker_cache()
    if cache.get("train-store") != store_location:
        cache.pop("train-data", None)
        data = StoreData(FeatureStore.open(store_location), non_finite=cfg.train.non_finite)
        cache["train-data"], cache["train-store"] = data, store_location
    start = time.perf_counter()
    job.folder.path.mkdir(parents=True, exist_ok=True)
    with open(job.folder.log, "a") as f:

        def log(msg):
            print(msg, file=f, flush=True)

        result = run_job(cache["train-data"], cfg, job, resolve_device(cfg.train.device), log, report_test, tracking)
    return result, time.perf_counter() - start, get_worker().address


def run_distributed(
    client,
    store_location: str,
    cfgs: dict[str, PipelineConfig],
    jobs: list[Job],
    log: Callable[[str], None] = print,
    report_test: bool = False,
    tracking: tuple[str, ...] = (),
    failed: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Jobs as dask tasks; each worker writes its job's folder, the driver keeps the ledger."""
    from distributed import as_completed

    gpu = {s: c.train.device.startswith("cuda") for s, c in cfgs.items()}
    futures = {
        client.submit(
            _remote_job,
            store_location,
            cfgs[job.system],
            job,
            report_test,
            tracking,
            key=f"cmarr-train-{job.key}-{job.run_dir.name}",
            resources={GPU: 1} if gpu[job.system] else None,
        ): job
        for job in jobs
    }
    results, failed = {}, {} if failed is None else failed
    for k, future in enumerate(as_completed(list(futures)), 1):  # the dict drops each future as it is done
        job = futures.pop(future)
        try:
            results[job.key], seconds, where = future.result()
        except Exception as err:
            if not stops_system(job, err):
                raise
            failed.setdefault(job.system, f"{job.key}: {err}")
            log(f"[{k}/{len(jobs)}] {job.key}: failed: {err}")
            continue
        future.release()  # a worker lost later must not make dask recompute a finished job
        record(job, seconds, where)
        log(f"[{k}/{len(jobs)}] {job.key}: {seconds:.1f} s on {where}")
    return results

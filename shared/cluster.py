"""dask.distributed for both stages: connect to a running scheduler, or start a local cluster.

Every worker runs one task at a time (`nthreads=1`): a task holds an encoder or a training
job, and torch inside it uses the cores the worker was given. Workers with a GPU declare the
resource `GPU=1` and GPU tasks ask for one unit, so two tasks never share a GPU unless an
operator starts a worker with `--resources GPU=2` on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from cmarr.shared.errors import ConfigError

GPU = "GPU"  # the dask resource name GPU tasks ask for


def parse_local(spec: str) -> int:
    """`local:N` -> N."""
    kind, _, n = spec.partition(":")
    if kind != "local" or not n.isdigit() or int(n) < 1:
        raise ConfigError(
            f"--cluster {spec!r}: use local:N (N worker processes on this machine), "
            "or --scheduler tcp://HOST:8786 for a running cluster"
        )
    return int(n)


@contextlib.contextmanager
def local_cluster(n_workers: int, gpus: int = 0) -> Iterator:
    """N worker processes, each with 1 task slot. With GPUs, worker i sees only GPU i mod gpus
    (CUDA_VISIBLE_DEVICES) and declares GPU=1; on CPU the cores are split evenly between workers.

    dask's nannies write their pre-spawn variables (OMP_NUM_THREADS=1, ...) into *this*
    process's environment and leave them there; we put the environment back on exit, so that
    whatever this process starts later gets the thread counts it would have had."""
    from distributed import Nanny, Scheduler, SpecCluster

    threads = max(1, (os.cpu_count() or 1) // n_workers)
    workers = {}
    for i in range(n_workers):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        options = {"nthreads": 1, "env": env, "name": f"cmarr-{i}", "silence_logs": logging.WARNING}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
            options["resources"] = {GPU: 1}
        workers[f"cmarr-{i}"] = {"cls": Nanny, "options": options}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    saved = dict(os.environ)
    try:
        with SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR) as cluster:
            yield cluster
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, cluster: str | None = None, gpus: int = 0) -> Iterator:
    """A `distributed.Client` for `--scheduler ADDRESS` or `--cluster local:N`; None when neither
    is given (the single-process path)."""
    if scheduler and cluster:
        raise ConfigError("give either --scheduler or --cluster, not both")
    if not scheduler and not cluster:
        yield None
        return
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as err:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        with client:
            yield client
        return
    with local_cluster(parse_local(cluster), gpus) as lc, Client(lc) as client:
        yield client


def require_gpu_workers(client, needed: bool) -> None:
    """GPU tasks wait forever for a resource no worker has: refuse up front instead."""
    if not needed:
        return
    if not _has_gpu_workers(client):
        raise ConfigError(
            f"the device is CUDA but no dask worker declares a {GPU} resource; start each "
            f"worker with `dask worker SCHEDULER --nthreads 1 --resources {GPU}=1` and one "
            "visible GPU (CUDA_VISIBLE_DEVICES), or set the device to cpu"
        )


def _has_gpu_workers(client) -> bool:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return any(w.get("resources", {}).get(GPU, 0) >= 1 for w in workers)


def cluster_device(client, device: str) -> str:
    """The device workers use: `cuda` (each worker's one visible GPU) or `cpu`. `auto` means
    cuda when the workers declare GPUs; `cuda:N` becomes `cuda`, since a worker sees one GPU."""
    if device == "auto":
        return "cuda" if _has_gpu_workers(client) else "cpu"
    return "cuda" if device.startswith("cuda") else device


def local_gpus(device: str) -> int:
    """GPUs to hand out to a local cluster's workers for this device setting."""
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count()


def worker_cache() -> dict:
    """A dict that lives as long as this worker process (encoders, loaded stores)."""
    from distributed import get_worker

    worker = get_worker()
    if not hasattr(worker, "_cmarr_cache"):
        worker._cmarr_cache = {}
    return worker._cmarr_cache

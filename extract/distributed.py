"""Extraction on dask.distributed: the batch plan cut into shards, one encoder per worker,
parts written by the workers, the store finalized by the driver.

The driver (this process) reads the corpus and asks a worker for the modality's batch plan, so
no model loads on the driver and the plan is the single-process one. It groups the planned
batches into shards of `extract.shard_batches` and submits one task per shard. Each worker
loads each encoder once (`EncoderPlugin`), runs the single-process loop on its shard
(`encode_batches`) and stages one part per planned batch, named after the batch. A part belongs
to one writer, so no two writers ever touch the same chunk. When every shard is in, the driver
finalizes the modality: values in utterance order, offsets, status, checksums, provenance.

A worker that dies takes only its running shard with it: the scheduler runs it again on another
worker, and the retry skips the batches whose parts are already complete. Resume, per-item
failure status and exit codes are the single-process ones, because the parts are.
"""

from __future__ import annotations

import gc
import time
import uuid

import numpy as np
import torch
from cmarr.extract.batch_loop import batch_tag, encode_batches, thread_stream
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.degrade import media_degrader
from cmarr.extract.encoders import Encoder, build_encoder, check_settings
from cmarr.extract.pipeline import Encoded, plan_modality
from cmarr.shared.cluster import GPU, cluster_device, require_gpu_workers
from cmarr.shared.config import EXTRACTION_SECTIONS, ExtractConfig, PipelineConfig, config_hash, with_overrides
from cmarr.shared.console import err_console
from cmarr.shared.devices import resolve_device
from cmarr.shared.store import ModalitySpec, StoreWriter
from distributed import WorkerPlugin


class EncoderPlugin(WorkerPlugin):
    """Builds each encoder once per worker, on the worker's device, and keeps one in memory."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.encoders: dict[str, Encoder] = {}
        self.device: torch.device | None = None

    def setup(self, worker) -> None:
        self.device = resolve_device(self.cfg.extract.device)
        if self.cfg.extract.cpu_threads:  # the worker process is ours alone: no need to restore
            torch.set_num_threads(self.cfg.extract.cpu_threads)

    def encoder(self, modality: str) -> Encoder:
        if modality not in self.encoders:
            self.encoders.clear()  # modalities run one after the other: free the last model first
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.encoders[modality] = build_encoder(modality, self.cfg.extract, self.device)
        return self.encoders[modality]

    def teardown(self, worker) -> None:
        self.encoders.clear()


def plugin_name(cfg: PipelineConfig) -> str:
    return f"cmarr-encoders-{config_hash(cfg, EXTRACTION_SECTIONS)[:12]}"


def _plugin(name: str) -> EncoderPlugin:
    from distributed import get_worker

    return get_worker().plugins[name]


def _check_task(cfg: ExtractConfig, modalities: list[str]) -> None:
    for modality in modalities:
        check_settings(modality, cfg)


def _plan_task(name: str, modality: str, records: list[UtteranceRecord]):
    encoder = _plugin(name).encoder(modality)
    return encoder.spec(), plan_modality(encoder, records)


def _shard_task(
    name: str,
    store_path: str,
    modality: str,
    shard: list[tuple[int, np.ndarray]],
    records: dict[int, UtteranceRecord],
    pending: np.ndarray,
) -> dict:
    from distributed import get_worker

    start = time.perf_counter()
    plugin = _plugin(name)
    encoder = plugin.encoder(modality)
    forward_before = encoder.forward_seconds
    mw = StoreWriter.open(store_path).attach(modality)
    # Decoding runs on a thread here, not in DataLoader processes: starting those for every shard
    # cost more than it saved (bench/scale.py measured audio at 60 s instead of 2.5 s on 1 worker).
    written = mw.complete_tags({batch_tag(b) for b, _ in shard})  # this shard's earlier attempt
    todo = [(b, items) for b, items in shard if batch_tag(b) not in written]
    degrade = media_degrader(modality, plugin.cfg.extract)
    encoded = encode_batches(encoder, records, todo, pending, mw, thread_stream, degrade=degrade)
    return {
        "encoded": encoded,
        "skipped_batches": len(written),
        "seconds": time.perf_counter() - start,
        "forward_seconds": encoder.forward_seconds - forward_before,
        "worker": get_worker().address,
    }


class DaskExecutor:
    """The executor on a dask cluster (see the module docstring). The store must be on a
    filesystem the workers share with the driver. `shard_log` collects per-shard timings
    (bench/scale.py)."""

    def __init__(self, client, cfg: PipelineConfig, shard_log: list | None = None):
        device = cluster_device(client, cfg.extract.device)
        self.cfg = with_overrides(cfg, {"extract.device": device}, "--scheduler")
        self.client, self.shard_log = client, shard_log
        gpu = device.startswith("cuda")
        require_gpu_workers(client, gpu)
        self.resources = {GPU: 1} if gpu else None
        self.name = plugin_name(self.cfg)
        self.run = uuid.uuid4().hex[:8]  # task keys unique to this executor
        self._records = None  # the corpus, scattered once for the plan tasks

    def __enter__(self) -> DaskExecutor:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        err_console.print(f"dask cluster: {len(workers)} workers at {self.client.scheduler.address}", highlight=False)
        self.client.register_plugin(EncoderPlugin(self.cfg), name=self.name)
        return self

    def __exit__(self, *exc) -> None:
        self.client.unregister_worker_plugin(self.name)  # frees the workers' models

    def check(self, modalities: list[str]) -> None:
        """On a worker: the models are where the workers see them, not necessarily here."""
        self.client.submit(_check_task, self.cfg.extract, modalities, resources=self.resources).result()

    def plan(self, modality: str, records: list[UtteranceRecord]) -> tuple[ModalitySpec, list[np.ndarray]]:
        """Planned on a worker, so that no model loads on the driver."""
        if self._records is None:
            [self._records] = self.client.scatter([records], broadcast=False)
        start = time.perf_counter()
        spec, plan = self.client.submit(
            _plan_task,
            self.name,
            modality,
            self._records,
            resources=self.resources,
            key=f"cmarr-plan-{modality}-{self.run}",
        ).result()
        self._plan_seconds = time.perf_counter() - start
        return spec, plan

    def encode(self, modality, mw, records, planned, pending, advance) -> Encoded:
        from distributed import as_completed

        start = time.perf_counter()
        mw.prepare_concurrent()
        k = self.cfg.extract.shard_batches
        shards = [planned[i : i + k] for i in range(0, len(planned), k)]
        futures = [
            self.client.submit(
                _shard_task,
                self.name,
                str(mw.store.path.resolve()),
                modality,
                shard,
                {int(i): records[int(i)] for _, items in shard for i in items},
                pending,
                resources=self.resources,
                key=f"cmarr-extract-{modality}-{j:05d}-{self.run}",
            )
            for j, shard in enumerate(shards)
        ]
        done = Encoded(0, 0.0)
        for future in as_completed(futures):
            result = future.result()
            future.release()  # a worker lost later must not make dask redo a finished shard
            done.encoded += result["encoded"]
            done.forward_seconds += result["forward_seconds"]
            if self.shard_log is not None:
                self.shard_log.append({"modality": modality, "phase": "shard", **result})
            advance(result["encoded"])
        if self.shard_log is not None:  # the driver's own phases (finalize is timed in the report)
            self.shard_log.append(
                {
                    "modality": modality,
                    "phase": "driver",
                    "plan_seconds": self._plan_seconds,
                    "shards_seconds": time.perf_counter() - start,
                    "n_shards": len(shards),
                }
            )
        return done

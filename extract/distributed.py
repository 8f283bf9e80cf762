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
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders import Encoder, build_encoder
from cmarr.extract.pipeline import (
    ModalityReport,
    Progress,
    batch_tag,
    encode_batches,
    open_or_create_store,
    plan_modality,
    thread_stream,
)
from cmarr.shared.cluster import GPU, require_gpu_workers
from cmarr.shared.config import PipelineConfig, config_hash
from cmarr.shared.devices import resolve_device
from cmarr.shared.labels import LabelSet
from cmarr.shared.store import StoreWriter
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
    return f"cmarr-encoders-{config_hash(cfg)[:12]}"


def _plugin(name: str) -> EncoderPlugin:
    from distributed import get_worker

    return get_worker().plugins[name]


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
    encoder = _plugin(name).encoder(modality)
    forward_before = encoder.forward_seconds
    mw = StoreWriter.open(store_path).attach(modality)
    # Decoding runs on a thread here, not in DataLoader processes: starting those for every shard
    # cost more than it saved (bench/scale.py measured audio at 60 s instead of 2.5 s on 1 worker).
    written = mw.complete_tags({batch_tag(b) for b, _ in shard})  # this shard's earlier attempt
    todo = [(b, items) for b, items in shard if batch_tag(b) not in written]
    encoded = encode_batches(encoder, records, todo, pending, mw, thread_stream)
    return {
        "encoded": encoded,
        "skipped_batches": len(written),
        "seconds": time.perf_counter() - start,
        "forward_seconds": encoder.forward_seconds - forward_before,
        "worker": get_worker().address,
    }


def extract_distributed(
    client,
    records: list[UtteranceRecord],
    out,
    corpus: str,
    label_set: LabelSet,
    cfg: PipelineConfig,
    modalities: list[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    shard_log: list | None = None,
) -> list[ModalityReport]:
    """`pipeline.extract` with the encoding on the cluster behind `client`. The store must be on
    a filesystem the workers share with the driver. `shard_log` collects per-shard timings."""
    from distributed import as_completed

    gpu = cfg.extract.device.startswith("cuda")
    require_gpu_workers(client, gpu)
    resources = {GPU: 1} if gpu else None
    writer = open_or_create_store(out, records, corpus, label_set, cfg)
    name = plugin_name(cfg)
    client.register_plugin(EncoderPlugin(cfg), name=name)
    [records_future] = client.scatter([records], broadcast=False)
    run = uuid.uuid4().hex[:8]  # task keys unique to this call
    reports = []
    for modality in modalities or cfg.extract.modalities:
        start = time.perf_counter()
        spec, plan = client.submit(
            _plan_task, name, modality, records_future, resources=resources, key=f"cmarr-plan-{modality}-{run}"
        ).result()
        planned_at = time.perf_counter()
        mw = writer.modality(modality, spec, overwrite=overwrite)
        pending = ~mw.settled()
        planned = [(b, items) for b, items in enumerate(plan) if pending[items].any()]
        mw.prepare_concurrent()
        k = cfg.extract.shard_batches
        shards = [planned[i : i + k] for i in range(0, len(planned), k)]
        total, done = int(pending.sum()), 0
        if progress:
            progress(modality, 0, total)
        futures = as_completed(
            [
                client.submit(
                    _shard_task,
                    name,
                    str(out),
                    modality,
                    shard,
                    {int(i): records[int(i)] for _, items in shard for i in items},
                    pending,
                    resources=resources,
                    key=f"cmarr-extract-{modality}-{j:05d}-{run}",
                )
                for j, shard in enumerate(shards)
            ]
        )
        report = ModalityReport(modality)
        for future in futures:
            result = future.result()
            future.release()  # a worker lost later must not make dask redo a finished shard
            report.encoded += result["encoded"]
            report.forward_seconds += result["forward_seconds"]
            if shard_log is not None:
                shard_log.append({"modality": modality, "phase": "shard", **result})
            done += result["encoded"]
            if progress:
                progress(modality, done, total)
        encoded_at = time.perf_counter()
        report.counts = mw.finalize(cfg.store.chunk_frames)
        report.failures = dict(mw.group.attrs.get("failures", {}))
        report.seconds = time.perf_counter() - start
        if shard_log is not None:  # the driver's own phases, for bench/scale.py
            shard_log.append(
                {
                    "modality": modality,
                    "phase": "driver",
                    "plan_seconds": planned_at - start,
                    "shards_seconds": encoded_at - planned_at,
                    "finalize_seconds": time.perf_counter() - encoded_at,
                    "n_shards": len(shards),
                }
            )
        reports.append(report)
    client.unregister_worker_plugin(name)  # frees the workers' models
    return reports

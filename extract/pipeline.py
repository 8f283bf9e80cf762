"""The extraction loop: corpus records -> encoders -> the feature store.

Per modality: plan length-sorted batches over the whole corpus, skip batches whose items are all
settled (resume), decode media in DataLoader workers, run the encoder in the main process, and
hand results to a writer thread, so decoding, compute and writing overlap. The last batch has
nothing left to overlap with: it goes straight into finalize's layout instead of being staged.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cmarr.extract.batching import plan_batches
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders import Encoder, EncodeResult, build_encoder
from cmarr.shared.config import PipelineConfig, config_hash, to_toml
from cmarr.shared.devices import cpu_threads, resolve_device
from cmarr.shared.errors import StoreError
from cmarr.shared.labels import LabelSet
from cmarr.shared.prefetch import prefetch
from cmarr.shared.store import FeatureStore, Status, StoreWriter, UtteranceTable
from cmarr.shared.store.writer import ModalityWriter

Progress = Callable[[str, int, int], None]


@dataclass
class ModalityReport:
    modality: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # utterance id -> reason
    encoded: int = 0  # items encoded in this run (the rest were already settled)
    seconds: float = 0.0
    forward_seconds: float = 0.0
    finalize_seconds: float = 0.0


def open_or_create_store(
    path: Path, records: list[UtteranceRecord], corpus: str, label_set: LabelSet, cfg: PipelineConfig
) -> StoreWriter:
    """Resume an existing store built from the same utterances, or create a new one."""
    if (path / "zarr.json").is_file():
        writer = StoreWriter.open(path)
        stored = FeatureStore.open(path, allow_incomplete=True).utterances["id"].tolist()
        if stored != [r.id for r in records]:
            raise StoreError(
                f"{path}: this store holds a different utterance list than the corpus now reads "
                "(different corpus, label set or filters); choose another --out or remove it"
            )
        return writer
    table = UtteranceTable.from_records([r.table_row(label_set.classes) for r in records])
    return StoreWriter.create(path, table, corpus, label_set, to_toml(cfg), config_hash(cfg))


def plan_modality(encoder: Encoder, records: list[UtteranceRecord]) -> list[np.ndarray]:
    """The batch plan over the whole corpus (the same for every run, shard and worker)."""
    return plan_batches(encoder.costs(records), encoder.budget)


def batch_tag(b: int) -> str:
    """The writer id of planned batch `b`'s part: a retried shard finds what it already wrote."""
    return f"b{b:06d}"


def encode_batches(
    encoder: Encoder,
    records,
    planned: list[tuple[int, np.ndarray]],
    pending: np.ndarray,
    mw: ModalityWriter,
    stream: Callable,
    on_done: Callable[[int], None] | None = None,
    hold_last: list | None = None,
) -> int:
    """Decode, encode and stage planned batches `(b, items)`; only items whose `pending` is set
    are written (the others are in the batch for its shape only). `stream(dataset)` yields the
    decoded batches. With a `hold_last` list, the last batch goes into it as `write_part`
    arguments instead of being staged (for `finalize(last_batch=...)`). Returns the number of
    items encoded."""
    done = 0
    with _BackgroundWriter(mw) as sink:
        for j, (b, items, inputs, errors) in enumerate(stream(_BatchDecoder(records, planned, encoder.loader()))):
            results = _encode_safely(encoder, inputs, errors)
            todo = [k for k, i in enumerate(items) if pending[i]]
            batch = _part_args([items[k] for k in todo], [results[k] for k in todo])
            if hold_last is not None and j == len(planned) - 1:
                hold_last.append(batch)
            else:
                sink.put(batch, batch_tag(b))
            done += len(todo)
            if on_done:
                on_done(len(todo))
    return done


def extract_modality(
    writer: StoreWriter,
    records: list[UtteranceRecord],
    encoder: Encoder,
    cfg: PipelineConfig,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ModalityReport:
    start = time.perf_counter()
    mw = writer.modality(encoder.modality, encoder.spec(), overwrite=overwrite)
    pending = ~mw.settled()
    planned = [(b, items) for b, items in enumerate(plan_modality(encoder, records)) if pending[items].any()]
    total, done = int(pending.sum()), 0
    if progress:
        progress(encoder.modality, 0, total)

    def advance(n):
        nonlocal done
        done += n
        if progress:
            progress(encoder.modality, done, total)

    last: list = []  # the last batch goes straight into finalize's layout
    encoded = encode_batches(
        encoder,
        records,
        planned,
        pending,
        mw,
        lambda ds: loader_stream(ds, cfg.extract.num_workers if encoder.reads_files else 0),
        advance,
        hold_last=last,
    )
    report = ModalityReport(encoder.modality, encoded=encoded, forward_seconds=encoder.forward_seconds)
    finalize_start = time.perf_counter()
    report.counts = mw.finalize(cfg.store.chunk_frames, last_batch=last[0] if last else None)
    report.finalize_seconds = time.perf_counter() - finalize_start
    report.failures = dict(mw.group.attrs.get("failures", {}))
    report.seconds = time.perf_counter() - start
    return report


def extract(
    records: list[UtteranceRecord],
    out: Path,
    corpus: str,
    label_set: LabelSet,
    cfg: PipelineConfig,
    modalities: list[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> list[ModalityReport]:
    """Extract every requested modality of `records` into the store at `out`."""
    device = resolve_device(cfg.extract.device)
    writer = open_or_create_store(out, records, corpus, label_set, cfg)
    reports = []
    with cpu_threads(cfg.extract.cpu_threads):
        for modality in modalities or cfg.extract.modalities:
            encoder = build_encoder(modality, cfg.extract, device)
            reports.append(extract_modality(writer, records, encoder, cfg, overwrite, progress))
            del encoder  # one model in memory at a time
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return reports


# ---------------------------------------------------------------------------- internals


class _BatchDecoder(torch.utils.data.Dataset):
    """Decodes one planned batch per item; failures travel back as reasons, not exceptions.
    `records` is a list or a dict, indexed by utterance index."""

    def __init__(self, records, planned: list[tuple[int, np.ndarray]], load: Callable):
        self.records, self.planned, self.load = records, planned, load

    def __len__(self) -> int:
        return len(self.planned)

    def __getitem__(self, j: int) -> tuple[int, list[int], list[Any], dict[int, str]]:
        b, batch = self.planned[j]
        items, inputs, errors = [int(i) for i in batch], [], {}
        for k, i in enumerate(items):
            try:
                inputs.append(self.load(self.records[i]))
            except FileNotFoundError as err:
                inputs.append(None)
                errors[k] = f"missing input file: {err}"
            except Exception as err:  # a corrupt file fails its item, never the run
                inputs.append(None)
                errors[k] = str(err) or type(err).__name__
        return b, items, inputs, errors


def loader_stream(dataset: _BatchDecoder, num_workers: int):
    """Decoded batches from DataLoader worker processes (in order). This process decodes the
    first batch itself while the workers start (about 60 ms here) and decode the next ones:
    nothing can overlap the first batch's decoding, so it should not also wait for a fork."""
    if num_workers == 0 or len(dataset) < 2:
        yield from (dataset[j] for j in range(len(dataset)))
        return
    rest = torch.utils.data.Subset(dataset, range(1, len(dataset)))
    workers = iter(
        torch.utils.data.DataLoader(
            rest,
            batch_size=None,
            collate_fn=_to_shared,
            shuffle=False,
            num_workers=min(num_workers, len(rest)),
            prefetch_factor=2,
        )
    )
    yield dataset[0]
    for b, items, inputs, errors in workers:
        yield b, items, _from_shared(inputs), errors


def _to_shared(batch: tuple) -> tuple:
    """In a worker: the batch's arrays copied into one shared-memory tensor, which travels as a
    file descriptor; pickled through the pipe they cost the main process 15-20 ms per 8 MB of
    audio here, packed about 4 ms."""
    b, items, inputs, errors = batch
    arrays = [x for x in inputs if isinstance(x, np.ndarray)]
    flat = torch.empty(sum(x.nbytes for x in arrays), dtype=torch.uint8).share_memory_()
    buffer, at = flat.numpy(), 0
    for x in arrays:
        buffer[at : at + x.nbytes] = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
        at += x.nbytes
    layout = [_Slot(x.dtype.str, x.shape) if isinstance(x, np.ndarray) else x for x in inputs]
    return b, items, (flat, layout), errors


@dataclass(frozen=True)
class _Slot:
    """Where an array sits in a shared batch tensor: its dtype and shape (in input order)."""

    dtype: str
    shape: tuple[int, ...]


def _from_shared(packed: tuple) -> list:
    """The inputs of `_to_shared`, as views of the shared tensor (no copy)."""
    flat, layout = packed
    buffer, at, inputs = flat.numpy(), 0, []
    for entry in layout:
        if isinstance(entry, _Slot):
            dtype = np.dtype(entry.dtype)
            size = int(np.prod(entry.shape)) * dtype.itemsize
            inputs.append(buffer[at : at + size].view(dtype).reshape(entry.shape))
            at += size
        else:
            inputs.append(entry)
    return inputs


def thread_stream(dataset: _BatchDecoder, depth: int = 2):
    """Decoded batches from a thread (inside dask workers, which may not start processes);
    PyAV and libsndfile release the GIL while they decode."""
    return prefetch((dataset[j] for j in range(len(dataset))), depth)


def _encode_safely(encoder: Encoder, inputs: list, errors: dict[int, str]) -> list[EncodeResult]:
    """Encode a batch; if the batch fails as a whole, retry items alone so one bad input fails alone."""
    failed = {k: EncodeResult(None, Status.FAILED, reason) for k, reason in errors.items()}
    live = [k for k in range(len(inputs)) if k not in failed]
    try:
        out = encoder.encode([inputs[k] for k in live])
        return [failed.get(k) or out[live.index(k)] for k in range(len(inputs))]
    except Exception:
        if len(live) <= 1:
            for k in live:
                failed[k] = EncodeResult(None, Status.FAILED, "encoder error")
            return [failed[k] for k in range(len(inputs))]
    results = []
    for k in range(len(inputs)):
        if k in failed:
            results.append(failed[k])
            continue
        try:
            results.append(encoder.encode([inputs[k]])[0])
        except Exception as err:
            results.append(EncodeResult(None, Status.FAILED, f"encoder error: {err}"))
    return results


def _part_args(items: list[int], results: list[EncodeResult]) -> tuple:
    """`write_part`'s (items, features, status, reasons) for a batch of results."""
    return (
        items,
        [r.features for r in results],
        [r.status for r in results],
        {i: r.reason for i, r in zip(items, results) if r.reason},
    )


class _BackgroundWriter:
    """Writes staged parts on a thread so the encoder never waits for the disk."""

    def __init__(self, mw):
        self.mw = mw
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def put(self, batch: tuple, tag: str = "") -> None:
        """`batch`: `write_part`'s arguments (see `_part_args`)."""
        if self.error:
            raise self.error
        if len(batch[0]):
            self.queue.put((batch, tag))

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error:
                continue
            batch, tag = job
            try:
                self.mw.write_part(*batch, writer_id=tag)
            except BaseException as err:  # surfaced on the main thread
                self.error = err

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error and exc[0] is None:
            raise self.error

"""The batch loop both executors run: decode planned batches, encode them, stage the results.

Decoding runs in DataLoader worker processes (one machine) or on a thread (inside a dask
worker, which may not start processes); the encoder runs in the calling process; results go to
a writer thread, so decoding, compute and writing overlap. Per-item problems (a file that does
not decode, an encoder that raises on one input) become item statuses with their reason; what
concerns the whole run (a full disk, no memory) stops it.
"""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from cmarr.extract.degrade import degraded_loader
from cmarr.extract.encoders import Encoder, EncodeResult
from cmarr.extract.media.span import Decoded
from cmarr.shared.prefetch import prefetch
from cmarr.shared.store import Status
from cmarr.shared.store.writer import ModalityWriter

RUN_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM}  # OSErrors that stop the run (see concerns_the_run)


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
    degrade: Callable | None = None,
) -> int:
    """Decode, encode and stage planned batches `(b, items)`; only items whose `pending` is set
    are written (the others are in the batch for its shape only). `stream(dataset)` yields the
    decoded batches. With a `hold_last` list, the last batch goes into it as `write_part`
    arguments instead of being staged (for `finalize(last_batch=...)`). `degrade(media, utterance id)`
    degrades each decoded input (`cmarr-extract --degrade`). Returns the number of items encoded."""
    done = 0
    decoded = stream(_BatchDecoder(records, planned, degraded_loader(encoder.loader(), degrade)))
    with _BackgroundWriter(mw) as sink:
        for j, (b, items, inputs, errors, notes) in enumerate(decoded):
            results = _encode_safely(encoder, inputs, errors)
            for k, note in notes.items():
                results[k] = with_reason(results[k], note)
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


class _BatchDecoder(torch.utils.data.Dataset):
    """Decodes one planned batch per item; an input's failure travels back as its reason, and a
    loader's note (`Decoded.note`) with it. `records` is a list or a dict, indexed by utterance index."""

    def __init__(self, records, planned: list[tuple[int, np.ndarray]], load: Callable):
        self.records, self.planned, self.load = records, planned, load

    def __len__(self) -> int:
        return len(self.planned)

    def __getitem__(self, j: int) -> tuple[int, list[int], list[Any], dict[int, str], dict[int, str]]:
        """(batch number, items, inputs, errors by position, notes by position)."""
        b, batch = self.planned[j]
        items, inputs, errors, notes = [int(i) for i in batch], [], {}, {}
        for k, i in enumerate(items):
            try:
                value = self.load(self.records[i])
            except FileNotFoundError as err:
                value, errors[k] = None, f"missing input file: {err}"
            except Exception as err:  # a corrupt file fails its item, never the run
                if concerns_the_run(err):
                    raise
                value, errors[k] = None, str(err) or type(err).__name__
            if isinstance(value, Decoded):
                value, notes[k] = value.value, value.note
            inputs.append(value)
        return b, items, inputs, errors, {k: note for k, note in notes.items() if note}


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
    for b, items, inputs, errors, notes in workers:
        yield b, items, _from_shared(inputs), errors, notes


def _to_shared(batch: tuple) -> tuple:
    """In a worker: the batch's arrays copied into one shared-memory tensor, which travels as a
    file descriptor; pickled through the pipe they cost the main process 15-20 ms per 8 MB of
    audio here, packed about 4 ms."""
    b, items, inputs, errors, notes = batch
    arrays = [x for x in inputs if isinstance(x, np.ndarray)]
    flat = torch.empty(sum(x.nbytes for x in arrays), dtype=torch.uint8).share_memory_()
    buffer, at = flat.numpy(), 0
    for x in arrays:
        buffer[at : at + x.nbytes] = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
        at += x.nbytes
    layout = [_Slot(x.dtype.str, x.shape) if isinstance(x, np.ndarray) else x for x in inputs]
    return b, items, (flat, layout), errors, notes


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
    """Encode a batch; if the batch fails as a whole, encode its items alone, so that one bad input
    fails alone. A failure's reason always carries the exception's text."""
    results = {k: EncodeResult(None, Status.FAILED, reason) for k, reason in errors.items()}
    live = [k for k in range(len(inputs)) if k not in results]
    try:
        if live:
            results.update(zip(live, encoder.encode([inputs[k] for k in live])))
    except Exception as err:
        if concerns_the_run(err):
            raise
        if len(live) == 1:
            results[live[0]] = _failure(err)
        else:
            for k in live:
                try:
                    results[k] = encoder.encode([inputs[k]])[0]
                except Exception as err_k:
                    if concerns_the_run(err_k):
                        raise
                    results[k] = _failure(err_k)
    return [results[k] for k in range(len(inputs))]


def _failure(err: Exception) -> EncodeResult:
    """The item's failure, with the exception's text on one line."""
    return EncodeResult(None, Status.FAILED, f"encoder error: {' '.join(str(err).split()) or type(err).__name__}")


def with_reason(result: EncodeResult, note: str) -> EncodeResult:
    """`result` with `note` added to its reason (kept with the item whatever its status)."""
    return replace(result, reason="; ".join(x for x in (result.reason, note) if x))


def concerns_the_run(err: BaseException) -> bool:
    """A full disk or no memory is the machine's problem, not one input's: it stops the run (the
    command then says how to resume) instead of failing items one after another."""
    return isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno in RUN_ERRNOS)


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

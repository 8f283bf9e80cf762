"""The one extraction entry point: corpus records -> encoders -> the feature store.

`extract_corpus` runs the same sequence for every modality, whatever executes the encoders: the
encoder's spec and batch plan over the whole corpus, the modality's writer (resume: settled items
are skipped), the pending batches encoded and staged, finalize. An executor owns the models and
runs the batch loop (`batch_loop.py`): `LocalExecutor` in this process, `DaskExecutor`
(distributed.py) on a dask cluster. Both stage the same parts from the same plan, so they write
the same store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from cmarr.extract.batch_loop import encode_batches, loader_stream
from cmarr.extract.batching import plan_batches
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.degrade import check_degradation, degrade_records, media_degrader, recorded_degradation
from cmarr.extract.encoders import Encoder, build_encoder, check_settings
from cmarr.extract.store_sync import open_store
from cmarr.shared.config import PipelineConfig, with_overrides
from cmarr.shared.devices import cpu_threads, resolve_device
from cmarr.shared.errors import ConfigError
from cmarr.shared.labels import LabelSet
from cmarr.shared.store import ModalitySpec, Status, StoreWriter
from cmarr.shared.store.lock import store_lock
from cmarr.shared.store.writer import ModalityWriter

Progress = Callable[[str, int, int], None]  # (modality, items done, items to do)


@dataclass
class ModalityReport:
    modality: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # utterance id -> reason
    notes: dict[str, str] = field(default_factory=dict)  # utterance id -> note, for items extracted ok
    absent: dict[str, tuple[str, str]] = field(default_factory=dict)  # utterance id -> (outcome, why), real missing
    encoded: int = 0  # items encoded in this run (the rest were already settled)
    seconds: float = 0.0
    forward_seconds: float = 0.0
    finalize_seconds: float = 0.0


@dataclass
class ExtractionReport:
    """What one `extract_corpus` call did."""

    store: Path
    modalities: list[ModalityReport]
    updated: dict[str, int] = field(default_factory=dict)  # utterance-table column -> utterances changed


@dataclass
class Encoded:
    """An executor's account of one modality's pending batches."""

    encoded: int  # items encoded
    forward_seconds: float
    last_batch: tuple | None = None  # `write_part` arguments left for `finalize` (local executor only)


class Executor(Protocol):
    """Where the encoders run. `cfg` is the config as this executor runs it (what the store records)."""

    cfg: PipelineConfig

    def check(self, modalities: list[str]) -> None:
        """Refuse settings the models cannot honour (ConfigError), before any item is encoded."""

    def plan(self, modality: str, records: list[UtteranceRecord]) -> tuple[ModalitySpec, list[np.ndarray]]:
        """The encoder's spec and its batch plan over the whole corpus."""

    def encode(
        self,
        modality: str,
        mw: ModalityWriter,
        records: list[UtteranceRecord],
        planned: list[tuple[int, np.ndarray]],
        pending: np.ndarray,
        advance: Callable[[int], None],
    ) -> Encoded:
        """Encode and stage the planned batches `(b, items)`; only `pending` items are written."""


def extract_corpus(
    records: list[UtteranceRecord],
    out: Path,
    corpus: str,
    label_set: LabelSet,
    cfg: PipelineConfig,
    modalities: list[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    executor: Any = None,
) -> ExtractionReport:
    """Extract `records` into the store at `out` (created, resumed or brought up to date).

    `modalities` overrides `extract.modalities` (and is recorded as such); `overwrite` replaces a
    modality written with another encoder config, and lets changed utterance times through (their
    features are re-extracted). `executor`: None (this process), a `distributed.Client`, or an
    `Executor`. Only one extraction at a time holds a store (StoreBusyError otherwise)."""
    if modalities is not None:
        cfg = with_overrides(cfg, {"extract.modalities": list(modalities)}, "--modalities")
    if not records:
        classes = ", ".join(label_set.classes)
        raise ConfigError(f"{corpus}: no utterances in the label set {label_set.name!r} ({classes})")
    check_degradation(cfg.extract.degrade)  # a bad --degrade stops the run before any item
    records = degrade_records(records, cfg.extract.degrade)  # transcripts; audio and video as they decode
    out = Path(out)
    with store_lock(out), open_executor(executor, cfg) as run:
        run.check(run.cfg.extract.modalities)
        # the settings as given: a cluster's executor resolves `auto` to its workers' device, which
        # would make the same command's store another config (and print) than a single process's
        writer, updated = open_store(out, records, corpus, label_set, cfg, overwrite)
        reports = [extract_modality(writer, records, m, run, overwrite, progress) for m in run.cfg.extract.modalities]
    return ExtractionReport(out, reports, updated)


def extract_modality(
    writer: StoreWriter,
    records: list[UtteranceRecord],
    modality: str,
    run: Executor,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ModalityReport:
    """One modality, from its batch plan to a finalized group."""
    start = time.perf_counter()
    spec, plan = run.plan(modality, records)
    degradation = recorded_degradation(modality, run.cfg.extract.degrade)
    mw = writer.modality(modality, replace(spec, dtype=run.cfg.store.dtype, degradation=degradation), overwrite)
    pending = ~mw.settled()
    planned = [(b, items) for b, items in enumerate(plan) if pending[items].any()]
    done = run.encode(modality, mw, records, planned, pending, _counter(progress, modality, int(pending.sum())))
    report = ModalityReport(modality, encoded=done.encoded, forward_seconds=done.forward_seconds)
    finalize_start = time.perf_counter()
    report.counts = mw.finalize(run.cfg.store.chunk_frames, last_batch=done.last_batch)
    report.finalize_seconds = time.perf_counter() - finalize_start
    report.failures = dict(mw.group.attrs.get("failures", {}))
    outcome = dict(zip((r.id for r in records), map(Status, mw.current_status())))
    for utt, note in mw.group.attrs.get("notes", {}).items():
        if outcome.get(utt) == Status.OK:
            report.notes[utt] = note
        elif utt in outcome and outcome[utt].missing:
            report.absent[utt] = (outcome[utt].label, note)
    report.seconds = time.perf_counter() - start
    return report


def plan_modality(encoder: Encoder, records: list[UtteranceRecord]) -> list[np.ndarray]:
    """The batch plan over the whole corpus (the same for every run, shard and worker)."""
    return plan_batches(encoder.costs(records), encoder.budget)


@contextlib.contextmanager
def open_executor(executor: Any, cfg: PipelineConfig) -> Iterator[Executor]:
    """`executor` as an Executor: None -> this process, a dask Client -> its cluster."""
    if executor is None:
        executor = LocalExecutor(cfg)
    elif not hasattr(executor, "encode"):  # a distributed.Client
        from cmarr.extract.distributed import DaskExecutor

        executor = DaskExecutor(executor, cfg)
    with executor:
        yield executor


class LocalExecutor:
    """Encoders in this process, one model in memory at a time; media decode in DataLoader
    processes (`extract.num_workers`). `encoders` may hand in ready models (benchmarks)."""

    def __init__(self, cfg: PipelineConfig, encoders: dict[str, Encoder] | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.extract.device)
        self.encoders = dict(encoders or {})
        self._threads = contextlib.ExitStack()

    def __enter__(self) -> LocalExecutor:
        self._threads.enter_context(cpu_threads(self.cfg.extract.cpu_threads))
        return self

    def __exit__(self, *exc) -> None:
        self.encoders.clear()
        self._threads.close()

    def encoder(self, modality: str) -> Encoder:
        if modality not in self.encoders:
            self.encoders.clear()  # one model in memory at a time
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.encoders[modality] = build_encoder(modality, self.cfg.extract, self.device)
        return self.encoders[modality]

    def check(self, modalities: list[str]) -> None:
        for modality in modalities:
            check_settings(modality, self.cfg.extract)

    def plan(self, modality: str, records: list[UtteranceRecord]) -> tuple[ModalitySpec, list[np.ndarray]]:
        encoder = self.encoder(modality)
        return encoder.spec(), plan_modality(encoder, records)

    def encode(self, modality, mw, records, planned, pending, advance) -> Encoded:
        encoder = self.encoder(modality)
        before, last = encoder.forward_seconds, []  # the last batch goes straight into finalize's layout
        workers = self.cfg.extract.num_workers if encoder.reads_files else 0
        degrade = media_degrader(modality, self.cfg.extract)  # None: clean
        encoded = encode_batches(
            encoder, records, planned, pending, mw, lambda ds: loader_stream(ds, workers), advance, last, degrade
        )
        return Encoded(encoded, encoder.forward_seconds - before, last[0] if last else None)


def _counter(progress: Progress | None, modality: str, total: int) -> Callable[[int], None]:
    """`advance(n)`: n more items done, reported to `progress` as (modality, done, total)."""
    done = 0
    if progress:
        progress(modality, 0, total)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(modality, done, total)

    return advance

"""The encoder interface and registry: each encoder is a name, a config section and a class.

Work is split so the expensive parts overlap: `load` (decoding, in DataLoader worker processes),
`encode` (the forward pass on the device, in the main process), writing (a background thread).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.shared.devices import autocast
from cmarr.shared.store.schema import ModalitySpec, Status


@dataclass
class EncodeResult:
    features: np.ndarray | None  # [frames, dim] float32, None when status is not OK
    status: Status
    reason: str = ""


class Encoder(ABC):
    """One modality's frozen encoder."""

    modality: str
    budget: int  # sum of item costs allowed in one batch
    reads_files: bool = True  # False: inputs come from the records alone; no decoding processes needed

    def __init__(self, device: torch.device, amp: str):
        self.device = device
        self.amp = amp
        self.forward_seconds = 0.0  # time spent in forward passes (for the throughput report)

    @abstractmethod
    def spec(self) -> ModalitySpec: ...

    @abstractmethod
    def cost(self, record: UtteranceRecord) -> int:
        """Cheap size estimate (tokens, samples, frames) for sorting and batch budgets."""

    def costs(self, records: list[UtteranceRecord]) -> np.ndarray:
        """`cost` of every record (encoders override it when they can do it in one batched call)."""
        return np.array([self.cost(r) for r in records], dtype=np.int64)

    @abstractmethod
    def loader(self) -> Callable[[UtteranceRecord], Any]:
        """A picklable function that decodes one record's input (it runs in DataLoader worker
        processes, so it must not hold the model); it raises to fail the item."""

    @abstractmethod
    def encode(self, inputs: list[Any]) -> list[EncodeResult]:
        """Encode a batch of loaded inputs (None for items with no input)."""

    def autocast(self):
        return autocast(self.device, self.amp)

    @contextlib.contextmanager
    def timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.forward_seconds += time.perf_counter() - start

"""Which utterances share a training batch each epoch (`train.batching`), the same for every system.

- `shuffled`: a random order cut into batches (block-local when reading lazily), as before issue 34:
  a batch is padded to its longest utterance, and on an IEMOCAP-like corpus most of its steps are
  padding (batch 128: the longest of 128 log-normal lengths is about 4x their mean).
- `bucketed` (default): utterances of similar length together, lhotse's bucketing sampler with a
  fixed batch size. The training rows are cut into `train.length_buckets` length bands of equal
  total length (its equal-duration buckets); every epoch each band is shuffled, the bands are laid
  end to end in length order and cut into batches, and the batches are shuffled. So a batch is a
  random draw of one band (or of neighbouring ones where a cut straddles them, as in the long
  tail, whose bands hold few utterances), and the epoch visits the bands in a random order; every
  training utterance is in exactly one batch. When the store is read lazily this happens within
  windows of a few store blocks (fewer than the reader caches), the windows in the blocks' random
  order, so consecutive batches still share blocks and each block is decoded about once per epoch.

A batch's composition changes its padding, and so what a model that reads padding computes (the
MMIN family's published encoders), and which utterances meet in in-batch terms (contrastive
losses): results change as another shuffle would change them, equal in distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from cmarr.shared.train_config import TrainConfig

BATCHINGS = ("bucketed", "shuffled")


@dataclass(frozen=True)
class Batching:
    """How an epoch's training batches are formed (the protocol keys `train.batching`, `train.length_buckets`)."""

    kind: Literal["bucketed", "shuffled"] = "bucketed"
    buckets: int = 10  # length bands of equal total length (lhotse's num_buckets); 1 = no grouping by length

    @classmethod
    def of(cls, cfg: TrainConfig) -> Batching:
        return cls(cfg.batching, cfg.length_buckets)


def length_bands(rows: np.ndarray, key: np.ndarray, buckets: int) -> list[np.ndarray]:
    """`rows` in ascending `key` (N,) (ties in row order), split into `buckets` bands of about equal
    total key (lhotse's `estimate_duration_buckets`: equal duration, not equal count, so the long
    tail's bands are narrow in length and few utterances long, and pad little)."""
    ranked = rows[np.argsort(key[rows], kind="stable")]
    total = np.cumsum(key[ranked], dtype=np.float64)
    if not len(ranked) or total[-1] <= 0:
        return [ranked] if len(ranked) else []
    cuts = np.searchsorted(total, total[-1] * np.arange(1, buckets) / buckets, side="right")
    return [b for b in np.split(ranked, np.unique(cuts)) if len(b)]


def bucketed_batches(bands: list[np.ndarray], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches over `bands` (ascending length): each band shuffled, the bands end to end,
    cut into batches of `batch_size` and the batches shuffled. A last batch of one utterance joins
    another (in-batch terms need two rows), so every utterance of the bands is in exactly one batch."""
    order = np.concatenate([rng.permutation(b) for b in bands]) if bands else np.zeros(0, np.int64)
    n = len(order)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes = sizes[:-1]
        sizes[-1] += 1
    if len(sizes) == 1 and sizes[0] < 2:
        return []
    sizes = rng.permutation(sizes)  # the short batch at a random length, not always the longest band's
    cuts = np.cumsum(sizes)[:-1]
    batches = np.split(order, cuts)
    return [batches[k] for k in rng.permutation(len(batches))]


def padding_share(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """The share of padded steps when `batches` are each padded to their longest `lengths` (N,)
    (at least one step, as collate pads)."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * max(1, int(lengths[b].max())) for b in batches if len(b))
    return 1.0 - real / padded if padded else 0.0


__all__ = ["BATCHINGS", "Batching", "bucketed_batches", "length_bands", "padding_share"]

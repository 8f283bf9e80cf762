"""Missing modalities, in one place: the test conditions and the training-time samplers.

A *condition* names the modalities given (paper notation: t text, s speech, v video). Every test
utterance is scored under the six missing conditions and the full one (Table 2's rows). In
training, a *sampler* decides per epoch which modalities each utterance gives:

- `none`: every modality the utterance really has (full-data stages: the Baseline, pretraining);
- `six`: one of the six missing conditions per utterance per epoch, uniformly (the MMIN family's and
  cmarr's default; `include_full_condition` adds the full one);
- `batch-schedule`: DiCMoR's ordered schedule, a share of the epoch's batches dropping two
  modalities, then one, then none, the same modalities for the whole batch;
- `fixed-rate`: a CPM-Net-style mask drawn once per split and kept every epoch, at least one
  modality kept per utterance (GCNet's CRA);
- `drop-rate`: per utterance per epoch, with probability `rate` one of the six missing conditions
  (uniformly), else the full one (MPLMM's `get_missing_mode` at its `drop_rate`);
- `epoch-rate`: a CPM-Net-style mask at `rate` drawn anew every epoch (GCNet's own training).

A modality the store lacks for an utterance (no face, no transcript) is never given, whatever the
sampler says: a condition is drawn among those the utterance can satisfy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cmarr.shared.modalities import LETTER, MODALITIES, TABLE_ORDER


@dataclass(frozen=True)
class MissingCondition:
    given: frozenset[str]  # the modalities this condition gives the model

    @property
    def name(self) -> str:
        """Paper notation, e.g. '{s,t}'; letters in the order of Table 2 (s, v, t)."""
        return "{" + ",".join(LETTER[m] for m in TABLE_ORDER if m in self.given) + "}"

    @property
    def is_full(self) -> bool:
        return self.given == frozenset(MODALITIES)


def _c(*mods: str) -> MissingCondition:
    return MissingCondition(frozenset(mods))


# Table 2's row order: {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, then the full condition.
MISSING = (_c("text"), _c("audio"), _c("video"), _c("video", "text"), _c("audio", "video"), _c("audio", "text"))
FULL = _c(*MODALITIES)
ALL = MISSING + (FULL,)
SAMPLERS = ("none", "six", "batch-schedule", "fixed-rate", "drop-rate", "epoch-rate")


def condition_masks(conditions: list[MissingCondition]) -> dict[str, np.ndarray]:
    """Which rows give each modality, {modality: (B,) bool}, for per-row conditions."""
    return {m: np.array([m in c.given for c in conditions], dtype=bool) for m in MODALITIES}


def eligible(present: dict[str, np.ndarray], indices: np.ndarray, condition: MissingCondition) -> np.ndarray:
    """(len(indices),) bool: rows whose store holds every modality the condition gives (the others
    are not evaluated in it)."""
    ok = np.ones(len(indices), bool)
    for m in condition.given:
        ok &= present[m][indices]
    return ok


class Sampler:
    """Draws each epoch's availability; `draw` is called once per epoch with that epoch's batches."""

    full_data = False  # trains on utterances that have every modality (see `training_rows`)

    def draw(self, present: dict[str, np.ndarray], batches: list[np.ndarray], rng: np.random.Generator):
        """Per batch, {modality: (len(batch),) bool}. Draws in batch order, so the RNG stream is fixed."""
        raise NotImplementedError


class ConditionSampler(Sampler):
    """One condition per utterance per epoch, uniformly among `conditions` that it can satisfy."""

    def __init__(self, conditions: tuple[MissingCondition, ...], full_data: bool = False):
        self.conditions, self.full_data = conditions, full_data

    def draw(self, present, batches, rng):
        return [condition_masks([self._one(present, int(i), rng) for i in b]) for b in batches]

    def _one(self, present, i: int, rng) -> MissingCondition:
        usable = [c for c in self.conditions if all(present[m][i] for m in c.given)]
        if not usable:  # the utterance lacks what every condition needs: give what it has
            return MissingCondition(frozenset(m for m in MODALITIES if present[m][i]))
        return usable[rng.integers(len(usable))]


class DropRateSampler(Sampler):
    """Per utterance per epoch: with probability `rate` one of the six missing conditions it can
    satisfy, uniformly, else the full condition (MPLMM's `get_missing_mode` at `drop_rate`)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.missing, self.full = ConditionSampler(MISSING), ConditionSampler((FULL,))

    def draw(self, present, batches, rng):
        return [condition_masks([self._one(present, int(i), rng) for i in b]) for b in batches]

    def _one(self, present, i: int, rng) -> MissingCondition:
        among = self.missing if rng.random() < self.rate else self.full
        return among._one(present, i, rng)


class BatchScheduleSampler(Sampler):
    """DiCMoR's missing schedule at rate `rate` (its `miss_2`/`miss_1` tables, DICMOR.py): the first
    share of an epoch's batches keeps one modality, the next share keeps two, the rest all three;
    which modalities is drawn per batch. 2a + b = 3 * rate (the author, DiCMoR issue #1).

    The shares are counted as the published code counts them: batch k of the first group is one
    while k / N' < share, N' the epoch's batch count rounded to tens (`np.round`, half to even), so
    37 batches at rate 0.5 give 28 + 4 + 5, not 25 + 3 + 9. Up to 5 batches N' is 0 there and every
    batch would be complete; here N' is at least 10. A row that lacks every modality its batch keeps
    (a really missing face) keeps one it has, drawn, so that no row is left with nothing."""

    TWO_MISSING = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.5, 5: 0.7, 6: 0.9, 7: 1.0}
    ONE_MISSING = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.2, 5: 0.1, 6: 0.0, 7: 0.0}

    def __init__(self, rate: float):
        key = int(round(rate * 10))
        if key not in self.TWO_MISSING:
            raise ValueError(f"DiCMoR's schedule is defined for rates 0.1-0.7, got {rate}")
        self.two, self.one = self.TWO_MISSING[key], self.ONE_MISSING[key]

    def counts(self, n: int) -> tuple[int, int]:
        """(batches keeping one modality, batches keeping two) of an epoch of `n` batches."""
        scale = max(10, 10 * round(n / 10))
        n_two = sum(1 for k in range(n) if k / scale < self.two)
        n_one = sum(1 for k in range(n - n_two) if k / scale < self.one)
        return n_two, n_one

    def draw(self, present, batches, rng):
        n_two, n_one = self.counts(len(batches))
        out = []
        for k, b in enumerate(batches):
            keep = 1 if k < n_two else 2 if k < n_two + n_one else 3
            given = set(rng.choice(len(MODALITIES), size=keep, replace=False).tolist())
            rows = {m: np.array([j in given and present[m][i] for i in b], bool) for j, m in enumerate(MODALITIES)}
            for r in np.flatnonzero(~np.any([rows[m] for m in MODALITIES], 0)):
                has = [m for m in MODALITIES if present[m][b[r]]]
                if has:
                    rows[has[rng.integers(len(has))]][r] = True
            out.append(rows)
        return out


class FixedRateSampler(Sampler):
    """One mask for the whole run, kept every epoch: each modality entry is missing with probability
    `rate`, at least one modality kept per utterance (CPM-Net's `random_mask`, used by GCNet's CRA).
    The mask comes from its own generator seeded with `seed`, over every utterance of the store, so
    a resumed run draws the same mask."""

    def __init__(self, rate: float, seed: int = 0):
        self.rate, self.seed = rate, seed
        self.mask: dict[str, np.ndarray] | None = None

    def draw(self, present, batches, rng):
        if self.mask is None:
            self.mask = self._draw_all(present)
        return [{m: self.mask[m][b] for m in MODALITIES} for b in batches]

    def _draw_all(self, present) -> dict[str, np.ndarray]:
        return rate_mask(present, self.rate, self.seed)


class EpochRateSampler(Sampler):
    """A new CPM-Net-style mask every epoch (GCNet's train_gcnet.py, `--mask-type constant-<rate>`):
    each modality an utterance has is dropped with probability `rate`, independently, and where all
    are dropped one it has, drawn, is kept; drawn per batch from the epoch's generator."""

    def __init__(self, rate: float):
        self.rate = rate

    def draw(self, present, batches, rng):
        out = []
        for b in batches:
            keep = drop_at_rate(np.stack([present[m][b] for m in MODALITIES], 1), self.rate, rng)
            out.append({m: keep[:, j] for j, m in enumerate(MODALITIES)})
        return out


def drop_at_rate(have: np.ndarray, rate: float, gen: np.random.Generator) -> np.ndarray:
    """(N, M) bool: each True entry of `have` dropped with probability `rate`; a row left with none
    keeps one it had, drawn (CPM-Net's `random_mask`: at least one view)."""
    keep = have & (gen.random(have.shape) >= rate)
    for i in np.flatnonzero(have.any(1) & ~keep.any(1)):
        keep[i, gen.choice(np.flatnonzero(have[i]))] = True
    return keep


def rate_mask(present: dict[str, np.ndarray], rate: float, seed: int = 0) -> dict[str, np.ndarray]:
    """{modality: (N,) bool} over every utterance of the store: each modality it has is dropped with
    probability `rate`, independently; where all are dropped, one it has, drawn, is kept (CPM-Net's
    `random_mask`). One generator seeded with `seed` draws in row order: the same store (or a
    degraded copy with the same rows) gets the same mask. The missing-rate protocol's test masks."""
    gen = np.random.default_rng(seed)
    n = len(present[MODALITIES[0]])
    have = np.stack([present[m] for m in MODALITIES], 1)  # (N, M)
    keep = have & (gen.random(have.shape) >= rate)
    for i in np.flatnonzero(have.any(1) & ~keep.any(1)):  # keep one modality it has
        keep[i, gen.choice(np.flatnonzero(have[i]))] = True
    return {m: keep[:, j].copy() for j, m in enumerate(MODALITIES)} if n else {}


def build_sampler(kind: str, include_full: bool = False, rate: float = 0.5, seed: int = 0) -> Sampler:
    """The sampler named `kind` (one of SAMPLERS)."""
    if kind == "none":
        return ConditionSampler((FULL,), full_data=True)
    if kind == "six":
        return ConditionSampler(MISSING + ((FULL,) if include_full else ()))
    if kind == "batch-schedule":
        return BatchScheduleSampler(rate)
    if kind == "fixed-rate":
        return FixedRateSampler(rate, seed)
    if kind == "epoch-rate":
        return EpochRateSampler(rate)
    if kind == "drop-rate":
        return DropRateSampler(rate)
    raise ValueError(f"unknown sampler {kind!r}; choose from {', '.join(SAMPLERS)}")


def training_rows(sampler: Sampler, present: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The rows a stage trains on: full-data stages keep utterances that have every modality."""
    return rows[eligible(present, rows, FULL)] if sampler.full_data else rows

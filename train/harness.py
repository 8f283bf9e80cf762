"""cmarr's protocol as a library, for a researcher's own training loop.

The folds, the training-part normalisation, the missing conditions and the padding below are the
very ones `cmarr-train` uses (`make_splits`, `StoreData.normaliser`, `missing.ALL`, `data.collate`),
so numbers from one's own loop are comparable with cmarr's systems; `score` (train/scoring.py) puts
them in a run's Table 2 with the same statistics:

    from torch.utils.data import DataLoader
    from cmarr import CONDITIONS, StoreDataset, folds, score

    for fold in folds("store/iemocap.zarr"):
        train = StoreDataset(fold.data, fold.train, fold.normaliser)
        for batch in DataLoader(train, batch_size=16, shuffle=True, collate_fn=train.collate):
            ...  # batch.x[m] (B, T_m, F_m), batch.mask[m] (B, T_m), batch.given[m] (B,), batch.labels (B,)
        for condition in CONDITIONS:
            test = StoreDataset(fold.data, fold.test, fold.normaliser, condition=condition)
            ...  # predict each test.ids[i] under condition.name -> a row of mine.csv
    score("runs/demo-comparison-1234abcd", "mine.csv", name="my-method")

Legend: B batch, T_m steps of modality m, F_m its feature width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.config import PipelineConfig, load_config
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store import FeatureStore
from cmarr.train.batch import Batch
from cmarr.train.data import Normaliser, StoreData, collate
from cmarr.train.missing import ALL, MissingCondition, eligible
from cmarr.train.protocol import make_splits
from cmarr.train.run import degradation_warnings
from torch.utils.data import Dataset

CONDITIONS = ALL  # the six missing conditions, then the full one (`.name` "{s,t}", `.given` modalities)


@dataclass(frozen=True)
class Fold:
    """One split of one fold, as cmarr-train trains it: row indices into the store (ids: `.ids`)."""

    number: int  # 1-based, in session order
    split: int  # index among the fold's splits (several only with val_rule = "other-speaker")
    name: str  # the held-out session (session/speaker for other-speaker splits)
    seed: int
    train: np.ndarray  # (N_train,) store rows
    val: np.ndarray  # (N_val,) the selection part: never the test part
    test: np.ndarray  # (N_test,)
    normaliser: Normaliser  # per-feature mean and std over the training part's frames only
    data: StoreData

    def ids(self, part: str) -> list[str]:
        """The utterance ids of "train", "val" or "test"."""
        return [str(i) for i in self.data.store.utterances["id"][getattr(self, part)]]


def folds(
    store, config: str | Path | PipelineConfig | None = None, seed: int = 0, allow_degraded: bool = False
) -> list[Fold]:
    """Every split of leave-one-session-out on `store` (a path or URL, a FeatureStore or a
    StoreData), drawn as cmarr-train draws them for `seed` with the config's `val_rule` and
    `val_fraction` (`config`: a pipeline.toml, a loaded config, or the defaults), every labelled
    utterance used. ConfigError for a store of fewer than two sessions, and, as cmarr-train
    refuses to train on one, for a degraded store (`cmarr-extract --degrade`) unless
    `allow_degraded` (then a UserWarning names the degradation)."""
    cfg = config if isinstance(config, PipelineConfig) else load_config(config)
    data = _data(store, cfg)
    for message in degradation_warnings(data.store, allow_degraded):
        warnings.warn(f"{data.store.location}: {message}", UserWarning, stacklevel=2)
    indices = np.flatnonzero(data.labels >= 0)
    out = []
    for k, fold in enumerate(make_splits(data, indices, None, cfg.train, seed), 1):
        for j, s in enumerate(fold):
            out.append(Fold(k, j, s.name, seed, s.train, s.val, s.test, data.normaliser(s.train), data))
    return out


def _data(store, cfg: PipelineConfig) -> StoreData:
    if isinstance(store, StoreData):
        return store
    return StoreData(
        store if isinstance(store, FeatureStore) else FeatureStore.open(str(store)), non_finite=cfg.train.non_finite
    )


class StoreDataset(Dataset):
    """Utterances `rows` of a store as a torch Dataset: item i is a dict of the utterance's `id`,
    `label` (class index), `features` {m: (T_m, F_m) float32 tensor, normalised with `normaliser`
    when given; (0, F_m) where the utterance does not give m} and `given` {m: bool}.

    `modalities` keeps a subset (the others are never read); `condition` (a MissingCondition or a
    name such as "{s,t}") keeps only the modalities it gives and only the rows whose store holds
    each of them, as cmarr evaluates a condition. Reads are lazy for a store larger than memory
    (StoreData's block cache). `collate` pads a list of items into cmarr's `Batch`."""

    def __init__(
        self,
        data: StoreData,
        rows: np.ndarray,
        normaliser: Normaliser | None = None,
        modalities: tuple[str, ...] = MODALITIES,
        condition: MissingCondition | str | None = None,
    ):
        if unknown := [m for m in modalities if m not in MODALITIES]:
            raise ConfigError(
                f"StoreDataset: unknown modality {', '.join(unknown)}; choose from {', '.join(MODALITIES)}"
            )
        self.data, self.normaliser = data, normaliser
        condition = _condition(condition) if condition is not None else None
        self.modalities = tuple(m for m in modalities if condition is None or m in condition.given)
        rows = np.asarray(rows, np.int64)
        self.rows = rows[eligible(data.present, rows, condition)] if condition is not None else rows
        self.ids = [str(i) for i in data.store.utterances["id"][self.rows]]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        features, given = {}, {}
        for m in MODALITIES:
            given[m] = bool(m in self.modalities and self.data.present[m][row])
            x = self.data.frames(m, np.array([row]))[0] if given[m] else np.zeros((0, self.data.dims[m]), np.float32)
            if given[m] and self.normaliser is not None:
                x = (x - self.normaliser.mean[m]) / self.normaliser.std[m]
            features[m] = torch.from_numpy(np.asarray(x, np.float32))
        return {"id": self.ids[i], "label": int(self.data.labels[row]), "features": features, "given": given}

    def collate(self, items: list[dict]) -> Batch:
        """Items -> Batch (on the CPU): padded as cmarr's trainers pad, `known` equal to `given`."""
        seqs = {m: [it["features"][m].numpy() for it in items] for m in MODALITIES}
        given = {m: np.array([it["given"][m] for it in items], bool) for m in MODALITIES}
        labels = np.array([it["label"] for it in items], np.int64)
        return collate(seqs, self.data.dims, given, given, labels, "cpu")


def _condition(condition: MissingCondition | str) -> MissingCondition:
    if isinstance(condition, MissingCondition):
        return condition
    for c in ALL:
        if c.name == condition:
            return c
    raise ConfigError(f"unknown condition {condition!r}; choose from {', '.join(c.name for c in ALL)}")

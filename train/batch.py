"""The batch every system trains and predicts on: padded, normalised features and which rows give and
hold each modality. `StoreData.batch` (data.py) builds every one, so all systems share one collate
and one padding.

Legend: B batch, T_m steps of modality m, F_m its feature width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Padded, normalised features of B utterances under one missing condition per row.

    Three words, three ideas: the store *has* a modality for an utterance (`StoreData.present`,
    status ok); a condition *gives* it to the model (`given`); its true features are *known* to the
    batch (`known`), what loss targets are made of.

    `given[m]` says which rows *give* modality m to the model in this condition; `known[m]` which
    rows hold m's true features in `x`. In training `known` is every really-present modality (its
    true features are what loss targets are made of); at evaluation `known` equals `given`, so a
    model cannot read a missing modality even by mistake: its rows are zeros with an all-False mask.
    """

    x: dict[str, torch.Tensor]  # (B, T_m, F_m); zeros where not `known`
    mask: dict[str, torch.Tensor]  # (B, T_m) valid steps; all False where not `known`
    given: dict[str, torch.Tensor]  # (B,) bool: given to the model
    known: dict[str, torch.Tensor]  # (B,) bool: true features present in `x` (a superset of `given`)
    labels: torch.Tensor | None = None  # (B,) int64 class indices
    # Dialog structure, only for a model that `reads_dialogs` (StoreData.batch(dialogs=True)): rows of
    # whole dialogs, each contiguous and in time order; None for every other model
    dialog: torch.Tensor | None = None  # (B,) int64 the row's dialog, numbered 0.. in batch order
    speaker: torch.Tensor | None = None  # (B,) int64 the row's speaker within its dialog (sorted ids: 0, 1, ..)

    @property
    def size(self) -> int:
        return len(next(iter(self.given.values())))

    def given_features(self, m: str) -> torch.Tensor:
        """x[m] (B, T_m, F_m) with the rows that do not give m zeroed (the MMIN family's missing input)."""
        return self.x[m] * self.given[m][:, None, None].to(self.x[m].dtype)

    def given_mask(self, m: str) -> torch.Tensor:
        """mask[m] (B, T_m) restricted to the rows that give m."""
        return self.mask[m] & self.given[m][:, None]

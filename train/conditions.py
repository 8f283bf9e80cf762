"""The test conditions: which modalities are given. Paper notation: t text, s speech, v video."""

from __future__ import annotations

from dataclasses import dataclass

from cmarr.shared.modalities import LETTER, MODALITIES, TABLE_ORDER


@dataclass(frozen=True)
class MissingCondition:
    available: frozenset[str]  # store modality names given in this condition

    @property
    def name(self) -> str:
        """Paper notation, e.g. '{s,t}'; letters in the order of Table 2 (s, v, t)."""
        return "{" + ",".join(LETTER[m] for m in TABLE_ORDER if m in self.available) + "}"

    @property
    def is_full(self) -> bool:
        return self.available == frozenset(MODALITIES)


def _c(*mods: str) -> MissingCondition:
    return MissingCondition(frozenset(mods))


# Table 2's row order: {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, then the full condition.
MISSING = (_c("text"), _c("audio"), _c("video"), _c("video", "text"), _c("audio", "video"), _c("audio", "text"))
FULL = _c(*MODALITIES)
ALL = MISSING + (FULL,)

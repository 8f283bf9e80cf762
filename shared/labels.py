"""Emotion label sets: named class lists, and the maps from corpus codes onto them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LabelSet:
    """An ordered class list; `mapping` sends corpus codes (e.g. IEMOCAP 'exc') to a class."""

    name: str
    classes: tuple[str, ...]
    mapping: dict[str, str] = field(default_factory=dict)

    def index(self, code: str) -> int | None:
        """The class index of a corpus code, or None when the code is outside this set."""
        target = self.mapping.get(code, code)
        try:
            return self.classes.index(target)
        except ValueError:
            return None


# The paper's 4-class protocol: happiness and excitement merged (IEMOCAP Table 1: 5,531 utterances).
FOUR_CLASS = LabelSet("4class", ("ang", "hap", "neu", "sad"), {"exc": "hap"})
# A common 6-class IEMOCAP set (happy and excited merged, frustration kept).
SIX_CLASS = LabelSet("6class", ("ang", "hap", "neu", "sad", "fru", "sur"), {"exc": "hap"})
# Every consensus code IEMOCAP uses except 'xxx' (no majority).
IEMOCAP_ALL = LabelSet("all", ("ang", "hap", "exc", "neu", "sad", "fru", "sur", "fea", "dis", "oth"))

LABEL_SETS = {s.name: s for s in (FOUR_CLASS, SIX_CLASS, IEMOCAP_ALL)}


def get_label_set(name: str) -> LabelSet:
    """A named set, or a comma-separated class list for a user's own corpus (`calm,tense`).
    A custom list needs two distinct classes at least: a classifier over one class learns nothing."""
    from cmarr.shared.errors import ConfigError

    if "," not in name:
        if name in LABEL_SETS:
            return LABEL_SETS[name]
        raise ConfigError(
            f"--label-set {name!r}: unknown label set; choose one of {', '.join(LABEL_SETS)}, "
            "or list your classes separated by commas (at least two, e.g. calm,tense)"
        )
    classes = tuple(c.strip() for c in name.split(",") if c.strip())
    if repeated := sorted({c for c in classes if classes.count(c) > 1}):
        raise ConfigError(f"--label-set {name!r}: class {', '.join(repeated)} given more than once")
    if len(classes) < 2:
        raise ConfigError(f"--label-set {name!r}: a label set needs at least two classes (a classifier needs two)")
    return LabelSet("custom", classes)

"""What every corpus reader yields: one record per utterance, plus a dry-run summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class MediaSpan:
    """A media file, optionally cut to [start, end] seconds and cropped to one half of the frame."""

    path: Path
    start: float | None = None
    end: float | None = None
    half: Literal["left", "right"] | None = None  # split-screen dialog videos (IEMOCAP)


@dataclass(frozen=True)
class UtteranceRecord:
    id: str
    label: str  # class name in the reader's label set; "" for an unlabelled utterance (prediction)
    session: str
    speaker: str
    gender: str = ""
    dialog: str = ""
    start: float = float("nan")
    end: float = float("nan")
    text: str | None = None  # the transcript; None = no transcript (a missing modality)
    text_error: str = ""  # why the transcript file could not be read: the item's text fails with it
    audio: MediaSpan | None = None
    video: MediaSpan | None = None
    split_group: str = ""  # cross-validation group; defaults to the session

    def table_row(self, classes: tuple[str, ...]) -> dict[str, Any]:
        """The store's utterance-table row for this record."""
        return {
            "id": self.id,
            "label": classes.index(self.label) if self.label in classes else -1,  # -1: unlabelled
            "label_name": self.label,
            "session": self.session,
            "speaker": self.speaker,
            "gender": self.gender,
            "dialog": self.dialog,
            "start": self.start,
            "end": self.end,
            "split_group": self.split_group or self.session,
        }


@dataclass
class CorpusScan:
    """A reader's result: the records in the label set, and what it noticed on the way."""

    records: list[UtteranceRecord]
    problems: list[str] = field(default_factory=list)  # "file:line: what is wrong"
    excluded: Counter = field(default_factory=Counter)  # labels outside the set -> count

    def summary(self) -> dict[str, Any]:
        """The `--dry-run` JSON: counts per class, session and speaker, media found, problems."""
        recs = self.records
        return {
            "n_utterances": len(recs),
            "per_class": dict(sorted(Counter(r.label for r in recs).items())),
            "per_session": dict(sorted(Counter(r.session for r in recs).items())),
            "per_speaker": dict(sorted(Counter(r.speaker for r in recs).items())),
            "excluded_labels": dict(sorted(self.excluded.items())),
            "media": {
                "text": sum(r.text is not None for r in recs),
                "audio": sum(r.audio is not None and r.audio.path.is_file() for r in recs),
                "video": sum(r.video is not None and r.video.path.is_file() for r in recs),
            },
            "problems": self.problems[:200]
            + ([f"... {len(self.problems) - 200} more"] if len(self.problems) > 200 else []),
        }

    def left_out(self, classes: tuple[str, ...]) -> str | None:
        """One line on the utterances left out for a label outside `classes` (most frequent labels
        first), or None when there are none."""
        if not self.excluded:
            return None
        total = sum(self.excluded.values())
        counts = [f"{label} {n:,}" for label, n in self.excluded.most_common(10)]
        more = f", and {len(self.excluded) - 10} other labels" if len(self.excluded) > 10 else ""
        return (
            f"left out: {total:,} utterance{'s' if total > 1 else ''} whose label is outside the label set "
            f"({', '.join(classes)}): {', '.join(counts)}{more}"
        )

    def label_warnings(self, classes: tuple[str, ...]) -> list[str]:
        """A warning per class of `classes` that no utterance has (training would refuse or never
        score it; said at extraction, before the encoders run), and per left-out label that looks
        like a class written otherwise: another case, or one an abbreviation of the other ('Happy',
        'hap' for 'happy'). Labels match exactly, so such a typo silently shrinks a class. An
        unlabelled corpus (every label empty: utterances to predict) gets no class warning."""
        present = Counter(r.label for r in self.records)
        labelled = any(present.get(c) for c in classes) or self.excluded
        warnings = [
            f"class {c!r} of the label set has no utterance: training will warn that UAR averages the other "
            "classes (and refuses a store with fewer than two)"
            for c in classes
            if labelled and not present.get(c)
        ]
        for label, n in sorted(self.excluded.items()):
            near = [c for c in classes if _looks_alike(label, c)]
            if near:
                warnings.append(
                    f"label {label!r} ({n} utterance{'s' if n > 1 else ''}) is not a class, but looks like "
                    f"{' or '.join(repr(c) for c in near)}: labels match exactly (case too), so "
                    f"{'they are' if n > 1 else 'it is'} left out; write the class's name"
                )
        return warnings


def _looks_alike(label: str, cls: str) -> bool:
    """The same word in another case, or one a prefix of the other (3 letters at least)."""
    a, b = label.strip().casefold(), cls.casefold()
    short, long = sorted((a, b), key=len)
    return a == b or (len(short) >= 3 and long.startswith(short))

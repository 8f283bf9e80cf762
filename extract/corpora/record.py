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

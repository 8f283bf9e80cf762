"""Spans against their media: a span inside its file is read; one running past the end is read as
far as the file goes, with a note for the item; one starting after the end is an input error.

Lengths come from headers (libsndfile's frame count, the container's duration), so `--dry-run`
checks a corpus's spans without decoding anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

END_TOLERANCE_S = 0.05  # a span may end this much after its file without a note (rounded label times)


class MediaError(Exception):
    """An input that cannot be used; the message (naming the file) becomes the item's failure reason."""


@dataclass(frozen=True)
class Decoded:
    """A loader's decoded input together with a note for the item (kept with its status)."""

    value: Any
    note: str = ""


def seconds(x: float) -> str:
    """4.0, 6.5, 3.25: seconds as a person writes them in a message."""
    text = f"{x:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def fit_span(path: Path, length: float, start: float, end: float) -> tuple[float, float, str]:
    """`(start, end, note)` with `end` clipped to the file's `length` (seconds); the note says when
    the span ran past the end. Raises MediaError when the span starts at or after the end."""
    span = f"span {seconds(start)}-{seconds(end)} s"
    if start >= length:
        raise MediaError(f"{path} is {seconds(length)} s, {span} is outside it")
    if end > length + END_TOLERANCE_S:
        note = (
            f"{path} is {seconds(length)} s, {span} runs {seconds(end - length)} s past its end "
            f"(features cover {seconds(start)}-{seconds(length)} s)"
        )
        return start, length, note
    return start, min(end, length), ""


@lru_cache(maxsize=4096)
def media_length(path: Path, kind: str) -> float | None:
    """Seconds of an audio or video file from its header; None when the header does not say."""
    if kind == "audio":
        from cmarr.extract.media.audio import audio_length

        return audio_length(path)
    import av

    with av.open(str(path)) as container:
        if container.duration is not None:
            return container.duration / 1_000_000  # AV_TIME_BASE
        stream = container.streams.video[0] if container.streams.video else None
        if stream is not None and stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
    return None


def span_problems(records, modalities: list[str]) -> list[str]:
    """`--dry-run` problems of the records' media: files not found, spans outside their file or
    running past its end (lengths read from headers only)."""
    problems = []
    for record in records:
        for kind in ("audio", "video"):
            span = getattr(record, kind)
            if kind not in modalities or span is None:
                continue
            if not span.path.is_file():
                problems.append(f"{record.id}: {kind} file {span.path} not found")
                continue
            if span.start is None or span.end is None:
                continue
            try:
                length = media_length(span.path, kind)
                if length is not None and (note := fit_span(span.path, length, span.start, span.end)[2]):
                    problems.append(f"{record.id}: {note}")
            except MediaError as err:
                problems.append(f"{record.id}: {err}")
            except Exception as err:  # an unreadable header: the run fails the item with the decoder's reason
                problems.append(f"{record.id}: {span.path}: cannot read its length ({err})")
    return problems

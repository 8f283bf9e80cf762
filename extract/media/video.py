"""Video decoding with PyAV: frames inside a time span, sampled at a target rate, turned upright
as the file says it should be displayed, cropped to a half of a split-screen frame.

Frames are placed in time by their timestamps, so a variable frame rate is sampled as it was shown.
A raw elementary stream (a camera's .h264, .hevc, .m4v, .mjpeg) has none, and a frame can come
without one: those are timed by their index at the stream's rate (FFmpeg's 25 fps, with a note,
when the stream does not say)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.span import Decoded, MediaError, fit_span

NO_TIMESTAMPS = 0x0080  # AVFMT_NOTIMESTAMPS: the format's packets carry no times (raw elementary streams)
DEFAULT_FPS = 25.0  # what FFmpeg's raw demuxers assume of a stream that does not give its rate


def read_frames(span: MediaSpan, fps: float) -> Decoded:
    """RGB frames [N, H, W, 3] uint8 at about `fps`, from [start, end] (whole file without times),
    upright, cropped to the span's half of a split-screen frame, letterbox bars trimmed; with a
    note when the span runs past the end or the frame rate is a guess. Raises MediaError when
    nothing decodes or the span lies outside the file. A span too short to hold a sampled frame
    gets the frame shown at its start."""
    try:
        with av.open(str(span.path)) as container:
            if not container.streams.video:
                raise MediaError(f"{span.path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames, note = _sample(span, container, stream, fps)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{span.path}: cannot decode video ({err})") from None
    return Decoded(trim_letterbox(np.stack(frames)), note)


def _sample(span: MediaSpan, container, stream, fps: float) -> tuple[list[np.ndarray], str]:
    """The span's frames at about `fps` (the first frame at or after each sample instant), and its note."""
    start, end, note = span.start or 0.0, span.end if span.end is not None else float("inf"), ""
    bounds = (span.start, span.end) if span.start is not None and span.end is not None else None
    if bounds and container.duration is not None:
        start, end, note = fit_span(span.path, container.duration / 1_000_000, *bounds)
    clock = FrameClock.of(span.path, container, stream)
    sought = start > 0 and not clock.raw and stream.time_base is not None
    if sought:
        container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
    frames: list[np.ndarray] = []
    shown_at_start = None  # the last frame before `start`, for spans between two frames
    next_t, t, ended = start, None, True
    for t, frame in clock.times(container.decode(stream), sought):
        if t > end:
            ended = False
            break
        if t + 1e-6 < next_t:
            if t < start:
                shown_at_start = frame
            continue
        frames.append(_crop(upright(frame), span.half))
        while next_t <= t + 1e-6:  # the next sample instant after this frame
            next_t += 1.0 / fps
    if bounds and container.duration is None and ended and t is not None:  # the length is known only now
        start, end, note = fit_span(span.path, t + 1.0 / clock.rate, *bounds)
    if not frames and shown_at_start is not None:
        frames.append(_crop(upright(shown_at_start), span.half))
    if not frames:
        where = "" if span.end is None else f" in [{start:.2f}, {end:.2f}] s"
        raise MediaError(f"{span.path}: no decodable video frames{where}")
    return frames, "; ".join(n for n in (clock.note, note) if n)


@dataclass
class FrameClock:
    """Times of decoded frames: their own timestamps; in a raw stream, or for a frame without one,
    the previous frame's time plus one frame at the stream's rate (the first at 0)."""

    rate: float  # frames per second for frames timed by their index
    raw: bool = False  # the format has no timestamps: every frame is timed by its index
    guess: str = ""  # the note for a rate the stream does not give
    untimed: int = 0  # frames timed by their index so far

    @classmethod
    def of(cls, path: Path, container, stream) -> FrameClock:
        """The clock of a video stream: a raw stream's rate is its codec's (the bitstream's timing)."""
        raw = bool(container.format.flags & NO_TIMESTAMPS)
        rate = stream.codec_context.framerate if raw else stream.guessed_rate or stream.average_rate
        if rate:
            return cls(float(rate), raw)
        guess = (
            f"{path}: the stream does not give its frame rate; frames without timestamps timed at {DEFAULT_FPS:g} fps"
        )
        return cls(DEFAULT_FPS, raw, guess)

    @property
    def note(self) -> str:
        return self.guess if self.untimed else ""

    def times(self, frames: Iterable[av.VideoFrame], sought: bool = False) -> Iterator[tuple[float, av.VideoFrame]]:
        """(seconds, frame) for each frame; after a seek, frames before the first timestamp are left
        out (their place is unknown)."""
        last = None
        for frame in frames:
            t = None if self.raw else timestamp(frame)
            if t is None:
                if last is None and sought:
                    continue
                t = 0.0 if last is None else last + 1.0 / self.rate
                self.untimed += 1
            last = t
            yield t, frame


def timestamp(frame) -> float | None:
    """Seconds of a decoded frame from its presentation timestamp, else its packet's decoding one."""
    stamp = frame.pts if frame.pts is not None else frame.dts
    return None if stamp is None or frame.time_base is None else float(stamp * frame.time_base)


def upright(frame: av.VideoFrame) -> np.ndarray:
    """The frame as RGB [H, W, 3], turned (and mirrored) as its display matrix says: phones store
    portrait video as landscape frames plus a matrix in the track header that players apply."""
    image = frame.to_ndarray(format="rgb24")
    matrix = frame.side_data.get("DISPLAYMATRIX")
    return image if matrix is None else apply_display_matrix(image, np.frombuffer(bytes(matrix), "<i4"))


def apply_display_matrix(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`image` [H, W, ...] as displayed under an ISO-BMFF display matrix (9 int32, 16.16 fixed
    point, row-vector convention: x' = a*x + c*y, y' = b*x + d*y with x right and y down), rounded
    to the nearest quarter turn. PyAV's `VideoFrame.rotation` is the same rotation, counter-clockwise
    (-90: a quarter turn clockwise)."""
    a, b, c, d = (float(v) for v in matrix[[0, 1, 3, 4]])
    if abs(b) + abs(c) > abs(a) + abs(d):  # a quarter turn: x' follows y, y' follows x
        out = image.swapaxes(0, 1)
        flip_rows, flip_cols = b < 0, c < 0
    else:
        out = image
        flip_rows, flip_cols = d < 0, a < 0
    if flip_rows:
        out = out[::-1]
    if flip_cols:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def trim_letterbox(frames: np.ndarray, threshold: int = 16) -> np.ndarray:
    """Drop black bars above and below the picture (IEMOCAP panes show rows ~112-368 of 480):
    face detection then scans only the picture, which is where its time goes."""
    if frames.size == 0:
        return frames  # a pane zero pixels wide: nothing to trim, nothing to detect
    bright = frames.max(axis=(0, 2, 3)) > threshold  # per row, over all frames, columns, channels
    rows = np.flatnonzero(bright)
    if len(rows) == 0:
        return frames  # an all-black clip: leave it for the detector to find nothing
    return frames[:, rows[0] : rows[-1] + 1]


def _crop(frame: np.ndarray, half: str | None) -> np.ndarray:
    if half is None:
        return frame
    mid = frame.shape[1] // 2
    return frame[:, :mid] if half == "left" else frame[:, mid:]

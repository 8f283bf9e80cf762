"""Video decoding with PyAV: frames inside a time span, sampled at a target rate, turned upright
as the file says it should be displayed, cropped to a half of a split-screen frame."""

from __future__ import annotations

import av
import numpy as np
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.span import Decoded, MediaError, fit_span


def read_frames(span: MediaSpan, fps: float) -> Decoded:
    """RGB frames [N, H, W, 3] uint8 at about `fps`, from [start, end] (whole file without times),
    upright, cropped to the span's half of a split-screen frame, letterbox bars trimmed; with a
    note when the span runs past the end. Raises MediaError when nothing decodes or the span lies
    outside the file. A span too short to hold a sampled frame gets the frame shown at its start."""
    start, end, note = span.start or 0.0, span.end if span.end is not None else float("inf"), ""
    frames: list[np.ndarray] = []
    shown_at_start = None  # the last frame before `start`, for spans between two frames
    next_t = start
    try:
        with av.open(str(span.path)) as container:
            if not container.streams.video:
                raise MediaError(f"{span.path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if span.start is not None and span.end is not None and container.duration is not None:
                start, end, note = fit_span(span.path, container.duration / 1_000_000, span.start, span.end)
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time > end:
                    break
                if frame.time + 1e-6 < next_t:
                    if frame.time < start:
                        shown_at_start = frame
                    continue
                frames.append(_crop(upright(frame), span.half))
                while next_t <= frame.time + 1e-6:  # the next sample instant after this frame
                    next_t += 1.0 / fps
            if not frames and shown_at_start is not None:
                frames.append(_crop(upright(shown_at_start), span.half))
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{span.path}: cannot decode video ({err})") from None
    if not frames:
        where = "" if span.end is None else f" in [{start:.2f}, {end:.2f}] s"
        raise MediaError(f"{span.path}: no decodable video frames{where}")
    return Decoded(trim_letterbox(np.stack(frames)), note)


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

"""Video decoding with PyAV: frames inside a time span, sampled at a target rate, cropped to a half."""

from __future__ import annotations

import av
import numpy as np
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.audio import MediaError


def read_frames(span: MediaSpan, fps: float) -> np.ndarray:
    """RGB frames [N, H, W, 3] uint8 at about `fps`, from [start, end] (whole file without times),
    cropped to the span's half of a split-screen frame. Raises MediaError when nothing decodes."""
    start = span.start or 0.0
    end = span.end if span.end is not None else float("inf")
    frames: list[np.ndarray] = []
    next_t = start
    try:
        with av.open(str(span.path)) as container:
            if not container.streams.video:
                raise MediaError(f"{span.path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time > end:
                    break
                if frame.time + 1e-6 < next_t:
                    continue
                frames.append(_crop(frame.to_ndarray(format="rgb24"), span.half))
                while next_t <= frame.time + 1e-6:  # the next sample instant after this frame
                    next_t += 1.0 / fps
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{span.path}: cannot decode video ({err})") from None
    if not frames:
        raise MediaError(f"{span.path}: no decodable video frames in [{start:.2f}, {end:.2f}] s")
    return trim_letterbox(np.stack(frames))


def trim_letterbox(frames: np.ndarray, threshold: int = 16) -> np.ndarray:
    """Drop black bars above and below the picture (IEMOCAP panes show rows ~112-368 of 480):
    face detection then scans only the picture, which is where its time goes."""
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

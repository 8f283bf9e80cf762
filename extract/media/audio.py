"""Audio loading: any libsndfile format, cut to a span, checked finite, down-mixed to mono, resampled with soxr.

A WAV written to a pipe or by a streaming writer cannot have its sizes patched when it ends: ffmpeg
leaves them 0xFFFFFFFF, other writers 0. Both mean "unknown: to the end of the file", and the file
is read so, with a note; a declared size larger than what follows it is still a truncated file.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.span import Decoded, MediaError, fit_span

UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data sizes of a WAV whose writer could not seek back to its header


def load_audio(span: MediaSpan, sample_rate: int) -> Decoded:
    """Mono float32 samples at `sample_rate` for the span (the whole file when it has no times),
    with a note when the span runs past the end of the file or the WAV header's size is "unknown".
    Raises MediaError for a file that does not decode, a span outside the file, or samples that are
    not finite (NaN/inf: float WAV, AIFF or CAF can hold them; resampling would spread them over
    their neighbours)."""
    path = Path(span.path)
    if not path.is_file():
        raise FileNotFoundError(str(path))
    try:
        with open_audio(path) as (f, header_note):
            rate, span_note = f.samplerate, ""
            start, stop = 0, f.frames
            if span.start is not None and span.end is not None:
                begin, end, span_note = fit_span(path, f.frames / rate, span.start, span.end)
                start, stop = int(round(begin * rate)), min(f.frames, int(round(end * rate)))
            f.seek(start)
            audio = f.read(max(0, stop - start), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise MediaError(f"{path}: cannot decode audio ({err})") from None
    if not (finite := np.isfinite(audio).all(axis=1)).all():
        raise MediaError(f"{path}: {int((~finite).sum())} of {len(audio)} samples are not finite (NaN or inf)")
    mono = audio.mean(axis=1)
    if rate != sample_rate and len(mono):
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return Decoded(mono, "; ".join(n for n in (header_note, span_note) if n))


def audio_seconds(span: MediaSpan) -> float:
    """Duration without decoding (for length-sorted batching); 0 when unreadable."""
    if span.start is not None and span.end is not None:
        return max(0.0, span.end - span.start)
    try:
        return audio_length(Path(span.path))
    except Exception:
        return 0.0


def audio_length(path: Path) -> float:
    """Seconds of an audio file from its header (a WAV of "unknown" size: to the end of the file)."""
    with open_audio(path) as (f, _):
        return f.frames / f.samplerate


@contextmanager
def open_audio(path: Path) -> Generator[tuple[sf.SoundFile, str]]:
    """The file opened with libsndfile, and a note when its WAV header declares the data size
    "unknown" (read to the end of the file). Raises MediaError for a WAV that is truncated or not
    a WAV; libsndfile alone silently reads what is there."""
    data = wav_data(path)
    if data is None or data.declared not in UNKNOWN_SIZES or data.available == 0:
        with sf.SoundFile(str(path)) as f:
            yield f, ""
        return
    note = (
        f"{path}: the WAV header's data size is {'0xFFFFFFFF' if data.declared else '0'} (unknown: written "
        f"to a pipe or by a streaming writer); read the {data.available} bytes to the end of the file"
    )
    if data.declared == 0xFFFFFFFF:  # libsndfile reads this one to the end of the file itself
        with sf.SoundFile(str(path)) as f:
            yield f, note
        return
    with open(path, "rb") as raw, sf.SoundFile(_SizesFilled(raw, data)) as f:  # libsndfile reads 0 as empty
        yield f, note


@dataclass(frozen=True)
class WavData:
    """Where a WAV's data chunk is: the offset of its samples, its size field, and the bytes after it."""

    offset: int
    declared: int
    available: int


def wav_data(path: Path) -> WavData | None:
    """The data chunk of a RIFF/WAVE file; None for another format or RF64 (64-bit sizes in a ds64
    chunk, left to libsndfile). Raises MediaError for a .wav that is not RIFF/WAVE, a data chunk
    missing or declaring more bytes than follow it (a sentinel size, 0 or 0xFFFFFFFF, is no claim)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            if path.suffix.lower() == ".wav":
                raise MediaError(f"{path}: not a WAV file (bad RIFF header)")
            return None
        if head[:4] == b"RF64":
            return None
        while len(chunk := f.read(8)) == 8:
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                data = WavData(f.tell(), csize, size - f.tell())
                if csize not in UNKNOWN_SIZES and csize > data.available:
                    raise MediaError(
                        f"{path}: truncated WAV (header declares {csize} bytes of audio, file holds {data.available})"
                    )
                return data
            f.seek(csize + (csize & 1), 1)
    raise MediaError(f"{path}: truncated WAV (no data chunk in {size} bytes)")


class _SizesFilled:
    """A WAV opened for reading with its RIFF and data sizes filled in from the file's length, for
    libsndfile (which reads a data size of 0 as no samples); everything else as in the file."""

    def __init__(self, raw, data: WavData):
        riff = struct.pack("<I", min(0xFFFFFFFF, data.offset + data.available - 8))
        size = struct.pack("<I", min(0xFFFFFFFF, data.available))
        self._raw, self._patches = raw, ((4, riff), (data.offset - 4, size))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, n: int = -1) -> bytes:
        at = self._raw.tell()
        block = bytearray(self._raw.read(n))
        for where, value in self._patches:
            lo, hi = max(where, at), min(where + len(value), at + len(block))
            if lo < hi:
                block[lo - at : hi - at] = value[lo - where : hi - where]
        return bytes(block)

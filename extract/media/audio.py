"""Audio loading: any libsndfile format, cut to a span, checked finite, down-mixed to mono, resampled with soxr."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.span import Decoded, MediaError, fit_span


def load_audio(span: MediaSpan, sample_rate: int) -> Decoded:
    """Mono float32 samples at `sample_rate` for the span (the whole file when it has no times),
    with a note when the span runs past the end of the file. Raises MediaError for a file that
    does not decode, a span outside the file, or samples that are not finite (NaN/inf: float WAV,
    AIFF or CAF can hold them; resampling would spread them over their neighbours)."""
    path = Path(span.path)
    if not path.is_file():
        raise FileNotFoundError(str(path))
    if path.suffix.lower() == ".wav":
        _check_wav_complete(path)
    try:
        with sf.SoundFile(str(path)) as f:
            rate, note = f.samplerate, ""
            start, stop = 0, f.frames
            if span.start is not None and span.end is not None:
                begin, end, note = fit_span(path, f.frames / rate, span.start, span.end)
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
    return Decoded(mono, note)


def audio_seconds(span: MediaSpan) -> float:
    """Duration without decoding (for length-sorted batching); 0 when unreadable."""
    if span.start is not None and span.end is not None:
        return max(0.0, span.end - span.start)
    try:
        return sf.info(str(span.path)).duration
    except Exception:
        return 0.0


def _check_wav_complete(path: Path) -> None:
    """libsndfile silently reads what is there; a truncated WAV is an error we want to see."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise MediaError(f"{path}: not a WAV file (bad RIFF header)")
        if head[:4] == b"RF64":
            return  # 64-bit sizes live in a ds64 chunk; leave those to libsndfile
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise MediaError(f"{path}: truncated WAV (no data chunk in {size} bytes)")
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                available = size - f.tell()
                if csize > available:
                    raise MediaError(
                        f"{path}: truncated WAV (header declares {csize} bytes of audio, file holds {available})"
                    )
                return
            f.seek(csize + (csize & 1), 1)

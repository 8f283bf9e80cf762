"""The arguments of one `Predictor.predict` call as other libraries hand them, checked before any work.

A waveform may come from soundfile or librosa (numpy, samples first), torchaudio or torchcodec (a
torch tensor, channels first), or a plain list; it leaves here as float samples (N, C), laid out as
soundfile writes them, so that an array predicts as the file holding the same samples. Anything
that can only be a mistake (a batch of waveforms, a shape whose layout cannot be told, a sample rate
that is no positive integer, a transcript that is bytes) is a ConfigError that names what was given
and the fix, never a library's exception about a temporary file.
"""

from __future__ import annotations

import numbers
import os
import sys

import numpy as np
from cmarr.shared.errors import ConfigError

MAX_CHANNELS = 8  # the most channels a waveform may have (7.1 audio): the layout rule tells them by it
RATES = (1_000, 768_000)  # Hz: the sample rates a waveform may declare (telephone to studio, and margin)
# Integer samples are scaled to [-1, 1) by their type's full scale, as soundfile reads PCM files
# (8-bit unsigned WAV samples are centred on 128).
FULL_SCALE = {"int8": (0, 2**7), "uint8": (128, 2**7), "int16": (0, 2**15), "int32": (0, 2**31)}
LAYOUT = (
    "pass (N,) for mono, (N, C) samples first as soundfile and librosa give it, or (C, N) channels first "
    f"as torchaudio gives it (C at most {MAX_CHANNELS})"
)


def is_file_argument(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def waveform_samples(audio, sample_rate) -> tuple[np.ndarray, int]:
    """A waveform array (numpy, torch tensor or list) as float32 samples (N, C) and its sample rate.

    Layout rule: 1-D is mono (N,); 2-D (a, b) is samples first (N, C) when b <= 8 < a, channels
    first (C, N) when a <= 8 < b (transposed here); both dims 8 or less cannot be told apart and
    neither above 8 is no channel count (a batch?): both are refused, as are 3-D and more. Floats are
    taken as they are (full scale 1); int8/16/32 and uint8 are scaled by their full scale."""
    rate = checked_sample_rate(sample_rate)
    samples = _as_array(audio)
    kind = f"{samples.dtype} waveform {tuple(samples.shape)}"
    return _scaled(_samples_first(samples, kind), kind), rate


def checked_sample_rate(sample_rate) -> int:
    """`sample_rate` as an int: a positive whole number of Hz (numpy integers and 16000.0 are fine)."""
    if sample_rate is None:
        raise ConfigError("a waveform array needs its sample_rate (Hz), e.g. sample_rate=16000")
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, numbers.Real):
        raise ConfigError(f"sample_rate {sample_rate!r}: expected a whole number of Hz, e.g. 16000")
    if not float(sample_rate).is_integer():
        raise ConfigError(f"sample_rate {sample_rate!r}: a sample rate is a whole number of Hz, e.g. 16000")
    rate = int(sample_rate)
    if not RATES[0] <= rate <= RATES[1]:
        raise ConfigError(
            f"sample_rate {rate}: expected a positive rate between {RATES[0]:,} and {RATES[1]:,} Hz "
            "(the rate the waveform was recorded or decoded at, e.g. 16000)"
        )
    return rate


def check_prediction(audio, video, text, sample_rate, uid) -> None:
    """Refuse arguments of `Predictor.predict` that can only be mistakes (see each check)."""
    check_media_argument("audio", audio, sample_rate)
    check_media_argument("video", video)
    check_text(text)
    check_id(uid)
    if audio is None and video is None and text is None:
        raise ConfigError("give at least one of audio, video, text")


def check_media_argument(name: str, value, sample_rate=None) -> None:
    """`audio` and `video` are None or a file path (`audio` also a waveform array, see
    `waveform_samples`); a sample_rate beside an audio file is refused (the file records its own)."""
    if value is None or is_file_argument(value):
        if name == "audio" and sample_rate is not None:
            given = f"audio {value}: a file records its own rate" if value is not None else "no audio given"
            raise ConfigError(f"sample_rate is for a waveform array: {given} (leave sample_rate out)")
        return
    if name == "audio" and (isinstance(value, (np.ndarray, list, tuple)) or _is_tensor(value)):
        return
    if isinstance(value, (bytes, bytearray)):
        raise ConfigError(
            f"{name}: {type(value).__name__} given: pass the file's path, or decode it first"
            + (" (soundfile.read(io.BytesIO(data)) gives the samples and their rate)" if name == "audio" else "")
        )
    what = "a file path or a waveform array (numpy, torch or a list of samples)" if name == "audio" else "a file path"
    raise ConfigError(f"{name}: expected {what}, got {type(value).__name__}")


def check_text(text) -> None:
    """A transcript is a str (or None: no transcript)."""
    if text is None or isinstance(text, str):
        return
    if isinstance(text, (bytes, bytearray)):
        raise ConfigError("text: bytes given: decode them to a str first, e.g. text.decode('utf-8')")
    raise ConfigError(f"text: expected the transcript as a str, got {type(text).__name__} {text!r:.60}")


def check_span_numbers(start, end) -> None:
    """`start` and `end` are None or finite numbers of seconds."""
    for name, value in (("start", start), ("end", end)):
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise ConfigError(f"{name} {value!r}: expected a finite number of seconds, e.g. {name}=1.5")


def check_id(uid) -> None:
    if not isinstance(uid, str) or not uid.strip():
        raise ConfigError(f"id {uid!r}: expected a non-empty str naming the utterance in the output")


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only where torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def _as_array(audio) -> np.ndarray:
    """The samples as a numpy array: a tensor detached and moved to the CPU, a list made an array."""
    if _is_tensor(audio):
        tensor = audio.detach().cpu()
        half = tensor.dtype.is_floating_point and tensor.element_size() < 4  # numpy has no bfloat16
        audio = (tensor.float() if half else tensor).numpy()
    try:
        samples = np.asarray(audio)
    except ValueError:  # ragged nested lists
        raise ConfigError(f"audio: a list of rows of unequal length is no waveform; {LAYOUT}") from None
    if samples.dtype.kind not in "fiu":
        raise ConfigError(
            f"audio: an array of {samples.dtype} holds no samples: pass float samples (full scale 1) "
            "or int16/int32 PCM samples"
        )
    return samples


def _samples_first(samples: np.ndarray, kind: str) -> np.ndarray:
    """(N, C) by the layout rule of `waveform_samples`."""
    if samples.ndim == 1:
        return samples[:, None]
    if samples.ndim != 2:
        batch = " (a batch?): predict one waveform" if samples.ndim > 2 else ""
        raise ConfigError(f"audio: {kind} has {samples.ndim} dimensions{batch}; {LAYOUT}")
    a, b = samples.shape
    if b <= MAX_CHANNELS < a:
        return samples
    if a <= MAX_CHANNELS < b:
        return samples.T
    if max(a, b) <= MAX_CHANNELS:
        raise ConfigError(f"audio: {kind} is too short to tell samples from channels; {LAYOUT}")
    raise ConfigError(
        f"audio: {kind} has no dimension of {MAX_CHANNELS} channels or fewer (a batch of waveforms? predict "
        f"them one at a time); {LAYOUT}"
    )


def _scaled(samples: np.ndarray, kind: str) -> np.ndarray:
    """Float32 samples of full scale 1."""
    if samples.dtype.kind == "f":
        return np.ascontiguousarray(samples, np.float32)
    if samples.dtype.name not in FULL_SCALE:
        raise ConfigError(
            f"audio: {kind}: the full scale of {samples.dtype} samples is unknown; pass float samples "
            "(full scale 1, e.g. wave / 32768 for 16-bit ones) or int16/int32 PCM samples"
        )
    centre, scale = FULL_SCALE[samples.dtype.name]
    return np.ascontiguousarray((samples.astype(np.float64) - centre) / scale, np.float32)

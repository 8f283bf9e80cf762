"""Audio degraders: synthetic reverberation, then additive noise at a signal-to-noise ratio.

Reverberation comes first and the noise after it, as in a room: the microphone hears the speech's
reverberation plus the noise, and the SNR is that of the reverberant speech to the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.degrade.spec import AudioSpec, utterance_rng
from cmarr.extract.media.audio import load_audio
from cmarr.extract.media.span import MediaError
from scipy.signal import fftconvolve

DECAY_60_DB = 3 * np.log(10)  # amplitude exponent at which the energy is down 60 dB: exp(-6.91) = 1e-3
SEGMENT_DRAWS = 8  # noise segments drawn before a silent one fails the item


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`signal + g * noise`, with g chosen so that 10 log10(mean(signal^2) / mean((g * noise)^2)) is
    exactly `snr_db` (the closed form g = sqrt(P_s / (P_n 10^(snr/10)))). Digital silence stays silent:
    there is no signal to set a ratio against."""
    p_signal = float(np.mean(np.square(signal, dtype=np.float64))) if len(signal) else 0.0
    p_noise = float(np.mean(np.square(noise, dtype=np.float64))) if len(noise) else 0.0
    if p_signal == 0.0:
        return signal.copy()
    if p_noise == 0.0:
        raise MediaError("the noise segment is silent: no gain reaches an SNR")
    gain = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return signal.astype(np.float32, copy=False) + np.float32(gain) * noise.astype(np.float32, copy=False)


def reverb_impulse_response(rt60: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response with reverberation time `rt60` (seconds for the energy to
    fall by 60 dB): Gaussian noise under the exponential envelope exp(-3 ln(10) t / RT60), Polack's
    statistical model of reverberation (J.-D. Polack, "La transmission de l'energie sonore dans les
    salles", thesis, Le Mans, 1988; the same construction as Moorer's "About this reverberation
    business", Computer Music Journal 3(2), 1979). It has no separate direct path: a diffuse,
    far-field condition. Cut at RT60 (the tail beyond is below -60 dB), unit energy."""
    n = max(1, int(np.ceil(rt60 * rate)))
    t = np.arange(n) / rate
    h = rng.standard_normal(n) * np.exp(-DECAY_60_DB * t / rt60)
    return h / np.linalg.norm(h)


def reverberate(signal: np.ndarray, response: np.ndarray) -> np.ndarray:
    """`signal` convolved with `response`, cut to its own length (the tail past the utterance's end is
    left out, as a span cut from a longer recording would be) and brought back to its own RMS level."""
    if not len(signal):
        return signal
    wet = fftconvolve(signal.astype(np.float32, copy=False), response.astype(np.float32))[: len(signal)]
    level, wet_level = (np.sqrt(np.mean(np.square(x, dtype=np.float64))) for x in (signal, wet))
    return wet * np.float32(level / wet_level if wet_level > 0 else 0.0)


@lru_cache(maxsize=32)
def noise_recording(path: Path, rate: int) -> np.ndarray:
    """A noise file decoded once per process (mono, resampled to `rate`, as speech is loaded); the 32
    most recent stay in memory."""
    return load_audio(MediaSpan(path), rate).value


def noise_segment(files: tuple[Path, ...], n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of noise: a recording and a start drawn from `rng`, the recording repeated when
    it is shorter than `n`. A silent draw (a recording that starts with silence) is drawn again."""
    for _ in range(SEGMENT_DRAWS):
        path = files[int(rng.integers(len(files)))]
        track = noise_recording(path, rate)
        if not len(track):
            continue
        start = int(rng.integers(max(1, len(track) - n + 1)))
        segment = track[start : start + n] if len(track) >= n else np.resize(np.roll(track, -start), n)
        if np.any(segment):
            return segment
    raise MediaError(f"{SEGMENT_DRAWS} noise segments drawn from audio:noise-dir were all silent (last: {path})")


@dataclass(frozen=True)
class AudioDegrader:
    """The audio kinds of a spec, at the encoder's sample rate (picklable: it runs in decoding workers)."""

    spec: AudioSpec
    seed: int
    rate: int

    def __call__(self, wav: np.ndarray, utterance: str) -> np.ndarray:
        s = self.spec
        if s.reverb_rt60 and len(wav):
            rng = utterance_rng(self.seed, utterance, "audio", "reverb")
            wav = reverberate(wav, reverb_impulse_response(s.reverb_rt60, self.rate, rng))
        if s.snr_db is not None and len(wav):
            rng = utterance_rng(self.seed, utterance, "audio", "snr")
            if s.noise_files:
                noise = noise_segment(s.noise_files, len(wav), self.rate, rng)
            else:
                noise = rng.standard_normal(len(wav), dtype=np.float32)
            wav = mix_at_snr(wav, noise, s.snr_db)
        return wav

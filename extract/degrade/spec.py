"""The typed `--degrade` spec: `modality:kind=value` items, parsed and range-checked before any item.

One table (`KINDS`) says every kind: its modality, the field it sets, its range and unit. A fault
is a ConfigError naming the config key and the item's key (`audio:snr`), so a run stops before it
decodes anything. Seeds: every utterance, modality and kind has its own stream, derived from the
spec's seed and the utterance id, never from the order items are decoded in (workers, resume).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cmarr.shared.config import DegradeConfig
from cmarr.shared.errors import ConfigError

KEY = "extract.degrade.spec (--degrade)"  # how errors name the setting
NOISE_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Kind:
    """One degradation kind: `modality:name=value` sets `field`, a number in [lo, hi] (or a folder)."""

    modality: str
    name: str
    field: str
    lo: float | None  # None: the value is a path
    hi: float | None
    unit: str


KINDS = (
    Kind("audio", "reverb", "reverb_rt60", 0.0, 10.0, "s (RT60)"),
    Kind("audio", "snr", "snr_db", -30.0, 60.0, "dB"),
    Kind("audio", "noise-dir", "noise_dir", None, None, "folder of .wav/.flac noise recordings"),
    Kind("video", "occlude", "occlude_fraction", 0.0, 1.0, "of the frame's area"),
    Kind("video", "dark", "dark_factor", 0.0, 1.0, "times the pixel values"),
    Kind("video", "blur", "blur_sigma", 0.0, 50.0, "px (Gaussian sigma)"),
    Kind("text", "word-drop", "word_drop", 0.0, 1.0, "probability per word"),
    Kind("text", "word-swap", "word_swap", 0.0, 1.0, "probability per word"),
)  # in the order each modality's degraders run


@dataclass(frozen=True)
class AudioSpec:
    reverb_rt60: float | None = None  # seconds for the reverberation to decay by 60 dB
    snr_db: float | None = None  # additive noise at this signal-to-noise ratio
    noise_dir: Path | None = None  # noise recordings to mix at `snr_db` (None: white Gaussian noise)
    noise_files: tuple[Path, ...] = ()  # the folder's .wav/.flac files, sorted (the same list everywhere)


@dataclass(frozen=True)
class VideoSpec:
    occlude_fraction: float | None = None
    dark_factor: float | None = None
    blur_sigma: float | None = None


@dataclass(frozen=True)
class TextSpec:
    word_drop: float | None = None
    word_swap: float | None = None


@dataclass(frozen=True)
class DegradeSpec:
    """What `--degrade` asks of each modality; a modality whose fields are all None stays clean."""

    audio: AudioSpec = AudioSpec()
    video: VideoSpec = VideoSpec()
    text: TextSpec = TextSpec()
    seed: int = 0

    def of(self, modality: str) -> AudioSpec | VideoSpec | TextSpec:
        return getattr(self, modality)

    def degrades(self, modality: str) -> bool:
        return any(getattr(self.of(modality), k.field) is not None for k in KINDS if k.modality == modality)

    @property
    def clean(self) -> bool:
        return not any(self.degrades(m) for m in ("audio", "video", "text"))

    def canonical(self, modality: str | None = None) -> str:
        """The spec in `KINDS` order (of one modality, or all): equal specs read the same."""
        items = []
        for kind in KINDS:
            value = getattr(self.of(kind.modality), kind.field)
            if value is not None and modality in (None, kind.modality):
                items.append(f"{kind.modality}:{kind.name}={value if kind.lo is None else f'{value:g}'}")
        return ",".join(items)


def parse_degradation(cfg: DegradeConfig, list_files: bool = True) -> DegradeSpec:
    """The spec of `cfg.spec` ("" = clean) with `cfg.seed`; ConfigError naming the key of a malformed
    item, an unknown modality or kind, a value out of range, a key given twice, or (`list_files`) a
    noise folder that is missing or holds no recording; `audio:noise-dir` needs `audio:snr`."""
    values: dict[Kind, float | Path] = {}
    for item in (part.strip() for part in cfg.spec.split(",")):
        if item:
            kind, value = _parse_item(item)
            if kind in values:
                raise ConfigError(f"{KEY}: {kind.modality}:{kind.name} is given twice")
            values[kind] = value
    by_modality: dict[str, dict] = {"audio": {}, "video": {}, "text": {}}
    for kind, value in values.items():
        by_modality[kind.modality][kind.field] = value
    audio = by_modality["audio"]
    if "noise_dir" in audio and "snr_db" not in audio:
        raise ConfigError(f"{KEY}: audio:noise-dir needs audio:snr=DB, the ratio to mix its noise at")
    if "noise_dir" in audio and list_files:
        audio["noise_files"] = noise_files(audio["noise_dir"])
    return DegradeSpec(AudioSpec(**audio), VideoSpec(**by_modality["video"]), TextSpec(**by_modality["text"]), cfg.seed)


def _parse_item(item: str) -> tuple[Kind, float | Path]:
    key, sep, text = item.partition("=")
    modality, colon, name = key.strip().partition(":")
    if not sep or not colon or not text.strip():
        raise ConfigError(f"{KEY}: {item!r} is not modality:kind=value (e.g. audio:snr=10)")
    known = [k for k in KINDS if k.modality == modality]
    if not known:
        modalities = sorted({k.modality for k in KINDS})
        raise ConfigError(f"{KEY}: {item!r}: unknown modality {modality!r} (one of {', '.join(modalities)})")
    kind = next((k for k in known if k.name == name.strip()), None)
    if kind is None:
        names = ", ".join(k.name for k in known)
        raise ConfigError(f"{KEY}: {item!r}: unknown kind {name.strip()!r} for {modality} (one of {names})")
    if kind.lo is None:
        return kind, Path(text.strip()).expanduser()
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{KEY}: {item!r}: not a number") from None
    if not (math.isfinite(value) and kind.lo <= value <= kind.hi):
        raise ConfigError(
            f"{KEY}: {item!r} is out of range: {modality}:{kind.name} takes [{kind.lo:g}, {kind.hi:g}] {kind.unit}"
        )
    return kind, value


def noise_files(folder: Path) -> tuple[Path, ...]:
    """The folder's .wav and .flac files (subfolders too, as MUSAN's noise/free-sound/), sorted."""
    if not folder.is_dir():
        raise ConfigError(f"{KEY}: 'audio:noise-dir={folder}': not a folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in NOISE_SUFFIXES and p.is_file())
    if not found:
        raise ConfigError(f"{KEY}: 'audio:noise-dir={folder}': the folder holds no .wav or .flac file")
    return tuple(found)


def check_noise_files(spec: DegradeSpec) -> None:
    """Every noise recording's header reads and holds samples (ConfigError naming the file
    otherwise): a run stops before its first item rather than failing items one by one."""
    from cmarr.extract.corpora.record import MediaSpan
    from cmarr.extract.media.audio import audio_seconds

    for path in spec.audio.noise_files:
        if audio_seconds(MediaSpan(path)) <= 0:
            raise ConfigError(f"{KEY}: audio:noise-dir file {path} is not a readable recording, or holds no samples")


def utterance_rng(seed: int, utterance: str, modality: str, kind: str) -> np.random.Generator:
    """The random stream of one utterance's one degradation kind: a hash of the spec's seed, the
    utterance id, the modality and the kind, so it depends on nothing else (decoding order, workers,
    resume, the spec's other kinds: snr=0 and snr=10 draw the same noise, scaled differently)."""
    digest = hashlib.sha256("\x1f".join((str(seed), modality, kind, utterance)).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))

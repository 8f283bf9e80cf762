"""Degraded extraction (`cmarr-extract --degrade SPEC`): media degraded on purpose before the encoders.

A degraded store holds the same utterances (ids, labels, sessions, speakers) as its clean twin,
with features of degraded inputs: a run trained on clean data is evaluated on it by utterance id.
Where the degradation happens: audio and video right after decoding, in the decoding workers
(`DegradedLoader` around the encoder's loader); transcripts when extraction starts (they are in
the records, and a swapped word's substitutes come from the whole corpus's vocabulary). What is
recorded: the config's `[extract.degrade]` in the store, and each degraded modality's spec
(`ModalitySpec.degradation`: its part of the spec, the seed, the noise recordings' digest), so a
degraded store's fingerprint differs from the clean one's and `cmarr-store info` shows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.degrade.audio import AudioDegrader
from cmarr.extract.degrade.spec import KINDS, DegradeSpec, check_noise_files, parse_degradation
from cmarr.extract.degrade.text import degrade_text, vocabulary
from cmarr.extract.degrade.video import VideoDegrader
from cmarr.extract.media.span import Decoded
from cmarr.shared.config import DegradeConfig, ExtractConfig
from cmarr.shared.provenance import file_sha256


def check_degradation(cfg: DegradeConfig) -> DegradeSpec:
    """The parsed spec, every noise recording's header read: ConfigError naming the key otherwise."""
    spec = parse_degradation(cfg)
    check_noise_files(spec)
    return spec


def media_degrader(modality: str, cfg: ExtractConfig) -> Callable[[Any, str], Any] | None:
    """`degrade(decoded media, utterance id)` for an audio or video encoder's inputs; None when the
    modality stays clean (text is degraded in the records: `degrade_records`)."""
    spec = parse_degradation(cfg.degrade)
    if modality == "audio" and spec.degrades("audio"):
        return AudioDegrader(spec.audio, spec.seed, cfg.audio.sample_rate)
    if modality == "video" and spec.degrades("video"):
        return VideoDegrader(spec.video, spec.seed)
    return None


@dataclass(frozen=True)
class DegradedLoader:
    """An encoder's loader whose decoded media go through `degrade` (picklable, for decoding workers)."""

    load: Callable[[UtteranceRecord], Any]
    degrade: Callable[[Any, str], Any]

    def __call__(self, record: UtteranceRecord) -> Any:
        out = self.load(record)
        if isinstance(out, Decoded):
            return Decoded(self.degrade(out.value, record.id), out.note)
        return out if out is None else self.degrade(out, record.id)


def degraded_loader(load: Callable, degrade: Callable | None) -> Callable:
    return load if degrade is None else DegradedLoader(load, degrade)


def degrade_records(records: list[UtteranceRecord], cfg: DegradeConfig) -> list[UtteranceRecord]:
    """The records with their transcripts degraded as `cfg` says (the same records when text stays clean)."""
    spec = parse_degradation(cfg)
    if not spec.degrades("text"):
        return records
    vocab = vocabulary(r.text for r in records if not r.text_error)
    return [
        replace(r, text=degrade_text(r.text, spec.text, spec.seed, r.id, vocab)) if r.text and not r.text_error else r
        for r in records
    ]


def recorded_degradation(modality: str, cfg: DegradeConfig) -> dict[str, Any]:
    """What a degraded modality's spec records ({} when it stays clean): its part of the spec, the
    seed, and for noise recordings the folder's name, file count and a digest of their contents."""
    spec = parse_degradation(cfg)
    if not spec.degrades(modality):
        return {}
    out: dict[str, Any] = {"spec": spec.canonical(modality), "seed": spec.seed}
    if modality == "audio" and spec.audio.snr_db is not None:
        folder = spec.audio.noise_dir
        out["noise"] = "white gaussian" if folder is None else noise_identity(folder, spec.audio.noise_files)
    return out


@lru_cache(maxsize=4)
def noise_identity(folder: Path, files: tuple[Path, ...]) -> dict[str, Any]:
    """The noise recordings' identity wherever they lie: the folder's name, the number of files and
    a sha256 over their paths inside it and contents."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return {"folder": folder.name, "files": len(files), "sha256": digest.hexdigest()}


def degradation_key(cfg: DegradeConfig) -> str:
    """The degradation as one comparable line: '' when clean, else the canonical spec and its seed."""
    spec = parse_degradation(cfg, list_files=False)  # a stored spec's noise folder may have moved
    return "" if spec.clean else f"{spec.canonical()} (seed {spec.seed})"


__all__ = [
    "KINDS",
    "DegradeSpec",
    "DegradedLoader",
    "check_degradation",
    "degradation_key",
    "degrade_records",
    "degraded_loader",
    "media_degrader",
    "parse_degradation",
    "recorded_degradation",
]

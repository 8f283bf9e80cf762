"""Frozen encoders, one per modality, chosen by name from the config (the registry below)."""

from __future__ import annotations

import torch
from cmarr.extract.encoders.base import Encoder, EncodeResult
from cmarr.shared.config import ExtractConfig


def _text(cfg: ExtractConfig, device: torch.device) -> Encoder:
    from cmarr.extract.encoders.text import TextEncoder

    return TextEncoder(cfg.text, device, cfg.amp)


def _audio(cfg: ExtractConfig, device: torch.device) -> Encoder:
    from cmarr.extract.encoders.speech import SpeechEncoder

    return SpeechEncoder(cfg.audio, device, cfg.amp)


def _video(cfg: ExtractConfig, device: torch.device) -> Encoder:
    from cmarr.extract.encoders.video import VideoEncoder

    return VideoEncoder(cfg.video, device, cfg.amp)


ENCODERS = {"text": _text, "audio": _audio, "video": _video}


def build_encoder(modality: str, cfg: ExtractConfig, device: torch.device) -> Encoder:
    return ENCODERS[modality](cfg, device)


def check_settings(modality: str, cfg: ExtractConfig) -> None:
    """Refuse the modality's settings that its model cannot honour (ConfigError), from configs and
    checkpoint headers, before any model is built: a run stops before its first item."""
    if modality == "text":
        from cmarr.extract.encoders.text import TextEncoder

        TextEncoder.check_settings(cfg.text)
    elif modality == "audio":
        from cmarr.extract.encoders.speech import SpeechEncoder

        SpeechEncoder.check_settings(cfg.audio)
    else:
        from cmarr.extract.encoders.video import VideoEncoder

        VideoEncoder.check_settings(cfg.video)


__all__ = ["ENCODERS", "EncodeResult", "Encoder", "build_encoder", "check_settings"]

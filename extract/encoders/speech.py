"""Speech: a wav2vec2-family model (default wav2vec2-base), hidden states of a chosen layer, 16 kHz.

Utterances longer than `max_window_seconds` are encoded in consecutive windows whose outputs are
concatenated, so memory stays bounded whatever the utterance length. Window lengths are multiples
of the model's total stride, so frames line up across windows.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders.base import EncodeResult, Encoder
from cmarr.extract.encoders.hub import load_pretrained
from cmarr.extract.media.audio import audio_seconds, load_audio
from cmarr.shared.config import AudioEncoderConfig
from cmarr.shared.store.schema import ModalitySpec, Status


def load_speech(record: UtteranceRecord, sample_rate: int) -> np.ndarray | None:
    return None if record.audio is None else load_audio(record.audio, sample_rate)


class SpeechEncoder(Encoder):
    modality = "audio"

    def __init__(self, cfg: AudioEncoderConfig, device: torch.device, amp: str):
        super().__init__(device, amp)
        from transformers import AutoFeatureExtractor, AutoModel

        self.cfg = cfg
        self.extractor = load_pretrained(AutoFeatureExtractor, cfg.model, cfg.revision, "audio")
        self.model = load_pretrained(AutoModel, cfg.model, cfg.revision, "audio").to(device).eval()
        self.stride = int(np.prod(self.model.config.conv_stride))  # 320 samples = 20 ms for wav2vec2
        self.window = max(self.stride, int(cfg.max_window_seconds * cfg.sample_rate) // self.stride * self.stride)
        self.budget = cfg.max_samples_per_batch
        # Layer-norm variants (e.g. large-lv60) take an attention mask; group-norm ones (base) must not.
        self.use_mask = bool(getattr(self.extractor, "return_attention_mask", False))

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            encoder=self.cfg.model, dim=self.model.config.hidden_size,
            revision=getattr(self.model.config, "_commit_hash", None) or self.cfg.revision,
            layer=self.cfg.layer, frame_rate=self.cfg.sample_rate / self.stride, sample_rate=self.cfg.sample_rate,
            extra={"window_seconds": self.window / self.cfg.sample_rate},
        )

    def cost(self, record: UtteranceRecord) -> int:
        return int(audio_seconds(record.audio) * self.cfg.sample_rate) if record.audio else 0

    def loader(self):
        return partial(load_speech, sample_rate=self.cfg.sample_rate)

    @torch.inference_mode()
    def encode(self, inputs: list[np.ndarray | None]) -> list[EncodeResult]:
        pieces, owner = [], []
        results = [EncodeResult(None, Status.MISSING_INPUT, "no audio")] * len(inputs)
        for k, wav in enumerate(inputs):
            if wav is None or len(wav) < self.stride:
                continue
            for lo in range(0, len(wav), self.window):
                if len(wav) - lo >= self.stride:  # drop a tail shorter than one frame
                    pieces.append(wav[lo : lo + self.window])
                    owner.append(k)
        if not pieces:
            return [EncodeResult(None, Status.MISSING_INPUT, "audio shorter than one frame")] * len(inputs)
        feats = self.extractor(pieces, sampling_rate=self.cfg.sample_rate, padding=True, return_tensors="pt",
                               return_attention_mask=self.use_mask)
        kwargs = {"attention_mask": feats["attention_mask"].to(self.device)} if self.use_mask else {}
        with self.timed(), self.autocast():
            out = self.model(feats["input_values"].to(self.device), output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[self.cfg.layer].float().cpu().numpy()  # (B, T', D)
        n_frames = self.model._get_feat_extract_output_lengths(torch.tensor([len(p) for p in pieces])).tolist()
        per_item: dict[int, list[np.ndarray]] = {}
        for row, (k, t) in enumerate(zip(owner, n_frames)):
            per_item.setdefault(k, []).append(hidden[row, :t])
        results = list(results)
        for k, chunks in per_item.items():
            results[k] = EncodeResult(np.concatenate(chunks), Status.OK)
        return results

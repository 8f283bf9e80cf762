"""Speech: a wav2vec2-family model (default wav2vec2-base), hidden states of a chosen layer, 16 kHz.

Utterances longer than `max_window_seconds` are encoded in consecutive windows whose outputs are
concatenated, so memory stays bounded whatever the utterance length. Window lengths are multiples
of the model's total stride, so frames line up across windows. One frame needs the conv front-end's
receptive field (400 samples, 25 ms, for wav2vec2-base): a shorter clip has no speech features
(missing input), and a last window shorter than that is dropped.
"""

from __future__ import annotations

from functools import cached_property, partial

import numpy as np
import torch
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders.base import Encoder, EncodeResult
from cmarr.extract.encoders.hub import ModelIdentity, load_pretrained, model_identity
from cmarr.extract.media.audio import audio_seconds, load_audio
from cmarr.extract.media.span import Decoded
from cmarr.shared.config import AudioEncoderConfig
from cmarr.shared.errors import ConfigError
from cmarr.shared.store.schema import ModalitySpec, Status


def load_speech(record: UtteranceRecord, sample_rate: int) -> Decoded | None:
    return None if record.audio is None else load_audio(record.audio, sample_rate)


def receptive_field(kernels: list[int], strides: list[int]) -> int:
    """Input samples one output frame of a stack of unpadded 1-D convolutions sees."""
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


def check_audio_settings(cfg: AudioEncoderConfig, model_config, extractor_rate: int | None) -> None:
    """Refuse settings the model cannot honour (ConfigError naming the key and the limit)."""
    field = receptive_field(model_config.conv_kernel, model_config.conv_stride)
    n_states = model_config.num_hidden_layers + 1
    if not -n_states <= cfg.layer < n_states:
        raise ConfigError(
            f"extract.audio.layer = {cfg.layer}: {cfg.model} has hidden states 0..{n_states - 1} "
            f"(or -1..-{n_states} from the last)"
        )
    if cfg.max_window_seconds * cfg.sample_rate < field:
        raise ConfigError(
            f"extract.audio.max_window_seconds = {cfg.max_window_seconds}: shorter than one frame of "
            f"{cfg.model} ({field} samples, {1000 * field / cfg.sample_rate:.1f} ms)"
        )
    if extractor_rate is not None and extractor_rate != cfg.sample_rate:
        raise ConfigError(f"extract.audio.sample_rate = {cfg.sample_rate}: {cfg.model} takes {extractor_rate} Hz input")


class SpeechEncoder(Encoder):
    modality = "audio"

    def __init__(self, cfg: AudioEncoderConfig, device: torch.device, amp: str):
        super().__init__(device, amp)
        from transformers import AutoFeatureExtractor, AutoModel

        self.cfg = cfg
        self.extractor = load_pretrained(AutoFeatureExtractor, cfg.model, cfg.revision, "audio")
        self.model = load_pretrained(AutoModel, cfg.model, cfg.revision, "audio").to(device).eval()
        config = self.model.config
        check_audio_settings(cfg, config, getattr(self.extractor, "sampling_rate", None))
        self.stride = int(np.prod(config.conv_stride))  # 320 samples = 20 ms for wav2vec2
        self.field = receptive_field(config.conv_kernel, config.conv_stride)  # 400 samples = 25 ms
        shortest = -(-self.field // self.stride) * self.stride  # whole strides holding one frame
        self.window = max(shortest, int(cfg.max_window_seconds * cfg.sample_rate) // self.stride * self.stride)
        self.budget = cfg.max_samples_per_batch

    @staticmethod
    def check_settings(cfg: AudioEncoderConfig) -> None:
        """The checks loading makes, from the model's configs alone (no weights are read)."""
        from transformers import AutoConfig, AutoFeatureExtractor

        config = load_pretrained(AutoConfig, cfg.model, cfg.revision, "audio")
        extractor = load_pretrained(AutoFeatureExtractor, cfg.model, cfg.revision, "audio")
        check_audio_settings(cfg, config, getattr(extractor, "sampling_rate", None))

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            encoder=self.identity.encoder,
            dim=self.model.config.hidden_size,
            revision=self.identity.revision,
            weights_sha256=self.identity.weights_sha256,
            layer=self.cfg.layer,
            frame_rate=self.cfg.sample_rate / self.stride,
            sample_rate=self.cfg.sample_rate,
            extra={"window_seconds": self.window / self.cfg.sample_rate},
        )

    def cost(self, record: UtteranceRecord) -> int:
        return int(audio_seconds(record.audio) * self.cfg.sample_rate) if record.audio else 0

    @cached_property
    def identity(self) -> ModelIdentity:
        return model_identity(self.cfg.model, self.cfg.revision, self.model)

    def loader(self):
        return partial(load_speech, sample_rate=self.cfg.sample_rate)

    @torch.inference_mode()
    def encode(self, inputs: list[np.ndarray | None]) -> list[EncodeResult]:
        pieces, owner = [], []
        too_short = f"audio shorter than one frame ({1000 * self.field / self.cfg.sample_rate:.1f} ms)"
        results = [EncodeResult(None, Status.MISSING_INPUT, "no audio" if wav is None else too_short) for wav in inputs]
        for k, wav in enumerate(inputs):
            for lo in range(0, 0 if wav is None else len(wav), self.window):
                if len(wav) - lo >= self.field:  # a last window shorter than one frame is dropped
                    pieces.append(wav[lo : lo + self.window])
                    owner.append(k)
        if not pieces:
            return results
        hidden, n_frames = self._forward(pieces)
        per_item: dict[int, list[np.ndarray]] = {}
        for row, (k, t) in enumerate(zip(owner, n_frames)):
            per_item.setdefault(k, []).append(hidden[row, :t])
        results = list(results)
        for k, chunks in per_item.items():
            results[k] = EncodeResult(np.concatenate(chunks), Status.OK)
        return results

    def _forward(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Hidden states (B, T', D) of a batch of waveforms, each exactly as if encoded alone.

        Batch padding must not leak into features: the feature extractor's normalisation and
        wav2vec2-base's group norm (conv front-end) both see padding, so both run per piece; only the
        transformer runs batched, under an attention mask (padded frames zeroed, as a lone item's
        positional convolution sees zeros past its end)."""
        model = self.model
        with self.timed(), self.autocast():
            convs = []
            for p in pieces:
                x = self.extractor(p, sampling_rate=self.cfg.sample_rate, return_tensors="pt")["input_values"]
                convs.append(model.feature_extractor(x.to(self.device))[0].transpose(0, 1))  # (T_i, C)
            n_frames = [len(c) for c in convs]
            padded = torch.nn.utils.rnn.pad_sequence(convs, batch_first=True)  # (B, T, C)
            mask = (
                torch.arange(padded.shape[1], device=self.device)[None]
                < torch.tensor(n_frames, device=self.device)[:, None]
            )
            hidden, _ = model.feature_projection(padded)  # per frame: padding cannot leak
            states = self._encoder_states(hidden, mask)
        return states.float().cpu().numpy(), n_frames

    def _encoder_states(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The transformer's hidden state at `layer`, indexed like `output_hidden_states`
        (0 = input of the first layer, k = output of layer k, -1 = last hidden state).
        Calling the encoder directly loses the model-level output capture, so hooks collect them."""
        layers = self.model.encoder.layers
        n_states = len(layers) + 1
        index = self.cfg.layer % n_states  # in range: check_audio_settings
        captured: dict[int, torch.Tensor] = {}

        def keep_input(module, args, kwargs):
            captured[0] = args[0] if args else kwargs["hidden_states"]

        def keep_output(k):
            def hook(module, args, out):
                captured[k] = out[0] if isinstance(out, tuple) else out

            return hook

        hooks = [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
        hooks += [layer.register_forward_hook(keep_output(k)) for k, layer in enumerate(layers, 1)]
        try:
            last = self.model.encoder(hidden, attention_mask=mask).last_hidden_state
        finally:
            for h in hooks:
                h.remove()
        return last if index == n_states - 1 else captured[index]

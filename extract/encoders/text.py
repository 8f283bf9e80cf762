"""Text: a transformers encoder (default BERT-base), one vector per word piece, [CLS]/[SEP] dropped."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders.base import Encoder, EncodeResult
from cmarr.extract.encoders.hub import ModelIdentity, load_pretrained, model_identity
from cmarr.extract.encoders.sizing import CPU_TOKENS, for_device
from cmarr.extract.media.span import MediaError
from cmarr.shared.config import TextEncoderConfig
from cmarr.shared.errors import ConfigError
from cmarr.shared.store.schema import ModalitySpec, Status


def load_text(record: UtteranceRecord) -> str | None:
    """The transcript, None when there is none; a transcript file that could not be read fails the item."""
    if record.text_error:
        raise MediaError(record.text_error)
    return record.text if record.text and record.text.strip() else None


def position_limit(model) -> int | None:
    """Tokens the model has positions for: `max_position_embeddings`, less the offset RoBERTa-style
    embeddings reserve (their positions start after the padding index). None: no absolute positions."""
    config = model.config
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    limit = getattr(config, "max_position_embeddings", None)
    padding_idx = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    return None if limit is None else limit - (padding_idx + 1 if padding_idx is not None else 0)


def check_text_settings(cfg: TextEncoderConfig, model) -> None:
    """Refuse settings the model cannot honour (ConfigError naming the key and the limit)."""
    limit = position_limit(model)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(
            f"extract.text.max_length = {cfg.max_length}: {cfg.model} has positions for {limit} tokens; "
            f"set it to {limit} or less (longer transcripts are cut to it)"
        )
    n_states = model.config.num_hidden_layers + 1
    if not -n_states <= cfg.layer < n_states:
        raise ConfigError(
            f"extract.text.layer = {cfg.layer}: {cfg.model} has hidden states 0..{n_states - 1} "
            f"(or -1..-{n_states} from the last)"
        )


class TextEncoder(Encoder):
    modality = "text"
    reads_files = False  # transcripts are in the records

    def __init__(self, cfg: TextEncoderConfig, device: torch.device, amp: str):
        super().__init__(device, amp)
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        self.tokenizer = load_pretrained(AutoTokenizer, cfg.model, cfg.revision, "text")
        self.model = load_pretrained(AutoModel, cfg.model, cfg.revision, "text").to(device).eval()
        check_text_settings(cfg, self.model)
        self.budget = for_device(device, cfg.max_tokens_per_batch, CPU_TOKENS)

    @staticmethod
    def check_settings(cfg: TextEncoderConfig) -> None:
        """The checks loading makes, from the model's config alone (no weights are read)."""
        from transformers import AutoConfig, AutoModel

        config = load_pretrained(AutoConfig, cfg.model, cfg.revision, "text")
        with torch.device("meta"):
            check_text_settings(cfg, AutoModel.from_config(config))

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            encoder=self.identity.encoder,
            dim=self.model.config.hidden_size,
            revision=self.identity.revision,
            weights_sha256=self.identity.weights_sha256,
            layer=self.cfg.layer,
            extra={"unit": "wordpiece", "max_length": self.cfg.max_length},
        )

    @cached_property
    def identity(self) -> ModelIdentity:
        return model_identity(self.cfg.model, self.cfg.revision, self.model)

    def cost(self, record: UtteranceRecord) -> int:
        return int(self.costs([record])[0])

    def costs(self, records: list[UtteranceRecord]) -> np.ndarray:
        """Token counts of the whole corpus in one call of the (Rust) fast tokenizer, cut at
        `max_length` as encoding cuts them (so transformers never warns of over-long sequences)."""
        texts = [r.text if r.text and r.text.strip() and not r.text_error else None for r in records]
        present = [k for k, t in enumerate(texts) if t is not None]
        out = np.zeros(len(records), dtype=np.int64)
        if present:
            ids = self.tokenizer([texts[k] for k in present], truncation=True, max_length=self.cfg.max_length)
            out[present] = [len(x) for x in ids["input_ids"]]
        return out

    def loader(self):
        return load_text

    @torch.inference_mode()
    def encode(self, inputs: list[str | None]) -> list[EncodeResult]:
        present = [k for k, t in enumerate(inputs) if t is not None]
        results = [EncodeResult(None, Status.MISSING_INPUT, "empty transcript")] * len(inputs)
        if not present:
            return results
        batch = self.tokenizer(
            [inputs[k] for k in present],
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        keep = (batch.pop("special_tokens_mask") == 0) & (batch["attention_mask"] == 1)  # (B, T)
        at_limit = [row for row, n in enumerate(batch["attention_mask"].sum(1).tolist()) if n == self.cfg.max_length]
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.timed(), self.autocast():
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[self.cfg.layer]  # (B, T, D)
        hidden = hidden.float().cpu().numpy()
        results = list(results)
        # word pieces before truncation of the rows that reached max_length, for a note on each cut
        # item (verbose=False: transformers would warn of "indexing errors" that truncation prevents)
        full = {}
        if at_limit:
            texts = [inputs[present[row]] for row in at_limit]
            ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            full = {row: len(pieces) for row, pieces in zip(at_limit, ids)}
        for row, k in enumerate(present):
            tokens = hidden[row][keep[row].numpy()]
            cut = (
                f"transcript cut to its first {len(tokens)} of {full[row]} word pieces "
                f"(extract.text.max_length = {self.cfg.max_length})"
                if full.get(row, 0) > len(tokens)
                else ""
            )
            results[k] = (
                EncodeResult(tokens, Status.OK, cut)
                if len(tokens)
                else EncodeResult(None, Status.MISSING_INPUT, "no tokens")
            )
        return results

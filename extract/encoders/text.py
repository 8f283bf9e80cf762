"""Text: a transformers encoder (default BERT-base), one vector per word piece, [CLS]/[SEP] dropped."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders.base import Encoder, EncodeResult
from cmarr.extract.encoders.hub import load_pretrained
from cmarr.extract.encoders.sizing import CPU_TOKENS, for_device
from cmarr.shared.config import TextEncoderConfig
from cmarr.shared.store.schema import ModalitySpec, Status


def load_text(record: UtteranceRecord) -> str | None:
    return record.text if record.text and record.text.strip() else None


class TextEncoder(Encoder):
    modality = "text"
    reads_files = False  # transcripts are in the records

    def __init__(self, cfg: TextEncoderConfig, device: torch.device, amp: str):
        super().__init__(device, amp)
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        self.tokenizer = load_pretrained(AutoTokenizer, cfg.model, cfg.revision, "text")
        self.model = load_pretrained(AutoModel, cfg.model, cfg.revision, "text").to(device).eval()
        self.budget = for_device(device, cfg.max_tokens_per_batch, CPU_TOKENS)

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            encoder=self.cfg.model,
            dim=self.model.config.hidden_size,
            revision=self._commit,
            layer=self.cfg.layer,
            extra={"unit": "wordpiece", "max_length": self.cfg.max_length},
        )

    @cached_property
    def _commit(self) -> str:
        return getattr(self.model.config, "_commit_hash", None) or self.cfg.revision

    def cost(self, record: UtteranceRecord) -> int:
        if not record.text or not record.text.strip():
            return 0
        return min(len(self.tokenizer(record.text)["input_ids"]), self.cfg.max_length)

    def costs(self, records: list[UtteranceRecord]) -> np.ndarray:
        """Token counts of the whole corpus in one call of the (Rust) fast tokenizer."""
        texts = [load_text(r) for r in records]
        present = [k for k, t in enumerate(texts) if t is not None]
        out = np.zeros(len(records), dtype=np.int64)
        if present:
            ids = self.tokenizer([texts[k] for k in present])["input_ids"]
            out[present] = np.minimum([len(x) for x in ids], self.cfg.max_length)
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
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.timed(), self.autocast():
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[self.cfg.layer]  # (B, T, D)
        hidden = hidden.float().cpu().numpy()
        results = list(results)
        for row, k in enumerate(present):
            tokens = hidden[row][keep[row].numpy()]
            results[k] = (
                EncodeResult(tokens, Status.OK)
                if len(tokens)
                else EncodeResult(None, Status.MISSING_INPUT, "no tokens")
            )
        return results

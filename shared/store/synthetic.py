"""Synthetic stores with realistic shapes, for tests and benchmarks (no encoder involved).

Lengths are log-normal around the per-modality mean, which matches the right-skewed duration
spread of acted corpora (IEMOCAP: 0.6 s to 34 s, mean 4.5 s). Each modality's lengths are drawn on
their own unless it is tied to the utterance's duration (`duration_corr`, `IEMOCAP_TIMED`): speech
and face frames are the duration times a rate, tokens follow it loosely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cmarr.shared.labels import FOUR_CLASS
from cmarr.shared.store.schema import ModalitySpec, Status, UtteranceTable
from cmarr.shared.store.writer import StoreWriter


@dataclass(frozen=True)
class SyntheticModality:
    mean_frames: float
    dim: int
    sigma: float = 0.6  # log-normal spread of lengths
    missing_rate: float = 0.0  # share of utterances whose modality is really missing
    duration_corr: float = 0.0  # correlation of its log-length with the utterance's log-duration; 0 = its own draw


# The paper's encoders on IEMOCAP: BERT tokens, wav2vec2 frames at 50 Hz, faces at 10 fps.
IEMOCAP_LIKE = {
    "text": SyntheticModality(25, 768, 0.5),
    "audio": SyntheticModality(225, 768, 0.6),
    "video": SyntheticModality(45, 342, 0.6),
}
# The same, with lengths tied to one duration per utterance, as a real corpus has them (what padding
# and length bucketing depend on): frames at a fixed rate follow it exactly, tokens loosely.
IEMOCAP_TIMED = {
    "text": SyntheticModality(25, 768, 0.5, duration_corr=0.8),
    "audio": SyntheticModality(225, 768, 0.6, duration_corr=1.0),
    "video": SyntheticModality(45, 342, 0.6, duration_corr=1.0),
}


def synthetic_lengths(
    n: int, mod: SyntheticModality, rng: np.random.Generator, duration: np.ndarray | None = None
) -> np.ndarray:
    """(n,) frames, log-normal with the modality's mean; `duration` (n,) standard normal: the
    utterances' log-durations, which a modality with `duration_corr` follows."""
    mu = np.log(mod.mean_frames) - mod.sigma**2 / 2  # so that the mean is mean_frames
    if mod.duration_corr and duration is not None:
        rho = mod.duration_corr
        z = rho * duration + np.sqrt(1 - rho**2) * rng.standard_normal(n)
        lengths = np.maximum(1, np.exp(mu + mod.sigma * z).round().astype(np.int64))
    else:  # the draw stores were always made with: their features stay as they were
        lengths = np.maximum(1, rng.lognormal(mu, mod.sigma, n).round().astype(np.int64))
    lengths[rng.random(n) < mod.missing_rate] = 0
    return lengths


def synthetic_table(n: int, sessions: int = 5, seed: int = 0, dialog_size: int | None = None) -> UtteranceTable:
    """`n` utterances over `sessions` sessions; two dialogs a session, or with `dialog_size` dialogs of
    that many utterances (IEMOCAP's average is 66: 10,039 over 151)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    session = np.arange(n) % sessions + 1
    # utterance i is in session i % sessions and the F or M half by i % 2, so every lcm(2, sessions)-th
    # utterance shares both: its rank there (i // lcm) cut into dialogs of `dialog_size`
    part = np.arange(n) // np.lcm(2, sessions) // dialog_size if dialog_size else np.zeros(n, np.int64)
    records = [
        {
            "id": f"Ses{session[i]:02d}{'FM'[i % 2]}_synth_{'FM'[(i // 2) % 2]}{i:05d}",
            "label": int(labels[i]),
            "label_name": FOUR_CLASS.classes[labels[i]],
            "session": f"Ses{session[i]:02d}",
            "speaker": f"Ses{session[i]:02d}{'FM'[(i // 2) % 2]}",
            "gender": "FM"[(i // 2) % 2],
            "dialog": f"Ses{session[i]:02d}{'FM'[i % 2]}_synth" + (f"{part[i]:03d}" if dialog_size else ""),
            "start": 0.0,
            "end": 1.0,
            "split_group": f"Ses{session[i]:02d}",
        }
        for i in range(n)
    ]
    return UtteranceTable.from_records(records)


def write_synthetic_store(
    path: str | Path,
    n: int,
    modalities: dict[str, SyntheticModality] | None = None,
    dtype: str = "float16",
    seed: int = 0,
    batch: int = 64,
    chunk_frames: int = 2048,
    class_signal: float = 0.0,
    dialog_size: int | None = None,
) -> dict[str, list[np.ndarray | None]]:
    """Write a store of random features and return them (already cast to `dtype`) for checks.
    `class_signal` > 0 shifts features by a per-class offset, giving a learnable label;
    `dialog_size`: see `synthetic_table`."""
    rng = np.random.default_rng(seed)
    modalities = modalities or IEMOCAP_LIKE
    table = synthetic_table(n, seed=seed, dialog_size=dialog_size)
    writer = StoreWriter.create(path, table, "synthetic", FOUR_CLASS)
    written: dict[str, list[np.ndarray | None]] = {}
    duration = np.random.default_rng([seed, 1]).standard_normal(n)  # its own generator: rng's draws unchanged
    for name, mod in modalities.items():
        lengths = synthetic_lengths(n, mod, rng, duration)
        centers = rng.normal(size=(4, mod.dim)).astype(np.float32)
        mw = writer.modality(name, ModalitySpec(encoder=f"synthetic-{name}", dim=mod.dim, dtype=dtype))
        feats: list[np.ndarray | None] = []
        for i in range(n):
            if lengths[i] == 0:
                feats.append(None)
                continue
            x = rng.standard_normal((lengths[i], mod.dim), dtype=np.float32)
            feats.append((x + class_signal * centers[table["label"][i]]).astype(dtype))
        for lo in range(0, n, batch):
            items = list(range(lo, min(lo + batch, n)))
            mw.write_part(
                items,
                [feats[i] for i in items],
                [Status.OK if feats[i] is not None else Status.MISSING_INPUT for i in items],
            )
        mw.finalize(chunk_frames)
        written[name] = feats
    return written

"""Synthetic stores with realistic shapes, for tests and benchmarks (no encoder involved).

Lengths are log-normal around the per-modality mean, which matches the right-skewed duration
spread of acted corpora (IEMOCAP: 0.6 s to 34 s, mean 4.5 s).
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


# The paper's encoders on IEMOCAP: BERT tokens, wav2vec2 frames at 50 Hz, faces at 10 fps.
IEMOCAP_LIKE = {
    "text": SyntheticModality(25, 768, 0.5),
    "audio": SyntheticModality(225, 768, 0.6),
    "video": SyntheticModality(45, 342, 0.6),
}


def synthetic_lengths(n: int, mod: SyntheticModality, rng: np.random.Generator) -> np.ndarray:
    mu = np.log(mod.mean_frames) - mod.sigma**2 / 2  # so that the mean is mean_frames
    lengths = np.maximum(1, rng.lognormal(mu, mod.sigma, n).round().astype(np.int64))
    lengths[rng.random(n) < mod.missing_rate] = 0
    return lengths


def synthetic_table(n: int, sessions: int = 5, seed: int = 0) -> UtteranceTable:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    session = np.arange(n) % sessions + 1
    records = [
        {
            "id": f"Ses{session[i]:02d}{'FM'[i % 2]}_synth_{'FM'[(i // 2) % 2]}{i:05d}",
            "label": int(labels[i]),
            "label_name": FOUR_CLASS.classes[labels[i]],
            "session": f"Ses{session[i]:02d}",
            "speaker": f"Ses{session[i]:02d}{'FM'[(i // 2) % 2]}",
            "gender": "FM"[(i // 2) % 2],
            "dialog": f"Ses{session[i]:02d}{'FM'[i % 2]}_synth",
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
) -> dict[str, list[np.ndarray | None]]:
    """Write a store of random features and return them (already cast to `dtype`) for checks.
    `class_signal` > 0 shifts features by a per-class offset, giving a learnable label."""
    rng = np.random.default_rng(seed)
    modalities = modalities or IEMOCAP_LIKE
    table = synthetic_table(n, seed=seed)
    writer = StoreWriter.create(path, table, "synthetic", FOUR_CLASS)
    written: dict[str, list[np.ndarray | None]] = {}
    for name, mod in modalities.items():
        lengths = synthetic_lengths(n, mod, rng)
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

"""The fixed cases of the parity records (tests/test_parity.py, bench/parity/record_*.py): weights
made from a seed by a procedure that needs no peer code, one fixed batch with a missing condition
per row, and the digest of a clipped gradient that is recorded and compared."""

from __future__ import annotations

import re

import numpy as np
import torch
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.systems import get_system

DIMS = {"audio": 768, "text": 768, "video": 342}  # cmarr's features: wav2vec2-base, BERT-base, Denseface
N_CLASSES = 4
LENGTHS = {"audio": [9, 4, 12, 7, 5, 10], "text": [7, 5, 9, 6, 8, 5], "video": [6, 8, 3, 5, 7, 4]}
LABELS = [0, 1, 2, 3, 1, 2]
# MMIN's six conditions, one per row, as [A, V, L] masks: azz, zvz, zzl, avz, azl, zvl
SIX = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]]
DIGEST = 32  # gradient elements recorded per parameter (evenly spaced), besides its norm


def published_cfg(switches: dict[str, dict] | None = None) -> TrainConfig:
    """cmarr's defaults with the peers' unmasked encoders (`masked_pooling = false`) and any other
    published-behaviour `switches` ({section: {field: value}}) a record names."""
    cfg = TrainConfig().model_dump()
    cfg["mmin_family"]["masked_pooling"] = False
    for section, values in (switches or {}).items():
        cfg[section].update(values)
    return TrainConfig.model_validate(cfg)


def build(system: str, stage_index: int = -1, switches: dict[str, dict] | None = None, modalities=None):
    """(stage, its model at cmarr's sizes); `modalities` orders the model's inputs (default DIMS's
    order; cmarr's trainer gives MODALITIES's, which is also DiCMoR's l, a, v)."""
    stage = get_system(system, published_cfg(switches)).stages[stage_index]
    return stage, stage.build({m: DIMS[m] for m in modalities or DIMS}, N_CLASSES)


def fill_weights(model: torch.nn.Module, seed: int, small: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the state dict, in name order, from one seeded generator: weights normal
    with std 1/sqrt(fan-in), biases normal with std 0.1, a tensor whose name matches a regex of
    `small` ({regex: std}, from a record's meta: near the zero start of a published zero-initialised
    layer) normal with that std. Returns the state dict."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, t in sorted(model.state_dict().items()):
        fan_in = int(np.prod(t.shape[1:])) if t.dim() > 1 else 1
        std = 1.0 / np.sqrt(fan_in) if t.dim() > 1 else 0.1
        std = next((v for pattern, v in (small or {}).items() if re.search(pattern, name)), std)
        state[name] = torch.randn(t.shape, generator=g, dtype=torch.float32) * std
    model.load_state_dict(state)
    return state


def given_rows(conditions: str) -> dict[str, list[bool]]:
    """Per modality the rows that give it: `full` every row, `six` one of MMIN's conditions per row,
    `given:<m>,<m>` every row the modalities named (DiCMoR's one missing pattern per batch)."""
    if conditions == "full":
        return {m: [True] * 6 for m in DIMS}
    if conditions.startswith("given:"):
        names = conditions[len("given:") :].split(",")
        assert set(names) <= set(DIMS), conditions
        return {m: [m in names] * 6 for m in DIMS}
    return {m: [bool(c[k]) for c in SIX] for m, k in (("audio", 0), ("video", 1), ("text", 2))}


def lengths(length: int | None = None) -> dict[str, list[int]]:
    """Each modality's row lengths: LENGTHS, or `length` for every row and modality (DiCMoR's
    word-aligned input: one common length)."""
    return LENGTHS if length is None else {m: [length] * 6 for m in DIMS}


def features(seed: int, length: int | None = None) -> dict[str, torch.Tensor]:
    """(B, T_m, F_m) zero-padded features, each row its `lengths(length)`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in ("audio", "text", "video"):
        rows = lengths(length)[m]
        T = max(rows)
        x = torch.randn(6, T, DIMS[m], generator=g)
        out[m] = x * (torch.arange(T)[None] < torch.tensor(rows)[:, None])[..., None]
    return out


def batch(seed: int, conditions: str, length: int | None = None, dialogs: dict | None = None) -> Batch:
    """cmarr's training batch of the case: every true feature known, the condition's given; rows
    of `lengths(length)`; `dialogs` ({"dialog": [...], "speaker": [...]} per row, a record's meta:
    GCNet's conversations) sets Batch.dialog / speaker."""
    x = features(seed, length)
    mask = {m: torch.arange(v.shape[1])[None] < torch.tensor(lengths(length)[m])[:, None] for m, v in x.items()}
    given = {m: torch.tensor(v) for m, v in given_rows(conditions).items()}
    known = {m: torch.ones(6, dtype=torch.bool) for m in x}
    out = Batch(x, mask, given, known, torch.tensor(LABELS))
    if dialogs:
        out.dialog, out.speaker = torch.tensor(dialogs["dialog"]), torch.tensor(dialogs["speaker"])
    return out


def digest(grad: torch.Tensor) -> np.ndarray:
    """[norm, DIGEST evenly spaced elements] of a gradient, float64."""
    flat = grad.detach().double().flatten()
    idx = torch.linspace(0, flat.numel() - 1, DIGEST).long()
    return torch.cat([flat.norm()[None], flat[idx]]).numpy()

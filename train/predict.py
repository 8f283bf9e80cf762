"""Load a trained split's checkpoint and label a store's utterances under a chosen condition."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.config import ModelConfig
from cmarr.shared.errors import ConfigError
from cmarr.shared.store import FeatureStore
from cmarr.train.conditions import MissingCondition
from cmarr.train.data import MODALITIES, Normaliser, StoreData
from cmarr.train.model import build_model


def predict_store(split_dir: Path, store_location: str, modalities: list[str], out: Path) -> int:
    ckpt_path = Path(split_dir) / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise ConfigError(f"{ckpt_path}: no checkpoint (point at a finished split folder)")
    if bad := set(modalities) - set(MODALITIES):
        raise ConfigError(f"--modalities: unknown {sorted(bad)}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    data = StoreData(FeatureStore.open(store_location))
    if data.dims != ckpt["dims"]:
        raise ConfigError(f"store features {data.dims} differ from the model's {ckpt['dims']}")
    model = build_model(ckpt["variant"], ckpt["dims"], len(ckpt["classes"]), ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    norm = Normaliser(
        {m: np.array(v, np.float32) for m, v in ckpt["norm"]["mean"].items()},
        {m: np.array(v, np.float32) for m, v in ckpt["norm"]["std"].items()},
    )
    cond = MissingCondition(frozenset(modalities))
    from cmarr.train.steps import predict_proba

    rows, probs = predict_proba(model, data, np.arange(len(data)), cond, norm, torch.device("cpu"))
    ids = data.store.utterances["id"]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prediction"] + [f"p_{c}" for c in ckpt["classes"]])
        for i, p in zip(rows, probs):
            w.writerow([ids[i], ckpt["classes"][int(p.argmax())]] + [f"{x:.4f}" for x in p])
    return len(rows)

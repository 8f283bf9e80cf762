"""Scoring a model under missing conditions: class probabilities, WAR and UAR per condition.

A condition is evaluated on the utterances whose store holds every modality it gives; the
batches carry only those modalities (`Batch.known` equals `Batch.given`), so a missing modality
is never read.
"""

from __future__ import annotations

import numpy as np
import torch
from cmarr.shared.devices import autocast
from cmarr.shared.modalities import MODALITIES
from cmarr.train.data import Normaliser, StoreData
from cmarr.train.metrics import war_uar
from cmarr.train.missing import ALL, MISSING, MissingCondition, eligible
from cmarr.train.model.base import reads_padding


@torch.no_grad()
def predict_proba(
    model,
    data: StoreData,
    indices: np.ndarray,
    condition: MissingCondition,
    norm: Normaliser,
    device,
    batch_size: int = 64,
    amp: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """(rows evaluated (R,), class probabilities (R, C) float32) for the rows of `indices` that hold
    every modality the condition gives."""
    model.eval()
    full_length = reads_padding(model)  # a dropped modality as zeros of its length (the peers' eval)
    rows = indices[eligible(data.present, indices, condition)]
    if getattr(model, "reads_dialogs", False):
        return rows, _dialog_proba(model, data, rows, condition, norm, device, amp)
    probs = []
    for lo in range(0, len(rows), batch_size):
        idx = rows[lo : lo + batch_size]
        given = {m: np.full(len(idx), m in condition.given) for m in MODALITIES}
        with autocast(device, amp):
            logits = model(data.batch(idx, given, norm, device, full_length=full_length)).logits
        probs.append(logits.float().softmax(-1).cpu().numpy())
    n_classes = len(data.store.classes)
    return rows, np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32)


def _dialog_proba(model, data: StoreData, rows, condition, norm, device, amp) -> np.ndarray:
    """Probabilities of `rows` (R, C) from a model that reads whole dialogs: each dialog that holds
    one of them, all its utterances in the store, under the condition (its context), one at a time."""
    probs = np.zeros((len(rows), len(data.store.classes)), np.float32)
    where = {int(r): k for k, r in enumerate(rows)}
    for dialog in data.whole_dialogs(rows) if len(rows) else []:
        given = {m: np.full(len(dialog), m in condition.given) for m in MODALITIES}
        with autocast(device, amp):
            logits = model(data.batch(dialog, given, norm, device, dialogs=True)).logits
        p = logits.float().softmax(-1).cpu().numpy()
        for k, r in enumerate(dialog):
            if int(r) in where:
                probs[where[int(r)]] = p[k]
    return probs


def evaluate(model, data, indices, norm, device, conditions=ALL, amp: str = "none") -> dict[str, dict]:
    """Per condition name: WAR, UAR, the number of utterances, and per utterance the row index,
    the predicted class and the class probabilities."""
    out = {}
    for c in conditions:
        rows, probs = predict_proba(model, data, indices, c, norm, device, amp=amp)
        pred = probs.argmax(-1) if len(rows) else np.zeros(0, np.int64)
        war, uar = war_uar(data.labels[rows], pred)
        out[c.name] = {
            "war": war,
            "uar": uar,
            "n": int(len(rows)),
            "ids": rows.tolist(),
            "pred": pred.tolist(),
            "probs": np.round(probs, 6).tolist(),
        }
    return out


def missing_uar(results: dict[str, dict]) -> float:
    """UAR averaged over the six missing conditions that have utterances (the selection score)."""
    vals = [results[c.name]["uar"] for c in MISSING if results[c.name]["n"]]
    return float(np.mean(vals)) if vals else float("nan")


def summary(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per condition WAR and UAR only (for metrics logs)."""
    return {k: {"war": v["war"], "uar": v["uar"]} for k, v in results.items()}

"""One training step and evaluation: the model's outputs -> named losses -> weighted sum."""

from __future__ import annotations

import numpy as np
import torch
from cmarr.shared.config import TrainConfig
from cmarr.shared.devices import autocast
from cmarr.train.conditions import MissingCondition
from cmarr.train.data import MODALITIES, Normaliser, StoreData
from cmarr.train.losses import ContrastiveAlignment, reconstruction_loss, supcon_loss
from cmarr.train.model import CMARR, Inputs, Outputs
from cmarr.train.model.flow import gaussian_nll
from cmarr.train.model.precision import full_precision
from torch.nn import functional as F


def loss_terms(
    model, align: ContrastiveAlignment | None, out: Outputs, inp: Inputs, labels: torch.Tensor, cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    """{'cls', 'udcl', 'spcl', 'rec', 'nll'}; the non-classification terms only for CM-ARR. Losses are
    computed in fp32 whatever autocast made of the outputs."""
    with full_precision(labels.device):
        terms = {"cls": F.cross_entropy(out.logits.float(), labels)}
        if not isinstance(model, CMARR):
            return terms
        terms["udcl"] = align(out.gaussians, out.computed)
        terms["spcl"] = supcon_loss(out.embeddings.float(), labels.repeat(len(MODALITIES)), cfg.loss.spcl_temperature)
        ones = torch.ones_like(out.z[MODALITIES[0]][:, 0], dtype=torch.bool)
        rec, nll = [], []
        for m in MODALITIES:
            rows = out.computed[m]
            if rows.any():
                prior = model.prior[labels[rows]]
                nll.append(gaussian_nll(out.z[m][rows], prior, out.logdet[m][rows], ones[rows]).mean())
            dropped = rows & ~inp.avail[m]  # reconstructed, and its true projection is known
            pred, target = out.reconstructed[m].float(), out.rec_target[m].float()
            rec.append(reconstruction_loss(pred, target, ones, dropped))
        terms["rec"] = torch.stack(rec).mean()
        terms["nll"] = torch.stack(nll).mean() if nll else terms["cls"] * 0
    return terms


def weights(cfg: TrainConfig) -> dict[str, float]:
    lw = cfg.loss
    return {
        "cls": 1.0,
        "udcl": 0.0 if cfg.variant == "no-udcl" else lw.alpha,
        "spcl": 0.0 if cfg.variant == "no-spcl" else lw.beta,
        "rec": lw.lambda_rec,
        "nll": lw.w_nll,
    }


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
    """(indices evaluated, class probabilities) for the rows that hold every modality the condition gives."""
    model.eval()
    rows = indices[data.eligible(indices, condition)]
    probs = []
    for lo in range(0, len(rows), batch_size):
        idx = rows[lo : lo + batch_size]
        avail = {m: np.full(len(idx), m in condition.available) for m in MODALITIES}
        with autocast(device, amp):
            logits = model(data.batch(idx, avail, norm, device)).logits
        probs.append(logits.float().softmax(-1).cpu().numpy())
    return rows, np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)


def predict(model, data, indices, condition, norm, device, batch_size: int = 64, amp: str = "none"):
    """(indices evaluated, predicted class)."""
    rows, probs = predict_proba(model, data, indices, condition, norm, device, batch_size, amp)
    return rows, probs.argmax(-1) if len(rows) else np.zeros(0, np.int64)

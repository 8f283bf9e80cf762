"""CM-ARR's losses, apart from the model: each returns a scalar; the training step weights them.

UDCL: symmetric InfoNCE between modality pairs, similarity a * D2W + b over diagonal Gaussians
(2-Wasserstein), or cosine over points for the "w/ Point" ablation. SPCL: supervised contrastive
loss over three views per utterance (pytorch-metric-learning's SupConLoss).
"""

from __future__ import annotations

import torch
from cmarr.train.precision import at_least_fp32
from torch import nn
from torch.nn import functional as F


def w2_distance(mu_a, sig_a, mu_b, sig_b) -> torch.Tensor:
    """Squared 2-Wasserstein distance between all pairs of diagonal Gaussians: (B, W) x (B, W) -> (B, B).
    For diagonal covariances it is ||mu_a - mu_b||^2 + ||sigma_a - sigma_b||^2."""
    return torch.cdist(mu_a, mu_b).pow(2) + torch.cdist(sig_a, sig_b).pow(2)


class UDCL(nn.Module):
    """The uncertainty-aware distribution contrastive loss (UDCL, the paper's Eq. 3-5) between two
    modalities' utterance Gaussians, with learnable scale a (< 0), shift b and temperature tau:
    S = a * W2^2 + b, symmetric InfoNCE over the batch on S / tau (cosine similarity of the means
    instead of W2 with `distribution=False`, Table 3's "w/ Point")."""

    def __init__(
        self, distribution: bool = True, a_init: float = -1 / 200, b_init: float = 4.0, tau_init: float = 0.07
    ):
        super().__init__()
        if a_init >= 0:
            raise ValueError("the W2 scale a must be negative (similarity falls with distance)")
        self.distribution = distribution
        self.log_neg_a = nn.Parameter(torch.tensor(float(-a_init)).log())
        self.b = nn.Parameter(torch.tensor(float(b_init)))
        self.log_tau = nn.Parameter(torch.tensor(float(tau_init)).log())

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(0.01, 1.0)

    def similarity(self, ga, gb) -> torch.Tensor:
        """(B, B) logits before the temperature; ga/gb are `Gaussians` (points when sigma is None)."""
        mu_a, mu_b = at_least_fp32(ga.mu), at_least_fp32(gb.mu)
        if self.distribution:
            sig_a, sig_b = at_least_fp32(ga.sigma), at_least_fp32(gb.sigma)
            return -self.log_neg_a.exp() * w2_distance(mu_a, sig_a, mu_b, sig_b) + self.b
        return F.normalize(mu_a, dim=-1) @ F.normalize(mu_b, dim=-1).T

    def forward(self, gaussians: dict, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over modality pairs of the symmetric InfoNCE, on the rows where both were encoded
        (`encoded[m]` (B,) bool)."""
        names, losses = list(gaussians), []
        for i, m in enumerate(names):
            for n in names[i + 1 :]:
                rows = encoded[m] & encoded[n]
                if rows.sum() < 2:
                    continue
                ga, gb = gaussians[m].rows(rows), gaussians[n].rows(rows)
                logits = self.similarity(ga, gb) / self.tau
                target = torch.arange(len(logits), device=logits.device)
                losses.append(F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return torch.stack(losses).mean() if losses else torch.zeros((), device=next(self.parameters()).device)


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.) on L2-normalised embeddings (N, E): every other
    sample with the same label is a positive, averaged over anchors that have one. Called without
    `ref_emb`, so the embeddings are their own references with self-pairs excluded: the pitfall of
    `ref_emb` does not arise (its `ref_labels` must then be a clone of the labels, else SupConLoss
    silently drops every positive)."""
    from pytorch_metric_learning.losses import SupConLoss

    return SupConLoss(temperature=temperature)(embeddings, labels)


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over valid steps of the rows whose dropped modality is really present."""
    if rows.sum() == 0:
        return pred.sum() * 0
    m = (mask[rows].unsqueeze(1)).to(pred.dtype)
    diff = (pred[rows] - target[rows]) ** 2 * m
    return diff.sum() / (m.sum() * pred.shape[1]).clamp(min=1)

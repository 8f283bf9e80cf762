"""my-system: a small late-fusion system, the example of a cmarr plugin.

    cmarr-train --plugin examples/my_system.py --systems my-system,cm-arr --preset fast --store ...

Each modality's given sequence is mean-pooled over its valid steps and classified on its own; the
utterance's logits are the mean over the modalities its condition gives (a missing one is never
read). It trains under cmarr's six missing conditions and is selected on validation, as every
system is. Its settings are `[train.my_system]` (in pipeline.toml, or `--set train.my_system.hidden=64`).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from cmarr import Batch, Section, Stage, StageOptim, System, SystemModel, register_system
from pydantic import Field
from torch import nn
from torch.nn import functional as F


class MySystemConfig(Section):
    """[train.my_system]: every field has a default; a misspelt key is an error naming it."""

    hidden: int = Field(128, gt=0)  # width of each modality's classifier
    dropout: float = Field(0.2, ge=0, lt=1)
    optim: StageOptim = StageOptim(optimizer="adamw", lr=1e-3, batch_size=16, epochs=30, patience=5)


class LateFusion(SystemModel):
    def __init__(self, dims: dict[str, int], n_classes: int, cfg: MySystemConfig):
        super().__init__()
        self.heads = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_classes)
                )
                for m, d in dims.items()
            }
        )

    def forward(self, batch: Batch):
        logits, count = 0.0, 0.0
        for m, head in self.heads.items():
            mask = batch.given_mask(m).unsqueeze(-1).to(batch.x[m].dtype)  # (B, T_m, 1): valid steps of given rows
            pooled = (batch.x[m] * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, F_m)
            given = batch.given[m].unsqueeze(-1).to(pooled.dtype)  # (B, 1)
            logits = logits + head(pooled) * given
            count = count + given
        return SimpleNamespace(logits=logits / count.clamp(min=1))  # (B, C)

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(out.logits.float(), batch.labels)}  # unweighted; the stage weights it


def my_system(cfg) -> System:
    c = cfg.my_system
    stage = Stage("my-system", lambda dims, k: LateFusion(dims, k, c), c.optim, {"ce": 1.0}, sampler="six")
    return System("my-system", "my-system: late fusion of per-modality classifiers (a plugin example)", (stage,))


register_system(
    "my-system",
    my_system,
    sections={"my_system": MySystemConfig},
    fast={"train.my_system.optim.epochs": 10, "train.my_system.optim.patience": 3},
)

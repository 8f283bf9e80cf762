"""The system interface: a *system* is a named list of *stages*; a stage trains one model.

A stage has its model (built from the store's feature dims and the class count), its missingness
sampler (`train/missing.py`), its unweighted named loss terms (the model's `losses`) with their
weights (from the config), its optimiser and schedule, and its selection rule: always the
validation part, never the test fold (`select_on`: UAR averaged over the six missing conditions,
or UAR under the full condition for full-data pretraining stages). A later stage can take an
earlier one's checkpoint through `Link`s: as **init** (copy named sub-modules, which then train),
as a frozen **teacher** (kept in eval mode, out of the optimiser, used for targets) or **frozen**
(copied and never trained, e.g. DiCMoR's projections).

Each system is defined in one module of `train/systems/` (models, loss terms, weights, stages);
the protocol (`train/protocol.py`) knows nothing of any system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cmarr.shared.train_config import StageOptim
from cmarr.train.model.base import SystemModel


@dataclass(frozen=True)
class Link:
    """Sub-modules a stage copies from an earlier stage's best checkpoint: `modules` maps this
    model's sub-module name to the earlier model's (e.g. {"teacher.audio": "encoders.audio"})."""

    stage: str
    kind: Literal["init", "teacher", "frozen"]
    modules: dict[str, str]


@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable[[dict[str, int], int], SystemModel]  # (feature dims per modality, classes) -> model
    optim: StageOptim
    weights: dict[str, float]  # loss term name -> weight; every term the model returns must have one
    sampler: str = "six"  # see train/missing.py SAMPLERS
    select_on: Literal["missing", "full"] = "missing"
    links: tuple[Link, ...] = ()
    sampler_rate: float = 0.5  # batch-schedule / fixed-rate missingness
    # learning-rate factor of a 1-based epoch (e.g. schedule.warmup_cosine); None: StageOptim's schedule,
    # constant for `epochs`, then decaying linearly over `decay_epochs`
    lr_schedule: Callable[[int], float] | None = None


@dataclass(frozen=True)
class System:
    name: str
    title: str  # the paper and what cmarr builds, for reports
    stages: tuple[Stage, ...]  # the last one is evaluated on the test part
    options: dict[str, Any] = field(default_factory=dict)  # recorded in every run (fusion, published-bug flags)
    config: dict[str, Any] = field(default_factory=dict)  # the config sections it reads (part of the run id)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def count_parameters(model: SystemModel) -> dict[str, int]:
    """{'trainable', 'frozen', 'total'} parameter counts (frozen: teachers, frozen projections)."""
    trainable = sum(p.numel() for p in model.trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}

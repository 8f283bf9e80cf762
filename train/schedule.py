"""Learning-rate schedules of a training stage: the factor of the stage's rate in each 1-based
epoch (train/stage.py feeds it to LambdaLR)."""

from __future__ import annotations

import math
from collections.abc import Callable

from cmarr.shared.train_config import StageOptim


def lr_factor(optim: StageOptim, epoch: int) -> float:
    """Learning-rate factor for 1-based `epoch`: 1 for the first `epochs`, then decaying linearly
    over `decay_epochs` (MMIN's `linear` policy: 1 - (epoch - niter) / (niter_decay + 1))."""
    return 1.0 - max(0, epoch - optim.epochs) / float(optim.decay_epochs + 1)


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor of 1-based epoch e under a linear warm-up from 0 over `warmup`
    epochs, then a cosine to 0 over the remaining `total - warmup`, as LNLN steps it
    (core/scheduler.py: GradualWarmupScheduler into CosineAnnealingLR(T_max = total - warmup), one
    step after each epoch): (e - 1) / warmup up to e = warmup + 1 (so epoch 1 trains at rate 0), then
    (1 + cos(pi (e - warmup - 2) / (total - warmup))) / 2. With `warmup` 0, the cosine from epoch 1."""
    span = max(1, total - warmup)

    def factor(epoch: int) -> float:
        if warmup and epoch <= warmup + 1:
            return (epoch - 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - (warmup + 2 if warmup else 1)) / span))

    return factor

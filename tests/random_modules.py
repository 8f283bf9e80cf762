"""Modules with every parameter random, for parity tests: a flow starts as the identity (zero
last coupling layer), so a test on freshly built modules could pass while comparing nothing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from cmarr.train.model.flow import InvConv1x1


def randomised(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """`build()` under `seed`, in float64, each parameter shifted by 0.3 N(0, 1) noise; the flows'
    1x1 convolutions stay the random rotations they start as, so invertible. The same seed gives
    the same module whatever ran before."""
    torch.manual_seed(seed)
    module = build().double()
    keep = {id(m.weight) for m in module.modules() if isinstance(m, InvConv1x1)}
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in keep:
                p.add_(0.3 * torch.randn_like(p))
    return module

"""The interface every trainable model offers the stage trainer (`train/stage.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from cmarr.train.batch import Batch
from torch import nn


class SystemModel(nn.Module):
    """What the stage trainer needs from a model.

    - `forward(batch) -> out` with `out.logits` (B, C); it reads a modality only on rows where
      `batch.given` gives it (the loader zeroes the rest at evaluation anyway);
    - `losses(batch, out) -> {name: scalar}` unweighted, computed in fp32;
    - `frozen`: names of sub-modules that never train (teachers, frozen projections): they stay in
      eval mode whatever `train()` is called with, hold no gradient and are not optimised;
    - `reads_missing_targets`: training batches must carry the true features of the modalities a
      condition drops (reconstruction or imagination targets), not only the given ones.
    """

    frozen: tuple[str, ...] = ()
    reads_missing_targets: bool = False
    reads_dialogs: bool = False  # batches of whole dialogs in time order, with Batch.dialog / speaker

    def losses(self, batch: Batch, out: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> SystemModel:
        super().train(mode)
        for name in self.frozen:
            self.get_submodule(name).eval()
        return self

    def freeze(self) -> None:
        """Stop gradients into the frozen sub-modules (called once they hold their weights)."""
        for name in self.frozen:
            self.get_submodule(name).requires_grad_(False)
            self.get_submodule(name).eval()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: every parameter outside the frozen sub-modules, except one
        built fixed (`requires_grad=False` from the start, e.g. IMDer's random Fourier features)."""
        frozen_ids = {id(p) for name in self.frozen for p in self.get_submodule(name).parameters()}
        return [p for p in self.parameters() if id(p) not in frozen_ids and p.requires_grad]

    def clip_groups(self) -> Iterator[list[nn.Parameter]]:
        """Trainable parameters per sub-network, as the MMIN family's `backward` clips each of its
        `net*` alone: a top-level sub-module is one group, except a container of per-modality
        networks (an `nn.ModuleDict`, or a module with `clip_apart`: MMIN's netA, netL, netV), which
        gives one group per member; the model's own parameters are one more."""
        trainable = {id(p) for p in self.trainable_parameters()}
        seen: set[int] = set()  # a module shared by two containers is clipped once
        for module in _sub_networks(self):
            params = [p for p in module.parameters() if id(p) in trainable and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                yield params
        own = [p for p in self._parameters.values() if p is not None and id(p) in trainable]
        if own:
            yield own


def reads_padding(model: nn.Module) -> bool:
    """Whether an encoder of `model` reads the batch's padding (the MMIN family's published,
    unmasked path): then a dropped modality must be zeros of its recording's length at evaluation,
    as the peers' datasets give it (and as training gives it), not one zero step."""
    return any(getattr(m, "reads_padding", False) for m in model.modules())


def _sub_networks(module: nn.Module) -> Iterator[nn.Module]:
    """The children of `module`, a per-modality container's members in its place (recursively)."""
    for child in module.children():
        if isinstance(child, nn.ModuleDict) or getattr(child, "clip_apart", False):
            yield from _sub_networks(child)
        else:
            yield child

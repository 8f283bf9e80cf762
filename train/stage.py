"""Training one stage of a system on one split: epochs, selection on validation, exact resume.

Per epoch: draw the stage's missingness, train on the epoch's batches (length-bucketed or shuffled:
train/batching.py; under autocast; the loss is the weighted sum of the model's named terms), score
the validation part, keep the best weights.
Selection reads the validation part only; with `report_test` the test part is also scored after
each epoch and logged, never used. After every epoch the whole state (weights, optimiser,
schedule, every random generator, counters, and whether the stage has finished) is saved, so a
run killed at any moment resumes to exactly the uninterrupted result.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cmarr.shared.console import finish_progress, report_progress
from cmarr.shared.devices import autocast
from cmarr.shared.errors import CmarrError
from cmarr.shared.prefetch import prefetch
from cmarr.shared.train_config import StageOptim
from cmarr.train.batching import Batching
from cmarr.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state,
    restore_rng,
    rng_state,
    save_checkpoint,
    save_state,
)
from cmarr.train.data import Normaliser, StoreData
from cmarr.train.evaluation import evaluate, missing_uar, summary
from cmarr.train.missing import ALL, FULL, MISSING, Sampler, build_sampler, training_rows
from cmarr.train.model.base import SystemModel
from cmarr.train.rundir import StageDir, StageProgress, StageState
from cmarr.train.schedule import lr_factor
from cmarr.train.systems.base import Stage, System
from cmarr.train.tracking import write_curves


class TrainingDiverged(CmarrError):
    """A loss became NaN or infinite: the run stops instead of writing results at chance."""


@dataclass
class SplitContext:
    """What every stage of one split shares."""

    data: StoreData
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    norm: Normaliser
    seed: int
    device: torch.device
    amp: str = "none"
    include_full: bool = False
    report_test: bool = False  # --selection-gap: score the test part every epoch, for the report only
    meta: dict[str, Any] = field(default_factory=dict)  # stamped on every checkpoint (fold, seed, run id, ...)
    log: Callable[[str], None] = print
    on_epoch: Callable[[str, dict], None] | None = None  # (stage, metrics line) after every epoch: the trackers
    batching: Batching = field(default_factory=Batching)  # which rows share a training batch (train.batching)


def run_stage(system: System, index: int, ctx: SplitContext, folders: dict[str, StageDir]) -> Path:
    """Train stage `index` of `system` into `folders[stage.name]`; returns its checkpoint (resuming a
    killed stage from its state, or returning at once when the stage had finished)."""
    stage = system.stages[index]
    folder = folders[stage.name]
    folder.path.mkdir(parents=True, exist_ok=True)
    if folder.checkpoint.is_file() and not folder.state.is_file():
        _check_owner(folder.checkpoint, ctx, stage.name)
        return folder.checkpoint
    run = _StageRun(system, index, ctx, folders)
    while not run.state.progress.done:
        run.epoch()
    progress = run.state.progress
    meta = {**ctx.meta, "stage": stage.name, "best_epoch": progress.best_epoch, "val_score": progress.best}
    save_checkpoint(folder.checkpoint, run.state.best_model, meta)
    folder.state.unlink(missing_ok=True)
    write_curves(folder.metrics, folder.curves, f"{ctx.meta.get('split', '')} {stage.name}")
    return folder.checkpoint


class _StageRun:
    """One stage's training loop: its model, optimiser, schedule, generators and progress, built
    from the stage's seed (the draws in a fixed order) and resumed from `state.pt` when there is one."""

    def __init__(self, system: System, index: int, ctx: SplitContext, folders: dict[str, StageDir]):
        self.stage, self.ctx, self.folder = system.stages[index], ctx, folders[system.stages[index].name]
        self.tests = ctx.report_test and index == len(system.stages) - 1  # logged only: selection never reads it
        seed = ctx.seed + 1000 * index  # stage 0 keeps the run's seed
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = build_stage_model(self.stage, ctx, folders).to(ctx.device)
        optim = self.stage.optim
        self.opt = make_optimizer(optim, self.model)
        factor = self.stage.lr_schedule or functools.partial(lr_factor, optim)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda e: factor(e + 1))
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp == "fp16" and ctx.device.type == "cuda")
        self.sampler = build_sampler(self.stage.sampler, ctx.include_full, self.stage.sampler_rate, seed)
        self.state = self._resumed() if self.folder.state.is_file() else self._fresh()
        self.rows = training_rows(self.sampler, ctx.data.present, ctx.train)

    def _fresh(self) -> StageState:
        # from scratch: a kill before the first state was saved may have left epoch 1's line
        _truncate(self.folder.metrics, 0)
        return StageState({}, {}, {}, {}, StageProgress())

    def _resumed(self) -> StageState:
        saved = StageState.from_dict(load_state(self.folder.state))
        self.model.load_state_dict(saved.model)
        self.opt.load_state_dict(saved.optimizer)
        self.schedule.load_state_dict(saved.schedule["lr"])
        self.scaler.load_state_dict(saved.schedule["scaler"])
        self.rng.bit_generator.state = saved.rng["numpy"]
        restore_rng(saved.rng)
        _truncate(self.folder.metrics, saved.progress.metrics_bytes)  # lines of epochs the state does not hold
        self.ctx.log(f"{self.ctx.meta.get('split', '')} {self.stage.name}: resuming after epoch {saved.progress.epoch}")
        return saved

    def epoch(self) -> None:
        """Train one epoch, select on validation, log its line and save the whole state."""
        stage, ctx, progress, model = self.stage, self.ctx, self.state.progress, self.model
        epoch, t0 = progress.epoch + 1, time.perf_counter()
        system = ctx.meta.get("system", stage.name)
        named = stage.name if stage.name == system else f"{system}/{stage.name}"  # cm-arr; mmin/pretrain
        task = " ".join(filter(None, (ctx.meta.get("split"), named, f"epoch {epoch}")))
        try:
            sums = train_epoch(model, stage, self.sampler, ctx, self.rows, self.opt, self.scaler, self.rng, task=task)
        finally:  # also when it stops (a diverged loss): no bar is left behind for the systems that go on
            finish_progress(task)
        self.schedule.step()
        val = evaluate(self.model, ctx.data, ctx.val, ctx.norm, ctx.device, _selection_conditions(stage), ctx.amp)
        score = missing_uar(val) if stage.select_on == "missing" else val[FULL.name]["uar"]
        improved = score > progress.best or self.state.best_model is None
        if improved:
            progress.best, progress.best_epoch, progress.stale = score, epoch, 0
            self.state.best_model = copy.deepcopy(self.model.state_dict())
        else:
            progress.stale += 1
        line = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 3), **sums, "val_score": score}
        line["val"] = summary(val)
        if self.tests:
            line["test"] = summary(evaluate(self.model, ctx.data, ctx.test, ctx.norm, ctx.device, ALL, ctx.amp))
        progress.metrics_bytes = _append(self.folder.metrics, line)
        if ctx.on_epoch is not None:
            ctx.on_epoch(stage.name, line)
        progress.epoch = epoch
        patience, total = stage.optim.patience, stage.optim.epochs + stage.optim.decay_epochs
        progress.done = epoch >= total or bool(patience and progress.stale >= patience)
        self._save()
        ctx.log(
            f"{ctx.meta.get('split', '')} {stage.name} epoch {epoch}: loss {sums.get('loss', float('nan')):.3f}, "
            f"val UAR ({stage.select_on}) {score:.3f}, padding {100 * sums['padded']:.0f}%" + (" *" if improved else "")
        )

    def _save(self) -> None:
        state = self.state
        state.model, state.optimizer = self.model.state_dict(), self.opt.state_dict()
        state.schedule = {"lr": self.schedule.state_dict(), "scaler": self.scaler.state_dict()}
        state.rng = {"numpy": self.rng.bit_generator.state, **rng_state()}
        save_state(self.folder.state, state.to_dict())


def build_stage_model(stage: Stage, ctx: SplitContext, folders: dict[str, StageDir]) -> SystemModel:
    """The stage's model, with the sub-modules its links copy from earlier stages' checkpoints."""
    n_classes = len(ctx.data.store.classes)
    model = stage.build(ctx.data.dims, n_classes)
    for link in stage.links:
        path = folders[link.stage].checkpoint
        state, _ = load_checkpoint(path)
        _check_owner(path, ctx, link.stage)
        for target, source in link.modules.items():
            prefix = source + "."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not sub:
                raise CheckpointError(f"{path}: has no sub-module {source!r} for {stage.name}.{target}")
            model.get_submodule(target).load_state_dict(sub)
    model.freeze()
    return model


def _check_owner(path: Path, ctx: SplitContext, stage: str) -> None:
    """A checkpoint is used only by the split, seed and run that made it (a teacher trained on
    another fold has seen this fold's test utterances)."""
    _, meta = load_checkpoint(path)
    for key in ("split", "seed", "run"):
        if meta.get(key) != ctx.meta.get(key):
            raise CheckpointError(
                f"{path}: stage {stage} was trained for {key} {meta.get(key)!r}, not {ctx.meta.get(key)!r}; "
                "a checkpoint from another fold, seed or run is never reused (delete it to retrain)"
            )


FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused (one kernel for all tensors) Adam/AdamW


def make_optimizer(optim: StageOptim, model: SystemModel) -> torch.optim.Optimizer:
    """Adam or AdamW over the model's trainable parameters, fused when every parameter is a float
    tensor on the CPU or a CUDA device: the for-loop implementation launches a handful of ops per
    parameter tensor, which cost CM-ARR (1,470 tensors) about 0.2 s of a 3 s CPU step; fused, 0.04 s.
    The update is the same algorithm (equal to float rounding: tests/test_stage_optim.py)."""
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    params = model.trainable_parameters()
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return cls(params, lr=optim.lr, betas=(optim.beta1, 0.999), weight_decay=optim.weight_decay, fused=fused or None)


def training_batch(model: SystemModel, ctx: SplitContext, indices: np.ndarray, given: dict[str, np.ndarray]):
    """The training batch of utterances `indices` (B,) in the missing condition `given` (m -> (B,)
    bool): a model that builds reconstruction targets also gets the true features of every
    really-present modality (`known`); any other model reads only what the condition gives."""
    known = {m: np.ones(len(indices), bool) for m in given} if model.reads_missing_targets else None
    return ctx.data.batch(indices, given, ctx.norm, ctx.device, known, dialogs=model.reads_dialogs)


def train_epoch(
    model, stage: Stage, sampler: Sampler, ctx: SplitContext, rows, opt, scaler, rng, timing=None, task: str = ""
):
    """One epoch; returns the mean loss and terms, and `padded`: the share of the batches' time steps
    that were padding (every modality together). `timing` (optional dict) collects seconds spent
    waiting for data vs in total, and the step count. With a `task` name, each step is reported to
    the command's progress display (a bar, or a line every few seconds when piped)."""
    model.train()
    data, device = ctx.data, ctx.device
    if model.reads_dialogs:  # whole dialogs, `batch_size` of them per batch
        batches = data.dialog_batches(rows, stage.optim.batch_size, rng)
    else:
        batches = data.epoch_batches(rows, stage.optim.batch_size, rng, ctx.batching)
    given = sampler.draw(data.present, batches, rng)  # drawn up front: the RNG order is fixed

    params = model.trainable_parameters()
    sums: dict[str, float] = {}
    steps, waited, start, real, padded = 0, 0.0, time.perf_counter(), 0, 0
    batches_built = (training_batch(model, ctx, batches[k], given[k]) for k in range(len(batches)))
    # On a GPU, the next batch is built on a thread while the device computes. On a CPU, such a
    # thread takes cores from torch's own threads, whose every parallel op then waits for it:
    # building in the loop is faster there (bench/train_cpu.py: lazy vs in-memory, step vs model).
    stream = prefetch(batches_built) if device.type == "cuda" else batches_built
    while True:
        t0 = time.perf_counter()
        batch = next(stream, None)
        waited += time.perf_counter() - t0
        if batch is None:
            break
        with autocast(device, ctx.amp):
            out = model(batch)
            terms = model.losses(batch, out)
        loss = sum(_weight(stage, k) * v.float() for k, v in terms.items())
        if not torch.isfinite(loss):
            _diverged(stage, ctx, terms)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        _clip(stage.optim, model, params)
        scaler.step(opt)
        scaler.update()
        for k, v in {"loss": loss, **terms}.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        steps += 1
        real = real + sum(v.sum() for v in batch.mask.values())  # on the device: read once, after the epoch
        padded += sum(v.numel() for v in batch.mask.values())
        if task:
            report_progress(task, steps, len(batches))
    if timing is not None:
        timing["data_wait"] = timing.get("data_wait", 0.0) + waited
        timing["total"] = timing.get("total", 0.0) + time.perf_counter() - start
        timing["steps"] = timing.get("steps", 0) + steps
    return {**{k: v / max(steps, 1) for k, v in sums.items()}, "padded": 1.0 - float(real) / max(padded, 1)}


def _weight(stage: Stage, term: str) -> float:
    if term not in stage.weights:
        raise KeyError(f"stage {stage.name}: the model returns a loss term {term!r} with no weight")
    return stage.weights[term]


def _clip(optim: StageOptim, model: SystemModel, params) -> None:
    if optim.clip <= 0:
        return
    if optim.clip_mode == "value":
        torch.nn.utils.clip_grad_value_(params, optim.clip)
    elif optim.clip_mode == "norm-per-module":
        for group in model.clip_groups():
            torch.nn.utils.clip_grad_norm_(group, optim.clip)
    else:
        torch.nn.utils.clip_grad_norm_(params, optim.clip)


def _diverged(stage: Stage, ctx: SplitContext, terms: dict[str, torch.Tensor]) -> None:
    values = ", ".join(f"{k} {v.item():.4g}" for k, v in terms.items())
    raise TrainingDiverged(
        f"{ctx.meta.get('split', '')} {stage.name}: the loss became non-finite ({values}); the run stops "
        "rather than write results. Check the store (cmarr-store verify) and lower the learning rate."
    )


def _selection_conditions(stage: Stage):
    return MISSING if stage.select_on == "missing" else (FULL,)


def _append(path: Path, line: dict) -> int:
    """Append a JSON line; returns the file's size after it (what a resumed stage keeps)."""
    with open(path, "a") as f:
        f.write(json.dumps(line, allow_nan=True) + "\n")
    return path.stat().st_size


def _truncate(path: Path, size: int) -> None:
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


__all__ = ["SplitContext", "TrainingDiverged", "lr_factor", "run_stage", "train_epoch"]

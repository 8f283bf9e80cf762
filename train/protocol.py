"""The paper's protocol: leave-one-session-out folds, training under random missing conditions,
selection on validation UAR averaged over the six missing conditions, test under all seven.

Validation is never drawn from the test fold: by default a stratified share of the training
sessions; with `val_rule = "other-speaker"` the held-out session's speakers take turns as
validation and test (MMIN's protocol), and the session's result joins both halves.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.config import TrainConfig
from cmarr.shared.errors import ConfigError
from cmarr.shared.prefetch import prefetch
from cmarr.train.conditions import ALL, FULL, MISSING, MissingCondition
from cmarr.train.data import MODALITIES, StoreData
from cmarr.train.losses import ContrastiveAlignment
from cmarr.train.metrics import war_uar
from cmarr.train.model import CMARR, build_model
from cmarr.train.model.cmarr import variant_model_config
from cmarr.train.steps import autocast, loss_terms, predict, weights
from sklearn.model_selection import train_test_split


@dataclass
class Split:
    name: str  # the held-out session (and speaker, for other-speaker folds)
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_splits(
    data: StoreData, indices: np.ndarray, folds: int | None, cfg: TrainConfig, seed: int
) -> list[list[Split]]:
    """Per fold (one per session), the list of splits whose test parts make up the session."""
    sessions = data.store.utterances["session"]
    names = sorted(set(sessions[indices].tolist()))
    if folds is not None and folds != len(names):
        raise ConfigError(
            f"--folds {folds}, but the store has {len(names)} sessions ({', '.join(names)}); folds are one per session"
        )
    out = []
    for s in names:
        held = indices[sessions[indices] == s]
        rest = indices[sessions[indices] != s]
        if cfg.val_rule == "stratified":
            train, val = _stratified(rest, data.labels[rest], cfg.val_fraction, seed)
            out.append([Split(s, train, val, held)])
        else:
            speakers = data.store.utterances["speaker"][held]
            spk = sorted(set(speakers.tolist()))
            if len(spk) < 2:
                raise ConfigError(f"val_rule other-speaker needs two speakers in session {s}, found {spk}")
            out.append([Split(f"{s}/{t}", rest, held[speakers != t], held[speakers == t]) for t in spk])
    return out


def _stratified(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    try:
        return train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify: fall back to a plain random split
        return train_test_split(idx, test_size=fraction, random_state=seed)


def training_conditions(cfg: TrainConfig) -> tuple[MissingCondition, ...]:
    if cfg.variant == "baseline":
        return (FULL,)
    return MISSING + ((FULL,) if cfg.include_full_condition else ())


def evaluate(model, data, indices, norm, device, conditions=ALL, amp="none") -> dict[str, dict]:
    """Per condition: WAR, UAR, and the predictions (for confusion matrices)."""
    out = {}
    for c in conditions:
        rows, pred = predict(model, data, indices, c, norm, device, amp=amp)
        war, uar = war_uar(data.labels[rows], pred)
        out[c.name] = {"war": war, "uar": uar, "n": int(len(rows)), "ids": rows.tolist(), "pred": pred.tolist()}
    return out


def missing_uar(results: dict[str, dict]) -> float:
    vals = [results[c.name]["uar"] for c in MISSING if results[c.name]["n"]]
    return float(np.mean(vals)) if vals else float("nan")


def train_split(
    data: StoreData, split: Split, cfg: TrainConfig, seed: int, device: torch.device, folder: Path, log=print
) -> dict:
    """Train on one split (resuming from `folder/state.pt`), return its test results."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm = data.normaliser(split.train)
    n_classes = len(data.store.classes)
    model = build_model(cfg.variant, data.dims, n_classes, cfg.model).to(device)
    align = ContrastiveAlignment(
        variant_model_config(cfg.variant, cfg.model).alignment == "distribution",
        cfg.loss.d2w_scale_init,
        cfg.loss.d2w_shift_init,
        cfg.loss.tau_init,
    ).to(device)
    params = list(model.parameters()) + (list(align.parameters()) if isinstance(model, CMARR) else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "best": -1.0, "best_epoch": -1, "stale": 0, "best_state": None}
    if (folder / "state.pt").is_file():  # resume an interrupted split
        saved = torch.load(folder / "state.pt", map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        align.load_state_dict(saved["align"])
        opt.load_state_dict(saved["opt"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log(f"{split.name}: resuming after epoch {state['epoch']}")
    w = weights(cfg)
    conditions = training_conditions(cfg)
    train_rows = split.train
    if cfg.variant == "baseline":  # complete data only
        train_rows = train_rows[data.eligible(train_rows, FULL)]
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        sums = _train_epoch(model, align, data, train_rows, conditions, norm, cfg, w, opt, rng, device)
        val = evaluate(model, data, split.val, norm, device, MISSING, cfg.amp)
        score = missing_uar(val)
        improved = score > state["best"]
        if improved:
            state.update(best=score, best_epoch=epoch, stale=0, best_state=copy.deepcopy(model.state_dict()))
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        line = {
            "epoch": epoch,
            "seconds": round(time.perf_counter() - t0, 3),
            **sums,
            "val_missing_uar": score,
            "val": {k: {"war": v["war"], "uar": v["uar"]} for k, v in val.items()},
        }
        with open(folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        torch.save(
            {
                "model": model.state_dict(),
                "align": align.state_dict(),
                "opt": opt.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "state": state,
            },
            folder / "state.pt.partial",
        )
        (folder / "state.pt.partial").replace(folder / "state.pt")
        log(
            f"{split.name} epoch {epoch}: loss {sums['loss']:.3f}, val UAR (missing avg) {score:.3f}"
            + (" *" if improved else "")
        )
        if state["stale"] >= cfg.patience:
            break
    model.load_state_dict(state["best_state"])
    torch.save(
        {
            "model": state["best_state"],
            "dims": data.dims,
            "classes": data.store.classes,
            "variant": cfg.variant,
            "model_config": cfg.model.model_dump(),
            "norm": {
                "mean": {m: norm.mean[m].tolist() for m in MODALITIES},
                "std": {m: norm.std[m].tolist() for m in MODALITIES},
            },
        },
        folder / "checkpoint.pt",
    )
    result = {
        "split": split.name,
        "best_epoch": state["best_epoch"],
        "val_missing_uar": state["best"],
        "test": evaluate(model, data, split.test, norm, device, ALL, cfg.amp),
    }
    done.write_text(json.dumps(result))
    (folder / "state.pt").unlink(missing_ok=True)
    return result


def _train_epoch(model, align, data, rows, conditions, norm, cfg, w, opt, rng, device, timing=None) -> dict[str, float]:
    """One epoch; `timing` (optional dict) collects seconds spent waiting for data vs in total."""
    model.train()
    order = data.epoch_order(rows, rng)
    batches = [order[lo : lo + cfg.batch_size] for lo in range(0, len(order), cfg.batch_size)]
    batches = [b for b in batches if len(b) >= 2]  # contrastive terms need at least two rows
    conds = [[_draw(conditions, data, i, rng) for i in b] for b in batches]  # drawn up front: RNG order fixed
    is_cmarr = isinstance(model, CMARR)

    def build(k):
        idx = batches[k]
        inp = data.batch(idx, data.condition_masks(conds[k]), norm, device)
        targets = data.batch(idx, {m: np.ones(len(idx), bool) for m in MODALITIES}, norm, device) if is_cmarr else None
        return idx, inp, targets

    sums: dict[str, float] = {}
    steps, waited, start = 0, 0.0, time.perf_counter()
    stream = prefetch(build(k) for k in range(len(batches)))
    while True:
        t0 = time.perf_counter()
        item = next(stream, None)
        waited += time.perf_counter() - t0
        if item is None:
            break
        idx, inp, targets = item
        labels = torch.from_numpy(data.labels[idx]).to(device)
        with autocast(device, cfg.amp):
            out = model(inp, targets)
            terms = loss_terms(model, align, out, inp, labels, cfg)
        loss = sum(w[k] * v.float() for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        for k, v in {"loss": loss, **terms}.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        steps += 1
    if timing is not None:
        timing["data_wait"] = timing.get("data_wait", 0.0) + waited
        timing["total"] = timing.get("total", 0.0) + time.perf_counter() - start
        timing["steps"] = timing.get("steps", 0) + steps
    return {k: v / max(steps, 1) for k, v in sums.items()}


def _draw(conditions, data, i, rng) -> MissingCondition:
    """A condition whose given modalities the utterance really has (falls back to what it has)."""
    usable = [c for c in conditions if all(data.present[m][i] for m in c.available)]
    if not usable:
        return MissingCondition(frozenset(m for m in MODALITIES if data.present[m][i]))
    return usable[rng.integers(len(usable))]

"""What padding costs a training step, per system and stage: the batches before issue 34 (shuffled,
the MMIN family's masked LSTMs packed on every device) against the ones since (length-bucketed,
the masked LSTMs dense on a CPU), in one process. Shared by bench/train_cpu.py (its batching
section) and bench/train_gpu.py (its per-system rows).

- padded FLOPs: `FlopCounterMode` over forward, losses and backward of a batch as trained (the
  padding computed where the code computes it);
- useful FLOPs: the same count for every row alone, trimmed to its own lengths (as a pair of
  itself, since in-batch terms need two rows, halved): real frames only; exact for batches of up
  to `ROWS` rows, from `ROWS` rows drawn at random (scaled to the batch) above;
- step time: building the batch (reading, normalising, padding) and the model step (forward,
  losses, backward, optimizer) on it, the two batchings' batches alternating so that the machine's
  drift falls on both;
- an epoch: its batches ranked by padded values (rows x longest steps x width, every modality) and
  `k` of them timed, at evenly spaced quantiles of that ranking, so each batching's long tail is
  represented; the epoch is their mean step times the epoch's batch count.
"""

from __future__ import annotations

import contextlib
import sys
import time

import numpy as np

ROWS = 32  # rows counted one by one per batch for its useful FLOPs (all of them in smaller batches)


def lstm_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's fused LSTM layer (the dense LSTM on a CPU), which FlopCounterMode does not count:
    the input and recurrent matmuls of every step, 2 x steps x 4H x (F + H)."""
    steps = int(np.prod(input_shape[:-1]))
    return 2 * steps * w_ih_shape[0] * (w_ih_shape[1] + w_hh_shape[1])


def lstm_backward_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """Its backward: gradients of inputs and weights, twice the forward's matmuls."""
    return 2 * lstm_flops(input_shape, w_ih_shape, w_hh_shape)


@contextlib.contextmanager
def code_before():
    """The MMIN family's masked LSTMs packed on the CPU too, as before issue 34 (cmarr runs them
    dense there since: the same values, train/model/mmin_parts.py)."""
    from cmarr.train.model.mmin_parts import LSTMEncoder

    dense = LSTMEncoder._dense
    LSTMEncoder._dense = LSTMEncoder._packed
    try:
        yield
    finally:
        LSTMEncoder._dense = dense


def row_pair(batch, i: int):
    """Row i of `batch` twice, each modality trimmed to the row's own steps (at least one)."""
    from cmarr.train.batch import Batch

    pair = [i, i]
    x, mask = {}, {}
    for m in batch.x:
        n = max(1, int(batch.mask[m][i].sum()))
        x[m], mask[m] = batch.x[m][pair, :n], batch.mask[m][pair, :n]
    given = {m: v[pair] for m, v in batch.given.items()}
    known = {m: v[pair] for m, v in batch.known.items()}
    return Batch(x, mask, given, known, batch.labels[pair])


def count_flops(model, stage, batch, counter_factory, device, amp) -> float:
    """FLOPs of forward, losses and backward on `batch` (no optimizer step: the weights stay)."""
    from cmarr.shared.devices import autocast

    counter = counter_factory()
    with counter, autocast(device, amp):
        out = model(batch)
        terms = model.losses(batch, out)
        sum(stage.weights[k] * v.float() for k, v in terms.items()).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def useful_flops(model, stage, batch, counter_factory, device, amp, rng) -> float:
    """Real frames only: every row alone (a random `ROWS` of them in larger batches, scaled)."""
    rows = np.arange(batch.size) if batch.size <= ROWS else rng.choice(batch.size, ROWS, replace=False)
    total = sum(count_flops(model, stage, row_pair(batch, int(i)), counter_factory, device, amp) / 2 for i in rows)
    return total * batch.size / len(rows)


def padded_values(data, rows: np.ndarray) -> int:
    """Values a batch of `rows` holds once padded: rows x longest steps x width, every modality."""
    return sum(len(rows) * max(1, int(data.lengths[m][rows].max())) * data.dims[m] for m in data.dims)


def steps_share(data, batches) -> float:
    """The padded share of the batches' time steps, every modality (the rows' stored lengths)."""
    real = sum(int(data.lengths[m][b].sum()) for b in batches for m in data.dims)
    padded = sum(len(b) * max(1, int(data.lengths[m][b].max())) for b in batches for m in data.dims)
    return 1.0 - real / padded


def quantile_batches(data, batches, k: int) -> list[np.ndarray]:
    """`k` of the epoch's batches at evenly spaced quantiles of their padded values."""
    ranked = sorted(batches, key=lambda b: padded_values(data, b))
    picks = np.unique(((np.arange(k) + 0.5) / k * len(ranked)).astype(int).clip(0, len(ranked) - 1))
    return [ranked[i] for i in picks]


def _timed_step(model, stage, opt, ctx, rows, given, amp, sync) -> tuple[float, float, object]:
    """(seconds to build the batch, seconds of the model step, the batch)."""
    from cmarr.train.stage import training_batch
    from train_cpu import _model_step

    t0 = time.perf_counter()
    batch = training_batch(model, ctx, rows, given)
    sync()
    t1 = time.perf_counter()
    _model_step(model, stage, opt, batch, ctx.device, amp)
    sync()
    return t1 - t0, time.perf_counter() - t1, batch


def compare_stage(stage, ctx, variants, k: int, counter_factory, sync, seed: int = 0, useful: bool = True) -> dict:
    """Per variant (name -> (Batching, whether the code before runs it)): the epoch's padding, and
    over `k` quantile batches the build and model seconds, padded and (with `useful`) useful FLOPs
    per step. `sync` waits for the device (CUDA runs asynchronously)."""
    import torch
    from cmarr.train.missing import build_sampler, training_rows
    from cmarr.train.stage import make_optimizer

    torch.manual_seed(seed)
    model = stage.build(ctx.data.dims, 4).to(ctx.device)
    opt = make_optimizer(stage.optim, model)
    sampler = build_sampler(stage.sampler, False, stage.sampler_rate, seed)
    rows = training_rows(sampler, ctx.data.present, ctx.train)
    bs, plans = stage.optim.batch_size, {}
    for name, (batching, _) in variants.items():
        if model.reads_dialogs:  # GCNet: `bs` whole dialogs a batch, as training takes them
            epoch = ctx.data.dialog_batches(rows, bs, np.random.default_rng(seed))
        else:
            epoch = ctx.data.epoch_batches(rows, bs, np.random.default_rng(seed), batching)
        picked = quantile_batches(ctx.data, epoch, k)
        given = sampler.draw(ctx.data.present, picked, np.random.default_rng(seed + 1))
        plans[name] = {"epoch": epoch, "picked": picked, "given": given}
    model.train()
    for name, (_, before) in variants.items():  # warm-up, each code path once
        with code_before() if before else contextlib.nullcontext():
            _timed_step(model, stage, opt, ctx, plans[name]["picked"][0], plans[name]["given"][0], ctx.amp, sync)
    out = {name: {"build_s": 0.0, "model_s": 0.0, "padded": 0.0, "useful": 0.0} for name in variants}
    rng = np.random.default_rng(seed + 2)
    for j in range(k):
        for name in variants if j % 2 == 0 else reversed(list(variants)):
            plan, (_, before) = plans[name], variants[name]
            if j >= len(plan["picked"]):
                continue
            with code_before() if before else contextlib.nullcontext():
                built, stepped, batch = _timed_step(
                    model, stage, opt, ctx, plan["picked"][j], plan["given"][j], ctx.amp, sync
                )
                out[name]["padded"] += count_flops(model, stage, batch, counter_factory, ctx.device, ctx.amp)
            if useful:
                out[name]["useful"] += useful_flops(model, stage, batch, counter_factory, ctx.device, ctx.amp, rng)
            out[name]["build_s"] += built
            out[name]["model_s"] += stepped
    for name, r in out.items():
        n = len(plans[name]["picked"])
        r.update({key: r[key] / n for key in ("build_s", "model_s", "padded", "useful")})
        r.update(batches=len(plans[name]["epoch"]), padding=steps_share(ctx.data, plans[name]["epoch"]), timed=n)
    from cmarr.train.systems import count_parameters

    epochs = stage.optim.epochs + stage.optim.decay_epochs  # the paper preset's at most (early stopping aside)
    trainable = count_parameters(model)["trainable"]
    return {"batch": bs, "rows": len(rows), "epochs": epochs, "trainable": trainable, "variants": out}


__all__ = ["code_before", "compare_stage", "lstm_backward_flops", "lstm_flops", "quantile_batches", "row_pair"]


# ----------------------------------------------------------------------------- the CPU's section

MMIN_FAMILY = ("utt-fusion", "mmin", "if-mmin", "cif-mmin")
VARIANTS = ("before", "bucketed")  # shuffled + packed LSTMs (the code before issue 34), and the default since


def batching_worker(store: str, k: int, systems: list[str] | None) -> dict:
    """Every Table 2 system's stages (or `systems`), before and since, with the roof around each."""
    import torch
    from cmarr.train.batching import Batching
    from cmarr.train.systems import get_system, group
    from train_cpu import _cfg, _setup, flop_counter, matmul_roof

    _, data, _, _, _, ctx, _ = _setup(store, True)
    variants = {"before": (Batching("shuffled"), True), "bucketed": (Batching(), False)}
    out = {}
    for name in systems or group("table2"):
        for stage in get_system(name, _cfg()).stages:
            before = matmul_roof()
            r = compare_stage(stage, ctx, variants, k, flop_counter, lambda: None)
            r["roof_gflops"] = max(before, matmul_roof())  # the higher: a slow moment cannot raise a fraction
            out[f"{name}/{stage.name}"] = r
            print(name, stage.name, r, file=sys.stderr, flush=True)
    return {"stages": out, "n": len(data), "threads": torch.get_num_threads()}


def _epoch_s(v: dict, rows: int, train: int) -> float:
    """Seconds per epoch at `train` training utterances: mean step x the epoch's batches, scaled."""
    return (v["build_s"] + v["model_s"]) * v["batches"] * train / rows


def batching_rows(result: dict, train: int) -> tuple[list[list], dict[str, float]]:
    """The section's table rows and each stage's epoch speed-up."""
    rows, speedups = [], {}
    for key, r in result["stages"].items():
        b, a = (r["variants"][v] for v in VARIANTS)
        roof = r["roof_gflops"]
        epochs = [_epoch_s(v, r["rows"], train) for v in (b, a)]
        speedups[key] = epochs[0] / epochs[1]
        rows.append([
            key, r["batch"], f"{r['trainable']:,}", f"{100 * b['padding']:.0f}% -> {100 * a['padding']:.0f}%",
            f"{b['padded'] / 1e9:.1f} / {b['useful'] / 1e9:.1f}", f"{a['padded'] / 1e9:.1f} / {a['useful'] / 1e9:.1f}",
            f"{b['build_s']:.2f} + {b['model_s']:.2f}", f"{a['build_s']:.2f} + {a['model_s']:.2f}",
            f"{epochs[0]:.0f} -> {epochs[1]:.0f} ({speedups[key]:.1f}x)",
            f"{r['epochs']}: " + " -> ".join(f"{e * r['epochs'] / 60:.0f}" for e in epochs),
            " / ".join(f"{100 * v['useful'] / v['model_s'] / 1e9 / roof:.0f}%" for v in (b, a)),
            f"{roof:.0f}",
        ])  # fmt: skip
    return rows, speedups


def batching_section(result: dict, command: str, train: int) -> str:
    """The Markdown section: the table, then the targets, as ratios within this one run."""
    from common import md_table

    rows, speedups = batching_rows(result, train)
    header = ["system/stage", "batch", "trainable params", "padded steps (before -> bucketed)",
              "GFLOP / step before (padded / useful)",
              "GFLOP / step bucketed (padded / useful)", "s / step before (build + model)",
              "s / step bucketed (build + model)", f"s / epoch at {train} utterances (speed-up)",
              "paper epochs: minutes per fold at most (before -> bucketed)",
              "model step of the roof, useful FLOPs (before / bucketed)", "roof GFLOP/s"]  # fmt: skip
    verdicts = []
    if "cm-arr/cm-arr" in result["stages"]:
        r = result["stages"]["cm-arr/cm-arr"]
        a = r["variants"]["bucketed"]
        share = a["useful"] / a["model_s"] / 1e9 / r["roof_gflops"]
        verdicts += [
            f"- CM-ARR epoch: {speedups['cm-arr/cm-arr']:.2f}x faster (target >= 1.6x)",
            f"- CM-ARR model step on useful FLOPs: {100 * share:.0f}% of the roof (target >= 25%)",
        ]
    family = {k: v for k, v in speedups.items() if k.split("/")[0] in MMIN_FAMILY}
    if family:
        worst = min(family, key=family.get)
        verdicts.append(
            f"- MMIN-family epochs: {min(family.values()):.1f}x to {max(family.values()):.1f}x faster, the least "
            f"{worst} (target >= 3x)"
        )
    k = max(v["timed"] for r in result["stages"].values() for v in r["variants"].values())
    return (
        "## Batching: before issue 34 and since, per system and stage (one process)\n\n"
        f"Command: `{command}`\n\n"
        f"A synthetic IEMOCAP-shaped store of {result['n']} utterances whose lengths follow one duration per "
        "utterance (`IEMOCAP_TIMED`: speech and face frames exactly, tokens loosely), in memory, "
        f"{result['threads']} threads; every system at its published sizes and batch size. 'Before' is the code "
        "before issue 34: shuffled batches and the MMIN family's masked LSTMs packed; 'bucketed' is the default "
        "since: length-bucketed batches (10 bands of equal total length) and those LSTMs dense on the CPU "
        f"(the same values). Per stage and batching, {k} of the epoch's batches are timed, at evenly spaced "
        "quantiles of their padded size, the two batchings alternating; the epoch is their mean step times its "
        "batch count. Padded steps: the share of the epoch's time steps (every modality) that is padding. "
        "Useful FLOPs: each row counted alone at its own lengths (real frames only; in batches over 32 rows, 32 "
        "rows drawn at random and scaled). The roof: the best of 5 fp32 2048^3 matmuls, before and after the "
        "stage (the higher). Minutes per fold: the paper preset's epochs (with the decay epochs) times the "
        "epoch, without validation scoring; early stopping usually ends a stage sooner.\n\n"
        + md_table(header, rows)
        + "\n"
        + "\n".join(verdicts)
        + "\n"
    )


__all__ += ["batching_section", "batching_worker"]

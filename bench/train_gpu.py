"""Benchmark: training on a GPU, one prepared script that fits 10 minutes (`--budget-s`). Writes
bench/results/train-gpu.md (with `--device cpu`, the same code on the CPU, as a dry run of the
script: use bench/train_cpu.py for the CPU's figures).

On a synthetic IEMOCAP-shaped store (lengths tied to one duration per utterance, float16, in
memory) of a fold's training part (3982) and validation part (443), with cmarr's default batching
(length-bucketed) and autocast (bf16):

1. CM-ARR at the paper's sizes (batch 16) against the GPU's own matmul roof measured in the same
   process (the best of 5 dense 8192^3 matmuls in the autocast dtype, before and after): steps/s
   of the training loop (`train_epoch`: batching, host-to-device copies, forward, losses, backward,
   optimizer) and of the model alone on batches already on the device, FLOPs per step
   (`FlopCounterMode`) and their rate, peak device memory, and one step at the longest lengths;
2. a paper-preset epoch of CM-ARR, run: every training utterance once (`train_epoch`), then the
   validation scoring model selection does; a fold is at most the preset's epochs of that;
3. every Table 2 system, per stage, at its published sizes and batch size (GCNet's batches whole
   dialogs: the store's dialogs hold 66 utterances, IEMOCAP's average): `--stage-batches` of the epoch's
   batches at evenly spaced quantiles of their padded size (bench/train_batches.py), bf16 step
   time (building the batch + the model step), padded and useful GFLOP per step, peak memory.

Parts run in that order while the budget lasts; what it leaves out is said in the report.

No GPU figures are recorded yet: no GPU was lent to the task that extended this script to every
system (issue 34), so bench/results/ has no train-gpu.md; the dry run below (`--device cpu`, tiny
sizes) exercises every code path on the CPU, its figures are not GPU figures and are not kept.

    python bench/train_gpu.py                                       # cuda, about 8 minutes on an H100
    python bench/train_gpu.py --device cpu --n 120 --steps 1 --stage-batches 1 --systems cra --roof-n 512  # dry run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cmarr  # noqa: F401  - first: its OpenMP settings must precede torch's import

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, md_table, write_report  # noqa: E402
from train_cpu import (  # noqa: E402
    IEMOCAP_TRAIN,
    LONGEST,
    _model_step,
    _setup,
    flop_counter,
    longest_batch,
    matmul_roof,
    synchronize,
)

IEMOCAP_VAL = 443  # validation utterances of a 5-fold IEMOCAP split (10% of the 4 training sessions)


def _peak_memory_gb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the process's, KiB on Linux


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _context(store: str, device):
    """CM-ARR's setup with the default batching and autocast (bf16; none on the CPU, where cmarr
    does not autocast): (stage, data, rows, model, opt, ctx, sampler)."""
    from cmarr.shared.config import PipelineConfig
    from cmarr.train.batching import Batching

    amp = PipelineConfig().train.amp if device.type == "cuda" else "none"
    return _setup(store, True, device, amp, Batching())


def measure_cmarr(store: str, device, steps: int, roof_n: int) -> dict:
    """Part 1: CM-ARR's loop and model rates against the roof, peak memory, the longest step."""
    import numpy as np
    import torch
    from cmarr.shared.devices import autocast
    from cmarr.train.stage import train_epoch, training_batch

    stage, data, rows, model, opt, ctx, sampler = _context(store, device)
    amp = ctx.amp
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    roof_dtype = torch.bfloat16 if amp == "bf16" else torch.float16 if amp == "fp16" else torch.float32
    roof_before = matmul_roof(roof_n, device=device, dtype=roof_dtype) / 1e3  # TFLOP/s
    bs = stage.optim.batch_size
    order = np.random.default_rng(0).permutation(rows)
    train_epoch(model, stage, sampler, ctx, order[: 3 * bs], opt, scaler, np.random.default_rng(1))  # warm-up
    timed = order[3 * bs : (3 + steps) * bs]
    timing: dict = {}
    _reset_peak(device)
    synchronize(device)
    train_epoch(model, stage, sampler, ctx, timed, opt, scaler, np.random.default_rng(2), timing)
    synchronize(device)
    loop_s, peak_gb = timing["total"] / timing["steps"], _peak_memory_gb(device)

    rng = np.random.default_rng(2)  # the very batches the loop trained on: train_epoch's draws, in its order
    indices = data.epoch_batches(timed, bs, rng, ctx.batching)
    batches = [training_batch(model, ctx, b, a) for b, a in zip(indices, sampler.draw(data.present, indices, rng))]
    model.train()

    def model_steps():
        for batch in batches:
            with autocast(device, amp):
                _model_step(model, stage, opt, batch)

    model_steps()
    synchronize(device)
    t0 = time.perf_counter()
    model_steps()
    synchronize(device)
    model_s = (time.perf_counter() - t0) / len(batches)
    counter = flop_counter()
    with counter:
        model_steps()
    _reset_peak(device)
    longest = longest_batch(bs, data.dims, device)
    for _ in range(2):
        with autocast(device, amp):
            _model_step(model, stage, opt, longest)
    synchronize(device)
    return {
        "amp": amp, "roof_dtype": str(roof_dtype).removeprefix("torch."), "batch": bs,
        "roof_tflops": max(roof_before, matmul_roof(roof_n, device=device, dtype=roof_dtype) / 1e3),
        "loop_s": loop_s, "model_s": model_s, "wait_share": timing["data_wait"] / timing["total"],
        "gflop": counter.get_total_flops() / len(batches) / 1e9, "peak_gb": peak_gb,
        "longest_gb": _peak_memory_gb(device),
    }  # fmt: skip


def paper_epoch(store: str, device) -> dict:
    """Part 2: one paper-preset epoch of CM-ARR over the training part, then the validation scoring."""
    import numpy as np
    import torch
    from cmarr.train.evaluation import evaluate
    from cmarr.train.missing import FULL, MISSING
    from cmarr.train.stage import train_epoch

    stage, data, rows, model, opt, ctx, sampler = _context(store, device)
    train, val = rows[: min(IEMOCAP_TRAIN, len(rows) - 2)], rows[min(IEMOCAP_TRAIN, len(rows) - 2) :]
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    train_epoch(model, stage, sampler, ctx, train[: 2 * stage.optim.batch_size], opt, scaler, np.random.default_rng(0))
    _reset_peak(device)
    synchronize(device)
    t0 = time.perf_counter()
    sums = train_epoch(model, stage, sampler, ctx, train, opt, scaler, np.random.default_rng(1))
    synchronize(device)
    t1 = time.perf_counter()
    conditions = MISSING if stage.select_on == "missing" else (FULL,)
    evaluate(model, data, val, ctx.norm, device, conditions, ctx.amp)
    synchronize(device)
    return {
        "train": len(train), "val": len(val), "epoch_s": t1 - t0, "score_s": time.perf_counter() - t1,
        "epochs": stage.optim.epochs + stage.optim.decay_epochs, "padded": sums["padded"],
        "peak_gb": _peak_memory_gb(device), "conditions": len(conditions),
    }  # fmt: skip


def per_system(store: str, device, steps: int, systems: list[str] | None, deadline: float) -> dict:
    """Part 3: every Table 2 system's stages, bucketed, with autocast, while the budget lasts."""
    from cmarr.shared.config import PipelineConfig
    from cmarr.train.batching import Batching
    from cmarr.train.systems import get_system, group
    from train_batches import compare_stage

    _, _, _, _, _, ctx, _ = _context(store, device)
    out, skipped = {}, []
    for name in systems or group("table2"):
        for stage in get_system(name, PipelineConfig().train).stages:
            if time.perf_counter() > deadline:
                skipped.append(f"{name}/{stage.name}")
                continue
            _reset_peak(device)
            r = compare_stage(stage, ctx, {"bucketed": (Batching(), False)}, steps, flop_counter,
                              lambda: synchronize(device))  # fmt: skip
            out[f"{name}/{stage.name}"] = {**r, "peak_gb": _peak_memory_gb(device)}
            print(name, stage.name, out[f"{name}/{stage.name}"], flush=True)
    return {"stages": out, "skipped": skipped}


def _cmarr_lines(r: dict, roof_n: int) -> str:
    loop_rate, model_rate = r["gflop"] / r["loop_s"] / 1e3, r["gflop"] / r["model_s"] / 1e3  # TFLOP/s
    rows = [
        ["training loop (`train_epoch`)", f"{1 / r['loop_s']:.1f}", f"{r['loop_s'] * 1000:.0f}",
         f"{loop_rate:.2f} ({100 * loop_rate / r['roof_tflops']:.1f}%)"],
        ["model alone (batches on the device)", f"{1 / r['model_s']:.1f}", f"{r['model_s'] * 1000:.0f}",
         f"{model_rate:.2f} ({100 * model_rate / r['roof_tflops']:.1f}%)"],
    ]  # fmt: skip
    return (
        f"## 1. CM-ARR, paper sizes (batch {r['batch']}, autocast {r['amp']})\n\n"
        f"Roof: {r['roof_tflops']:.1f} TFLOP/s ({r['roof_dtype']} {roof_n}^3 matmul, the higher of before and "
        f"after). {r['gflop']:.1f} GFLOP per step (FlopCounterMode, the timed batches, padding included).\n\n"
        + md_table(["", "steps/s", "ms / step", "TFLOP/s (of roof)"], rows)
        + f"\n- data wait: {100 * r['wait_share']:.1f}% of the loop's time\n"
        f"- peak memory over the timed steps: {r['peak_gb']:.2f} GB; one step at the longest lengths "
        f"(speech {LONGEST['audio']} frames): {r['longest_gb']:.2f} GB\n"
    )


def _epoch_lines(r: dict) -> str:
    fold = r["epochs"] * (r["epoch_s"] + r["score_s"]) / 60
    return (
        "\n## 2. A paper-preset epoch of CM-ARR, run\n\n"
        f"- {r['train']} training utterances once: {r['epoch_s']:.1f} s ({100 * r['padded']:.0f}% of the batches' "
        f"steps padding); scoring {r['val']} validation utterances under the {r['conditions']} conditions "
        f"selection reads: {r['score_s']:.1f} s; peak memory {r['peak_gb']:.2f} GB\n"
        f"- a fold at the paper preset: {r['epochs']} epochs x that = {fold:.0f} min at most (early stopping "
        "usually ends it sooner)\n"
    )


def _systems_lines(r: dict, steps: int) -> str:
    rows = []
    for key, s in r["stages"].items():
        v = s["variants"]["bucketed"]
        rows.append([key, s["batch"], f"{v['build_s'] * 1000:.0f} + {v['model_s'] * 1000:.0f}",
                     f"{v['padded'] / 1e9:.1f} / {v['useful'] / 1e9:.1f}", f"{100 * v['padding']:.0f}%",
                     f"{v['batches'] * (v['build_s'] + v['model_s']) * IEMOCAP_TRAIN / s['rows']:.1f}",
                     f"{s['peak_gb']:.2f}"])  # fmt: skip
    header = ["system/stage", "batch", "ms / step (build + model)", "GFLOP / step (padded / useful)",
              "padded steps", f"s / epoch at {IEMOCAP_TRAIN}", "peak memory GB"]  # fmt: skip
    note = f"\nNot measured (the budget ran out): {', '.join(r['skipped'])}\n" if r["skipped"] else ""
    return (
        f"\n## 3. Every Table 2 system, per stage (bucketed batches, {steps} batches at quantiles of their size)\n\n"
        + md_table(header, rows)
        + note
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=IEMOCAP_TRAIN + IEMOCAP_VAL, help="utterances in the synthetic store")
    ap.add_argument("--steps", type=int, default=20, help="part 1's timed steps")
    ap.add_argument("--stage-batches", type=int, default=8, help="part 3's timed batches per stage")
    ap.add_argument("--systems", help="part 3's systems (comma-separated; default: Table 2's)")
    ap.add_argument("--budget-s", type=float, default=540, help="part 3 stops starting stages after this")
    ap.add_argument("--roof-n", type=int, default=8192, help="matmul size of the roof")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train-gpu.md")
    args = ap.parse_args()

    import torch
    from cmarr.shared.devices import resolve_device
    from cmarr.shared.store.synthetic import IEMOCAP_TIMED, write_synthetic_store

    start, device = time.perf_counter(), resolve_device(args.device)
    if args.n < (3 + args.steps) * 16:
        ap.error(f"--n {args.n} holds fewer than the {(3 + args.steps) * 16} utterances of part 1's batches")
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "iemocap-like.zarr")
        # dialogs of IEMOCAP's average size, for GCNet's batches of whole dialogs
        write_synthetic_store(store, args.n, IEMOCAP_TIMED, "float16", seed=1, dialog_size=66)
        print(f"wrote {args.n} utterances in {time.perf_counter() - start:.0f} s", flush=True)
        cmarr_r = measure_cmarr(store, device, args.steps, args.roof_n)
        print(cmarr_r, flush=True)
        epoch_r = paper_epoch(store, device)
        print(epoch_r, flush=True)
        systems = args.systems.split(",") if args.systems else None
        systems_r = per_system(store, device, args.stage_batches, systems, start + args.budget_s)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (a dry run: not GPU figures)"
    report = (
        "# Training benchmark, GPU\n\n"
        f"Command: `python bench/train_gpu.py --device {args.device} --n {args.n} --steps {args.steps} "
        f"--stage-batches {args.stage_batches}"
        + (f" --systems {args.systems}" if args.systems else "")
        + (f" --roof-n {args.roof_n}" if args.roof_n != 8192 else "")
        + "`\n\n"
        + machine_header(("torch",))
        + f"- device: {name}, torch {torch.__version__}; {time.perf_counter() - start:.0f} s in all\n\n"
        + _cmarr_lines(cmarr_r, args.roof_n)
        + _epoch_lines(epoch_r)
        + _systems_lines(systems_r, args.stage_batches)
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()

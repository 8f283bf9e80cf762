"""Benchmark: CM-ARR training on a GPU at the paper's sizes (pipeline.toml defaults: batch 16,
bf16 autocast), against the GPU's own matmul roof measured in the same process. Writes
bench/results/train-gpu.md (with `--device cpu`, the same code on the CPU, as a check that the
script runs: use bench/train_cpu.py for the CPU's figures).

- roof: the best of 5 dense 8192^3 matmuls in the dtype the step's autocast uses (bf16; fp32 when
  `train.amp` is none or on the CPU), timed between device synchronisations, before and after the
  steps (the higher used);
- steps/s of the training loop (`train_epoch`: batching from the store, host-to-device copies,
  forward, losses, backward, optimizer) and of the model alone on batches already on the device;
- FLOPs per step: `FlopCounterMode` over the model step on the same batches (matmuls,
  convolutions, attention; elementwise ops are not counted), and from them the achieved rate as a
  fraction of the roof;
- peak device memory over the timed steps, and of one step whose every utterance has the longest
  IEMOCAP-like lengths (1700 speech frames);
- validation scoring: `evaluate` over the conditions model selection scores, per utterance;
- one paper-preset fold of CM-ARR, extrapolated from those: epochs x (steps per epoch at IEMOCAP's
  3982 training utterances x step time + scoring its 443 validation utterances). An upper bound:
  early stopping usually ends the stage sooner.

    python bench/train_gpu.py                               # cuda
    python bench/train_gpu.py --device cpu --n 96 --steps 2 # a quick check of the script on the CPU
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


def measure(store: str, device, steps: int, roof_n: int) -> dict:
    import numpy as np
    import torch
    from cmarr.shared.config import PipelineConfig
    from cmarr.shared.devices import autocast
    from cmarr.train.evaluation import evaluate
    from cmarr.train.missing import FULL, MISSING
    from cmarr.train.stage import train_epoch, training_batch

    amp = PipelineConfig().train.amp if device.type == "cuda" else "none"  # bf16 by default; CUDA-only in cmarr
    stage, data, rows, model, opt, ctx, sampler = _setup(store, True, device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    roof_dtype = torch.bfloat16 if amp == "bf16" else torch.float16 if amp == "fp16" else torch.float32

    def roof() -> float:  # TFLOP/s
        return matmul_roof(roof_n, device=device, dtype=roof_dtype) / 1e3

    roof_before = roof()

    bs = stage.optim.batch_size
    order = data.epoch_order(rows, np.random.default_rng(0))
    train_epoch(model, stage, sampler, ctx, order[: 3 * bs], opt, scaler, np.random.default_rng(1))  # warm-up
    timed = order[3 * bs : (3 + steps) * bs]
    timing: dict = {}
    _reset_peak(device)
    synchronize(device)
    train_epoch(model, stage, sampler, ctx, timed, opt, scaler, np.random.default_rng(2), timing)
    synchronize(device)
    loop_s = timing["total"] / timing["steps"]
    peak_gb = _peak_memory_gb(device)

    # the same batches, on the device already: the model's share and the FLOPs they hold
    batches_idx = [np.sort(timed[lo : lo + bs]) for lo in range(0, len(timed), bs)]
    given = sampler.draw(data.present, batches_idx, np.random.default_rng(2))
    batches = [training_batch(model, ctx, b, a) for b, a in zip(batches_idx, given)]
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
    flops = counter.get_total_flops() / len(batches)

    _reset_peak(device)
    longest = longest_batch(bs, data.dims, device)
    for _ in range(2):
        with autocast(device, amp):
            _model_step(model, stage, opt, longest)
    synchronize(device)
    longest_gb = _peak_memory_gb(device)

    conditions = MISSING if stage.select_on == "missing" else (FULL,)  # what validation scores each epoch
    val = rows[: min(len(rows), 160)]
    evaluate(model, data, val[:bs], ctx.norm, device, conditions, amp)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    evaluate(model, data, val, ctx.norm, device, conditions, amp)
    synchronize(device)
    score_s = (time.perf_counter() - t0) / len(val)  # per utterance, all those conditions
    roof = max(roof_before, roof())
    return {
        "amp": amp,
        "roof_dtype": str(roof_dtype).removeprefix("torch."),
        "roof_tflops": roof,
        "loop_s": loop_s,
        "model_s": model_s,
        "wait_share": timing["data_wait"] / timing["total"],
        "gflop": flops / 1e9,
        "peak_gb": peak_gb,
        "longest_gb": longest_gb,
        "score_s": score_s,
        "conditions": len(conditions),
        "epochs": stage.optim.epochs + stage.optim.decay_epochs,
        "batch": bs,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=1383, help="utterances in the synthetic IEMOCAP-shaped store")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--roof-n", type=int, default=8192, help="matmul size of the roof")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train-gpu.md")
    args = ap.parse_args()

    import torch
    from cmarr.shared.devices import resolve_device
    from cmarr.shared.store.synthetic import IEMOCAP_LIKE, write_synthetic_store

    device = resolve_device(args.device)
    if args.n < (3 + args.steps) * 16:
        ap.error(
            f"--n {args.n} holds fewer than the {(3 + args.steps) * 16} utterances of 3 warm-up and --steps batches"
        )
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "iemocap-like.zarr"
        t0 = time.perf_counter()
        write_synthetic_store(store, args.n, IEMOCAP_LIKE, "float16", seed=1)
        print(f"wrote {args.n} utterances in {time.perf_counter() - t0:.0f} s", flush=True)
        r = measure(str(store), device, args.steps, args.roof_n)
    print(r, flush=True)

    loop_rate, model_rate = r["gflop"] / r["loop_s"] / 1e3, r["gflop"] / r["model_s"] / 1e3  # TFLOP/s
    steps_per_epoch = -(-IEMOCAP_TRAIN // r["batch"])
    memory = "device memory (allocated)" if device.type == "cuda" else "resident memory of the process"
    epoch_s = steps_per_epoch * r["loop_s"] + IEMOCAP_VAL * r["score_s"]
    rows = [
        ["training loop (`train_epoch`)", f"{1 / r['loop_s']:.1f}", f"{r['loop_s'] * 1000:.0f}",
         f"{loop_rate:.2f} ({100 * loop_rate / r['roof_tflops']:.1f}%)"],
        ["model alone (batches on the device)", f"{1 / r['model_s']:.1f}", f"{r['model_s'] * 1000:.0f}",
         f"{model_rate:.2f} ({100 * model_rate / r['roof_tflops']:.1f}%)"],
    ]  # fmt: skip
    report = (
        "# Training benchmark, GPU\n\n"
        f"Command: `python bench/train_gpu.py --device {args.device} --n {args.n} --steps {args.steps}"
        + (f" --roof-n {args.roof_n}" if args.roof_n != 8192 else "")
        + "`\n\n"
        + machine_header(("torch",))
        + f"- device: {r['device_name']}, torch {torch.__version__}\n\n"
        f"CM-ARR at the paper's sizes (pipeline.toml defaults, batch {r['batch']}, autocast {r['amp']}), a synthetic "
        f"IEMOCAP-shaped store of {args.n} utterances (float16, read into memory), one random missing condition "
        f"per row. Roof: {r['roof_tflops']:.1f} TFLOP/s ({r['roof_dtype']} {args.roof_n}^3 matmul, the higher of "
        f"before and after). {r['gflop']:.1f} GFLOP per step (FlopCounterMode, the timed batches).\n\n"
        + md_table(["", "steps/s", "ms / step", "TFLOP/s (of roof)"], rows)
        + f"\n- data wait: {100 * r['wait_share']:.1f}% of the loop's time\n"
        f"- peak {memory} over the timed steps: {r['peak_gb']:.2f} GB; one step at the longest lengths "
        f"(speech {LONGEST['audio']} frames): {r['longest_gb']:.2f} GB\n"
        f"- validation scoring: {1000 * r['score_s']:.1f} ms per utterance for the {r['conditions']} conditions "
        "model selection scores\n"
        f"- one paper-preset fold of CM-ARR, extrapolated: {r['epochs']} epochs x ({steps_per_epoch} steps + "
        f"scoring {IEMOCAP_VAL} validation utterances) = {r['epochs'] * epoch_s / 60:.0f} min at most "
        "(early stopping usually ends it sooner)\n"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()

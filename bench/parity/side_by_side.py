"""Issue 31's speed check: cmarr's training step and the authors' on the same batch, one thread,
alternating (so that the machine's other load falls on both alike), the median of `repeats` after
one warm-up each; the report is bench/results/peer-speed-<system>.md (used by speed_gcnet.py,
speed_imder.py, speed_lnln.py and record_mplmm.py --speed)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
TARGET = 1.5  # cmarr's step within 1.5x the authors' (issue 31)


def cmarr_step(model, stage, opt, batch) -> Callable[[], None]:
    """cmarr's training step on `batch`, as train/stage.py's loop takes it (without autocast or
    the scaler, on the CPU): forward, the weighted loss terms, backward, the stage's clip, step."""
    from cmarr.train.stage import _clip

    params = model.trainable_parameters()

    def step() -> None:
        terms = model.losses(batch, model(batch))
        loss = sum(stage.weights[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _clip(stage.optim, model, params)
        opt.step()

    return step


def alternate(cmarr_step: Callable[[], object], peer_step: Callable[[], object], repeats: int) -> dict[str, list]:
    """Seconds of each step, `repeats` times each, cmarr then the peer in turn, after one warm-up
    of each (its allocations and lazy initialisations left out)."""
    steps = {"cmarr": cmarr_step, "peer": peer_step}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def report(system: str, title: str, command: str, setup: str, times: dict[str, list[float]], note: str = "") -> str:
    """Write and print bench/results/peer-speed-<system>.md: the command, the batch and step
    (`setup`), each side's median and every step, and the ratio against the target."""
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["cmarr"] / med["peer"]
    lines = [
        f"# {title}",
        "",
        f"`{command}` (torch {torch.__version__}, one thread, CPU: {cpu_name()})",
        "",
        f"{setup} cmarr and the peer alternating, the median of {len(times['cmarr'])} after one warm-up each.",
        "",
        "| model | median step (s) | all steps (s) |",
        "|---|---|---|",
        *[f"| {k} | {med[k]:.3f} | {', '.join(f'{t:.3f}' for t in times[k])} |" for k in ("cmarr", "peer")],
        "",
        f"cmarr / peer: **{ratio:.2f}x** (target: within {TARGET}x){' ' + note if note else ''}",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"peer-speed-{system}.md").write_text(text)
    print(text)
    return text

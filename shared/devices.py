"""Device selection both stages use: `auto` is CUDA when available; `cuda:N` must exist."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch
from cmarr.shared.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {name!r} is not available on this machine")
    return device


def usable_cores() -> int:
    """The cores this process may really run on: its CPU affinity (taskset, a cluster's cpuset),
    capped by a cgroup CPU quota (a container's --cpus), which `os.cpu_count()` ignores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with `n` torch CPU threads; 0 means the usable cores (`usable_cores`), not torch's
    default, which counts every core of the machine. CPU float results depend on the thread count
    (the reduction order of some kernels), so runs that must agree bit for bit, such as one
    process vs a dask cluster, fix it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n if n > 0 else usable_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA; a no-op on CPU (where it would only slow things down)."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

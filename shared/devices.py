"""Device selection both stages use: `auto` is CUDA when available; `cuda:N` must exist."""

from __future__ import annotations

import contextlib

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


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with `n` torch CPU threads (0: leave the count alone). CPU float results depend on the
    thread count (the reduction order of some kernels), so runs that must agree bit for bit, such
    as one process vs a dask cluster, fix it."""
    if n <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA; a no-op on CPU (where it would only slow things down)."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

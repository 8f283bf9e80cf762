"""Mixed precision inside the models: which parts must stay in fp32, and dtype-safe row scatters.

Every model runs under autocast (bf16/fp16 on CUDA, bf16 on CPU in the tests). Two things break
there unless handled: invertible maps and log-likelihoods lose their exactness in bf16 (a flow's
round trip drifts by about 3e-2 relative and its log-determinant by nats), so they run with
autocast disabled on fp32 inputs; and writing an autocast result into a preallocated fp32 buffer
with an index put raises "Index put requires the source and destination dtypes match", so rows
are scattered into a buffer made in the source's own dtype.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def full_precision(device: torch.device | str):
    """Autocast disabled on `device`'s type: the block computes in the dtype of its inputs
    (pass fp32 tensors)."""
    device_type = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    with torch.autocast(device_type, enabled=False):
        yield


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in fp32 when autocast made it bf16/fp16; fp32 and fp64 inputs pass unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def scatter_rows(rows: torch.Tensor, values: torch.Tensor, batch: int) -> torch.Tensor:
    """A (batch, ...) tensor holding `values` at the rows where `rows` (batch,) is True and zeros
    elsewhere, in `values`' dtype (so it works whatever autocast made of `values`)."""
    out = values.new_zeros((batch, *values.shape[1:]))
    return out.index_put((rows,), values)

"""How much work one forward pass gets, per device: a GPU's batches on a GPU, less on a CPU.

The configured budgets (`max_tokens_per_batch`, `frames_per_batch`, ...) size batches for a GPU,
which needs hundreds of items in flight. A CPU saturates with a few dozen: beyond that a
convolution stack spills the caches and runs slower per image, and a transformer gains nothing
while the batch's results wait longer to be written. Measured on the 2-core CPU (ms per image,
NCHW at the GPU batch -> channels-last at the CPU size below): demo DenseNet 10.4 -> 2.6,
DenseNet-BC-100 171 -> 54, MTCNN O-net 1.40 -> 0.28, R-net 0.22 -> 0.06; the demo MiniLM
encodes the demo transcripts in 0.51 s as one batch of 120 and 0.44-0.47 s in batches of 16-60.
Sizes change nothing but float rounding in the outputs: text and speech padding is masked, and
image networks see each image alone.
"""

from __future__ import annotations

import torch
from torch import nn

CPU_TOKENS = 1024  # text tokens per batch on a CPU (the plan's budget)
CPU_FACES = 8  # DenseNet faces per forward pass on a CPU
CPU_CANDIDATES = 32  # MTCNN R-/O-net face candidates per forward pass on a CPU
CPU_FRAMES = 32  # frames per MTCNN detection call on a CPU (its P-net sees them all at once)


def for_device(device: torch.device, configured: int, cpu_cap: int) -> int:
    """The configured size on a GPU, at most `cpu_cap` on a CPU."""
    return configured if device.type == "cuda" else min(configured, cpu_cap)


def channels_last(net: nn.Module) -> nn.Module:
    return net.to(memory_format=torch.channels_last)


class SlicedForward(nn.Module):
    """Runs `net` (channels-last) over slices of at most `size` inputs and concatenates the
    outputs (a tensor or a tuple of tensors); `size=None` runs the batch in one pass."""

    def __init__(self, net: nn.Module, size: int | None):
        super().__init__()
        self.net, self.size = channels_last(net), size

    def forward(self, x: torch.Tensor):
        x = x.contiguous(memory_format=torch.channels_last)
        if self.size is None or len(x) <= self.size:
            return self.net(x)
        outs = [self.net(x[lo : lo + self.size]) for lo in range(0, len(x), self.size)]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)

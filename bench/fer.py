"""Benchmark: `cmarr-fer train` throughput (images/s) for the Denseface network, in one run.

Times training steps (augmentation, forward, backward, SGD) of DenseNet-BC-100 on 64x64 grey faces
with random inputs and soft targets; writes bench/results/fer.md. On a GPU, pass --device cuda.

    python bench/fer.py [--device cuda] [--batch 64] [--steps 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC  # noqa: E402
from cmarr.extract.fer.trainer import augment  # noqa: E402
from cmarr.shared.devices import autocast  # noqa: E402
from common import machine_header, md_table, write_report  # noqa: E402


def measure(depth: int, device: torch.device, batch: int, steps: int, amp: str) -> float:
    torch.manual_seed(0)
    net = DenseNetBC(DenseNetArch(depth=depth)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 64, 64)
    t = torch.softmax(torch.randn(batch, 8), 1).to(device)

    def step():
        with autocast(device, amp):
            loss = F.cross_entropy(net(augment(x, 10.0, gen).to(device)).float(), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fer.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for depth in (100, 16):
        ips = measure(depth, device, args.batch, args.steps, args.amp)
        epoch_min = 28709 / ips / 60  # FER2013's Training split
        rows.append(
            [
                f"DenseNet-BC-{depth}" + (" (Denseface)" if depth == 100 else " (demo stand-in)"),
                f"{ips:.1f}",
                f"{epoch_min:.1f}",
            ]
        )
    report = (
        "# FER+ trainer benchmark\n\n"
        f"Command: `python bench/fer.py --device {args.device} --batch {args.batch} --steps {args.steps}`\n\n"
        + machine_header(("torch",))
        + f"- device: {device}, torch threads {torch.get_num_threads()}, "
        f"AMP {args.amp if device.type == 'cuda' else 'off (CPU)'}\n\n"
        + md_table(["network", "training images/s", "minutes per FER2013 training epoch (28,709 images)"], rows)
        + f"\nTimed over {args.steps} steps of {args.batch} images after one warm-up step: augmentation (crop, flip, "
        "rotation), forward, soft-target cross-entropy, backward, SGD. No GPU was lent to the session that wrote "
        "this report; the GPU figure is still to be measured with `--device cuda`.\n"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()

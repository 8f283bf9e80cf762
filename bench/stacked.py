"""Benchmark: CM-ARR's flows and reconstruction modules, all modalities at once (train/model/stacked.py)
vs one modality after another (each module's own forward), at the paper's sizes. Writes
bench/results/stacked.md.

Both run on the same inputs with the same weights, alternating in one process, forward + backward;
FLOPs are counted by FlopCounterMode (the two count the same work) and the matmul roof is measured
in the same process, before and after (the higher used). Shapes as in a training step at batch 16:
the flows forward on every row of the 3 modalities, their inverse and the reconstruction on the
rows that miss a modality (half of them here, 8 per modality).

    python bench/stacked.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cmarr  # noqa: F401  - first: its OpenMP settings must precede torch's import

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, md_table, write_report  # noqa: E402

from train import flop_counter, matmul_roof  # noqa: E402


def _parts(flows, recs, x):
    """name -> (stacked, one modality after another): forward + backward of each part."""
    from cmarr.train.model.stacked import flows_forward, flows_inverse, reconstruct

    missing = x[:, : x.shape[1] // 2]

    def flow_stacked():
        z, logdet = flows_forward(flows, x)
        (z.square().sum() + logdet.sum()).backward()

    def flow_each():
        total = 0
        for m, flow in enumerate(flows):
            z, logdet = flow(x[m], None)
            total = total + z.square().sum() + logdet.sum()
        total.backward()

    def inverse_stacked():
        flows_inverse(flows, missing).square().sum().backward()

    def inverse_each():
        sum(flow.inverse(missing[m], None).square().sum() for m, flow in enumerate(flows)).backward()

    def rec_stacked():
        reconstruct(recs, missing).square().sum().backward()

    def rec_each():
        sum(rec(missing[m], None).square().sum() for m, rec in enumerate(recs)).backward()

    return {
        "flows, forward (3 x 16 rows)": (flow_stacked, flow_each),
        "flows, inverse (3 x 8 rows)": (inverse_stacked, inverse_each),
        "reconstruction, 20 RCABs (3 x 8 rows)": (rec_stacked, rec_each),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stacked.md")
    args = ap.parse_args()

    import torch
    from cmarr.shared.train_config import ModelConfig
    from cmarr.train.model.flow import ModalityFlow
    from cmarr.train.model.reconstruction import ReconstructionModule

    torch.manual_seed(0)
    cfg = ModelConfig()  # the paper's sizes
    flows = [ModalityFlow(cfg.latent_dim, cfg.flow_steps, cfg.flow_hidden) for _ in range(3)]
    recs = [ReconstructionModule(cfg.latent_dim, cfg.rcab_blocks, cfg.rcab_reduction) for _ in range(3)]
    x = torch.randn(3, 16, cfg.latent_dim, cfg.latent_len, requires_grad=True)
    roof_before = matmul_roof()
    rows = []
    for name, (stacked, each) in _parts(flows, recs, x).items():
        counter = flop_counter()
        with counter:
            each()
        gflop = counter.get_total_flops() / 1e9
        times = {stacked: [], each: []}
        for fn in (stacked, each):  # warm-up
            fn()
        for _ in range(args.repeats):
            for fn in (stacked, each):
                t0 = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - t0)
        t_stacked, t_each = (min(times[fn]) for fn in (stacked, each))
        rows.append([name, f"{gflop:.2f}", f"{1000 * t_each:.0f}", f"{1000 * t_stacked:.0f}", t_each / t_stacked,
                     gflop / t_each, gflop / t_stacked])  # fmt: skip
        print(rows[-1], flush=True)
    roof = max(roof_before, matmul_roof())
    table = md_table(
        ["part (forward + backward)", "GFLOP", "ms, one modality after another", "ms, stacked", "speed-up",
         "GFLOP/s (of roof), one after another", "GFLOP/s (of roof), stacked"],
        [[*r[:4], f"{r[4]:.2f}x", f"{r[5]:.0f} ({100 * r[5] / roof:.0f}%)", f"{r[6]:.0f} ({100 * r[6] / roof:.0f}%)"]
         for r in rows],
    )  # fmt: skip
    report = (
        "# Stacked flows and reconstruction\n\nCommand: `python bench/stacked.py"
        + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
        + "`\n\n"
        + machine_header(("torch",))
        + f"\nThe paper's sizes (D {cfg.latent_dim}, T {cfg.latent_len}, {cfg.flow_steps} flow steps of hidden "
        f"{cfg.flow_hidden}, {cfg.rcab_blocks} RCABs), CPU fp32; roof {roof:.0f} GFLOP/s (fp32 2048^3 matmul, the "
        "higher of before and after). Each time is the best of "
        f"{args.repeats}, the two ways alternating on the same inputs and weights.\n\n"
        + table
        + "\nThe stacked path is what CM-ARR runs (train/model/stacked.py); one modality after another is each "
        "module's own forward, its reference in tests/test_stacked.py.\n"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()

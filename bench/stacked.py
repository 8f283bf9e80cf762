"""Benchmark: CM-ARR's flows and reconstruction modules, all modalities at once (train/model/stacked.py)
vs one modality after another (each module's own forward), at the paper's sizes. Writes
bench/results/stacked.md.

Both run on the same inputs with the same weights, alternating in one process, forward + backward;
FLOPs are counted by FlopCounterMode (the two count the same work) and the matmul roof is measured
in the same process, before and after (the higher used). Shapes as in a training step at batch 16:
the flows forward on every row of the 3 modalities, their inverse and the reconstruction on the
rows that miss a modality (half of them here, 8 per modality). `--compile` adds the stacked path
through torch.compile, with its compile time measured from an empty inductor cache.

    python bench/stacked.py [--repeats 5] [--compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cmarr  # noqa: F401  - first: its OpenMP settings must precede torch's import

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, md_table, write_report  # noqa: E402
from train_cpu import flop_counter, matmul_roof  # noqa: E402


def _stacked_parts(flows, recs, flows_forward, flows_inverse, reconstruct):
    """name -> forward + backward of each part on x (M, R, D, T), the given stacked functions."""

    def flow(x):
        z, logdet = flows_forward(flows, x)
        (z.square().sum() + logdet.sum()).backward()

    def inverse(x):
        flows_inverse(flows, x[:, : x.shape[1] // 2]).square().sum().backward()

    def rec(x):
        reconstruct(recs, x[:, : x.shape[1] // 2]).square().sum().backward()

    return dict(zip(PARTS, (flow, inverse, rec)))


def _each_parts(flows, recs):
    """name -> the same parts, one modality after another through each module's own forward."""

    def flow(x):
        total = 0
        for m, f in enumerate(flows):
            z, logdet = f(x[m], None)
            total = total + z.square().sum() + logdet.sum()
        total.backward()

    def inverse(x):
        missing = x[:, : x.shape[1] // 2]
        sum(f.inverse(missing[m], None).square().sum() for m, f in enumerate(flows)).backward()

    def rec(x):
        missing = x[:, : x.shape[1] // 2]
        sum(r(missing[m], None).square().sum() for m, r in enumerate(recs)).backward()

    return dict(zip(PARTS, (flow, inverse, rec)))


PARTS = ("flows, forward (3 x 16 rows)", "flows, inverse (3 x 8 rows)", "reconstruction, 20 RCABs (3 x 8 rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time the stacked path through torch.compile (dynamic shapes; minutes of compiling)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stacked.md")
    args = ap.parse_args()
    if args.compile:  # an empty cache, so the first call's time is the real compile time
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmarr-bench-inductor-")

    import torch
    from cmarr.train.model import stacked
    from cmarr.train.model.cmarr import ModelConfig
    from cmarr.train.model.flow import ModalityFlow
    from cmarr.train.model.reconstruction import ReconstructionModule

    torch.manual_seed(0)
    cfg = ModelConfig()  # the paper's sizes
    flows = [ModalityFlow(cfg.latent_dim, cfg.flow_steps, cfg.flow_hidden) for _ in range(3)]
    recs = [ReconstructionModule(cfg.latent_dim, cfg.rcab_blocks, cfg.rcab_reduction) for _ in range(3)]
    x = torch.randn(3, 16, cfg.latent_dim, cfg.latent_len, requires_grad=True)
    other_rows = torch.randn(3, 12, cfg.latent_dim, cfg.latent_len, requires_grad=True)
    ways = {
        "one modality after another": _each_parts(flows, recs),
        "stacked": _stacked_parts(flows, recs, stacked.flows_forward, stacked.flows_inverse, stacked.reconstruct),
    }
    first_calls = {}  # part -> (s, first call: compiling; s, first call at another row count)
    if args.compile:
        compiled = (
            torch.compile(f, dynamic=True) for f in (stacked.flows_forward, stacked.flows_inverse, stacked.reconstruct)
        )
        ways["stacked, torch.compile"] = _stacked_parts(flows, recs, *compiled)
        for name, fn in ways["stacked, torch.compile"].items():
            first_calls[name] = tuple(_seconds(fn, inputs) for inputs in (x, other_rows))
            print(name, "compiled in", first_calls[name], flush=True)

    roof_before = matmul_roof()
    rows = []
    for name in PARTS:
        counter = flop_counter()
        with counter:
            ways["one modality after another"][name](x)
        gflop = counter.get_total_flops() / 1e9
        fns = [w[name] for w in ways.values()]
        for fn in fns:  # warm-up
            fn(x)
        times = {fn: [] for fn in fns}
        for _ in range(args.repeats):
            for fn in fns:
                times[fn].append(_seconds(fn, x))
        best = [min(times[fn]) for fn in fns]
        rows.append((name, gflop, best))
        print(name, gflop, best, flush=True)
    roof = max(roof_before, matmul_roof())

    names = list(ways)
    header = ["part (forward + backward)", "GFLOP"] + [f"ms, {w}" for w in names]
    header += [f"GFLOP/s (of roof), {w}" for w in names] + ["speed-up of stacked"]
    table_rows = []
    for name, gflop, best in rows:
        row = [name, f"{gflop:.2f}"] + [f"{1000 * t:.0f}" for t in best]
        row += [f"{gflop / t:.0f} ({100 * gflop / t / roof:.0f}%)" for t in best]
        row.append(f"{best[0] / best[1]:.2f}x")
        table_rows.append(row)
    compiled_note = ""
    if first_calls:
        compiled_note = (
            "\n`--compile`: the three stacked functions through `torch.compile(dynamic=True)` (inductor). "
            "First calls, forward + backward: "
            + "; ".join(
                f"{name}: {a:.0f} s compiling, then {b:.1f} s at 12 rows" for name, (a, b) in first_calls.items()
            )
            + f" (torch {torch.__version__}, {torch.get_num_threads()} threads).\n"
        )
    report = (
        "# Stacked flows and reconstruction\n\nCommand: `python bench/stacked.py"
        + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
        + (" --compile" if args.compile else "")
        + "`\n\n"
        + machine_header(("torch",))
        + f"\nThe paper's sizes (D {cfg.latent_dim}, T {cfg.latent_len}, {cfg.flow_steps} flow steps of hidden "
        f"{cfg.flow_hidden}, {cfg.rcab_blocks} RCABs), CPU fp32; roof {roof:.0f} GFLOP/s (fp32 2048^3 matmul, the "
        "higher of before and after). Each time is the best of "
        f"{args.repeats}, the ways alternating on the same inputs and weights.\n\n"
        + md_table(header, table_rows)
        + "\nThe stacked path is what CM-ARR runs (train/model/stacked.py); one modality after another is each "
        "module's own forward, its reference in tests/test_stacked.py.\n" + compiled_note
    )
    write_report(args.out, report)


def _seconds(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

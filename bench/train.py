"""Benchmark: CM-ARR training cost on an IEMOCAP-shaped synthetic store, at the paper's model sizes.

Per corpus scale (each in its own process, so peak memory is per scale): seconds per training
step, the share of step time spent waiting for data (batches are built on a prefetch thread),
seconds per epoch (measured steps x steps per epoch), and peak resident memory, reading the
store lazily and, at 1x, from memory. Writes bench/results/train.md.

    python bench/train.py                         # 5,531 utterances x 1, 2, 4 (slow on a CPU)
    python bench/train.py --n 1383 --steps 12     # a quarter-size corpus, fewer timed steps
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, md_table, write_report  # noqa: E402


def worker(args) -> None:
    import numpy as np
    import torch
    from cmarr.shared.config import PipelineConfig
    from cmarr.shared.store import FeatureStore
    from cmarr.train.data import StoreData
    from cmarr.train.missing import build_sampler
    from cmarr.train.stage import SplitContext, make_optimizer, train_epoch
    from cmarr.train.systems import get_system

    torch.manual_seed(0)
    cfg = PipelineConfig().train  # the paper's sizes; lr 1e-5, batch 16
    stage = get_system("cm-arr", cfg).stages[0]
    data = StoreData(FeatureStore.open(args.store), max_memory_bytes=(8 << 30) if args.memory else 0)
    rows = np.arange(len(data))
    norm = data.normaliser(rows[:: max(1, len(rows) // 500)])  # statistics from a sample: not what is timed
    model = stage.build(data.dims, 4)
    opt = make_optimizer(stage.optim, model)
    ctx = SplitContext(data, rows, rows, rows, norm, 0, torch.device("cpu"))
    scaler, sampler = torch.amp.GradScaler("cpu", enabled=False), build_sampler(stage.sampler)
    rng = np.random.default_rng(0)
    order = data.epoch_order(rows, rng)
    bs = stage.optim.batch_size
    train_epoch(model, stage, sampler, ctx, order[: 2 * bs], opt, scaler, rng)  # warm-up
    timing: dict = {}
    train_epoch(model, stage, sampler, ctx, order[2 * bs : (2 + args.steps) * bs], opt, scaler, rng, timing)
    step = timing["total"] / timing["steps"]
    print(
        json.dumps(
            {
                "n": len(data),
                "in_memory": data.in_memory,
                "step_s": step,
                "wait_share": timing["data_wait"] / timing["total"],
                "epoch_s": step * int(np.ceil(len(data) / bs)),
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5531)
    ap.add_argument("--scales", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    from cmarr.shared.store.synthetic import IEMOCAP_LIKE, write_synthetic_store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [int(s) for s in args.scales.split(",")]:
            path = Path(tmp) / f"x{scale}.zarr"
            t0 = time.perf_counter()
            write_synthetic_store(path, args.n * scale, IEMOCAP_LIKE, "float16", seed=scale)
            print(f"wrote {args.n * scale} utterances in {time.perf_counter() - t0:.0f} s", flush=True)
            for memory in [False, True] if scale == 1 else [False]:
                cmd = [sys.executable, __file__, "--worker", "--store", str(path), "--steps", str(args.steps)]
                res = json.loads(
                    subprocess.run(cmd + (["--memory"] if memory else []), capture_output=True, text=True, check=True)
                    .stdout.strip()
                    .splitlines()[-1]
                )
                rows.append(
                    [
                        f"{scale}x",
                        res["n"],
                        "memory" if res["in_memory"] else "lazy",
                        f"{res['step_s']:.2f}",
                        f"{100 * res['wait_share']:.1f}%",
                        f"{res['epoch_s']:.0f}",
                        f"{res['peak_rss_gb']:.2f}",
                    ]
                )
                print(rows[-1], flush=True)
    report = (
        "# Training benchmark\n\n"
        f"Command: `python bench/train.py --n {args.n} --scales {args.scales} --steps {args.steps}`\n\n"
        + machine_header(("torch", "zarr", "numpy"))
        + "\nSynthetic store shaped like IEMOCAP (text 25 x 768, speech 225 x 768, video 45 x 342 frames on average, "
        "log-normal lengths, float16); CM-ARR at the paper's sizes (UMC width 128 / 8 heads, D 64, T 50, 32 flow "
        "steps, 20 RCAB blocks, batch 16), CPU, one random missing condition per utterance.\n\n"
        + md_table(
            ["corpus", "utterances", "reading", "s / step", "data wait", "s / epoch (steps x measured)", "peak RSS GB"],
            rows,
        )
        + f"\nEach row times {args.steps} steps after a 2-step warm-up; seconds per epoch multiply the measured "
        "step time "
        "by the steps in an epoch (an extrapolation, not a full epoch). Data wait is the time the training loop "
        "waited for its next batch (target under 5%). Lazy reading decodes contiguous blocks of utterances into a "
        "bounded cache, so memory should stay flat as the corpus grows while epoch time grows linearly.\n"
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()

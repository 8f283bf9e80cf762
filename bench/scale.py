"""Benchmark: both stages on 1 vs 2 local dask workers, and what the measured costs predict for
N GPU workers. Writes bench/results/scale.md.

Extraction: the demo corpus with the demo encoders, one process (no dask) and a LocalCluster of
1 and 2 workers, each worker with its share of the cores. Training grid: an IEMOCAP-shaped
synthetic store, seeds x 5 folds jobs of the fast preset's model, sequential and on 1 and 2
workers. The N-worker prediction replays the measured per-shard (per-job) seconds through
greedy list scheduling (what dask does with equal-priority tasks) and adds the measured fixed
costs (worker start, model loads, plan, finalize).

    python bench/scale.py                                  # this machine, CPU
    python bench/scale.py --device cuda --workers 1,2,4    # a multi-GPU box (one GPU per worker)
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, md_table, write_report  # noqa: E402

# Smaller batch budgets than the defaults, so that the 120-utterance demo corpus makes enough
# batches (hence shards) to spread: IEMOCAP at the default budgets makes hundreds.
SMALL_BATCHES = {
    "extract.text.max_tokens_per_batch": 512,
    "extract.audio.max_samples_per_batch": 160_000,
    "extract.video.frames_per_batch": 16,
}

# A narrower CM-ARR than the paper's, so that the grid runs in minutes on a CPU; what is measured
# here is how jobs spread over workers, not the model's cost (bench/train_cpu.py has that).
SMALL_MODEL = {
    "train.model.width": 64,
    "train.model.latent_dim": 32,
    "train.model.flow_hidden": 32,
    "train.model.rcab_blocks": 1,
    "train.model.proj_dim": 64,
}


def makespan(durations: list[float], n: int) -> float:
    """Wall time of `durations` on n workers, each task to the first free worker, longest first."""
    free = [0.0] * n
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def extraction(args, tmp: Path) -> tuple[list[list], dict]:
    from cmarr.extract.corpora.demo import generate_demo_corpus
    from cmarr.extract.corpora.iemocap import read_iemocap
    from cmarr.extract.distributed import DaskExecutor
    from cmarr.extract.encoders.demo_models import apply_profile
    from cmarr.extract.pipeline import extract_corpus
    from cmarr.shared.cluster import local_cluster
    from cmarr.shared.config import load_config
    from cmarr.shared.labels import FOUR_CLASS
    from distributed import Client

    corpus = generate_demo_corpus(tmp / "corpus", utterances_per_dialog=args.utterances_per_dialog)
    records = read_iemocap(corpus, FOUR_CLASS).records
    cfg = apply_profile(
        load_config(
            None,
            {
                "extract.profile": "demo",
                "extract.device": args.device,
                "extract.shard_batches": args.shard_batches,
                **SMALL_BATCHES,
            },
        )
    )
    rows, logs = [], {}
    t0 = time.perf_counter()
    reports = extract_corpus(records, tmp / "single.zarr", "demo", FOUR_CLASS, cfg).modalities
    single = time.perf_counter() - t0
    rows.append(
        ["one process (no dask)", "-", f"{single:.1f}", "-", "-", " / ".join(f"{r.seconds:.1f}" for r in reports)]
    )
    for n in args.workers:
        log: list = []
        t0 = time.perf_counter()
        with local_cluster(n, gpus=n if args.device == "cuda" else 0) as cluster, Client(cluster) as client:
            client.wait_for_workers(n)
            started = time.perf_counter() - t0
            executor = DaskExecutor(client, cfg, shard_log=log)
            reports = extract_corpus(records, tmp / f"dist{n}.zarr", "demo", FOUR_CLASS, cfg, executor=executor)
            reports = reports.modalities
            finalize = {r.modality: r.finalize_seconds for r in reports}
            for entry in log:  # the driver's finalize, from the reports
                if entry["phase"] == "driver":
                    entry["finalize_seconds"] = finalize[entry["modality"]]
        wall = time.perf_counter() - t0
        logs[n] = log
        shards = [e for e in log if e["phase"] == "shard"]
        rows.append(
            [
                f"dask, {n} worker(s)",
                len(shards),
                f"{wall:.1f}",
                f"{started:.1f}",
                f"{sum(e['seconds'] for e in shards):.1f}",
                " / ".join(f"{r.seconds:.1f}" for r in reports),
            ]
        )
    return rows, {"n_utterances": len(records), "logs": logs, "single": single}


def grid(args, tmp: Path) -> tuple[list[list], dict]:
    from cmarr.shared.cluster import local_cluster
    from cmarr.shared.config import load_config
    from cmarr.shared.store.synthetic import IEMOCAP_LIKE, write_synthetic_store
    from cmarr.train.presets import apply_preset
    from cmarr.train.run import run_training
    from distributed import Client

    store = tmp / "grid.zarr"
    write_synthetic_store(store, args.grid_n, IEMOCAP_LIKE, dtype="float16", seed=0, class_signal=0.8)
    overrides = {
        "train.preset": "fast",
        "train.epochs": args.epochs,
        "train.patience": args.epochs,
        "train.device": args.device,
        **SMALL_MODEL,
    }
    cfg = apply_preset(load_config(None, overrides), set(overrides))
    seeds = list(range(args.seeds))
    rows, ledgers = [], {}
    import torch

    t0 = time.perf_counter()
    runs = run_training(str(store), cfg, 5, seeds, tmp / "seq", [], torch.device(args.device), log=lambda m: None)
    seq = time.perf_counter() - t0
    reference = json.loads((runs[0].run_dir / "results.json").read_text())
    rows.append(["sequential (no dask)", len(seeds) * 5, f"{seq:.1f}", "-", "-", "-"])
    for n in args.workers:
        t0 = time.perf_counter()
        with local_cluster(n, gpus=n if args.device == "cuda" else 0) as cluster, Client(cluster) as client:
            client.wait_for_workers(n)
            started = time.perf_counter() - t0
            runs = run_training(
                str(store), cfg, 5, seeds, tmp / f"dist{n}", [], None, log=lambda m: None, client=client
            )
        wall = time.perf_counter() - t0
        ledger = [json.loads(line) for line in (runs[0].run_dir / "ledger.jsonl").read_text().splitlines()]
        ledgers[n] = ledger
        same = json.loads((runs[0].run_dir / "results.json").read_text()) == reference
        rows.append(
            [
                f"dask, {n} worker(s)",
                len(ledger),
                f"{wall:.1f}",
                f"{started:.1f}",
                f"{sum(e['seconds'] for e in ledger):.1f}",
                "yes" if same else "NO",
            ]
        )
    return rows, {"ledgers": ledgers, "sequential": seq}


def predictions(ext: dict, grd: dict, ns=(1, 2, 4, 8, 16)) -> list[list]:
    """From the 1-worker run: per-shard and per-job seconds, plus the fixed driver phases."""
    log = ext["logs"][min(ext["logs"])]
    shards = [e["seconds"] for e in log if e["phase"] == "shard"]
    fixed = sum(e["plan_seconds"] + e["finalize_seconds"] for e in log if e["phase"] == "driver")
    jobs = [e["seconds"] for e in grd["ledgers"][min(grd["ledgers"])]]
    rows = []
    for n in ns:
        e, g = fixed + makespan(shards, n), makespan(jobs, n)
        rows.append(
            [
                n,
                f"{e:.1f}",
                f"{makespan(shards, 1) / makespan(shards, n):.2f}x",
                f"{g:.1f}",
                f"{makespan(jobs, 1) / makespan(jobs, n):.2f}x",
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--utterances-per-dialog", type=int, default=24)
    ap.add_argument("--shard-batches", type=int, default=2)
    ap.add_argument("--grid-n", type=int, default=100, help="utterances in the grid's synthetic store")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.md")
    args = ap.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ext_rows, ext = extraction(args, Path(tmp))
        grid_rows, grd = grid(args, Path(tmp))
    report = render(args, ext_rows, ext, grid_rows, grd, predictions(ext, grd))
    write_report(args.out, report)


def _caveats(ext: dict, grd: dict) -> str:
    """What the 1-worker run shows about fixed costs, in its own numbers."""
    log = ext["logs"][min(ext["logs"])]
    plan = {e["modality"]: e["plan_seconds"] for e in log if e["phase"] == "driver"}
    jobs = sum(e["seconds"] for e in grd["ledgers"][min(grd["ledgers"])])
    return (
        f"Fixed costs: a worker process imports and loads each encoder afresh (the plan task, which includes the first "
        f"load: text {plan.get('text', float('nan')):.1f} s, audio {plan.get('audio', float('nan')):.1f} s, video "
        f"{plan.get('video', float('nan')):.1f} s against {ext['single']:.1f} s for the whole one-process extraction), "
        "and shards decode on a thread where one process decodes in DataLoader processes (starting those for every "
        "shard cost more than it saved). These are large against a 120-utterance corpus and small against IEMOCAP's "
        f"hours of media on GPU workers. Training jobs took {jobs:.0f} s in total inside 1 dask worker against "
        f"{grd['sequential']:.0f} s in the driver process "
        "(not investigated: the worker's own threads share the cores).\n"
    )


def render(args, ext_rows, ext, grid_rows, grd, pred_rows) -> str:
    cmd = (
        f"python bench/scale.py --device {args.device} --workers {','.join(map(str, args.workers))} "
        f"--utterances-per-dialog {args.utterances_per_dialog} --shard-batches {args.shard_batches} "
        f"--grid-n {args.grid_n} --seeds {args.seeds} --epochs {args.epochs}"
    )
    return (
        "# Scaling benchmark: one process vs local dask workers\n\n"
        f"Command: `{cmd}`\n\n"
        + machine_header(("torch", "dask", "distributed", "zarr"))
        + f"- device: {args.device}; each local worker runs one task at a time with (cores / workers) torch threads\n\n"
        f"## Extraction: demo corpus ({ext['n_utterances']} utterances), demo encoders, smaller batches "
        f"(`{' '.join(f'{k}={v}' for k, v in SMALL_BATCHES.items())}`)\n\n"
        + md_table(
            [
                "run",
                "shards",
                "wall s",
                "of which cluster start s",
                "sum of shard s",
                "per modality s (text / audio / video)",
            ],
            ext_rows,
        )
        + "\nPer-modality seconds include the plan task (the first model load on a worker) and the driver's "
        "finalize. Model loads happen once per worker and modality, inside the first shard a worker runs.\n\n"
        f"## Training grid: {args.seeds} seed(s) x 5 folds, synthetic IEMOCAP-shaped store ({args.grid_n} "
        f"utterances, the paper's feature sizes), fast preset with a narrower model "
        f"(`{' '.join(f'{k}={v}' for k, v in SMALL_MODEL.items())}`), {args.epochs} epochs\n\n"
        + md_table(
            ["run", "jobs", "wall s", "of which cluster start s", "sum of job s", "results.json = sequential"],
            grid_rows,
        )
        + "\n## Expected scaling on N GPU workers\n\n"
        "Replaying the 1-worker run's measured per-shard and per-job seconds through greedy scheduling on N "
        "workers (extraction adds the measured driver phases, plan and finalize, which do not shrink with N):\n\n"
        + md_table(["N workers", "extraction s", "extraction speed-up (shards)", "grid s", "grid speed-up"], pred_rows)
        + "\nHow to read this: on this 2-core CPU, 2 workers split the same two cores that one worker used with "
        "two threads, so the measured 2-worker gain is what splitting cores buys, not what a second GPU would. "
        "On GPU workers each shard's cost is its own GPU's, so the replay above is the better guide: the speed-up "
        "holds while there are several shards per worker and flattens once the largest shard (or job) dominates; "
        "finalize stays on the driver and is sequential (a copy of every frame), so it bounds extraction's "
        "speed-up on large corpora. Raise `extract.shard_batches` to cut per-task overhead on many workers, "
        "lower it to balance better and lose less to a killed worker."
        "\n\n" + _caveats(ext, grd)
    )


if __name__ == "__main__":
    main()

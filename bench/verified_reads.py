"""Benchmark: what checking every chunk against its recorded CRC32 costs the store's readers.

The same reader code is timed twice in one run: as it is (every decoded chunk checked, a few
verified chunks cached) and with the check switched off (plain zarr slices, as the reader did
before). Writes bench/results/verified-reads.md.

    python bench/verified_reads.py            # 1,000 IEMOCAP-like utterances, ~0.6 GB scratch
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmarr.shared.store import FeatureStore  # noqa: E402
from cmarr.shared.store.checksums import CheckedArray  # noqa: E402
from cmarr.shared.store.synthetic import IEMOCAP_LIKE, write_synthetic_store  # noqa: E402
from common import machine_header, md_table, write_report  # noqa: E402

MODALITIES = list(IEMOCAP_LIKE)


def _plain_read(self, lo: int, hi: int) -> np.ndarray:
    """The reader before verification: a zarr slice, nothing checked, nothing cached."""
    return np.asarray(self.array[lo:hi]) if hi > lo else np.empty((0,) + tuple(self.shape[1:]), self.dtype)


def epoch(path: Path) -> None:
    store = FeatureStore.open(path)
    for _ in store.iter_blocks(MODALITIES, np.random.default_rng(0)):
        pass


def load_all(path: Path) -> None:
    store = FeatureStore.open(path)
    for m in MODALITIES:
        store.modality(m).load_all()


def one_by_one(path: Path) -> None:
    store = FeatureStore.open(path)
    for m in MODALITIES:
        reader = store.modality(m)
        for i in range(len(store)):
            reader.get(i)


def best_of(fn, path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "verified-reads.md")
    args = ap.parse_args()
    verified_read = CheckedArray.read
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.zarr"
        write_synthetic_store(path, args.n, IEMOCAP_LIKE)
        gb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9
        cases = (("shuffled epoch (iter_blocks)", epoch), ("load_all", load_all), ("get(i), every i", one_by_one))
        for name, fn in cases:
            CheckedArray.read = _plain_read
            plain = best_of(fn, path, args.repeats)
            CheckedArray.read = verified_read
            checked = best_of(fn, path, args.repeats)
            rows.append([name, f"{plain:.2f}", f"{checked:.2f}", f"{checked / plain:.2f}x"])
    report = (
        "# Verified reads\n\n"
        + f"Command: `python bench/verified_reads.py --n {args.n} --repeats {args.repeats}`\n\n"
        + machine_header(("zarr", "numpy", "numcodecs"))
        + f"\nSynthetic IEMOCAP-like store, {args.n} utterances, three modalities, {gb:.2f} GB on disk, read warm "
        "(page cache). Best of the repeats; the same reader code with the per-chunk CRC32 check on and off.\n\n"
        + md_table(["read", "unchecked s", "verified s", "verified / unchecked"], rows)
    )
    write_report(args.out, report)


if __name__ == "__main__":
    main()

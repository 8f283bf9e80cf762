"""Benchmark: what `--degrade` adds to extraction time, clean vs degraded in one run, same encoders.

For each modality the same encoder object extracts the demo corpus clean and degraded, alternating,
`--repeats` times each (the pipeline's `extract_modality`, DataLoader decoding workers included), and
the report gives medians. Two figures per spec and modality:
- wall: the degraded extraction's time over the clean one's. It includes the encoders' response to
  other content (a blurred face gives MTCNN other candidates; a face no longer found skips the DenseNet;
  dropped words are fewer tokens), which is no cost of degrading;
- own cost: the degraders alone, timed on every utterance's decoded input in this process, over the
  clean extraction's time. In a real run they run in the decoding workers, beside the encoders.
Writes bench/results/degrade.md.

    python bench/degrade.py                       # demo corpus (120 utterances), demo encoders, CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmarr.extract.corpora.demo import generate_demo_corpus  # noqa: E402
from cmarr.extract.corpora.iemocap import read_iemocap  # noqa: E402
from cmarr.extract.degrade import degrade_records, media_degrader  # noqa: E402
from cmarr.extract.encoders import build_encoder  # noqa: E402
from cmarr.extract.encoders.demo_models import apply_profile  # noqa: E402
from cmarr.extract.media.span import Decoded  # noqa: E402
from cmarr.extract.pipeline import LocalExecutor, extract_modality  # noqa: E402
from cmarr.extract.store_sync import open_store  # noqa: E402
from cmarr.shared.config import load_config, with_overrides  # noqa: E402
from cmarr.shared.devices import resolve_device  # noqa: E402
from cmarr.shared.labels import FOUR_CLASS  # noqa: E402
from cmarr.shared.modalities import MODALITIES  # noqa: E402
from common import machine_header, md_table, write_report  # noqa: E402

EXAMPLE = "audio:snr=0,video:blur=4,text:word-drop=0.3"  # the example
EVERY_KIND = (
    "audio:reverb=0.5,audio:snr=5,audio:noise-dir={noise},video:occlude=0.2,video:dark=0.5,video:blur=2,"
    "text:word-drop=0.1,text:word-swap=0.1"
)
TARGET = 0.10
ENCODERS = {
    "demo": "the demo profile (MiniLM-L6 BERT, a tiny random wav2vec2, a depth-16 random DenseNet-BC; MTCNN at 4 fps)",
    "base": "random-weight networks of the real encoders' sizes (BERT-base, wav2vec2-base, DenseNet-BC-100), with "
    "the demo profile's detection settings (MTCNN at 4 fps)",
}


def noise_folder(root: Path) -> Path:
    """Four 10 s noise recordings at 44.1 kHz (resampled to 16 kHz when used), brown-ish noise."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for k in range(4):
        noise = np.cumsum(rng.standard_normal(441000))
        noise -= np.convolve(noise, np.ones(441) / 441, mode="same")  # no drift
        sf.write(root / f"noise{k}.wav", (0.3 * noise / np.abs(noise).max()).astype(np.float32), 44100)
    return root


def own_cost(encoder, records, cfg) -> float:
    """Seconds the degraders take on every utterance's decoded input (text: degrading the records)."""
    if encoder.modality == "text":
        start = time.perf_counter()
        degrade_records(records, cfg.extract.degrade)
        return time.perf_counter() - start
    degrade, load = media_degrader(encoder.modality, cfg.extract), encoder.loader()
    if degrade is None:
        return 0.0
    inputs = [load(r) for r in records]
    start = time.perf_counter()
    for r, x in zip(records, inputs):
        degrade(x.value if isinstance(x, Decoded) else x, r.id)
    return time.perf_counter() - start


def measure(encoder, records, cfgs: dict, tmp: Path, repeats: int) -> dict:
    """Per side ('clean' and each spec): (seconds, forward seconds) of `repeats` extractions, after one
    clean run left out (warm-up); the sides alternate, in the reverse order every other repeat."""
    runs: dict[str, list] = {side: [] for side in cfgs}
    sides = list(cfgs)
    for r in range(-1, repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:
            if r < 0 and side != "clean":
                continue
            cfg = cfgs[side]
            start = time.perf_counter()
            side_records = degrade_records(records, cfg.extract.degrade)  # what extract_corpus does first
            store, _ = open_store(tmp / f"{side}-{r}-{encoder.modality}.zarr", records, "demo", FOUR_CLASS, cfg)
            executor = LocalExecutor(cfg, {encoder.modality: encoder})
            report = extract_modality(store, side_records, encoder.modality, executor)
            if r >= 0:
                runs[side].append((time.perf_counter() - start, report.forward_seconds))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--utterances-per-dialog", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side; the report gives medians")
    ap.add_argument(
        "--models",
        choices=("demo", "base"),
        default="demo",
        help="the demo profile's encoders, or random ones of the real encoders' sizes (as bench/extract.py)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "degrade.md")
    args = ap.parse_args()
    keys = {"extract.profile": "demo", "extract.device": args.device, "extract.num_workers": args.workers}
    base = apply_profile(load_config(None, keys))
    device, rows = resolve_device(args.device), []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.models == "base":
            from extract import base_sized_models  # bench/extract.py

            base = with_overrides(base, base_sized_models(tmp / "models"), "bench --models base")
        specs = {"example": EXAMPLE, "every kind": EVERY_KIND.format(noise=noise_folder(tmp / "noise"))}
        cfgs = {"clean": base} | {
            name: with_overrides(base, {"extract.degrade.spec": spec}, "bench") for name, spec in specs.items()
        }
        corpus = generate_demo_corpus(tmp / "corpus", utterances_per_dialog=args.utterances_per_dialog)
        records = read_iemocap(corpus, FOUR_CLASS).records
        totals = {side: 0.0 for side in cfgs} | {f"own {name}": 0.0 for name in specs}
        for modality in MODALITIES:
            encoder = build_encoder(modality, base.extract, device)
            first = encoder.loader()(records[0])
            encoder.encode([first.value if isinstance(first, Decoded) else first])  # warm-up, outside the timings
            runs = measure(encoder, records, cfgs, tmp, args.repeats)
            clean = float(np.median([s for s, _ in runs["clean"]]))
            totals["clean"] += clean
            for name in specs:
                wall = float(np.median([s for s, _ in runs[name]]))
                own = own_cost(encoder, records, cfgs[name])
                totals[name] += wall
                totals[f"own {name}"] += own
                rows.append(_row(modality, name, runs, clean, wall, own))
            del encoder
        for name in specs:
            rows.append(_total_row(name, totals))
    write_report(args.out, render(args, rows, specs, device, len(records)))


def _row(modality: str, name: str, runs: dict, clean: float, wall: float, own: float) -> list:
    forward = {side: float(np.median([f for _, f in runs[side]])) for side in ("clean", name)}
    return [
        modality,
        name,
        f"{clean:.2f}",
        f"{wall:.2f}",
        f"{100 * (wall / clean - 1):+.1f}%",
        f"{forward['clean']:.2f} / {forward[name]:.2f}",
        f"{own:.3f}",
        f"**{100 * own / clean:.1f}%**",
        " / ".join(f"{s:.2f}" for s, _ in runs[name]),
    ]


def _total_row(name: str, totals: dict) -> list:
    clean, wall, own = totals["clean"], totals[name], totals[f"own {name}"]
    met = "met" if own / clean < TARGET else "missed"
    return ["**all**", name, f"{clean:.2f}", f"{wall:.2f}", f"**{100 * (wall / clean - 1):+.1f}%**", "", f"{own:.3f}",
            f"**{100 * own / clean:.1f}%** (target < {100 * TARGET:.0f}%: {met})", ""]  # fmt: skip


def render(args, rows, specs, device, n) -> str:
    shown = {name: EVERY_KIND.format(noise="NOISE") if name == "every kind" else spec for name, spec in specs.items()}
    listed = "\n".join(f"- {name}: `{spec}`" for name, spec in shown.items())
    return (
        "# Degraded extraction: what `--degrade` costs\n\n"
        f"Command: `python bench/degrade.py --device {args.device} --workers {args.workers} "
        f"--utterances-per-dialog {args.utterances_per_dialog} --repeats {args.repeats} --models {args.models}`\n\n"
        + machine_header(("torch", "transformers", "facenet-pytorch", "av", "scipy", "pillow"))
        + f"- device: {device}; torch threads {torch.get_num_threads()}; DataLoader workers {args.workers}\n"
        f"\nCorpus: the generated demo corpus ({n} utterances, IEMOCAP layout, 720x480 video, 16 kHz audio); "
        f"encoders: {ENCODERS[args.models]}, the same encoder object for every side. Specs:\n\n"
        f"{listed}\n\n(`NOISE`: a folder of four 10 s recordings at 44.1 kHz, resampled to 16 kHz.) Each side "
        f"ran {args.repeats} times after a clean warm-up run, alternating (the order reversed every other time); "
        "times are medians.\n\n"
        + md_table(
            [
                "modality",
                "spec",
                "clean s",
                "degraded s",
                "wall overhead",
                "in forward s (clean / degraded)",
                "degraders' own s",
                "own cost / clean",
                "degraded runs s",
            ],
            rows,
        )
        + "\n'Wall overhead' compares whole extractions, so it also holds the encoders' response to the degraded "
        "content and this shared machine's noise (the 'in forward' column shows the encoders' part). 'Own cost' "
        "is the degraders' time on every utterance's input, measured alone in the main process, over the clean "
        "extraction's time: the upper bound of what degrading adds (in a run, audio and video are degraded in "
        "the decoding workers, overlapping the encoders).\n"
    )


if __name__ == "__main__":
    main()

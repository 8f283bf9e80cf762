"""`cmarr-fer`: train the Denseface video encoder on FER2013 + FER+, or evaluate a checkpoint.

Exit codes: 0 ok, 1 failure, 2 usage/config error (malformed input rows name their line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from cmarr.shared.config import load_config, parse_override
from cmarr.shared.console import ProgressReporter, reports_errors, stdout_console
from cmarr.shared.devices import resolve_device

# Plain help texts: `[extract.video]` names a config section; rich would take it for markup and drop it.
app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
Fer2013 = Annotated[Path, typer.Option("--fer2013", help="fer2013.csv (emotion,pixels,Usage).")]
FerPlus = Annotated[Path, typer.Option("--ferplus", help="fer2013new.csv (FER+ votes).")]


@app.command()
@reports_errors(output="out")
def train(
    fer2013: Fer2013,
    ferplus: FerPlus,
    out: Annotated[Path, typer.Option(help="Checkpoint to write.")] = Path("checkpoints/denseface-ferplus.pt"),
    config: Annotated[Path | None, typer.Option(help="pipeline.toml (default: ./pipeline.toml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key, e.g. fer.epochs=30.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    skip_bad_rows: Annotated[
        bool | None, typer.Option("--skip-bad-rows", help="Skip and count malformed rows (fer.skip_bad_rows).")
    ] = None,
) -> None:
    """Train DenseNet-BC on FER+ (architecture and normalisation from [extract.video], schedule from [fer])."""
    from cmarr.extract.fer.data import load_fer
    from cmarr.extract.fer.trainer import train_fer

    overrides = dict(parse_override(s) for s in set_ or [])
    if device:
        overrides["fer.device"] = device
    if skip_bad_rows:
        overrides["fer.skip_bad_rows"] = True
    cfg = load_config(config, overrides)
    data = load_fer(fer2013, ferplus, cfg.fer.skip_bad_rows)
    _print_counts(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    with ProgressReporter("batches") as progress:
        metrics = train_fer(
            data,
            cfg.fer,
            cfg.extract.video,
            out,
            {"fer2013": fer2013, "ferplus": ferplus},
            resolve_device(cfg.fer.device),
            progress.update,
            lambda m: stdout_console().print(m, highlight=False, markup=False),
        )
    _print(metrics)
    stdout_console().print(f"wrote {out} (confusion matrix: {out.with_suffix('.confusion.png')})", markup=False)


@app.command()
@reports_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `cmarr-fer train`.")],
    fer2013: Fer2013,
    ferplus: FerPlus,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    skip_bad_rows: Annotated[bool, typer.Option(help="Skip and count malformed rows instead of failing.")] = False,
) -> None:
    """Accuracy and per-class recall on PublicTest and PrivateTest."""
    from cmarr.extract.encoders.denseface_checkpoint import load_denseface
    from cmarr.extract.fer.data import load_fer
    from cmarr.extract.fer.trainer import evaluate_checkpoint

    model = load_denseface(checkpoint)  # refused before the images are read
    data = load_fer(fer2013, ferplus, skip_bad_rows)
    _print_counts(data)
    _print(evaluate_checkpoint(model, data, resolve_device(device)))


def _print_counts(data) -> None:
    """'images: Training N, PublicTest N, PrivateTest N; left out: N (mostly unknown/NF), ...' (or none)."""
    counts = ", ".join(f"{usage} {len(split.images)}" for usage, split in data.splits.items())
    skipped = ", ".join(f"{n} ({why})" for why, n in data.skipped.items()) or "none"
    stdout_console().print(f"images: {counts}; left out: {skipped}", highlight=False, markup=False)


def _print(metrics: dict) -> None:
    for split in ("public", "private"):
        m = metrics[split]
        # a class without a test image has no recall: said, not dropped from the line
        recall = ", ".join(f"{c} {r:.2f}" if r is not None else f"{c} n/a (no image)" for c, r in m["recall"].items())
        stdout_console().print(
            f"{split}: accuracy {m['accuracy']:.4f} on {m['n']} images; recall: {recall}", highlight=False
        )
    print(json.dumps({k: {"accuracy": metrics[k]["accuracy"], "n": metrics[k]["n"]} for k in ("public", "private")}))

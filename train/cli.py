"""`cmarr-train` and `cmarr-predict`: CM-ARR from a feature store.

Exit codes: 0 ok, 1 failure, 2 usage/config error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cmarr.shared.config import load_config, parse_override
from cmarr.shared.console import reports_errors
from cmarr.shared.devices import resolve_device
from cmarr.train.presets import apply_preset

console = Console()


@reports_errors
def train(
    store: Annotated[str, typer.Option(help="Feature store: directory, .zarr.zip or URL.")],
    folds: Annotated[int | None, typer.Option(help="Folds (must equal the store's sessions: 5 IEMOCAP, 6 MSP-IMPROV).")] = None,
    preset: Annotated[str | None, typer.Option(help="paper (lr 1e-5, batch 16, 100 epochs) or fast.")] = None,
    variant: Annotated[str | None, typer.Option(help="cmarr, or an ablation: baseline, no-udcl, no-spcl, no-attention, point.")] = None,
    seed: Annotated[int | None, typer.Option(help="First seed.")] = None,
    seeds: Annotated[int, typer.Option(help="Number of repeated runs (seeds seed, seed+1, ...).")] = 1,
    require: Annotated[str | None, typer.Option(help="Keep only utterances whose store has these modalities, e.g. video.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for run directories.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run of this same command.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    config: Annotated[Path | None, typer.Option(help="pipeline.toml (default: ./pipeline.toml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")] = None,
) -> None:
    """Train and evaluate CM-ARR under the paper's protocol; writes results.md/json/csv and plots."""
    overrides = dict(parse_override(s) for s in set_ or [])
    for key, value in (("train.preset", preset), ("train.variant", variant), ("train.seed", seed), ("train.device", device)):
        if value is not None:
            overrides[key] = value
    cfg = apply_preset(load_config(config, overrides), set(overrides))
    from cmarr.train.run import run_training

    first = cfg.train.seed
    run_dir, table = run_training(store, cfg, folds, list(range(first, first + seeds)), out,
                                  require.split(",") if require else [], resolve_device(cfg.train.device), resume,
                                  log=lambda msg: console.print(msg, highlight=False))
    view = Table("Avail.", "WAR", "UAR", title=f"{run_dir.name}")
    for row, t in table.items():
        view.add_row(row, f"{t['war_mean']:.2f} ± {t['war_std']:.2f}", f"{t['uar_mean']:.2f} ± {t['uar_std']:.2f}")
    console.print(view)
    console.print(f"run directory: {run_dir}")


train_app = typer.Typer(add_completion=False, help="Train and evaluate CM-ARR from a feature store.")
train_app.command()(train)


@reports_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A split folder with checkpoint.pt (e.g. runs/<id>/seed0/fold1/split0).")],
    store: Annotated[str, typer.Option(help="Store whose utterances to label.")],
    modalities: Annotated[str, typer.Option(help="Modalities to give the model, e.g. audio,text.")] = "text,audio,video",
    out: Annotated[Path, typer.Option(help="CSV to write.")] = Path("predictions.csv"),
) -> None:
    """Predict emotions for a store's utterances with any subset of modalities."""
    from cmarr.train.predict import predict_store

    n = predict_store(run, store, modalities.split(","), out)
    console.print(f"wrote {n} predictions to {out}")


predict_app = typer.Typer(add_completion=False, help="Predict emotions with a trained CM-ARR model.")
predict_app.command()(predict)

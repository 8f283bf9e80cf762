"""`cmarr-train` and `cmarr-predict`: CM-ARR from a feature store.

Exit codes: 0 ok, 1 failure, 2 usage/config error.
`--jobs N` or `--scheduler ADDRESS` runs the grid's jobs on dask (see train/grid.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer
from cmarr.shared.cluster import require_gpu_workers
from cmarr.shared.config import TrainConfig, load_config, parse_override, with_overrides
from cmarr.shared.console import reports_errors
from cmarr.shared.devices import resolve_device
from cmarr.shared.errors import ConfigError
from cmarr.train.presets import apply_preset
from rich.console import Console
from rich.table import Table

console = Console()


@reports_errors
def train(
    store: Annotated[str, typer.Option(help="Feature store: directory, .zarr.zip or URL.")],
    folds: Annotated[
        int | None, typer.Option(help="Folds (must equal the store's sessions: 5 IEMOCAP, 6 MSP-IMPROV).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="paper (lr 1e-5, batch 16, 100 epochs) or fast.")] = None,
    variant: Annotated[
        str | None, typer.Option(help="cmarr, or an ablation: baseline, no-udcl, no-spcl, no-attention, point.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="First seed.")] = None,
    seeds: Annotated[int, typer.Option(help="Number of repeated runs (seeds seed, seed+1, ...).")] = 1,
    require: Annotated[
        str | None, typer.Option(help="Keep only utterances whose store has these modalities, e.g. video.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for run directories.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run of this same command.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    config: Annotated[Path | None, typer.Option(help="pipeline.toml (default: ./pipeline.toml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")] = None,
    ablations: Annotated[
        str | None,
        typer.Option(
            help="Also train these variants: all, or e.g. baseline,no-udcl "
            "(one run directory each, plus an ablation table)."
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Run the grid's jobs on N local dask worker processes.")] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run the grid's jobs on a running dask cluster (tcp://HOST:8786); workers must see --store and --out."
        ),
    ] = None,
) -> None:
    """Train and evaluate CM-ARR under the paper's protocol; writes results.md/json/csv and plots."""
    overrides = dict(parse_override(s) for s in set_ or [])
    for key, value in (
        ("train.preset", preset),
        ("train.variant", variant),
        ("train.seed", seed),
        ("train.device", device),
    ):
        if value is not None:
            overrides[key] = value
    cfg = apply_preset(load_config(config, overrides), set(overrides))
    if jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if jobs > 1 and scheduler:
        raise ConfigError("give either --jobs (a local cluster) or --scheduler (a running one), not both")
    from cmarr.shared.cluster import cluster_device, dask_client, local_gpus
    from cmarr.train.run import run_training

    first = cfg.train.seed
    log = lambda msg: console.print(msg, highlight=False)  # noqa: E731
    cluster = f"local:{jobs}" if jobs > 1 else None
    variants = _variants(cfg.train.variant, ablations)  # checked before any cluster starts
    with dask_client(scheduler, cluster, local_gpus(cfg.train.device)) as client:
        if client is not None:
            cfg = with_overrides(cfg, {"train.device": cluster_device(client, cfg.train.device)}, "--scheduler")
            require_gpu_workers(client, cfg.train.device == "cuda")
        runs = run_training(
            store,
            cfg,
            folds,
            list(range(first, first + seeds)),
            out,
            require.split(",") if require else [],
            resolve_device(cfg.train.device) if client is None else None,
            resume,
            log=log,
            variants=variants,
            client=client,
        )
    for run in runs:
        view = Table("Avail.", "WAR", "UAR", title=f"{run.run_dir.name}")
        for row, t in run.table.items():
            view.add_row(row, f"{t['war_mean']:.2f} ± {t['war_std']:.2f}", f"{t['uar_mean']:.2f} ± {t['uar_std']:.2f}")
        console.print(view)
        console.print(f"run directory: {run.run_dir}")


def _variants(main: str, ablations: str | None) -> list[str]:
    names = list(get_args(TrainConfig.model_fields["variant"].annotation))
    if not ablations:
        return [main]
    wanted = names if ablations == "all" else [a.strip() for a in ablations.split(",")]
    if bad := [a for a in wanted if a not in names]:
        raise ConfigError(f"--ablations: unknown variant(s) {bad}; choose from {', '.join(names)} or all")
    return list(dict.fromkeys([main, *wanted]))


train_app = typer.Typer(add_completion=False, help="Train and evaluate CM-ARR from a feature store.")
train_app.command()(train)


@reports_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A split folder with checkpoint.pt (e.g. runs/<id>/seed0/fold1/split0).")],
    store: Annotated[str, typer.Option(help="Store whose utterances to label.")],
    modalities: Annotated[
        str, typer.Option(help="Modalities to give the model, e.g. audio,text.")
    ] = "text,audio,video",
    out: Annotated[Path, typer.Option(help="CSV to write.")] = Path("predictions.csv"),
) -> None:
    """Predict emotions for a store's utterances with any subset of modalities."""
    from cmarr.train.predict import predict_store

    n = predict_store(run, store, modalities.split(","), out)
    console.print(f"wrote {n} predictions to {out}")


predict_app = typer.Typer(add_completion=False, help="Predict emotions with a trained CM-ARR model.")
predict_app.command()(predict)

"""`cmarr-train` and `cmarr-predict`: the systems of `train/systems/` from a feature store.

`cmarr-train [run] --store S ...` trains (the default command); `cmarr-train describe` prints a
system's stages and parameter counts without a store. Exit codes: 0 ok, 1 failure, 2 usage/config
error. `--jobs N` or `--scheduler ADDRESS` runs the grid's jobs on dask (see train/grid.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.core import TyperGroup

from cmarr.shared.cluster import require_gpu_workers
from cmarr.shared.config import PipelineConfig, load_config, parse_override, with_overrides
from cmarr.shared.console import reports_errors, stdout_console
from cmarr.shared.devices import resolve_device
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.train.presets import apply_preset
from cmarr.train.run import TrainingRequest

Config = Annotated[Path | None, typer.Option(help="pipeline.toml (default: ./pipeline.toml).")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")]
Preset = Annotated[str | None, typer.Option(help="paper (every system's published schedule) or fast.")]


class _DefaultRun(TyperGroup):
    """`cmarr-train --store S ...` means `cmarr-train run --store S ...`."""

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


train_app = typer.Typer(
    cls=_DefaultRun,
    add_completion=False,
    rich_markup_mode=None,
    help=(
        "Train and evaluate systems from a feature store: `cmarr-train --store STORE [OPTIONS]` runs the "
        "`run` command, the default (`cmarr-train run --help` lists its options: --store, --folds, --system, "
        "--preset, --set, ...); `cmarr-train describe` prints a system's stages."
    ),
)


def _load(config: Path | None, sets: list[str] | None, more: dict) -> PipelineConfig:
    overrides = dict(parse_override(s) for s in sets or [])
    overrides.update({k: v for k, v in more.items() if v is not None})
    return apply_preset(load_config(config, overrides), set(overrides))


@train_app.command("run")
@reports_errors
def train(
    store: Annotated[str, typer.Option(help="Feature store: directory, .zarr.zip or URL.")],
    folds: Annotated[int | None, typer.Option(help="Folds (= the store's sessions: 5 IEMOCAP, 6 MSP-IMPROV).")] = None,
    only_folds: Annotated[
        str | None,
        typer.Option(help="Train and report only these folds, e.g. 1 or 1,3 (a first check; --resume adds the rest)."),
    ] = None,
    system: Annotated[str | None, typer.Option(help="The system to train (default cm-arr); see `describe`.")] = None,
    systems: Annotated[str | None, typer.Option(help="Train several: all (Table 2's systems) or a list.")] = None,
    ablations: Annotated[
        str | None, typer.Option(help="Also train Table 3's ablations: all, or e.g. baseline,no-udcl.")
    ] = None,
    preset: Preset = None,
    seed: Annotated[int | None, typer.Option(help="First seed.")] = None,
    seeds: Annotated[int, typer.Option(help="Number of repeated runs (seeds seed, seed+1, ...).")] = 1,
    require: Annotated[str | None, typer.Option(help="Keep only utterances that have these modalities.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for run directories.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run of this same command.")] = False,
    selection_gap: Annotated[
        bool,
        typer.Option(
            help="Also score the test part after every epoch, never to select: each split's metrics.jsonl, and "
            "the comparison's test-selection gap (with --systems/--ablations)."
        ),
    ] = False,
    sweep: Annotated[
        list[str] | None, typer.Option(help="Train once per value and plot (Fig. 4), e.g. alpha=0.1,0.5,1,2,5.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    config: Config = None,
    set_: Sets = None,
    jobs: Annotated[int, typer.Option(help="Run the grid's jobs on N local dask worker processes.")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="A running dask cluster (tcp://HOST:8786); workers must see --store and --out.")
    ] = None,
) -> None:
    """Train and evaluate under the paper's protocol; writes results.md/json/csv and plots per system."""
    cfg = _load(
        config, set_, {"train.preset": preset, "train.system": system, "train.seed": seed, "train.device": device}
    )
    if jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if jobs > 1 and scheduler:
        raise ConfigError("give either --jobs (a local cluster) or --scheduler (a running one), not both")
    request = TrainingRequest(
        store=store,
        cfg=cfg,
        out=out,
        systems=tuple(selected_systems(cfg.train.system, systems, ablations)),  # checked before any cluster starts
        folds=folds,
        seeds=tuple(range(cfg.train.seed, cfg.train.seed + seeds)),
        require=tuple(m.strip() for m in require.split(",")) if require else (),
        only_folds=tuple(_parse_folds(only_folds)) if only_folds else (),
        resume=resume,
        report_test=selection_gap,
        comparison="table2" if systems else "table3",
    )
    for run in train_on_cluster(request, jobs, scheduler, sweep):
        _print_run(run)


def train_on_cluster(request: TrainingRequest, jobs: int, scheduler: str | None, sweep: list[str] | None) -> list:
    """Run the request in this process, on `jobs` local dask workers or on a running cluster; with
    `sweep`, once per value of each swept key (printing each sweep's figure) and return nothing."""
    from cmarr.shared.cluster import cluster_device, dask_client, local_gpus
    from cmarr.train.run import run_training

    cfg, log = request.cfg, _log
    with dask_client(scheduler, f"local:{jobs}" if jobs > 1 else None, local_gpus(cfg.train.device)) as client:
        if client is not None:
            cfg = with_overrides(cfg, {"train.device": cluster_device(client, cfg.train.device)}, "--scheduler")
            require_gpu_workers(client, cfg.train.device == "cuda")
        device = resolve_device(cfg.train.device) if client is None else None
        request = dataclasses.replace(request, cfg=cfg)
        if not sweep:
            return run_training(request, device, log, client)
        from cmarr.train.sweep import run_sweep

        def grid(c):
            return run_training(dataclasses.replace(request, cfg=c, systems=(cfg.train.system,)), device, log, client)

        for spec in sweep:
            stdout_console().print(f"sweep: {run_sweep(spec, cfg, request.out, grid)}", markup=False)
        return []


def _log(msg: str) -> None:
    stdout_console().print(msg, highlight=False, markup=False, soft_wrap=True)


def _print_run(run) -> None:
    """A system's table (WAR and UAR per condition, mean ± std over folds) and where its run is."""
    from cmarr.train.report import coverage_note, mean_std

    subset_note = (
        f" (only fold(s) {','.join(map(str, run.folds))} of {run.n_folds}: a first check)"
        if len(run.folds) < run.n_folds
        else ""
    )
    view = Table("Avail.", "WAR", "UAR", title=f"{run.run_dir.name}{subset_note}")
    for row, t in run.table.items():
        view.add_row(row, mean_std(t, "war", " ± "), mean_std(t, "uar", " ± "))
    stdout_console().print(view)
    if note := coverage_note(run.table, max(t["runs"] for t in run.table.values())):
        stdout_console().print(f"note: {note}", markup=False, soft_wrap=True)
    stdout_console().print(f"run directory: {run.run_dir}", markup=False, soft_wrap=True)


def _parse_folds(text: str) -> list[int]:
    """'1,3' -> [1, 3] (checked against the store's folds later, in `run_training`)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--only-folds: expected fold numbers such as 1 or 1,3, got {text!r}")
    return [int(p) for p in parts]


def selected_systems(main: str, systems: str | None, ablations: str | None) -> list[str]:
    """The systems a command trains: `--systems` (or the config's one) plus `--ablations`."""
    from cmarr.train.systems import SYSTEMS, group

    def parse(text: str, everything: str, option: str) -> list[str]:
        wanted = list(group(everything)) if text == "all" else [a.strip() for a in text.split(",") if a.strip()]
        if bad := [a for a in wanted if a not in SYSTEMS]:
            raise ConfigError(f"{option}: unknown system(s) {', '.join(bad)}; choose from {', '.join(SYSTEMS)} or all")
        return wanted

    names = parse(systems, "table2", "--systems") if systems else [main]
    if ablations:
        names += parse(ablations, "ablations", "--ablations")
    return list(dict.fromkeys(names))


@train_app.command()
@reports_errors
def describe(
    system: Annotated[str, typer.Option(help="A system name, or all.")] = "all",
    dims: Annotated[str, typer.Option(help="Feature dims per modality.")] = "text=768,audio=768,video=342",
    classes: Annotated[int, typer.Option(help="Number of classes.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    preset: Preset = None,
    config: Config = None,
    set_: Sets = None,
) -> None:
    """A system's stages, loss weights, samplers and parameter counts (trainable, frozen, total), no store needed."""
    from cmarr.train.run import describe_system
    from cmarr.train.systems import SYSTEMS, get_system

    cfg = _load(config, set_, {"train.preset": preset})
    feature_dims = _parse_dims(dims)
    names = list(SYSTEMS) if system == "all" else [system]
    described = [describe_system(get_system(n, cfg.train), feature_dims, classes) for n in names]
    if as_json:
        print(json.dumps(described if system == "all" else described[0], indent=1))
        return
    for d in described:
        table = Table(
            "stage", "sampler", "loss weights", "trainable", "frozen", "total", title=f"{d['system']}: {d['title']}"
        )
        for s in d["stages"]:
            weights = ", ".join(f"{k} {v:g}" for k, v in s["weights"].items())
            p = s["parameters"]
            table.add_row(
                s["name"], s["sampler"], weights, f"{p['trainable']:,}", f"{p['frozen']:,}", f"{p['total']:,}"
            )
        stdout_console().print(table)


def _parse_dims(text: str) -> dict[str, int]:
    dims = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in MODALITIES or not value.strip().isdigit():
            raise ConfigError(f"--dims: expected text=N,audio=N,video=N, got {text!r}")
        dims[name.strip()] = int(value)
    if set(dims) != set(MODALITIES):
        raise ConfigError(f"--dims: give all of {', '.join(MODALITIES)}")
    return {m: dims[m] for m in MODALITIES}

"""`cmarr-train`: the registered systems (`train/systems/`, plugins) trained from a feature store.

`cmarr-train [run] --store S ...` trains (the default command; its options: train/options.py);
`cmarr-train describe` prints a system's stages and parameter counts without a store;
`cmarr-train score` adds a researcher's own predictions to a run's Table 2; `cmarr-train evaluate`
scores a trained run held-out on another store (a degraded copy), also at missing rates. Exit codes: 0 ok,
1 failure, 2 usage/config error. `--jobs N` or `--scheduler ADDRESS` runs the grid's jobs on dask
(see train/grid.py). Each command parses its options and calls one library function.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from cmarr.shared.cluster import require_gpu_workers
from cmarr.shared.config import PipelineConfig, load_config, parse_override, with_overrides
from cmarr.shared.console import ProgressReporter, plain, reports_errors, stdout_console
from cmarr.shared.devices import resolve_device
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.train import options as O
from cmarr.train.presets import apply_preset, rescheduled
from cmarr.train.run import SystemsFailed, TrainingRequest
from cmarr.train.tracking import check_trackers
from rich.table import Table
from typer.core import TyperGroup

Config = Annotated[Path | None, typer.Option(help="pipeline.toml (default: ./pipeline.toml).")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override config keys: --set section.key=value [section.key=value ...]."),
]
Plugins = Annotated[
    list[str] | None,
    typer.Option("--plugin", help="A module that registers systems: a dotted name or a .py file (repeatable)."),
]
Preset = Annotated[str | None, typer.Option(help="paper (every system's published schedule) or fast.")]


class _DefaultRun(TyperGroup):
    """`cmarr-train --store S ...` means `cmarr-train run --store S ...`; `--set a=1 b=2` means
    `--set a=1 --set b=2`."""

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, several_sets(args))


def several_sets(args: list[str]) -> list[str]:
    """Each `key=value` word that follows a `--set` value is one more `--set` (no command here takes
    a positional argument, so such a word can mean nothing else)."""
    out, in_set = [], False
    for arg in args:
        if in_set and not arg.startswith("-") and "=" in arg and out[-1] != "--set":
            out.append("--set")
        in_set = arg == "--set" or (in_set and not arg.startswith("-"))
        out.append(arg)
    return out


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


def _load(
    config: Path | None, sets: list[str] | None, more: dict, plugins: list[str] | None = None, **schedule
) -> PipelineConfig:
    """The config: the file, `--set` and the options' keys, the preset, then `--epochs` or
    `--schedule-scale`; the plugins (and installed entry points) are imported first, so that their
    config sections are known when the file is read."""
    from cmarr.train.systems import discover, load_plugin

    discover()
    for plugin in plugins or []:
        load_plugin(plugin)
    overrides = dict(parse_override(s) for s in sets or [])
    overrides.update({k: v for k, v in more.items() if v is not None})
    return rescheduled(apply_preset(load_config(config, overrides), set(overrides)), **schedule)


@train_app.command("run")
@reports_errors(output="out")
def train(
    store: O.Store,
    folds: O.Folds = None,
    only_folds: O.OnlyFolds = None,
    system: O.System = None,
    systems: O.Systems = None,
    ablations: O.Ablations = None,
    preset: Preset = None,
    seed: O.Seed = None,
    seeds: O.Seeds = 1,
    require: O.Require = None,
    out: O.Out = Path("runs"),
    resume: O.Resume = False,
    selection_gap: O.SelectionGap = False,
    allow_degraded: O.AllowDegraded = False,
    sweep: O.Sweep = None,
    device: O.Device = None,
    config: Config = None,
    set_: Sets = None,
    epochs: O.Epochs = None,
    schedule_scale: O.ScheduleScale = None,
    plugin: Plugins = None,
    log_to: O.LogTo = None,
    jobs: O.Jobs = 1,
    scheduler: O.Scheduler = None,
) -> None:
    """Train and evaluate under the paper's protocol; writes results.md/json/csv and plots per system."""
    more = {"train.preset": preset, "train.system": system, "train.seed": seed, "train.device": device}
    cfg = _load(config, set_, more, plugin, epochs=epochs, scale=schedule_scale)
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
        tracking=tuple(check_trackers(log_to or [])),
        allow_degraded=allow_degraded,
    )
    try:
        with ProgressReporter("batches", end_lines=False):  # each epoch's steps; its own line says it ended
            runs = train_on_cluster(request, jobs, scheduler, sweep)
    except SystemsFailed as err:  # print what did train, then the error
        for run in err.runs:
            _print_run(run)
        raise
    for run in runs:
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
    view = Table("Avail.", "WAR", "UAR", title=plain(f"{run.run_dir.name}{subset_note}"))
    for row, t in run.table.items():
        view.add_row(row, mean_std(t, "war", " ± "), mean_std(t, "uar", " ± "))
    stdout_console().print(view)
    if note := coverage_note(run.table, max(t["runs"] for t in run.table.values())):
        stdout_console().print(f"note: {note}", markup=False, soft_wrap=True)
    stdout_console().print(f"run directory: {run.run_dir}", markup=False, soft_wrap=True)


@train_app.command()
@reports_errors
def score(
    run: Annotated[Path, typer.Option(help="A comparison folder (runs/<corpus>-comparison-<tag>) or a run directory.")],
    predictions: Annotated[Path, typer.Option(help="CSV: id, condition, prediction (and seed with several seeds).")],
    name: Annotated[str, typer.Option(help="The method's name in the table, e.g. my-method.")],
    store: Annotated[str | None, typer.Option(help="Where the run's store is now, if it moved.")] = None,
    plugin: Plugins = None,
) -> None:
    """Score your own method's predictions on the run's protocol and add them to its Table 2."""
    from cmarr.train.scoring import score as score_predictions

    _load(None, None, {}, plugin)  # the plugins of the comparison's systems, whose models Fig. 5 reloads

    folder = score_predictions(run, predictions, name, store, _log)
    stdout_console().print(f"comparison: {folder}", markup=False, soft_wrap=True)


@train_app.command()
@reports_errors(output="out")
def evaluate(
    run: Annotated[Path, typer.Option(help="A run directory or a comparison folder (runs/<corpus>-comparison-<tag>).")],
    store: Annotated[
        list[str] | None,
        typer.Option(help="A store with the run's utterances, e.g. a degraded copy (repeatable; default: the run's)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <runs>/<corpus>-evaluation-<tag>).")] = None,
    missing_rates: Annotated[
        str | None, typer.Option(help="Also score at these missing rates, e.g. 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7.")
    ] = None,
    missing_seed: Annotated[int, typer.Option(help="Seed of the missing-rate masks.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    plugin: Plugins = None,
) -> None:
    """Score a trained run held-out on another store: each fold's models on that fold's test utterances only."""
    from cmarr.train.heldout import evaluate_run

    _load(None, None, {}, plugin)
    rates = parse_rates(missing_rates) if missing_rates is not None else []
    with ProgressReporter("fold models", end_lines=False):  # each system's own line says it was scored
        folder = evaluate_run(run, store, out, rates, resolve_device(device), missing_seed, _log)
    stdout_console().print(f"evaluation: {folder}", markup=False, soft_wrap=True)


def parse_rates(text: str) -> list[float]:
    """'0,0.1,0.5' -> [0.0, 0.1, 0.5]; ConfigError for a value outside [0, 1) or not a number."""
    try:
        rates = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--missing-rates: expected numbers such as 0,0.1,0.5, got {text!r}") from None
    if not rates or any(not 0 <= r < 1 for r in rates):
        raise ConfigError(f"--missing-rates {text}: each rate in [0, 1) (1 would drop every modality)")
    return sorted(set(rates))


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
    plugin: Plugins = None,
) -> None:
    """A system's stages, loss weights, samplers and parameter counts (trainable, frozen, total), no store needed."""
    from cmarr.train.run import describe_system
    from cmarr.train.systems import SYSTEMS, get_system

    cfg = _load(config, set_, {"train.preset": preset}, plugin)
    feature_dims = _parse_dims(dims)
    names = list(SYSTEMS) if system == "all" else [system]
    described = [describe_system(get_system(n, cfg.train), feature_dims, classes) for n in names]
    if as_json:
        print(json.dumps(described if system == "all" else described[0], indent=1))
        return
    for d in described:
        table = Table(
            "stage",
            "sampler",
            "loss weights",
            "trainable",
            "frozen",
            "total",
            title=plain(f"{d['system']}: {d['title']}"),
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

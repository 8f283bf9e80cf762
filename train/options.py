"""The options of `cmarr-train run`, one alias each (their help is what `cmarr-train run --help` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Store = Annotated[str, typer.Option(help="Feature store: directory, .zarr.zip or URL.")]
Folds = Annotated[int | None, typer.Option(help="Folds (= the store's sessions: 5 IEMOCAP, 6 MSP-IMPROV).")]
OnlyFolds = Annotated[
    str | None,
    typer.Option(help="Train and report only these folds, e.g. 1 or 1,3 (a first check; --resume adds the rest)."),
]
System = Annotated[str | None, typer.Option(help="The system to train (default cm-arr); see `describe`.")]
Systems = Annotated[str | None, typer.Option(help="Train several: all (Table 2's systems) or a list.")]
Ablations = Annotated[str | None, typer.Option(help="Also train Table 3's ablations: all, or e.g. baseline,no-udcl.")]
Seed = Annotated[int | None, typer.Option(help="First seed.")]
Seeds = Annotated[int, typer.Option(help="Number of repeated runs (seeds seed, seed+1, ...).")]
Require = Annotated[str | None, typer.Option(help="Keep only utterances that have these modalities.")]
Out = Annotated[Path, typer.Option(help="Folder for run directories.")]
Resume = Annotated[
    bool,
    typer.Option(
        help="Continue the interrupted run of this same command; train only what is missing (new systems too)."
    ),
]
SelectionGap = Annotated[
    bool,
    typer.Option(
        help="Also score the test part after every epoch, never to select: each split's metrics.jsonl, and "
        "the comparison's test-selection gap (with --systems/--ablations)."
    ),
]
AllowDegraded = Annotated[
    bool,
    typer.Option(
        help="Train on a store extracted with cmarr-extract --degrade (refused by default: such a store is for "
        "evaluating runs trained on clean data)."
    ),
]
Sweep = Annotated[
    list[str] | None, typer.Option(help="Train once per value and plot (Fig. 4), e.g. alpha=0.1,0.5,1,2,5.")
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")]
Epochs = Annotated[int | None, typer.Option(help="Every stage of every system trains N epochs in all (a quick run).")]
ScheduleScale = Annotated[
    float | None, typer.Option(help="Scale every stage's epochs, decay epochs and patience by F, e.g. 0.1.")
]
LogTo = Annotated[
    list[str] | None,
    typer.Option("--log", help="Also send per-epoch metrics to tensorboard or mlflow (repeatable; extras)."),
]
Jobs = Annotated[int, typer.Option(help="Run the grid's jobs on N local dask worker processes.")]
Scheduler = Annotated[
    str | None, typer.Option(help="A running dask cluster (tcp://HOST:8786); workers must see --store and --out.")
]

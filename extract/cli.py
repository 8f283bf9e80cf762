"""`cmarr-extract`: a corpus on disk -> a feature store.

Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 finished but some items failed.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, get_type_hints

import typer
from cmarr.extract.corpora.record import CorpusScan
from cmarr.shared.config import PipelineConfig, load_config, parse_override
from cmarr.shared.console import ProgressReporter, err_console, reports_errors, stdout_console
from cmarr.shared.errors import EXIT_ITEMS_FAILED, ConfigError
from cmarr.shared.labels import LabelSet, get_label_set
from cmarr.shared.modalities import parse_modalities
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Extract per-utterance sequence features from a corpus into a feature store.\n\n"
    "Exit codes: 0 ok; 1 failure (an input file that cannot be read, such as a malformed manifest, or a store "
    "that cannot be written); 2 usage or config error (options, settings); 3 finished but some items failed.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: `[extract.video]` is a config section, not markup
)
CORPUS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")

Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Folder for the store, CORPUS.zarr inside (default: store.dir of the config)."),
]
Config = Annotated[Path | None, typer.Option("--config", help="pipeline.toml to use (default: ./pipeline.toml).")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value (repeatable).")]
Profile = Annotated[str | None, typer.Option(help="Encoders: real (the paper's) or demo (offline stand-ins).")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto (default from the config).")]
Modalities = Annotated[
    str | None, typer.Option(help="Comma-separated subset, e.g. text,audio (sets extract.modalities).")
]
Overwrite = Annotated[
    bool,
    typer.Option(
        help="Replace a modality's features written with another encoder config; when the corpus "
        "changed start/end times, extract the store's modalities again."
    ),
]
DryRun = Annotated[bool, typer.Option(help="Validate the corpus and print a JSON summary; run no encoder.")]
Workers = Annotated[int | None, typer.Option(help="DataLoader processes decoding media.")]
Labels = Annotated[str, typer.Option(help="Label set: 4class (paper), 6class or all.")]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="Extract on a running dask cluster, e.g. tcp://HOST:8786 "
        "(the store must be on a filesystem the workers share)."
    ),
]
Cluster = Annotated[str | None, typer.Option(help="Start a local dask cluster: local:N (N worker processes).")]
Degrade = Annotated[
    str | None,
    typer.Option(
        help="Degrade the media before the encoders, for robustness tests: comma-separated modality:kind=value, "
        "e.g. audio:snr=0,video:blur=4,text:word-drop=0.3 (kinds: audio snr, noise-dir, reverb; video blur, "
        "occlude, dark; text word-drop, word-swap; sets extract.degrade.spec). Extract into its own --out."
    ),
]
DegradeSeed = Annotated[int | None, typer.Option(help="Seed of --degrade (extract.degrade.seed, default 0).")]


@dataclass(frozen=True)
class Options:
    """The options every extract command takes, in the order its help lists them; `extract_command` adds them
    to a command (typer reads these annotations and defaults), which gets them as one `opts: Options`."""

    out: Out = None
    config: Config = None
    set_: Sets = None
    profile: Profile = None
    device: Device = None
    modalities: Modalities = None
    overwrite: Overwrite = False
    dry_run: DryRun = False
    num_workers: Workers = None
    scheduler: Scheduler = None
    cluster: Cluster = None
    degrade: Degrade = None
    degrade_seed: DegradeSeed = None


def extract_command(name: str | None = None, *, without: tuple[str, ...] = ()) -> Callable:
    """Register `fn` as an extract command taking `Options`' fields (all but `without`) besides its own
    parameters. Its help lists them where `fn` declares `opts: Options`, but --out, which comes right after
    `fn`'s leading required parameters (what names the corpus: --root, PATH)."""

    def register(fn: Callable) -> Callable:
        hints = get_type_hints(Options, include_extras=True)
        shared = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
            for f in fields(Options)
            if f.name not in without
        ]
        out, *rest = shared  # --out is Options' first field
        own = inspect.signature(fn, eval_str=True).parameters.values()
        listed = [q.replace(kind=q.KEYWORD_ONLY) for p in own for q in (rest if p.name == "opts" else [p])]
        listed.insert(next(i for i, p in enumerate(listed) if p.default is not p.empty), out)

        @functools.wraps(fn)
        def command(**kwargs):
            opts = Options(**{p.name: kwargs.pop(p.name) for p in shared})
            return fn(**kwargs, opts=opts)

        command.__signature__ = inspect.Signature(listed)
        command.__annotations__ = {p.name: p.annotation for p in listed}
        return app.command(name)(reports_errors(output="out")(command))

    return register


@dataclass(frozen=True)
class Settings:
    """The command's config (file + options) and the keys the user set explicitly."""

    cfg: PipelineConfig
    explicit: frozenset[str]


def _settings(opts: Options) -> Settings:
    overrides = dict(parse_override(s) for s in opts.set_ or [])
    options = {"extract.profile": opts.profile, "extract.device": opts.device, "extract.num_workers": opts.num_workers}
    options |= {"extract.degrade.spec": opts.degrade, "extract.degrade.seed": opts.degrade_seed}
    overrides.update({key: value for key, value in options.items() if value is not None})
    if opts.modalities:
        overrides["extract.modalities"] = parse_modalities(opts.modalities)
    return Settings(load_config(opts.config, overrides), frozenset(overrides))


def _run(opts: Options, corpus: str, label_set: LabelSet, read: Callable[[Path], CorpusScan]) -> None:
    """Print the dry-run summary, or extract and print what happened. `read(folder)` reads the corpus; `folder` is
    where the store goes (--out, or the config's store.dir)."""
    settings = _settings(opts)
    from cmarr.extract.degrade import check_degradation

    check_degradation(settings.cfg.extract.degrade)  # before the corpus is read (or the demo generated)
    path = store_path(opts.out or Path(settings.cfg.store.dir), corpus)
    scan = read(path.parent)
    scan.problems.extend(scan.label_warnings(label_set.classes))
    if opts.dry_run:
        from cmarr.extract.media.span import span_problems

        scan.problems.extend(span_problems(scan.records, settings.cfg.extract.modalities))
        print(json.dumps({"corpus": corpus, **scan.summary()}, indent=2))
        return
    for problem in scan.problems[:20]:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if len(scan.problems) > 20:
        err_console.print(f"... and {len(scan.problems) - 20} more warnings (--dry-run lists them)")
    if left_out := scan.left_out(label_set.classes):  # a real run says it too, not only --dry-run's counts
        err_console.print(escape(left_out), highlight=False, soft_wrap=True)
    from cmarr.extract.encoders.demo_models import apply_profile
    from cmarr.extract.pipeline import extract_corpus
    from cmarr.shared.cluster import dask_client, local_gpus

    cfg = apply_profile(settings.cfg, settings.explicit)
    made = _missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            dask_client(opts.scheduler, opts.cluster, local_gpus(cfg.extract.device)) as client,
            ProgressReporter("utterances") as progress,
        ):
            report = extract_corpus(
                scan.records, path, corpus, label_set, cfg, overwrite=opts.overwrite, progress=progress.update,
                executor=client,
            )  # fmt: skip
    except BaseException:
        for folder in made:  # a refusal before anything was written leaves no empty --out behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    _print_report(report)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders `folder.mkdir(parents=True)` would create, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def store_path(out: Path, corpus: str) -> Path:
    """`out/<corpus>.zarr`; the corpus name must be a plain file name (it is also the store's name)."""
    if not CORPUS_NAME.fullmatch(corpus) or corpus.endswith("."):
        raise ConfigError(
            f"--corpus {corpus!r}: use letters, digits, '.', '_' and '-' (no path separators, not empty, "
            "not starting with '.' or '-'); the store is OUT/CORPUS.zarr, choose its folder with --out"
        )
    return out / f"{corpus}.zarr"


def _print_report(report) -> None:
    if report.updated:
        changes = "; ".join(f"{c} of {n} utterance{'s' if n > 1 else ''}" for c, n in report.updated.items())
        stdout_console().print(f"updated from the corpus: {changes}", highlight=False, soft_wrap=True, markup=False)
    table = Table("modality", "encoded now", "ok", "missing-input", "no-face", "failed", "seconds", "in forward")
    for r in report.modalities:
        c = r.counts
        table.add_row(
            r.modality,
            str(r.encoded),
            str(c["ok"]),
            str(c["missing_input"]),
            str(c["no_face"]),
            str(c["failed"]),
            f"{r.seconds:.1f}",
            f"{r.forward_seconds:.1f}",
        )
    stdout_console().print(table)
    notes = [("note", r.modality, u, note) for r in report.modalities for u, note in r.notes.items()]
    notes += [(kind, r.modality, u, why) for r in report.modalities for u, (kind, why) in r.absent.items()]
    for kind, modality, utt, note in notes[:20]:
        err_console.print(
            f"[yellow]{kind}[/] {modality} {escape(utt)}: {escape(note)}", highlight=False, soft_wrap=True
        )
    every_reason = f"`cmarr-store info --json {escape(str(report.store))}` lists every reason"
    if len(notes) > 20:
        err_console.print(f"... and {len(notes) - 20} more ({every_reason})", highlight=False)
    failures = {(r.modality, u): why for r in report.modalities for u, why in r.failures.items()}
    for (modality, utt), why in list(failures.items())[:20]:
        err_console.print(f"[red]failed[/] {modality} {escape(utt)}: {escape(why)}", highlight=False, soft_wrap=True)
    if len(failures) > 20:
        err_console.print(f"... and {len(failures) - 20} more failed ({every_reason})", highlight=False)
    stdout_console().print(f"store: {report.store}", markup=False, highlight=False)
    if failures:
        err_console.print(
            f"{len(failures)} item{'s' if len(failures) > 1 else ''} failed (reasons above); once their inputs "
            "are fixed, re-run the same command to retry them"
        )
        raise typer.Exit(EXIT_ITEMS_FAILED)


@extract_command()
def iemocap(
    root: Annotated[Path, typer.Option(help="The IEMOCAP_full_release folder.")],
    label_set: Labels = "4class",
    *,
    opts: Options,
) -> None:
    """IEMOCAP in its original layout (4-class by default: ang, hap+exc, neu, sad)."""
    from cmarr.extract.corpora.iemocap import read_iemocap

    labels = get_label_set(label_set)
    _run(opts, "iemocap", labels, lambda _: read_iemocap(root, labels))


@extract_command("msp-improv")
def msp_improv(
    root: Annotated[Path, typer.Option(help="The MSP-IMPROV folder (Evaluation.txt, Audio/, Video/ or sessionN/).")],
    label_set: Labels = "4class",
    *,
    opts: Options,
    types: Annotated[str, typer.Option(help="Recording types to keep: S (paper), R, T, P.")] = "S",
    exclude: Annotated[Path | None, typer.Option(help="File of clip ids to leave out (e.g. no-face list).")] = None,
) -> None:
    """MSP-IMPROV as released (recording type S and 4 classes by default, as the paper)."""
    from cmarr.extract.corpora.msp_improv import read_msp_improv

    labels = get_label_set(label_set)
    _run(opts, "msp-improv", labels, lambda _: read_msp_improv(root, labels, types, exclude))


@extract_command()
def manifest(
    path: Annotated[Path, typer.Argument(help="CSV, TSV or JSONL manifest (see README).")],
    corpus: Annotated[str, typer.Option(help="Store name.")] = "custom",
    label_set: Annotated[str, typer.Option(help="4class, 6class, all, or your classes: calm,tense,...")] = "4class",
    *,
    opts: Options,
) -> None:
    """Your own recordings, described by a manifest (id, label, speaker, session, text/audio/video)."""
    from cmarr.extract.corpora.manifest import read_manifest

    labels = get_label_set(label_set)
    _run(opts, corpus, labels, lambda _: read_manifest(path, labels))


@extract_command(without=("profile",))
def demo(
    *,
    opts: Options,
    corpus_dir: Annotated[
        Path | None, typer.Option(help="Where to generate the corpus (default: OUT/demo-corpus).")
    ] = None,
    utterances_per_dialog: Annotated[
        int | None, typer.Option(help="Labelled utterances per dialog (5 dialogs) of a new corpus (default 24).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of a new corpus (default 0).")] = None,
) -> None:
    """Generate the built-in demo corpus (IEMOCAP layout) and extract it with the demo encoders."""
    from cmarr.extract.corpora.demo import ensure_demo_corpus
    from cmarr.extract.corpora.iemocap import read_iemocap

    labels = get_label_set("4class")

    def read(folder: Path) -> CorpusScan:
        root = corpus_dir or folder / "demo-corpus"
        return read_iemocap(ensure_demo_corpus(root, utterances_per_dialog, seed, stdout_console().print), labels)

    _run(replace(opts, profile="demo"), "demo", labels, read)

"""`cmarr-store`: inspect, verify, pack and convert feature stores.

Exit codes: 0 ok, 1 the store is damaged or incomplete, 2 usage or config error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from cmarr.shared.console import ProgressReporter, err_console, reports_errors, some_named, stdout_console
from cmarr.shared.errors import EXIT_FAILURE
from cmarr.shared.store.mmin import export_h5, import_mmin
from cmarr.shared.store.mmsa import export_mmsa, import_mmsa
from cmarr.shared.store.npy_folders import export_npy, import_npy
from cmarr.shared.store.pack import pack_store, zip_path
from cmarr.shared.store.reader import FeatureStore
from cmarr.shared.store.schema import Status
from cmarr.shared.store.summary import degradation_line, summarize
from cmarr.shared.store.verify import verify_store
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Inspect, verify, pack and convert cmarr feature stores (Zarr v3, schema v1).\n\n"
    "Exit codes: 0 ok, 1 damaged or incomplete store, 2 usage or config error.",
    no_args_is_help=True,
    add_completion=False,
)
StoreArg = Annotated[str, typer.Argument(help="Store: a directory, a .zarr.zip file, or an fsspec URL.")]


@app.command()
@reports_errors
def info(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
    quick: Annotated[
        bool, typer.Option(help="Read no feature values: no non-finite count, no check of the values' chunks.")
    ] = False,
) -> None:
    """Describe a store: utterances per class and session, modalities (dim, frames, status, non-finite
    values), provenance. Reads (and so checks) every chunk unless --quick."""
    summary = summarize(FeatureStore.open(store, allow_incomplete=True), scan=not quick)
    _print_notes(summary["notes"])
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console = stdout_console()
    where = escape(summary["location"])
    console.print(f"[bold]{where}[/]  corpus {summary['corpus']}, {summary['utterances']} utterances")
    _print_counts(console, "class", summary["per_class"])
    _print_counts(console, "session", summary["per_session"])
    if 0 < len(summary["per_speaker"]) <= MAX_SPEAKERS_SHOWN:
        _print_counts(console, "speaker", summary["per_speaker"])
    elif summary["per_speaker"]:
        console.print(f"{len(summary['per_speaker'])} speakers (--json lists them)", highlight=False)
    columns = ("dim", "dtype", "frames", "mean frames", "ok", "missing", "failed", "pending", "non-finite")
    table = Table("modality", "encoder", *columns)
    for name, m in summary["modalities"].items():
        table.add_row(name, escape(m["spec"].get("encoder", "")), *_modality_cells(m))
    console.print(table)
    prov = summary["provenance"]
    if prov["degradation"]:
        line = escape(degradation_line(prov["degradation"]))
        console.print(f"[bold yellow]degraded[/] before the encoders (cmarr-extract --degrade): {line}", soft_wrap=True)
    console.print(
        f"created {prov['created']}  cmarr {prov['software']['cmarr_version']} ({prov['software']['git_sha']})  "
        f"config {str(prov['config_hash'] or '-')[:12]}  fingerprint {prov['fingerprint']}"
    )


def _modality_cells(m: dict) -> list[str]:
    """The info table's cells after modality and encoder."""
    if not m["finalized"]:
        parts = "?" if m["staged_parts"] is None else m["staged_parts"]
        return ["", "", f"unfinished ({parts} parts)"] + [""] * 6
    s = m["status"]
    nonfinite = "not read" if m["nonfinite_values"] is None else str(m["nonfinite_values"])
    return [
        str(m["dim"]),
        m["dtype"],
        str(m["frames"]),
        f"{m['frames_per_utterance']['mean']:.1f}",
        str(s["ok"]),
        str(s["missing-input"] + s["no-face"]),
        str(s["failed"]),
        str(s["pending"]),
        nonfinite if nonfinite in ("0", "not read") else f"[red]{nonfinite}[/] (run cmarr-store verify)",
    ]


MAX_SPEAKERS_SHOWN = 30  # a table per speaker up to this many; more: the count


def _print_counts(console: Console, title: str, counts: dict[str, int]) -> None:
    table = Table(title, "utterances")
    for key, value in counts.items():
        table.add_row(escape(str(key)), str(value))
    console.print(table)


def _print_notes(notes: list[str]) -> None:
    for line in notes:
        err_console.print(f"note: {escape(line)}", highlight=False)


@app.command()
@reports_errors
def verify(
    store: StoreArg,
    quick: Annotated[
        bool, typer.Option(help="Read no feature values (structure, table, offsets and status only).")
    ] = False,
) -> None:
    """Check schema, table, offsets, status, every chunk's checksum and that no ok item holds NaN/inf;
    exit 1 on any damage or an unfinished write."""
    report = verify_store(store, checksums=not quick)
    _print_notes(report.notes)
    for line in report.problems:
        err_console.print(f"[red]corrupt:[/] {escape(line)}", highlight=False)
    for line in report.incomplete:
        err_console.print(f"[yellow]incomplete:[/] {escape(line)}", highlight=False)
    if not report.ok:
        err_console.print(f"{escape(store)}: {report.state}", highlight=False)
        raise typer.Exit(EXIT_FAILURE)
    checked = (
        f"quick: {report.chunks_checked} chunks of the table, offsets and status checked; no feature value read"
        if quick
        else f"{report.chunks_checked} chunks checked"
    )
    stdout_console().print(f"{escape(store)}: ok ({checked})", highlight=False)
    _print_failed_items(store)


def _print_failed_items(location: str) -> None:
    """Items whose extraction failed are no damage (verify passes), but the store is not all there:
    say so, or a shared store looks complete."""
    opened = FeatureStore.open(location)
    ids = opened.utterances["id"]
    for name in opened.modality_names:
        failed = np.flatnonzero(opened.modality(name).status == Status.FAILED)
        if len(failed):
            err_console.print(
                f"[yellow]note:[/] {name}: {len(failed)} item{'s' if len(failed) > 1 else ''} failed extraction "
                f"({escape(some_named(ids[failed]))}) and read as missing; `cmarr-store info` says why, and "
                "re-running the extraction retries them",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
@reports_errors(output="out")
def pack(
    store: Annotated[Path, typer.Argument(help="A finished directory store.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Zip to write (default: STORE.zip).")] = None,
) -> None:
    """Verify a finished directory store, then pack it into one uncompressed .zarr.zip that cmarr reads directly."""
    replaced = zip_path(store, out).exists()
    path = pack_store(store, out)
    said = ", replacing the zip that was there" if replaced else ""
    stdout_console().print(f"wrote {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB{said})", highlight=False)


@app.command("import-mmin")
@reports_errors(output="out")
def import_mmin_cmd(
    root: Annotated[Path, typer.Argument(help="MMIN feature folder with A/, V/, L/ and target/<cv>/.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store directory to create.")],
    classes: Annotated[
        str, typer.Option(help="Class names in label order (one-hot columns or class indices), comma-separated.")
    ] = "ang,hap,neu,sad",
    audio: Annotated[str | None, typer.Option(help="Stem of the A/ feature file when there are several.")] = None,
    video: Annotated[str | None, typer.Option(help="Stem of the V/ feature file when there are several.")] = None,
    text: Annotated[str | None, typer.Option(help="Stem of the L/ feature file when there are several.")] = None,
    dtype: Annotated[str, typer.Option(help="float16 (half the bytes) or float32 (bit-exact).")] = "float16",
    corpus: Annotated[str, typer.Option(help="Corpus name recorded in the store.")] = "mmin",
) -> None:
    """Import MMIN's published HDF5 features (one dataset per utterance id) into a new store. Everything
    is checked first; the store appears only when complete."""
    files = {k: v for k, v in {"A": audio, "V": video, "L": text}.items() if v}
    with ProgressReporter("utterances") as progress:
        done = import_mmin(root, out, tuple(classes.split(",")), files, dtype, corpus, progress=progress.update)
    _print_notes(done.notes)
    console = stdout_console()
    for modality, c in done.counts.items():
        console.print(f"{modality}: {c['ok']} ok, {c['missing_input']} missing", highlight=False)
    console.print(f"wrote {escape(str(out))}", highlight=False)


@app.command("export-h5")
@reports_errors(output="out")
def export_h5_cmd(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="A new (or empty) folder for A/, V/, L/, target/.")],
) -> None:
    """Export a store in MMIN's HDF5 layout (float32, one dataset per utterance id, numbered target/<cv>/
    folders), which MMIN's loaders and `import-mmin` read."""
    done = export_h5(store, out)
    _print_notes(done.notes)
    stdout_console().print(f"wrote {escape(str(done.path))}", highlight=False)


ClassesOption = Annotated[
    str | None,
    typer.Option(help="Class names in label order, comma-separated (default: the export's, else the format's own)."),
]
DtypeOption = Annotated[
    str | None, typer.Option(help="float16 or float32 (bit-exact); default: the exported store's, else float16.")
]
CorpusOption = Annotated[str | None, typer.Option(help="Corpus name recorded in the store (default: the export's).")]
FoldOption = Annotated[
    str | None, typer.Option(help="The split group the export's test split holds (default: the last one).")
]


@app.command("export-npy")
@reports_errors(output="out")
def export_npy_cmd(
    store: StoreArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="A new (or empty) folder for features/ and the label files.")
    ],
    level: Annotated[
        str, typer.Option(help="frame ([frames, dim], <name>-FRA) or utterance (the mean, <name>-UTT).")
    ] = "frame",
    fold: FoldOption = None,
) -> None:
    """Export a store as GCNet/MERTools feature folders (features/<name>/<id>.npy, float32) with GCNet's
    conversation pickle and MERTools' label file, which their loaders and `import-npy` read."""
    with ProgressReporter("utterances") as progress:
        done = export_npy(store, out, level, fold, progress=progress.update)
    _print_notes(done.notes)
    stdout_console().print(f"wrote {escape(str(done.path))}", highlight=False)


@app.command("import-npy")
@reports_errors(output="out")
def import_npy_cmd(
    root: Annotated[Path, typer.Argument(help="Folder with features/<name>/ and <CORPUS>_features_raw_<K>way.pkl.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store directory to create.")],
    audio: Annotated[str | None, typer.Option(help="Folder under features/ holding the audio features.")] = None,
    text: Annotated[str | None, typer.Option(help="Folder under features/ holding the text features.")] = None,
    video: Annotated[str | None, typer.Option(help="Folder under features/ holding the video features.")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="GCNet's conversation pickle, when ROOT holds none or several.")
    ] = None,
    classes: ClassesOption = None,
    dtype: DtypeOption = None,
    corpus: CorpusOption = None,
) -> None:
    """Import GCNet/MERTools feature folders (one .npy per utterance id) and GCNet's conversation pickle
    into a new store. Everything is checked first; the store appears only when complete."""
    folders = {k: v for k, v in {"audio": audio, "text": text, "video": video}.items() if v}
    with ProgressReporter("utterances") as progress:
        done = import_npy(root, out, folders, labels, _classes(classes), dtype, corpus, progress=progress.update)
    _print_imported(done)


@app.command("export-mmsa")
@reports_errors(output="out")
def export_mmsa_cmd(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .pkl file to create (and its .cmarr_export.json).")],
    fold: FoldOption = None,
    max_frames: Annotated[
        int | None, typer.Option(help="Cut every sequence to its first N frames (MMSA's own pickles hold 50).")
    ] = None,
) -> None:
    """Export a store as MMSA's feature pickle (train/valid/test of one fold, [n, T, d] float32 zero-padded,
    lengths), which MMSA's MMDataset and `import-mmsa` read."""
    with ProgressReporter("utterances") as progress:
        done = export_mmsa(store, out, fold, max_frames, progress=progress.update)
    _print_notes(done.notes)
    stdout_console().print(f"wrote {escape(str(done.path))}", highlight=False)


@app.command("import-mmsa")
@reports_errors(output="out")
def import_mmsa_cmd(
    pkl: Annotated[Path, typer.Argument(help="MMSA feature pickle ({'train','valid','test': {...}}).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store directory to create.")],
    classes: ClassesOption = None,
    dtype: DtypeOption = None,
    corpus: CorpusOption = None,
) -> None:
    """Import an MMSA feature pickle (every split; labels from classification_labels) into a new store.
    Everything is checked first; the store appears only when complete."""
    with ProgressReporter("utterances") as progress:
        done = import_mmsa(pkl, out, _classes(classes), dtype, corpus, progress=progress.update)
    _print_imported(done)


def _classes(option: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in option.split(",")) if option else None


def _print_imported(done) -> None:
    _print_notes(done.notes)
    console = stdout_console()
    for modality, c in done.counts.items():
        console.print(f"{modality}: {c['ok']} ok, {c['missing_input']} missing", highlight=False)
    console.print(f"wrote {escape(str(done.path))}", highlight=False)

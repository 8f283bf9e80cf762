"""`cmarr-predict`: a trained run on new recordings (any subset of modalities), a manifest, or a store.

    cmarr-predict RUN --audio clip.wav --video clip.mp4 --text "I can't believe you did that"
    cmarr-predict RUN --audio call.wav
    cmarr-predict RUN --manifest new.csv --out predictions.csv
    cmarr-predict RUN --store S --modalities audio,text --out p.csv

RUN is a run directory (its fold models' probabilities are averaged) or one split folder.
Exit codes: 0 ok, 1 failure (refused checkpoint, other encoders), 2 usage error, 3 some utterance
had nothing usable (its row, printed or written, says why). An input used only in part (a span
past its file's end, a transcript cut to extract.text.max_length) is warned about; its notes say how.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from cmarr.shared.config import parse_override
from cmarr.shared.console import err_console, reports_errors, stdout_console
from cmarr.shared.errors import EXIT_ITEMS_FAILED, ConfigError
from cmarr.shared.modalities import parse_modalities
from rich.table import Table

app = typer.Typer(add_completion=False, rich_markup_mode=None, help=__doc__)


@app.command()
@reports_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run directory (all folds, averaged) or a split folder.")],
    audio: Annotated[Path | None, typer.Option(help="Speech recording (any format libsndfile reads).")] = None,
    video: Annotated[Path | None, typer.Option(help="Video recording.")] = None,
    text: Annotated[str | None, typer.Option(help="The transcript.")] = None,
    start: Annotated[float | None, typer.Option(help="Cut the recordings from START seconds (with --end).")] = None,
    end: Annotated[float | None, typer.Option(help="... to END seconds.")] = None,
    video_half: Annotated[str | None, typer.Option(help="left or right half of a split-screen video.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Many utterances: cmarr-extract's manifest format.")] = None,
    store: Annotated[str | None, typer.Option(help="Label a feature store's utterances instead.")] = None,
    modalities: Annotated[str, typer.Option(help="With --store: the modalities to give.")] = "text,audio,video",
    out: Annotated[Path | None, typer.Option(help="CSV to write, one row per utterance (any input).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override an extraction key, e.g. extract.text.model=/models/bert (same weights)."),
    ] = None,
) -> None:
    """Predict emotions with a trained run; prints the label, class probabilities and modalities used."""
    from cmarr.predict.predictor import load_predictor

    sources = [any(x is not None for x in (audio, video, text)), bool(manifest), bool(store)]
    if sum(sources) != 1:
        raise ConfigError("give recordings (--audio/--video/--text), or --manifest, or --store: one of them")
    if not sources[0] and (start is not None or end is not None or video_half):
        raise ConfigError("--start/--end and --video-half cut --audio/--video recordings, not a manifest or a store")
    if out:
        _prepare_out(out)
    if sources[0]:  # checked before the run's models are loaded (a lone --start or --end too)
        from cmarr.predict.predictor import check_arguments

        check_arguments(audio, video, start, end, video_half)
    predictor = load_predictor(run, device, dict(parse_override(s) for s in set_ or []))
    if store:
        preds = predictor.predict_store(store, parse_modalities(modalities))
        if predictor.trained_on(store):
            err_console.print(
                f"warning: {store} is the store this run was trained on: every utterance trained the fold models "
                "that did not hold its session out, so these are no held-out scores (the run's results.md holds "
                "those)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    elif manifest:
        preds = predictor.predict_manifest(manifest)
    else:
        named = next((f.stem for f in (audio, video) if f is not None), "input")  # the row names the recording
        preds = [predictor.predict(audio, video, text, start=start, end=end, video_half=video_half, id=named)]
    if out:
        write_csv(out, preds, predictor.classes)
    if as_json:
        print(json.dumps({"model": predictor.description, "predictions": [p.as_dict() for p in preds]}, indent=1))
    else:
        if len(preds) <= 50 or not out:
            stdout_console().print(_table(preds, predictor.classes, predictor.description))
        if out:
            stdout_console().print(f"wrote {len(preds)} predictions to {out}", markup=False, soft_wrap=True)
    if noted := [p for p in preds if p.notes]:
        first = f"{noted[0].id}: {_said(noted[0].notes)}"
        many = f"{len(noted)} of {len(preds)} predictions used an input only in part (their notes say how), e.g. "
        err_console.print(
            f"warning: {many if len(noted) > 1 else ''}{first}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if unusable := [p for p in preds if not p.label]:  # a script sees it without parsing the output
        err_console.print(
            f"{len(unusable)} of {len(preds)} utterance{'s' if len(preds) > 1 else ''} had nothing usable to "
            f"predict from: {'its row says' if len(unusable) == 1 else 'their rows say'} why",
            highlight=False,
        )
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _prepare_out(out: Path) -> None:
    """Make --out's folder, as extraction and training make theirs, and refuse an --out that cannot
    be written: both before any work, not after it."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the CSV file to write, e.g. {out / 'predictions.csv'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot make the folder {out.parent}: {e.strerror or e}") from None


def _said(reasons: dict[str, str]) -> str:
    """'audio: silent audio; video: no-face': a modality -> reason map as one cell."""
    return "; ".join(f"{m}: {why}" for m, why in reasons.items())


def _table(preds, classes: list[str], title: str) -> Table:
    noted = any(p.notes for p in preds)  # the column only when there is something in it
    table = Table("id", "prediction", *classes, "modalities used", "not used", *(["notes"] if noted else []),
                  title=title)  # fmt: skip
    for p in preds:
        probs = [f"{p.probabilities[c]:.3f}" if p.label else "-" for c in classes]
        cells = [p.id, p.label or "(nothing usable)", *probs, ", ".join(p.used) or "-", _said(p.dropped)]
        table.add_row(*cells, *([_said(p.notes)] if noted else []))
    return table


def write_csv(path: Path, preds, classes: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prediction", *(f"p_{c}" for c in classes), "used", "not_used", "notes"])
        for p in preds:
            probs = [f"{p.probabilities[c]:.6f}" if p.label else "" for c in classes]
            w.writerow([p.id, p.label or "", *probs, ",".join(p.used), _said(p.dropped), _said(p.notes)])

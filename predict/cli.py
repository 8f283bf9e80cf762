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

from pathlib import Path
from typing import Annotated

import typer
from cmarr.shared.console import ProgressReporter, reports_errors

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
    plugin: Annotated[
        list[str] | None, typer.Option("--plugin", help="The plugin that registered the run's system (repeatable).")
    ] = None,
) -> None:
    """Predict emotions with a trained run; prints the label, class probabilities and modalities used."""
    from cmarr.predict.request import PredictRequest, run_prediction

    request = PredictRequest(
        run=run,
        audio=audio,
        video=video,
        text=text,
        start=start,
        end=end,
        video_half=video_half,
        manifest=manifest,
        store=store,
        modalities=modalities,
        out=out,
        as_json=as_json,
        device=device,
        overrides=tuple(set_ or ()),
        plugins=tuple(plugin or ()),
    )
    with ProgressReporter("utterances", end_lines=False, transient=True):  # extraction of new recordings
        code = run_prediction(request)
    if code:
        raise typer.Exit(code)

"""One `cmarr-predict` invocation as a library call: its options (`PredictRequest`) checked before any
work, the run's models loaded, the recordings, manifest or store predicted, and the predictions
written (--out), printed (a table or JSON) and summed up in an exit code."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from cmarr.predict.predictor import Prediction, Predictor, check_arguments, load_predictor
from cmarr.shared.config import parse_override
from cmarr.shared.console import err_console, plain, stdout_console
from cmarr.shared.errors import EXIT_ITEMS_FAILED, ConfigError
from cmarr.shared.modalities import parse_modalities
from cmarr.train.systems import load_plugin
from rich.markup import escape
from rich.table import Table

TABLE_ROWS = 50  # with --out, a longer result is not printed as a table too


@dataclass(frozen=True)
class PredictRequest:
    """`cmarr-predict`'s options as given: a run, one source of utterances (recordings, a manifest or a
    store) and where the predictions go. Strings are parsed where they are used, so errors come in order."""

    run: Path  # a run directory (all folds, averaged) or a split folder
    audio: Path | None = None
    video: Path | None = None
    text: str | None = None
    start: float | None = None  # seconds, with `end`: a span of the recordings
    end: float | None = None
    video_half: str | None = None  # left or right half of a split-screen video
    manifest: Path | None = None
    store: str | None = None
    modalities: str = "text,audio,video"  # with `store`: comma-separated, the modalities to give
    out: Path | None = None  # CSV to write
    as_json: bool = False
    device: str = "auto"
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, extraction keys
    plugins: tuple[str, ...] = ()  # modules or .py files that register the run's system (a plugin's)

    @property
    def recordings(self) -> bool:
        """Whether the utterance is given as recordings (--audio/--video/--text; an empty --text counts)."""
        return any(x is not None for x in (self.audio, self.video, self.text))


def run_prediction(request: PredictRequest) -> int:
    """Predict as `request` asks, write --out and print the results; returns the exit code (0, or
    EXIT_ITEMS_FAILED when some utterance had nothing usable). ConfigError for mistaken arguments."""
    _check(request)
    for plugin in request.plugins:
        load_plugin(plugin)
    predictor = load_predictor(request.run, request.device, dict(parse_override(s) for s in request.overrides))
    preds = _predictions(request, predictor)
    if request.out:
        write_csv(request.out, preds, predictor.classes)
    _show(request, preds, predictor)
    _warn_of_notes(preds)
    return _exit_code(preds)


def _check(request: PredictRequest) -> None:
    """Refuse arguments that can only be mistakes and make --out's folder, before the run is read."""
    sources = [request.recordings, bool(request.manifest), bool(request.store)]
    if sum(sources) != 1:
        raise ConfigError("give recordings (--audio/--video/--text), or --manifest, or --store: one of them")
    cuts = request.start is not None or request.end is not None or request.video_half
    if not request.recordings and cuts:
        raise ConfigError("--start/--end and --video-half cut --audio/--video recordings, not a manifest or a store")
    if request.out:
        _prepare_out(request.out)
    if request.recordings:  # checked before the run's models are loaded (a lone --start or --end too)
        check_arguments(request.audio, request.video, request.start, request.end, request.video_half)


def _predictions(request: PredictRequest, predictor: Predictor) -> list[Prediction]:
    """The store's utterances (warning when it is the run's own store), the manifest's, or the one recording's."""
    if request.store:
        preds = predictor.predict_store(request.store, parse_modalities(request.modalities))
        if predictor.trained_on(request.store):
            err_console.print(
                f"warning: {request.store} is the store this run was trained on: every utterance trained the fold "
                "models that did not hold its session out, so these are no held-out scores (the run's results.md "
                "holds those)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        elif (shared := predictor.training_overlap(request.store))[0]:
            err_console.print(
                f"warning: {shared[0]} of the {shared[1]} utterances of {request.store} are utterances the run was "
                "trained on (by id): each trained some of the fold models averaged here, so these are no held-out "
                f"scores; `cmarr-train evaluate --run <run> --store {request.store}` scores each held out",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return preds
    if request.manifest:
        return predictor.predict_manifest(request.manifest)
    r = request
    named = next((f.stem for f in (r.audio, r.video) if f is not None), "input")  # the row names the recording
    return [predictor.predict(r.audio, r.video, r.text, start=r.start, end=r.end, video_half=r.video_half, id=named)]


def _show(request: PredictRequest, preds: list[Prediction], predictor: Predictor) -> None:
    """JSON, or a table (left out for a long result written to --out) and the 'wrote' line."""
    if request.as_json:
        print(json.dumps({"model": predictor.description, "predictions": [p.as_dict() for p in preds]}, indent=1))
        return
    if len(preds) <= TABLE_ROWS or not request.out:
        stdout_console().print(_table(preds, predictor.classes, predictor.description))
    if request.out:
        stdout_console().print(f"wrote {len(preds)} predictions to {request.out}", markup=False, soft_wrap=True)


def _warn_of_notes(preds: list[Prediction]) -> None:
    """One warning on stderr for the predictions with notes (an input used only in part, a WAV header
    that gave no size, ...), naming the first."""
    if not (noted := [p for p in preds if p.notes]):
        return
    first = f"{noted[0].id}: {_said(noted[0].notes)}"
    many = f"{len(noted)} of {len(preds)} predictions come with notes (on their inputs; each row's notes say), e.g. "
    err_console.print(
        f"warning: {many if len(noted) > 1 else ''}{first}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _exit_code(preds: list[Prediction]) -> int:
    """EXIT_ITEMS_FAILED, said on stderr, when some utterance had nothing usable (a script sees it without
    parsing the output); else 0."""
    if not (unusable := [p for p in preds if not p.label]):
        return 0
    err_console.print(
        f"{len(unusable)} of {len(preds)} utterance{'s' if len(preds) > 1 else ''} had nothing usable to "
        f"predict from: {'its row says' if len(unusable) == 1 else 'their rows say'} why",
        highlight=False,
    )
    return EXIT_ITEMS_FAILED


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
    """One row per prediction: its label, each class's probability, the modalities used and not (and notes)."""
    noted = any(p.notes for p in preds)  # the column only when there is something in it
    table = Table("id", "prediction", *map(escape, classes), "modalities used", "not used",
                  *(["notes"] if noted else []), title=plain(title))  # fmt: skip
    for p in preds:
        probs = [f"{p.probabilities[c]:.3f}" if p.label else "-" for c in classes]
        cells = [p.id, p.label or "(nothing usable)", *probs, ", ".join(p.used) or "-", _said(p.dropped)]
        table.add_row(*map(plain, cells), *([plain(_said(p.notes))] if noted else []))
    return table


def write_csv(path: Path, preds, classes: list[str]) -> None:
    """The predictions as CSV: id, prediction, p_<class> (6 decimals; empty when nothing was usable),
    used, not_used, notes."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prediction", *(f"p_{c}" for c in classes), "used", "not_used", "notes"])
        for p in preds:
            probs = [f"{p.probabilities[c]:.6f}" if p.label else "" for c in classes]
            w.writerow([p.id, p.label or "", *probs, ",".join(p.used), _said(p.dropped), _said(p.notes)])

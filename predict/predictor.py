"""Emotion prediction with a trained run, on new recordings or on a store, from any subset of modalities.

A run's checkpoints record the store's provenance: its extraction settings and each modality's
encoder identity. New inputs are extracted with exactly those settings, by the same code as
`cmarr-extract` (`extract_corpus` into a temporary store, batched, on the chosen device), and the
encoders that ran must be the ones the run was trained on (same weights, layer, sampling, face
pipeline), or the prediction is refused with what differs. Each fold model normalises with its own
training fold's statistics; with a run directory, the fold models' class probabilities are
averaged. The modalities given define the condition; one whose input turns out unusable (no face
found, digitally silent audio, empty text, unreadable file) is treated as missing, and each
prediction says which modalities it used, and what the extraction noted on an input it used only
in part (a span past its file's end is read as far as the file goes; a long transcript is cut).
"""

from __future__ import annotations

import functools
import json
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from cmarr.extract.corpora.manifest import read_manifest
from cmarr.extract.corpora.record import MediaSpan, UtteranceRecord
from cmarr.extract.media.audio import load_audio
from cmarr.extract.pipeline import extract_corpus
from cmarr.predict.identity import spec_differences
from cmarr.predict.inputs import check_prediction, check_span_numbers, is_file_argument, waveform_samples
from cmarr.shared.config import PipelineConfig, with_overrides
from cmarr.shared.console import report_progress
from cmarr.shared.devices import resolve_device
from cmarr.shared.errors import CmarrError, ConfigError
from cmarr.shared.labels import LabelSet
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store import FeatureStore, Status
from cmarr.train.data import StoreData
from cmarr.train.evaluation import predict_proba
from cmarr.train.missing import MissingCondition
from cmarr.train.rundir import RunDir, split_of
from cmarr.train.trained import final_checkpoint, load_model

SILENCE = 1e-4  # peak amplitude (full scale 1) below which audio counts as silent


@dataclass
class Prediction:
    """One utterance's prediction: the class, every class's probability (averaged over the fold
    models), the modalities the model was given, why the others were not, and what the extraction
    noted on a modality it used only in part (its span ran past the file's end, its transcript was cut)."""

    id: str
    label: str | None  # None when no modality was usable
    probabilities: dict[str, float]
    used: list[str]
    dropped: dict[str, str] = field(default_factory=dict)  # modality -> reason
    notes: dict[str, str] = field(default_factory=dict)  # used modality -> the extraction's note

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "probabilities": self.probabilities, "used": self.used,
                "dropped": self.dropped, "notes": self.notes}  # fmt: skip


def load_predictor(run: str | Path, device: str = "auto", overrides: dict[str, Any] | None = None) -> Predictor:
    """A predictor for a run directory (all its fold models, averaged) or one split folder.
    `device`: cpu, cuda, cuda:N or auto. `overrides`: extraction settings to change, e.g.
    {"extract.text.model": "/models/bert"} where the run's model lives elsewhere on this machine
    (its weights must still be the run's). Raises CmarrError subclasses with a readable message."""
    return Predictor(Path(run), device, overrides)


def check_arguments(audio, video, start, end, video_half) -> None:
    """Refuse what can only be a mistake in the arguments of one prediction (ConfigError), before any
    work: a named file that does not exist (a typo would otherwise leave that modality out of an
    otherwise successful prediction), a span that is no span, a half without a video. A manifest's
    rows are data instead: their problems become each row's reasons."""
    check_span_numbers(start, end)
    for name, path in (("audio", audio), ("video", video)):
        if is_file_argument(path) and not Path(path).is_file():
            raise ConfigError(f"{name} {path}: no such file")
    if (start is None) != (end is None):
        raise ConfigError("give both start and end (seconds), or neither")
    if start is not None and not 0 <= start < end:
        raise ConfigError(f"start {start:g} s, end {end:g} s: a span needs 0 <= start < end")
    if video_half not in (None, "left", "right"):
        raise ConfigError(f"video half {video_half!r}: use left or right")
    if video_half is not None and video is None:
        raise ConfigError(f"video half {video_half}: no video given to crop")


class Predictor:
    def __init__(self, run: Path, device: str = "auto", overrides: dict[str, Any] | None = None):
        self.device = resolve_device(device)
        self.checkpoints = run_checkpoints(run)
        self.models = [load_model(path) for path in self.checkpoints]
        meta = self.models[0][1]
        for path, (_, other, _) in zip(self.checkpoints, self.models):
            for key in ("system", "classes", "dims", "encoders"):
                if other[key] != meta[key]:
                    raise ConfigError(
                        f"{path}: its {key} differ from {self.checkpoints[0]}'s; predict with one run at a time"
                    )
        self.system, self.classes, self.dims, self.encoders = (
            meta["system"],
            meta["classes"],
            meta["dims"],
            meta["encoders"],
        )
        # the extraction settings are needed (and checked) only for new recordings, not for a store
        self._extraction = (meta.get("store_config_toml", ""), overrides or {}, device)
        for model, _, _ in self.models:
            model.to(self.device).eval()

    @functools.cached_property
    def cfg(self) -> PipelineConfig:
        """The extraction settings of the run's store, with the overrides and device applied."""
        return extraction_config(*self._extraction)

    @property
    def description(self) -> str:
        n = len(self.models)
        how = f"the average of {n} fold models" if n > 1 else "one fold model"
        return f"{self.system}, {how}; classes {', '.join(self.classes)}"

    # ------------------------------------------------------------------ inputs

    def predict(
        self,
        audio: str | Path | np.ndarray | Any | None = None,  # Any: a torch.Tensor or a list of samples
        video: str | Path | None = None,
        text: str | None = None,
        *,
        sample_rate: int | None = None,
        start: float | None = None,
        end: float | None = None,
        video_half: str | None = None,
        id: str = "input",  # noqa: A002 - the utterance id in the output
    ) -> Prediction:
        """Predict one utterance from any subset of: `audio` (a file, or a waveform with its
        `sample_rate`, a whole number of Hz), `video` (a file; `video_half` left or right crops a
        split-screen frame), `text` (the transcript, a str). `start`/`end` (seconds) cut both media.
        A waveform is a numpy array, a torch tensor or a list of float (full scale 1) or int16/int32
        samples: (N,) is mono; in 2-D the dimension of at most 8 is the channels, so soundfile's
        (N, C) and torchaudio's (C, N) both predict as the file holding them (both dimensions or
        neither at most 8 is refused: see `inputs.waveform_samples`). Raises ConfigError for
        unusable arguments, naming what was given and the fix."""
        check_prediction(audio, video, text, sample_rate, id)
        check_arguments(audio, video, start, end, video_half)
        with tempfile.TemporaryDirectory(prefix="cmarr-predict-") as tmp:
            waveform = None
            if audio is not None and not is_file_argument(audio):
                samples, rate = waveform_samples(audio, sample_rate)
                waveform = Path(tmp) / "audio.wav"
                sf.write(waveform, samples, rate, subtype="FLOAT")
                audio = waveform
            record = UtteranceRecord(
                id=id, label="", session="new", speaker="", text=text,
                audio=MediaSpan(Path(audio), start, end) if audio is not None else None,
                video=MediaSpan(Path(video), start, end, video_half) if video is not None else None,
            )  # fmt: skip
            p = self.predict_records([record])[0]
        if waveform is not None:  # its temporary file means nothing to the caller: name it as they gave it
            p = replace(p, dropped=_renamed(p.dropped, waveform), notes=_renamed(p.notes, waveform))
        return p

    def predict_manifest(self, path: str | Path) -> list[Prediction]:
        """Every row of a manifest in cmarr-extract's format (labels optional)."""
        scan = read_manifest(path, LabelSet("run", tuple(self.classes)), labelled=False)
        if not scan.records:
            raise ConfigError(f"{path}: no utterances")
        return self.predict_records(scan.records)

    def predict_records(self, records: list[UtteranceRecord]) -> list[Prediction]:
        """Extract the records' given modalities with the run's encoders (one batched extraction),
        then predict each from the modalities that turned out usable."""
        dropped: dict[str, dict[str, str]] = {r.id: {} for r in records}
        records = [self._silence_check(r, dropped[r.id]) for r in records]
        for r in records:
            if r.text is not None and not _gives(r, "text"):  # given, but nothing to encode
                dropped[r.id]["text"] = "empty transcript"
        given = [m for m in MODALITIES if any(_gives(r, m) for r in records)]
        if not given:
            return [Prediction(r.id, None, {}, [], dropped[r.id]) for r in records]
        with tempfile.TemporaryDirectory(prefix="cmarr-predict-") as tmp:
            location = Path(tmp) / "inputs.zarr"
            labels = LabelSet("run", tuple(self.classes))
            extract_corpus(records, location, "predict", labels, self.cfg, given, progress=report_progress)
            store = FeatureStore.open(location)
            self._check_encoders(store, given, "the recordings, extracted with the run's settings and --set's")
            data = StoreData(store, max_memory_bytes=1 << 40, non_finite="missing", absent_dims=self.dims)
            ids = [r.id for r in records]
            for m in given:  # a row's own reason first (silent audio, empty transcript), then the store's
                for uid, why in _unusable(data, m, ids).items():
                    dropped[uid].setdefault(m, why)
            return self._predict(data, ids, dropped)

    def training_overlap(self, location: str) -> tuple[int, int]:
        """(utterances of the store at `location` whose ids are utterances the run was trained on,
        the store's utterances): each such utterance trained some of the fold models whose average
        predicts it, so its prediction is no held-out score. The run's store is read where its
        store.json says; (0, n) when it cannot be found there."""
        ids = {str(u) for u in FeatureStore.open(location).utterances["id"]}
        runs = {split_of(path).parent.parent.parent for path in self.checkpoints}
        trained: set[str] = set()
        for run in runs:
            where = json.loads(RunDir(run).store.read_text()).get("location") if RunDir(run).store.is_file() else None
            if where and Path(where).exists():
                trained |= {str(u) for u in FeatureStore.open(where).utterances["id"]}
        return len(ids & trained), len(ids)

    def trained_on(self, location: str) -> bool:
        """Whether the store at `location` is the one the run's models were trained on (its
        fingerprint: the same data and provenance), whose predictions are then no held-out scores."""
        printed = FeatureStore.open(location).fingerprint()
        return any(meta.get("store_fingerprint") == printed for _, meta, _ in self.models)

    def predict_store(self, location: str, modalities: list[str]) -> list[Prediction]:
        """Utterances of a feature store, given `modalities` (those whose store holds all of them)."""
        store = FeatureStore.open(location)
        self._check_encoders(store, modalities)
        data = StoreData(store, non_finite="missing", absent_dims=self.dims)
        for m in modalities:
            if data.dims[m] != self.dims[m]:
                raise ConfigError(f"{location}: {m} features are {data.dims[m]}-d, the model's {self.dims[m]}-d")
        ids = [str(i) for i in store.utterances["id"]]
        keep = {m: np.ones(len(ids), bool) for m in modalities}
        dropped: dict[str, dict[str, str]] = {i: {} for i in ids}
        for m in modalities:
            for uid, why in _unusable(data, m, ids).items():
                dropped[uid][m] = why
        return self._predict(data, ids, dropped, keep)

    # ------------------------------------------------------------------ internals

    def _predict(self, data: StoreData, ids: list[str], dropped, allowed=None) -> list[Prediction]:
        """Group utterances by the modalities they can give (their condition) and average each fold
        model's probabilities; each prediction carries the extraction's notes on the inputs it used."""
        n = len(ids)
        allowed = allowed or {m: np.ones(n, bool) for m in MODALITIES}
        usable = {m: data.present[m] & allowed.get(m, np.zeros(n, bool)) for m in MODALITIES}
        conditions = [frozenset(m for m in MODALITIES if usable[m][i]) for i in range(len(ids))]
        probs = np.zeros((len(ids), len(self.classes)))
        for cond in set(conditions) - {frozenset()}:
            rows = np.array([i for i, c in enumerate(conditions) if c == cond])
            total = np.zeros((len(rows), len(self.classes)))
            for model, _, norm in self.models:
                got, p = predict_proba(model, data, rows, MissingCondition(cond), norm, self.device)
                assert len(got) == len(rows)  # every row holds the condition's modalities by construction
                total += p
            probs[rows] = total / len(self.models)
        noted = {m: data.store.reasons(m) for m in MODALITIES if m in data.readers}
        out = []
        for i, uid in enumerate(ids):
            used = [m for m in MODALITIES if m in conditions[i]]
            if not used:
                out.append(Prediction(uid, None, {}, [], dropped.get(uid, {})))
                continue
            p = {c: float(v) for c, v in zip(self.classes, probs[i])}
            notes = {m: noted[m][uid] for m in used if uid in noted[m]}  # a used item's reason is a note
            label = self.classes[int(probs[i].argmax())]
            out.append(Prediction(uid, label, p, used, dropped.get(uid, {}), notes))
        return out

    def _check_encoders(self, store: FeatureStore, modalities: list[str], source: str | None = None) -> None:
        """Refuse features that came from other encoders than the run's (same width is not enough:
        another BERT layer or checkpoint changes every prediction). `source` names them in the message
        (default: the store's location; new recordings' temporary store means nothing to a user)."""
        specs = store.attrs.get("modalities", {})
        problems = []
        for m in modalities:
            if m not in specs:
                continue
            if diffs := spec_differences(self.encoders.get(m) or {}, specs[m]):
                problems.append(f"{m}: " + "; ".join(diffs))
        if problems:
            raise ConfigError(
                f"{source or store.location}: features from other encoders than the run was trained on:\n  "
                + "\n  ".join(problems)
                + "\n  predict with the run's encoders (see its checkpoints' recorded extraction settings)"
            )

    def _silence_check(self, record: UtteranceRecord, dropped: dict[str, str]) -> UtteranceRecord:
        """Digitally silent audio carries nothing: it is treated as missing (an unreadable file is
        left to the extraction, which fails the item with its reason)."""
        if record.audio is None:
            return record
        try:
            wav = load_audio(record.audio, self.cfg.extract.audio.sample_rate).value
        except Exception:  # noqa: BLE001 - the extraction reports it
            return record
        if len(wav) and np.abs(wav).max() < SILENCE:
            dropped["audio"] = f"silent audio (peak below {SILENCE:g} of full scale)"
            return replace(record, audio=None)
        return record


def _unusable(data: StoreData, m: str, ids: list[str]) -> dict[str, str]:
    """{utterance id: why} for each of `ids` (the store's rows, in order) whose modality m a model
    cannot use: the reason the extraction recorded (no audio, empty transcript, a failure's cause),
    non-finite features, or the item's status when no reason was recorded."""
    if m not in data.readers:
        return {uid: f"the store has no {m} features" for uid in ids}
    reasons, non_finite = data.store.reasons(m), set(data.non_finite.get(m, ()))
    status = data.readers[m].status
    return {
        uid: "features hold NaN or inf" if uid in non_finite else reasons.get(uid) or Status(int(status[i])).label
        for i, uid in enumerate(ids)
        if not data.present[m][i]
    }


def _renamed(reasons: dict[str, str], waveform: Path) -> dict[str, str]:
    """Reasons that name a waveform's temporary file, naming it as the caller gave it."""
    return {m: why.replace(str(waveform), "the waveform") for m, why in reasons.items()}


def _gives(record: UtteranceRecord, m: str) -> bool:
    if m == "text":
        return bool(record.text and record.text.strip())
    return getattr(record, m) is not None


def run_checkpoints(run: Path) -> list[Path]:
    """The final stage's checkpoint of every split of a run directory, or the one of a split folder."""
    run = Path(run)
    if not run.exists():
        raise ConfigError(f"{run}: no such run directory, split folder or checkpoint")
    if RunDir(run).system.is_file():
        found = RunDir(run).final_checkpoints()
        if not found:
            raise ConfigError(f"{run}: no finished split (no {RunDir(run).final_stage()} checkpoint); train it first")
        return found
    return [final_checkpoint(run)]


def extraction_config(store_toml: str, overrides: dict[str, Any], device: str) -> PipelineConfig:
    """The extraction settings the run's store was made with (its `extract` and `store` sections),
    with `overrides` and the device applied."""
    if not store_toml:
        raise ConfigError("the run does not record how its features were extracted (trained before cmarr 0.1?)")
    raw = tomllib.loads(store_toml)
    try:
        cfg = PipelineConfig.model_validate({k: raw[k] for k in ("store", "extract") if k in raw})
    except ValueError as err:
        raise ConfigError(f"the run's extraction settings cannot be read by this cmarr: {err}") from None
    return with_overrides(cfg, {**overrides, "extract.device": device}, "--set")


__all__ = ["CmarrError", "Prediction", "Predictor", "load_predictor"]

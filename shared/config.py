"""The typed schema of `pipeline.toml`, its loader, and command-line overrides.

Every section is a frozen pydantic model with `extra="forbid"`, so a misspelt key or a wrong type
fails at load time naming the key and the file. The defaults below are the paper's and equal the
shipped `pipeline.toml` (a test holds them together). What a run records is the *resolved*
config: file + overrides, dumped back to TOML.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES, Modality
from cmarr.shared.provenance import text_sha256
from cmarr.shared.sections import Section
from cmarr.shared.train_config import SECTIONS, TrainConfig
from pydantic import BaseModel, Field, ValidationError

DEFAULT_CONFIG_NAME = "pipeline.toml"


# --------------------------------------------------------------------------- store


class StoreConfig(Section):
    dir: str = "store"  # `cmarr-extract`'s default --out: stores are <dir>/<corpus>.zarr
    dtype: Literal["float16", "float32"] = "float16"  # feature values on disk (recorded in each modality's spec)
    chunk_frames: int = Field(2048, gt=0)  # rows per chunk along the frame axis


# --------------------------------------------------------------------------- extraction


class TextEncoderConfig(Section):
    model: str = "bert-base-uncased"  # hub id or local directory (transformers AutoModel)
    revision: str = "main"
    layer: int = -1  # hidden-state index; -1 = last layer
    max_length: int = Field(512, gt=2)  # tokens per utterance, [CLS]/[SEP] included
    max_tokens_per_batch: int = Field(8192, gt=0)  # length-sorted batches stay under this


class AudioEncoderConfig(Section):
    model: str = "facebook/wav2vec2-base"
    revision: str = "main"
    layer: int = -1
    sample_rate: int = Field(16000, gt=0)  # wav2vec2 was trained at 16 kHz
    max_samples_per_batch: int = Field(1_600_000, gt=0)  # 100 s of audio per forward pass
    max_window_seconds: float = Field(30.0, gt=0)  # longer utterances run in windows (memory)


class VideoEncoderConfig(Section):
    checkpoint: str = "checkpoints/denseface-ferplus.pt"  # DenseNet-FER+ weights (`cmarr-fer train`)
    fps: float = Field(10.0, gt=0)  # frames sampled per second for face detection
    face_size: int = Field(64, gt=0)  # grey square crop fed to the DenseNet
    mean: float = 131.0754  # FER+ pixel statistics (Denseface normalisation)
    std: float = 47.858177
    min_face_prob: float = Field(0.9, ge=0, le=1)  # MTCNN confidence to accept a face
    min_face_size: int = Field(20, gt=0)  # smallest face MTCNN searches for, in pixels
    depth: int = Field(100, gt=0)  # DenseNet-BC depth the checkpoint must have (Denseface: 100)
    growth: int = Field(12, gt=0)  # DenseNet-BC growth rate the checkpoint must have
    select: Literal["largest", "confident"] = "largest"
    frames_per_batch: int = Field(256, gt=0)  # face crops per DenseNet forward pass


class DegradeConfig(Section):
    """Degraded extraction (`cmarr-extract --degrade`, extract/degrade/): the decoded media are degraded,
    seeded per utterance, before the encoders run; a degraded store is for robustness tests."""

    spec: str = ""  # comma-separated modality:kind=value, e.g. "audio:snr=0,video:blur=4"; "" = clean
    seed: int = Field(0, ge=0)  # each utterance's degradation seed derives from it and the utterance id


class ExtractConfig(Section):
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: Literal["none", "bf16", "fp16"] = "bf16"  # autocast dtype on CUDA; ignored on CPU
    cpu_threads: int = Field(0, ge=0)  # torch CPU threads per process or dask worker; 0 = its share of the cores
    num_workers: int = Field(2, ge=0)  # DataLoader processes that decode media
    modalities: list[Modality] = list(MODALITIES)
    profile: Literal["real", "demo"] = "real"  # demo = small offline stand-in encoders
    shard_batches: int = Field(4, gt=0)  # planned batches per task with --scheduler/--cluster
    text: TextEncoderConfig = TextEncoderConfig()
    audio: AudioEncoderConfig = AudioEncoderConfig()
    video: VideoEncoderConfig = VideoEncoderConfig()
    degrade: DegradeConfig = DegradeConfig()


# ---------------------------------------------------------- training ([train]: train_config.py) and FER+


class FerConfig(Section):
    """Training the Denseface network on FER2013 + FER+ (`cmarr-fer train`)."""

    target: Literal["distribution", "majority"] = "distribution"  # FER+ paper: distribution is best
    epochs: int = Field(60, gt=0)
    batch_size: int = Field(64, gt=1)
    lr: float = Field(0.05, gt=0)  # SGD with Nesterov momentum 0.9, cosine schedule
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(10, gt=0)  # early stopping on PublicTest accuracy
    rotation_degrees: float = Field(10.0, ge=0)  # augmentation: random crop (pad 4), flip, rotation
    skip_bad_rows: bool = False  # malformed rows: error with the line number, or skip and count
    seed: int = 0
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "bf16"


class PipelineConfig(Section):
    """The whole of `pipeline.toml`."""

    store: StoreConfig = StoreConfig()
    extract: ExtractConfig = ExtractConfig()
    train: TrainConfig = Field(default_factory=TrainConfig)  # made when used: sections register later
    fer: FerConfig = FerConfig()


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read `path` (default: ./pipeline.toml if present, else built-in defaults), validate it, then
    apply the dotted-key `overrides` (`--set`) and validate again. Raises ConfigError naming the
    file (or `--set`) and the key: a fault is blamed on where it was written."""
    source, raw = _read_raw(path)
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, source)) from None
    return with_overrides(config, overrides, "--set") if overrides else config


def with_overrides(config: PipelineConfig, overrides: dict[str, Any], source: str = "<overrides>") -> PipelineConfig:
    """A copy of `config` with dotted-key overrides applied and validated (profiles, presets)."""
    raw = config.model_dump()
    for key, value in overrides.items():
        _set_dotted(raw, key, value, source)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, source)) from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """`train.lr=1e-4` -> ('train.lr', 0.0001); the value is read as a TOML literal when it is one."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {assignment!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word such as `cuda:1` is a string
    return key.strip(), value


# What a feature store records of the config: the sections that shaped its features. A [train] or
# [fer] setting never changes a store's fingerprint (nor, through it, any run id on the store).
EXTRACTION_SECTIONS = ("store", "extract")


def to_toml(config: PipelineConfig, sections: tuple[str, ...] | None = None) -> str:
    """The resolved config as TOML text (what run directories record), or only its `sections`
    (what stores record: `EXTRACTION_SECTIONS`)."""
    dumped = config.model_dump(mode="json")
    return tomli_w.dumps({k: v for k, v in dumped.items() if sections is None or k in sections})


def recorded_toml(config: PipelineConfig, train_sections) -> str:
    """The config a run directory records (config.toml): every section but, under [train], only the
    protocol keys and `train_sections` (the system's own: see `TrainConfig.recorded`)."""
    return tomli_w.dumps({**config.model_dump(mode="json"), "train": config.train.recorded(train_sections)})


def config_hash(config: PipelineConfig, sections: tuple[str, ...] | None = None) -> str:
    return text_sha256(to_toml(config, sections))


def _read_raw(path: str | Path | None) -> tuple[str, dict[str, Any]]:
    if path is None:
        if not Path(DEFAULT_CONFIG_NAME).is_file():
            return "<built-in defaults>", {}
        path = DEFAULT_CONFIG_NAME
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        return str(path), tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_validation(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggestion(key)}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def config_keys(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema, in declaration order (under `train.`, the protocol
    keys, then the sections registered so far)."""
    fields = {name: field.annotation for name, field in model.model_fields.items()}
    if model is TrainConfig:
        fields.update(SECTIONS)
    keys = []
    for name, annotation in fields.items():
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _suggestion(key: str) -> str:
    """' (did you mean ...?)' for an unknown key: the keys of the same name in its section (a key that
    moved, e.g. train.patience, now one per system: train.cm_arr.optim.patience, ...), else anywhere,
    else the closest spellings; '' when nothing is close."""
    keys, name, section = config_keys(), key.rsplit(".", 1)[-1], key.split(".", 1)[0]
    named = [k for k in keys if k.rsplit(".", 1)[-1] == name]
    found = [k for k in named if k.split(".", 1)[0] == section] or named
    found = found or difflib.get_close_matches(key, keys, n=3, cutoff=0.8)
    if not found:
        return ""
    more = f", ... ({len(found)} keys named {name!r})" if len(found) > 3 else ""
    return f" (did you mean {', '.join(found[:3])}{more}?)"

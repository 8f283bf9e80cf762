"""Schema v1 of the feature store: names, dtypes, status codes, the utterance table."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
SCHEMA_ATTR = "cmarr_schema"  # root attribute holding the schema version
CRC_ATTR = "cmarr_crc32"  # per-array attribute: CRC32 of every chunk, recorded at write time
UTTERANCES = "utterances"
PARTS = "_parts"


class Status(enum.IntEnum):
    """Per-utterance outcome of one modality's extraction."""

    PENDING = 0  # not extracted yet
    OK = 1  # features present (at least one frame)
    MISSING_INPUT = 2  # no input to encode (empty transcript, no media file): a real missing modality
    NO_FACE = 3  # video decoded but no face in any sampled frame: a real missing modality
    FAILED = 4  # the input could not be read or encoded; the reason is recorded

    @property
    def label(self) -> str:
        """The name tables and reports use: 'ok', 'missing-input', 'no-face', 'failed', 'pending'."""
        return self.name.lower().replace("_", "-")

    @property
    def missing(self) -> bool:
        """A really missing modality (nothing to encode), as opposed to a failure to encode it."""
        return self in (Status.MISSING_INPUT, Status.NO_FACE)

    @property
    def settled(self) -> bool:
        """Outcomes that a resumed run keeps; pending and failed items are (re)tried."""
        return self == Status.OK or self.missing


# Column name -> numpy dtype kind. Strings are stored as Zarr variable-length UTF-8.
UTTERANCE_COLUMNS: dict[str, str] = {
    "id": "str",
    "label": "int16",  # index into the store's label set; -1 = unlabelled
    "label_name": "str",
    "session": "str",
    "speaker": "str",
    "gender": "str",
    "dialog": "str",
    "start": "float64",  # seconds on the source recording's time base (NaN if not applicable)
    "end": "float64",
    "split_group": "str",  # grouping for cross-validation (default: the session)
}


@dataclass
class UtteranceTable:
    """The utterance table as numpy columns, one row per utterance, in store order."""

    columns: dict[str, np.ndarray]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> UtteranceTable:
        """Build from dicts; missing string fields become '', missing times NaN, label -1."""
        cols: dict[str, np.ndarray] = {}
        for name, kind in UTTERANCE_COLUMNS.items():
            if kind == "str":
                cols[name] = np.array([str(r.get(name, "") or "") for r in records], dtype=object)
            elif kind == "int16":
                cols[name] = np.array([int(r.get(name, -1)) for r in records], dtype=np.int16)
            else:
                cols[name] = np.array([float(r.get(name, np.nan)) for r in records], dtype=np.float64)
        return cls(cols)

    def __post_init__(self) -> None:
        missing = [c for c in UTTERANCE_COLUMNS if c not in self.columns]
        if missing:
            raise ValueError(f"utterance table lacks columns {missing}")
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"utterance columns differ in length: {lengths}")
        ids = self.columns["id"]
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("utterance ids are not unique")

    def __len__(self) -> int:
        return len(self.columns["id"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


@dataclass(frozen=True)
class ModalitySpec:
    """What is needed to interpret one modality's stored frames, and to refuse mixing encoders."""

    encoder: str  # model id, local path or checkpoint the features came from
    dim: int
    dtype: str = "float16"
    revision: str = ""  # hub revision or commit
    weights_sha256: str = ""  # of the checkpoint file, when the encoder is a file
    layer: int | None = None
    frame_rate: float | None = None  # frames per second (None for tokens)
    sample_rate: int | None = None  # input sample rate (audio)
    extra: dict[str, Any] = field(default_factory=dict)  # encoder-specific settings
    # how the media were degraded before the encoder (`cmarr-extract --degrade`); {} = clean, and
    # then left out of the attributes (a clean store's spec reads as before degradation existed)
    degradation: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        attrs = asdict(self)
        if not attrs["degradation"]:
            del attrs["degradation"]
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> ModalitySpec:
        return cls(**attrs)

    def same_encoder(self, other: ModalitySpec) -> bool:
        """Two specs produce interchangeable features: every field equal, encoder-specific extras and
        the degradation included (a store never mixes clean and degraded features of one modality)."""
        a, b = self.to_attrs(), other.to_attrs()
        return a == b

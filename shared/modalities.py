"""The modalities cmarr knows, named in one place.

Stores name them `text`, `audio` and `video`; the paper writes t, s (speech) and v, and orders a
condition's letters as Table 2 does ({s,v,t}). Every other module takes the names from here.
"""

from __future__ import annotations

from typing import Literal

MODALITIES: tuple[str, ...] = ("text", "audio", "video")  # store groups; also the model's input order
Modality = Literal["text", "audio", "video"]  # the same names, for typed config fields
LETTER = {"text": "t", "audio": "s", "video": "v"}  # the paper's notation
TABLE_ORDER = ("audio", "video", "text")  # letter order inside a condition's name, e.g. {s,v,t}


def parse_modalities(text: str, option: str = "--modalities") -> list[str]:
    """`"audio,text"` -> ['audio', 'text'] in the order given; unknown or repeated names are a ConfigError."""
    from cmarr.shared.errors import ConfigError

    names = [m.strip() for m in text.split(",") if m.strip()]
    if bad := [m for m in names if m not in MODALITIES]:
        raise ConfigError(f"{option}: unknown modality {', '.join(bad)} (use {', '.join(MODALITIES)})")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"{option}: give each of {', '.join(MODALITIES)} at most once, at least one")
    return names

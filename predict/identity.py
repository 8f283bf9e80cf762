"""Do two feature extractions interchange? The run records the store's encoder specs; prediction
extracts new inputs and must get the same ones."""

from __future__ import annotations

from typing import Any

# The encoder's weights decide its features: when both sides know their sha256, a model copied to
# another folder (another `encoder` name) is still the same; otherwise the name and revision must agree.
SETTINGS = ("dim", "dtype", "layer", "frame_rate", "sample_rate", "extra")


def spec_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the spec a run recorded and the one an extraction now produces, as
    'field: recorded -> now' lines (empty: the features interchange)."""
    diffs = []
    if recorded.get("weights_sha256") and now.get("weights_sha256"):
        keys = ("weights_sha256",)
    else:
        keys = ("encoder", "revision")
    for key in keys + SETTINGS:
        if recorded.get(key) != now.get(key):
            diffs.append(f"{key}: {recorded.get(key)!r} -> {now.get(key)!r}")
    return diffs

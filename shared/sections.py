"""The base of every config section: frozen, and a misspelt key is an error naming the key.

A section's default can be a configured instance of another section (e.g. each system's
optimiser settings are a `StageOptim` with that system's published values). When a file or an
override gives only some keys of such a section, the others keep *that default instance's*
values, not the class's plain defaults: `--set train.mmin.optim.lr=1e-3` changes MMIN's learning
rate and nothing else.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _keep_configured_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(field.default, BaseModel) and isinstance(merged.get(name), dict):
                merged[name] = _deep_merge(field.default.model_dump(), merged[name])
        return merged


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out

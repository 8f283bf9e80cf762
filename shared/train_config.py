"""The `[train]` part of `pipeline.toml`: the protocol every system shares, and one section per system.

The protocol keys (folds, validation, missing conditions, devices) are declared here and apply to
every system. Each system's own settings (model sizes, loss weights, optimiser and schedule per
stage) are a `Section` its own module declares and registers (`cmarr.train.systems.register_system`,
which calls `register_section`): `[train.cm_arr]` is defined in `train/systems/cmarr.py`, a plugin's
`[train.my_system]` in the plugin. The published code's values are the defaults (the team
handbook's `comparison/SYSTEMS.md` gives the sources).

Shared never imports a stage, so the sections are known only where a stage has registered them: a
process that registered none (extraction) keeps `[train.*]` sections as written, unvalidated; a
process that registered any (training, prediction) validates every registered section, fills in
the defaults of those not written, and refuses a section nobody registered.
"""

from __future__ import annotations

from typing import Any, Literal

from cmarr.shared.sections import Section
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# name -> schema of every registered system section, in registration order (the order a run's
# config.toml lists them in)
SECTIONS: dict[str, type[Section]] = {}


def register_section(name: str, schema: type[Section]) -> None:
    """Make `[train.<name>]` a known section validated by `schema` (a `Section` whose every field
    has a default). Registering the same schema again is a no-op; another schema under a taken
    name, or a name of a protocol key, is refused."""
    if name in TrainConfig.model_fields:
        raise ValueError(f"[train.{name}]: {name!r} is a protocol key of [train], not a free section name")
    if not (isinstance(schema, type) and issubclass(schema, Section)):
        raise TypeError(f"[train.{name}]: the schema must be a cmarr Section subclass, got {schema!r}")
    if SECTIONS.get(name, schema) is not schema:
        raise ValueError(
            f"[train.{name}] is already registered by {SECTIONS[name].__module__}.{SECTIONS[name].__name__}"
        )
    SECTIONS[name] = schema


class StageOptim(Section):
    """Optimiser and schedule of one training stage."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(gt=0)  # no default here: each system's section states its stages' published rates
    beta1: float = Field(0.9, ge=0, lt=1)  # Adam's first beta (the MMIN family's missing stage uses 0.5)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=2)  # at least 2: contrastive and batch-statistics terms need pairs
    epochs: int = Field(100, gt=0)  # epochs at the full learning rate
    decay_epochs: int = Field(0, ge=0)  # then this many with the rate decaying linearly (MMIN's niter_decay)
    patience: int = Field(0, ge=0)  # early stopping after this many epochs without a better validation score; 0 = off
    clip: float = Field(0.0, ge=0)  # gradient clipping threshold; 0 = none
    clip_mode: Literal["norm", "norm-per-module", "value"] = "norm"  # global norm, norm per sub-network, value


class TrainConfig(Section):
    """The protocol keys, then every registered system section as an attribute (`cfg.cm_arr`)."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the extras are the system sections

    system: str = "cm-arr"  # what to train; `cmarr-train describe` lists the systems and their stages
    preset: Literal["paper", "fast"] = "paper"
    seed: int = 0
    val_rule: Literal["stratified", "other-speaker"] = "stratified"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    include_full_condition: bool = False  # also draw the full condition when sampling six-condition missingness
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "bf16"
    cpu_threads: int = Field(0, ge=0)  # torch CPU threads per process or dask worker; 0 = its share of the cores
    non_finite: Literal["error", "missing"] = "error"  # NaN/inf features: refuse the store, or treat as missing
    # training batches: utterances of similar length together (less padding), or drawn at random (before
    # issue 34); train/batching.py. Both are in the run id: they change which rows share a batch
    batching: Literal["bucketed", "shuffled"] = "bucketed"
    length_buckets: int = Field(10, ge=1)  # bucketed: length bands of equal total length (lhotse's buckets)

    @model_validator(mode="wrap")
    @classmethod
    def _system_sections(cls, data: Any, handler):
        """Validate each registered section (errors keep their key path, e.g. train.cm_arr.optim.lr)."""
        if isinstance(data, dict) and SECTIONS:
            data, errors = dict(data), []
            for name, schema in SECTIONS.items():
                raw = data.get(name, {})
                try:
                    data[name] = schema.model_validate(raw.model_dump() if isinstance(raw, BaseModel) else raw)
                except ValidationError as err:
                    errors += [_nested(e, name) for e in err.errors(include_url=False)]
            for name in data:
                if name not in cls.model_fields and name not in SECTIONS:
                    errors.append({"type": "extra_forbidden", "loc": (name,), "input": data[name]})
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return handler(data)

    def recorded(self, sections) -> dict:
        """What a run records of the train config (JSON-ready): the protocol keys and `sections`
        (the system's own), so that a run of one system never needs another's plugin to be read."""
        dumped = self.model_dump(mode="json")
        return {k: v for k, v in dumped.items() if k in type(self).model_fields or k in sections}

    def section(self, name: str) -> Section:
        """The system section `[train.<name>]`; KeyError naming the registered ones if there is none."""
        found = (self.__pydantic_extra__ or {}).get(name)
        if not isinstance(found, Section):
            raise KeyError(f"no registered config section [train.{name}] (registered: {', '.join(SECTIONS) or 'none'})")
        return found


def _nested(error: dict, section: str) -> dict:
    """A section's validation error as one of [train]'s: the same error at the key path under it."""
    return {
        "type": error["type"],
        "loc": (section, *error["loc"]),
        "input": error["input"],
        "ctx": error.get("ctx", {}),
    }

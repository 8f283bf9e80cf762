"""The registry of trainable systems: a name -> the function that defines it from the config.

Adding a system: a module here defining it (models, loss terms, weights, stages), its config
section in `shared/train_config.py` (and `pipeline.toml`), and one line below.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from cmarr.shared.errors import ConfigError
from cmarr.shared.train_config import SYSTEM_NAMES, TrainConfig
from cmarr.train.systems import cif_mmin, cmarr, cra, dicmor, if_mmin, mmin, utt_fusion
from cmarr.train.systems.base import Link, Stage, System, count_parameters

SYSTEMS: dict[str, Callable[[TrainConfig], System]] = {
    "cm-arr": cmarr.cm_arr,
    "baseline": cmarr.baseline,
    **{name: partial(cmarr.cm_arr, variant=name) for name in cmarr.ABLATIONS},
    "utt-fusion": utt_fusion.utt_fusion,
    "cra": cra.cra,
    "mmin": mmin.mmin,
    "if-mmin": if_mmin.if_mmin,
    "cif-mmin": cif_mmin.cif_mmin,
    "dicmor": dicmor.dicmor,
}
TABLE2 = ("cm-arr", "baseline", "utt-fusion", "cra", "mmin", "if-mmin", "cif-mmin", "dicmor")  # --systems all
ABLATIONS = ("baseline", *cmarr.ABLATIONS)  # --ablations all: Table 3's columns


def get_system(name: str, cfg: TrainConfig) -> System:
    """The system `name` as the config defines it."""
    if name not in SYSTEMS:
        known = ", ".join(n for n in SYSTEM_NAMES if n in SYSTEMS)
        raise ConfigError(f"unknown system {name!r}; choose from {known}")
    return SYSTEMS[name](cfg)


__all__ = ["ABLATIONS", "SYSTEMS", "TABLE2", "Link", "Stage", "System", "count_parameters", "get_system"]

"""The trainable systems: each module here defines one (models, loss terms, weights, stages, its
config section) and registers it once, at its end, with `register_system` (`registry.py`).

Adding a system: a module with its `register_system(...)` call (here, imported below, or a plugin:
`cmarr-train --plugin MODULE` or an installed package's `cmarr.systems` entry point); nothing else in
cmarr names it. `examples/my_system.py` is a complete small one.
"""

from __future__ import annotations

# The built-in systems, in the order reports list them; importing a module registers its systems.
# isort: off
from cmarr.train.systems import cmarr, utt_fusion, cra, mmin, if_mmin, cif_mmin, dicmor, gcnet, imder, mplmm, lnln  # noqa: E402, F401

# isort: on
from cmarr.train.systems.base import Link, Stage, System, count_parameters
from cmarr.train.systems.registry import (
    SYSTEMS,
    SystemSpec,
    discover,
    fast_preset,
    get_system,
    group,
    load_plugin,
    register_system,
)

__all__ = [
    "SYSTEMS",
    "Link",
    "Stage",
    "System",
    "SystemSpec",
    "count_parameters",
    "discover",
    "fast_preset",
    "get_system",
    "group",
    "load_plugin",
    "register_system",
]

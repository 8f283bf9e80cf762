"""One registration per system: its builder, its config sections, its run identity and its preset.

A system module ends with one `register_system(...)` call; nothing else in cmarr names it. The
registration says which config sections the system declares (validated and defaulted in every
`TrainConfig` from then on), which sections decide its numbers (`reads`: their values, and only
theirs, enter its run id beside the protocol keys, so registering or changing another system never
changes this one's id) and its `--preset fast` values. Plugins (a module given to `cmarr-train
--plugin`, or an installed package's `cmarr.systems` entry point) register the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmarr.shared.config import config_keys
from cmarr.shared.errors import ConfigError
from cmarr.shared.sections import Section
from cmarr.shared.train_config import SECTIONS, TrainConfig, register_section
from cmarr.train.systems.base import System

ENTRY_POINT_GROUP = "cmarr.systems"
GROUPS = ("table2", "ablations")  # --systems all, --ablations all


@dataclass(frozen=True)
class SystemSpec:
    """A registered system (see `register_system`)."""

    name: str
    build: Callable[[TrainConfig], System]
    reads: tuple[str, ...]  # the [train.<section>]s whose values decide its numbers (its run id)
    fast: Mapping[str, Any]  # `--preset fast` values, dotted keys under train.<a section it reads>
    groups: frozenset[str]
    module: str  # where it was registered: named in every error about it

    @property
    def builtin(self) -> bool:
        return self.module.startswith("cmarr.")

    @property
    def source(self) -> str:
        """Who registered it, as a person names it: "built in", or the plugin's module or file."""
        return "built in" if self.builtin else f"plugin {PLUGIN_FILES.get(self.module, self.module)}"


SYSTEMS: dict[str, SystemSpec] = {}
PLUGIN_FILES: dict[str, str] = {}  # module name -> the .py file --plugin gave


def register_system(
    name: str,
    build: Callable[[TrainConfig], System],
    *,
    sections: Mapping[str, type[Section]] | None = None,
    reads: Iterable[str] | None = None,
    fast: Mapping[str, Any] | None = None,
    groups: Iterable[str] = (),
) -> SystemSpec:
    """Register the system `name` (lower-case words joined by '-', e.g. "my-system").

    `build(cfg)` returns its `System` (stages, models, loss weights) from the train config;
    `sections` maps each config section it declares (`[train.<key>]`) to its `Section` schema;
    `reads` names every section its numbers depend on (default: the ones it declares), the only
    settings besides the protocol keys in its run id; `fast` maps dotted keys (`train.<section>.
    optim.epochs`) to the values of `--preset fast`; `groups` puts it in "table2" (`--systems all`)
    or "ablations" (`--ablations all`). Raises ConfigError naming the registering module for a
    taken name, an unknown section in `reads` or a `fast` key that does not exist."""
    module = _caller_module()
    where = f"system {name!r} (registered by {PLUGIN_FILES.get(module, module)})"
    if not name or name != name.strip() or name in ("all",):
        raise ConfigError(f"{where}: not a usable system name")
    if name in SYSTEMS and SYSTEMS[name].module != module:
        raise ConfigError(f"{where}: the name is taken by {SYSTEMS[name].module}; choose another")
    for key, schema in (sections or {}).items():
        try:
            register_section(key, schema)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    reads = tuple(reads if reads is not None else (sections or {}))
    if missing := [s for s in reads if s not in SECTIONS]:
        raise ConfigError(f"{where}: reads unregistered config section(s) {', '.join(missing)}")
    fast = dict(fast or {})
    _check_fast(where, fast, reads)
    if bad := sorted(set(groups) - set(GROUPS)):
        raise ConfigError(f"{where}: unknown group(s) {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    spec = SystemSpec(name, build, reads, fast, frozenset(groups), module)
    SYSTEMS[name] = spec
    return spec


def _check_fast(where: str, fast: dict[str, Any], reads: tuple[str, ...]) -> None:
    for key in fast:
        _, _, rest = key.partition("train.")
        section, _, sub = rest.partition(".")
        if not key.startswith("train.") or section not in reads:
            raise ConfigError(f"{where}: preset key {key!r} is not under a section it reads ({', '.join(reads)})")
        if sub not in config_keys(SECTIONS[section]):
            raise ConfigError(f"{where}: preset key {key!r}: [train.{section}] has no key {sub!r}")


def _caller_module() -> str:
    """The module that called `register_system` (two frames up)."""
    return sys._getframe(2).f_globals.get("__name__", "?")


def get_system(name: str, cfg: TrainConfig) -> System:
    """The system `name` as the config defines it, with the config sections it reads attached (its
    run identity). Raises ConfigError for an unknown name, and naming the plugin for one whose
    builder fails or returns something other than a System of that name."""
    if name not in SYSTEMS:
        discover()
    if name not in SYSTEMS:
        raise ConfigError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)} (a plugin's: --plugin MODULE)")
    spec = SYSTEMS[name]
    try:
        system = spec.build(cfg)
    except ConfigError:
        raise
    except Exception as err:
        if spec.builtin:
            raise
        raise ConfigError(f"system {name!r} ({spec.source}): building it failed: {err!r}") from err
    if not isinstance(system, System) or system.name != name or not system.stages:
        raise ConfigError(
            f"system {name!r} ({spec.source}): its builder must return a System named {name!r} with stages"
        )
    config = {s: cfg.section(s).model_dump(mode="json") for s in spec.reads}
    return dataclasses.replace(system, config=config)


def group(name: str) -> tuple[str, ...]:
    """The registered systems of a group, in registration order."""
    return tuple(s for s, spec in SYSTEMS.items() if name in spec.groups)


def fast_preset() -> dict[str, Any]:
    """Every registered system's `--preset fast` values."""
    return {k: v for spec in SYSTEMS.values() for k, v in spec.fast.items()}


def load_plugin(target: str) -> list[str]:
    """Import the plugin `target` (a dotted module name, or a path to a `.py` file), which registers
    systems; returns the names it registered. ConfigError naming it when it cannot be imported or
    raises while it is."""
    before = set(SYSTEMS)
    path = Path(target)
    try:
        if target.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"--plugin {target}: no such file")
            spec = importlib.util.spec_from_file_location(f"cmarr_plugin_{path.stem}", path)
            PLUGIN_FILES[spec.name] = target
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"--plugin {target}: importing it failed: {err!r}") from err
    return sorted(set(SYSTEMS) - before)


_discovered = False


def discover() -> None:
    """Import the installed packages' `cmarr.systems` entry points once (each registers systems)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:
            raise ConfigError(
                f"the installed plugin {entry.value} ({ENTRY_POINT_GROUP} entry point {entry.name}) "
                f"failed to load: {err!r}"
            ) from err

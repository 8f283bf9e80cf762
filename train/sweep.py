"""Loss-weight sweeps (the paper's Fig. 4): the same system trained once per value of one config key.

`--sweep alpha=0.1,0.5,1,2,5` (also `beta`, `lambda`, or any dotted config key) trains a run per
value, on the same folds and seeds, and writes the Avg. WAR/UAR against the value as CSV and PNG.
"""

from __future__ import annotations

from pathlib import Path

from cmarr.shared.config import PipelineConfig, parse_override, with_overrides
from cmarr.shared.errors import ConfigError
from cmarr.shared.provenance import text_sha256
from cmarr.train.figures import write_sweep
from cmarr.train.paper import OPTIMUM

ALIASES = {
    "alpha": "train.cm_arr.loss.alpha",
    "beta": "train.cm_arr.loss.beta",
    "lambda": "train.cm_arr.loss.lambda_rec",
}


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    """`alpha=0.1,0.5,1` -> ('train.cm_arr.loss.alpha', [0.1, 0.5, 1.0])."""
    key, sep, text = spec.partition("=")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not sep or not key.strip() or len(parts) < 2:
        raise ConfigError(f"--sweep expects KEY=V1,V2,... (two or more values), e.g. alpha=0.1,0.5,1,2,5; got {spec!r}")
    values = []
    for part in parts:
        _, value = parse_override(f"v={part}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"--sweep {spec!r}: {part!r} is not a number")
        values.append(float(value))
    return ALIASES.get(key.strip(), key.strip()), values


def run_sweep(spec: str, cfg: PipelineConfig, out: Path, train) -> Path:
    """Train one run per value of the swept key (`train(cfg)` runs the grid and returns its runs)
    and write the sweep's CSV and PNG; returns the PNG."""
    key, values = parse_sweep(spec)
    with_overrides(cfg, {key: values[0]}, "--sweep")  # an unknown key fails before any training
    points, names = [], []
    for value in values:
        [run] = train(with_overrides(cfg, {key: value}, "--sweep"))
        points.append((value, run.table))
        names.append(run.run_dir.name)
    short = key.split(".")[-1]
    folder = out / f"sweep-{short}-{text_sha256(' '.join(names))[:8]}"
    return write_sweep(folder, key, points, OPTIMUM.get(short))

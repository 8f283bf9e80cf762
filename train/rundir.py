"""The run directory: the one owner of every file name in it, and of a stage's resume state.

    runs/<run id>/                      one system on one store (`train/run.py` names it)
      config.toml  store.json  system.json  ledger.jsonl
      results.md  results.csv  results.json  confusion/<condition>.png
      tensorboard/<job>/                with --log tensorboard (`train/tracking.py`)
      seed<S>/fold<K>/split<J>/         one job (`train/grid.py`)
        result.json  predictions.csv  train.log      result.json: test scores, each checkpoint's sha256
        <stage>/                        one stage of the system (`train/stage.py`)
          checkpoint.pt  state.pt  metrics.jsonl  curves.png

Every module that reads or writes these files asks this one for their paths; nothing else spells a
name. `StageState` is the content of `state.pt` (`train/checkpoint.py` owns its file format).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmarr.shared.errors import ConfigError


@dataclass(frozen=True)
class StageDir:
    """A stage's folder: its best weights, its resume state and its per-epoch metrics."""

    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def state(self) -> Path:
        return self.path / "state.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"


@dataclass(frozen=True)
class SplitDir:
    """One job's folder: a (seed, fold, split) of one system."""

    path: Path

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    def stage(self, name: str) -> StageDir:
        return StageDir(self.path / name)

    def read_result(self) -> dict:
        return json.loads(self.result.read_text())

    def recorded_sha256(self, stage: str) -> str | None:
        """The content sha256 result.json records for `stage`'s checkpoint (None: no finished result
        that records one, e.g. a run from before digests)."""
        try:
            return self.read_result()["checkpoints"][stage]
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class RunDir:
    """A system's run directory."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def store(self) -> Path:
        return self.path / "store.json"

    @property
    def system(self) -> Path:
        return self.path / "system.json"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    @property
    def confusion(self) -> Path:
        return self.path / "confusion"

    @property
    def predictions(self) -> Path:
        """An external method's predictions, as scored (`cmarr-train score`; train/scoring.py)."""
        return self.path / "predictions.csv"

    def tensorboard(self, job: str) -> Path:
        """A job's TensorBoard event folder (`--log tensorboard`)."""
        return self.path / "tensorboard" / job.replace("/", "-")

    def results(self, suffix: str) -> Path:
        """results.md, results.csv or results.json (`suffix` "md", "csv", "json")."""
        return self.path / f"results.{suffix}"

    def read_results(self) -> dict:
        return json.loads(self.results("json").read_text())

    def final_stage(self) -> str:
        """The name of the system's last stage (the one evaluated), from system.json."""
        return json.loads(self.system.read_text())["stages"][-1]["name"]

    def split(self, seed: int, fold: int, split: int) -> SplitDir:
        """Job (seed, 1-based fold, split index)'s folder."""
        return SplitDir(self.path / f"seed{seed}" / f"fold{fold}" / f"split{split}")

    def splits(self, fold: str = "*") -> list[SplitDir]:
        """The split folders there are, sorted (`fold` "1" for fold 1's only)."""
        return [SplitDir(p) for p in sorted(self.path.glob(f"seed*/fold{fold}/split*"))]

    def final_checkpoints(self) -> list[Path]:
        """The last stage's checkpoint of every finished split, sorted."""
        final = self.final_stage()
        return [s.stage(final).checkpoint for s in self.splits() if s.stage(final).checkpoint.is_file()]


def split_of(stage_file: Path) -> Path:
    """The split folder holding a stage's checkpoint.pt or state.pt (<split>/<stage>/<file>)."""
    return Path(stage_file).parent.parent


def run_dir_for(base: Path, name: str, resume: bool) -> Path:
    """The run directory for run id `name`: a new suffix unless resuming."""
    path = base / name
    if resume:
        if not path.is_dir():
            raise ConfigError(f"--resume: no run at {path} to resume{_why_no_run(base, name)}")
        return path
    k = 2
    while path.exists():
        path, k = base / f"{name}-{k}", k + 1
    return path


def _why_no_run(base: Path, name: str) -> str:
    """What sets the runs in `base` of the same corpus, system and seeds apart from run id `name`
    (see `run_id`): another store fingerprint (the store changed since) or other settings."""
    head, settings, store, seeds = name.rsplit("-", 3)
    pattern = re.compile(rf"{re.escape(head)}-([0-9a-f]{{8}})-([0-9a-f]{{8}})-{re.escape(seeds)}")
    entries = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    found = [m.groups() for entry in entries if (m := pattern.fullmatch(entry))]
    if stores := sorted({f for h, f in found if h == settings}):
        return (
            f"; {base} holds this run on a store of fingerprint {', '.join(stores)}, and the store now reads "
            f"{store}: it changed since (re-extracted, relabelled, utterances updated). Train on it anew "
            "(without --resume), or point --store at the store that run used"
        )
    if hashes := sorted({h for h, f in found if f == store}):
        return (
            f"; {base} holds runs of this corpus, system and seeds on this store with other settings "
            f"(settings hash {', '.join(hashes)}, now {settings}): resume with the settings that run used "
            "(its config.toml, --config)"
        )
    return ""


def is_run_dir(path: Path) -> bool:
    return RunDir(Path(path)).system.is_file()


@dataclass
class StageProgress:
    """Where a stage's epoch loop stands (saved with every state; resumed exactly)."""

    epoch: int = 0  # epochs finished
    best: float = -1.0  # the best validation score so far
    best_epoch: int = -1
    stale: int = 0  # epochs since the best one (early stopping)
    done: bool = False
    metrics_bytes: int = 0  # metrics.jsonl's size after the last finished epoch


@dataclass
class StageState:
    """Everything to resume an interrupted stage exactly: the content of its `state.pt`."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]  # {"lr": the LambdaLR's state, "scaler": the GradScaler's}
    rng: dict[str, Any]  # {"numpy": the stage's generator, and torch's and Python's (checkpoint.rng_state)}
    progress: StageProgress
    best_model: dict[str, Any] | None = None  # the best weights so far

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": asdict(self.progress)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> StageState:
        fields = {k: saved[k] for k in ("model", "optimizer", "schedule", "rng")}
        return cls(**fields, progress=StageProgress(**saved["progress"]), best_model=saved.get("best_model"))

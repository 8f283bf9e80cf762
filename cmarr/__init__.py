"""cmarr: cross-modal alignment, reconstruction and refinement for emotion recognition.

The stages live in `cmarr.extract` (encoders -> feature store), `cmarr.train` (store -> CM-ARR
models and reports) and `cmarr.shared` (config, store schema, labels) used by both;
`cmarr.predict` composes them to label new recordings with a trained run:

    import cmarr
    predictor = cmarr.load_predictor("runs/<run>", device="cpu")
    predictor.predict(audio="clip.wav", text="I can't believe you did that")

Researchers' own methods enter through the names below (README: "Adding your own system"): a system
plugin (`register_system`, `Stage`, `System`, `SystemModel`, `Batch`, `Section`, `StageOptim`) and
cmarr's protocol for one's own training loop (`StoreDataset`, `folds`, `CONDITIONS`, `score`).
"""

import os
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

# OpenMP threads that wait for each other spin for a while before sleeping (libgomp: 300,000
# spins). When another process keeps the cores busy, a spinning thread burns the time slice its
# partner needs, and every small parallel op waits a scheduler tick: an epoch of the demo took
# 10x longer beside two busy processes, and 2x with a short spin (bench/train_cpu.py: 2x the idle
# time for about 6% more when idle). Set before torch loads OpenMP; a user's own value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # GNU OpenMP (torch's pip wheels)
os.environ.setdefault("KMP_BLOCKTIME", "1")  # Intel OpenMP (builds linked to it), milliseconds

try:
    __version__ = version("cmarr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def load_predictor(run, device: str = "auto", overrides=None):
    """A trained run ready to label new recordings: see `cmarr.predict.Predictor`."""
    from cmarr.predict import load_predictor as load

    return load(run, device, overrides)


# The public API, imported when first used (`import cmarr` stays light: no torch until then).
_PUBLIC = {
    "register_system": "cmarr.train.systems",
    "Stage": "cmarr.train.systems",
    "System": "cmarr.train.systems",
    "Link": "cmarr.train.systems",
    "SystemModel": "cmarr.train.model.base",
    "Batch": "cmarr.train.batch",
    "Section": "cmarr.shared.sections",
    "StageOptim": "cmarr.shared.train_config",
    "StoreDataset": "cmarr.train.harness",
    "Fold": "cmarr.train.harness",
    "folds": "cmarr.train.harness",
    "CONDITIONS": "cmarr.train.harness",
    "score": "cmarr.train.scoring",
}
__all__ = [
    "CONDITIONS",
    "Batch",
    "Fold",
    "Link",
    "Section",
    "Stage",
    "StageOptim",
    "StoreDataset",
    "System",
    "SystemModel",
    "folds",
    "load_predictor",
    "register_system",
    "score",
]

if TYPE_CHECKING:  # what static tools see: the same names
    from cmarr.shared.sections import Section
    from cmarr.shared.train_config import StageOptim
    from cmarr.train.batch import Batch
    from cmarr.train.harness import CONDITIONS, Fold, StoreDataset, folds
    from cmarr.train.model.base import SystemModel
    from cmarr.train.scoring import score
    from cmarr.train.systems import Link, Stage, System, register_system


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cmarr' has no attribute {name!r}")

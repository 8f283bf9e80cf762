"""cmarr: cross-modal alignment, reconstruction and refinement for emotion recognition.

The stages live in `cmarr.extract` (encoders -> feature store), `cmarr.train` (store -> CM-ARR
models and reports) and `cmarr.shared` (config, store schema, labels) used by both;
`cmarr.predict` composes them to label new recordings with a trained run:

    import cmarr
    predictor = cmarr.load_predictor("runs/<run>", device="cpu")
    predictor.predict(audio="clip.wav", text="I can't believe you did that")
"""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that wait for each other spin for a while before sleeping (libgomp: 300,000
# spins). When another process keeps the cores busy, a spinning thread burns the time slice its
# partner needs, and every small parallel op waits a scheduler tick: an epoch of the demo took
# 10x longer beside two busy processes, and 2x with a short spin (bench/train.py: 2x the idle
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

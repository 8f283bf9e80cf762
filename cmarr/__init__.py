"""cmarr: cross-modal alignment, reconstruction and refinement for emotion recognition.

The stages live in `cmarr.extract` (encoders -> feature store), `cmarr.train` (store -> CM-ARR
models and reports) and `cmarr.shared` (config, store schema, labels) used by both.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cmarr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

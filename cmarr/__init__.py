"""cmarr: cross-modal alignment, reconstruction and refinement for emotion recognition.

The stages live in `cmarr.extract` (encoders -> feature store), `cmarr.train` (store -> CM-ARR
models and reports) and `cmarr.shared` (config, store schema, labels) used by both;
`cmarr.predict` composes them to label new recordings with a trained run:

    import cmarr
    predictor = cmarr.load_predictor("runs/<run>", device="cpu")
    predictor.predict(audio="clip.wav", text="I can't believe you did that")
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cmarr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def load_predictor(run, device: str = "auto", overrides=None):
    """A trained run ready to label new recordings: see `cmarr.predict.Predictor`."""
    from cmarr.predict import load_predictor as load

    return load(run, device, overrides)

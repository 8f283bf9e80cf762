"""Prediction on new recordings: the extraction stage and a trained run composed (neither
`extract/` nor `train/` imports this package)."""

if __name__ != "cmarr.predict":  # predict/ is linked into cmarr/ (cmarr/predict -> ../predict) and has one import name
    raise ImportError(
        f"import cmarr.predict, not {__name__}: predict/ is the package cmarr.predict (a second name would load "
        "a second copy of every module and class)"
    )

from cmarr.predict.predictor import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "load_predictor"]

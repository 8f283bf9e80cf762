"""Prediction on new recordings: the extraction stage and a trained run composed (neither
`extract/` nor `train/` imports this package)."""

from cmarr.predict.predictor import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "load_predictor"]

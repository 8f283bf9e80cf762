"""The CM-ARR model, component by component (see DESIGN.md section 6)."""

from cmarr.train.model.cmarr import CMARR, Baseline, Inputs, Outputs, build_model

__all__ = ["CMARR", "Baseline", "Inputs", "Outputs", "build_model"]

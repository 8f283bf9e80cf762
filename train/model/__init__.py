"""CM-ARR's modules, component by component (see DESIGN.md section 6), and the model interface."""

from cmarr.train.model.base import SystemModel
from cmarr.train.model.cmarr import CMARR, Baseline, Outputs

__all__ = ["CMARR", "Baseline", "Outputs", "SystemModel"]

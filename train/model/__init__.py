"""CM-ARR's modules, one file per component (alignment: uncertainty.py; reconstruction: projection.py,
flow.py, reconstruction.py; fusion.py; cmarr.py assembles them with the losses), the comparison systems'
models, and the model interface (base.py)."""

from cmarr.train.model.base import SystemModel
from cmarr.train.model.cmarr import CMARR, Baseline, Outputs

__all__ = ["CMARR", "Baseline", "Outputs", "SystemModel"]

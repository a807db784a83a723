"""End-to-end models: parameterizer → runoff → units → routing (and seed ensembles of them)."""

from gnnhydro.models.ensemble import HydroEnsemble
from gnnhydro.models.forcing_correction import ForcingCorrection
from gnnhydro.models.hydro_model import MODES, HydroModel

__all__ = ["HydroModel", "HydroEnsemble", "ForcingCorrection", "MODES"]

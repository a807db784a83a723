"""End-to-end models: parameterizer → runoff → units → routing."""

from gnnhydro.models.hydro_model import MODES, HydroModel

__all__ = ["HydroModel", "MODES"]

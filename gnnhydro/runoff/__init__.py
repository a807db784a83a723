"""Differentiable runoff generation: HBV family, GR4J, SAC-SMA, linear reservoir, LSTM (one
interface)."""

from gnnhydro.runoff.base import (
    RunoffModel,
    get_runoff_model,
    list_runoff_models,
    mass_balance,
    register_runoff_model,
)
from gnnhydro.runoff.gr4j import GR4J, gr4j_step, gr4j_torch_loop, gr4j_unit_hydrographs
from gnnhydro.runoff.hbv import HBV, gamma_unit_hydrograph, hbv_step, hbv_torch_loop, uh_convolve
from gnnhydro.runoff.hbv_layout import HBVOptions
from gnnhydro.runoff.linear_reservoir import LinearReservoir, linear_reservoir
from gnnhydro.runoff.lstm import LSTMRunoff
from gnnhydro.runoff.sacsma import SACSMA, sacsma_step, sacsma_torch_loop

__all__ = [
    "RunoffModel",
    "register_runoff_model",
    "get_runoff_model",
    "list_runoff_models",
    "mass_balance",
    "GR4J",
    "gr4j_step",
    "gr4j_torch_loop",
    "gr4j_unit_hydrographs",
    "HBV",
    "HBVOptions",
    "hbv_step",
    "hbv_torch_loop",
    "gamma_unit_hydrograph",
    "uh_convolve",
    "LinearReservoir",
    "linear_reservoir",
    "LSTMRunoff",
    "SACSMA",
    "sacsma_step",
    "sacsma_torch_loop",
]

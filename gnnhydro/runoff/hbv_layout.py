"""Layout of HBV's arrays in the fused kernels: parameter, state and output order and sizes.

The one place the torch model (:mod:`gnnhydro.runoff.hbv`) and the numba and triton kernels
(:mod:`gnnhydro.runoff.kernels`) take them from, so neither imports the other for constants.
"""

from __future__ import annotations

__all__ = ["KERNEL_PARAMS", "HBV_STATES", "HBV_OUTPUTS", "K", "NS", "NF", "NOUT"]

#: Order of the parameters inside the fused kernels (the names of ``HBV_PARAM_SPECS``).
KERNEL_PARAMS: tuple[str, ...] = (
    "beta",
    "fc",
    "k0",
    "k1",
    "k2",
    "lp",
    "perc",
    "uzl",
    "tt",
    "cfmax",
    "cfr",
    "cwh",
    "betaet",
    "c",
    "rt",
    "ac",
)
#: State names: snowpack, liquid water in the snowpack, soil moisture, upper/lower zone storage.
HBV_STATES: tuple[str, ...] = (
    "snowpack",
    "meltwater",
    "soil_moisture",
    "upper_zone",
    "lower_zone",
)
#: Per-step outputs (means over components), in this order in the fused kernels: the fluxes,
#: then the states at the end of each step.
HBV_OUTPUTS: tuple[str, ...] = (
    "runoff",
    "surface_flow",
    "interflow",
    "baseflow",
    "evapotranspiration",
    "recharge",
    "excess",
    "tosoil",
    "percolation",
    "capillary_rise",
    "groundwater_exchange",
    *HBV_STATES,
)
K = len(KERNEL_PARAMS)  # parameters
NS = len(HBV_STATES)  # states
NF = len(HBV_OUTPUTS) - NS  # fluxes (11; the NS states follow them in the output array)
NOUT = NF + NS

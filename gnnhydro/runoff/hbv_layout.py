"""Layout of HBV's arrays in the fused kernels (parameter, state and output order and sizes)
and the options of the step (:class:`HBVOptions`).

The one place the torch model (:mod:`gnnhydro.runoff.hbv`) and the numba and triton kernels
(:mod:`gnnhydro.runoff.kernels`) take them from, so neither imports the other for constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HBVOptions", "KERNEL_PARAMS", "HBV_STATES", "HBV_OUTPUTS", "K", "NS", "NF", "NOUT"]


@dataclass(frozen=True)
class HBVOptions:
    """Options of the HBV step, the same for every backend (torch loop, numba, triton).

    Built by :class:`gnnhydro.runoff.HBV` from its keyword arguments (``smoothing`` is ``eps``)
    and taken as ``options=`` by :func:`gnnhydro.runoff.hbv.hbv_step`,
    :func:`~gnnhydro.runoff.hbv.hbv_torch_loop` and the kernels' apply functions.  The upstream
    area of the groundwater exchange is data, not an option: it is passed as ``area_km2``.
    """

    #: threshold smoothing width ε (:mod:`gnnhydro.runoff.smooth`): in the units of the
    #: thresholded quantity (°C for the rain/snow and melt thresholds, mm for the stores),
    #: relative (dimensionless) in the smooth minimum; 0 = the exact, non-smooth step
    eps: float = 0.0
    #: floor of the soil moisture (mm; also of the lower zone with ``capillary``)
    nearzero: float = 1e-5
    #: ET reduction curve raised to the power ``betaet`` (δHBV 1.1p; parameter ``betaet``)
    betaet: bool = False
    #: capillary rise from the lower zone to the soil (δHBV 1.1p; parameter ``c``, 1/day)
    capillary: bool = False
    #: regional groundwater exchange of the lower zone (δHBV 2.0; parameters ``rt`` mm/day and
    #: ``ac`` km²; needs ``area_km2``)
    groundwater_exchange: bool = False

    def __post_init__(self) -> None:
        for name in ("eps", "nearzero"):
            value = getattr(self, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, (bool, str)) or not (math.isfinite(number) and number >= 0.0):
                raise ValueError(f"HBVOptions: {name} must be a finite number ≥ 0, got {value!r}")
            object.__setattr__(self, name, number)
        for name in ("betaet", "capillary", "groundwater_exchange"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"HBVOptions: {name} must be a bool, got {value!r}")
            object.__setattr__(self, name, bool(value))

    def scalars(self) -> tuple[float, float, bool, bool, bool]:
        """``(eps, nearzero, betaet, capillary, groundwater_exchange)``: the plain scalars the
        numba kernels take (in their argument order), the one place the options are unpacked."""
        return (self.eps, self.nearzero, self.betaet, self.capillary, self.groundwater_exchange)


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

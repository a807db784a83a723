"""Degree-day snow routine (HBV's), one definition shared by HBV, GR4J and SAC-SMA.

One step (fluxes in mm/step, temperature in °C; Bergström 1976, as δHBV applies it):

.. math::
    \\text{rain} &= P\\,H(T_a - TT),\\quad SP \\leftarrow SP + (P - \\text{rain}) \\\\
    \\text{melt} &= \\min(CFMAX\\,(T_a - TT)^+, SP),\\quad SP \\leftarrow SP - \\text{melt},\\quad
    MW \\leftarrow MW + \\text{melt} \\\\
    \\text{refr} &= \\min(CFR\\,CFMAX\\,(TT - T_a)^+, MW),\\quad SP \\leftarrow SP + \\text{refr},\\quad
    MW \\leftarrow MW - \\text{refr} \\\\
    \\text{tosoil} &= (MW - CWH\\,SP)^+,\\quad MW \\leftarrow MW - \\text{tosoil}

``rain + tosoil`` is the liquid water that reaches the soil (HBV) or that the model downstream
reads as its precipitation (GR4J, SAC-SMA with ``snow=True``).  ``SP`` (snowpack) and ``MW``
(liquid water held in it) are the states; the snow water equivalent is ``SP + MW``.  With
``eps > 0`` the thresholds are smoothed (:mod:`gnnhydro.runoff.smooth`).

Implementations: :func:`degree_day_snow` (PyTorch, here) and
:func:`gnnhydro.runoff.kernels.snow_numba.snow_fwd` / ``snow_vjp`` (numba; HBV's fused kernels
and the fused snow pass of GR4J and SAC-SMA call them).  HBV's triton kernels keep their own copy
(GPU code cannot call numba functions); the tests hold all of them equal.

Without temperature forcing the models run with a constant far above every threshold
(:data:`NO_SNOW_TEMPERATURE_C`): all precipitation is rain, nothing freezes, and an empty snowpack
stays empty.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from gnnhydro.runoff.smooth import min_s, relu_s, step_s
from gnnhydro.runoff.stepping import TorchStepper
from gnnhydro.spec import ParamSpec

__all__ = [
    "SNOW_PARAM_SPECS",
    "SNOW_PARAMS",
    "SNOW_STATES",
    "NO_SNOW_TEMPERATURE_C",
    "NO_SNOW_MEANING",
    "degree_day_snow",
    "with_snow",
]

#: the snow parameters (HBV's names, units and bounds)
SNOW_PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in [
        ParamSpec("tt", "°C", -2.5, 2.5, 0.0, True, "rain/snow and melt threshold temperature"),
        ParamSpec("cfmax", "mm/°C/day", 0.5, 10.0, 3.0, True, "degree-day melt factor"),
        ParamSpec("cfr", "-", 0.0, 0.1, 0.05, True, "refreezing coefficient"),
        ParamSpec("cwh", "-", 0.0, 0.2, 0.1, True, "water holding capacity of the snowpack"),
    ]
}
SNOW_PARAMS: tuple[str, ...] = tuple(SNOW_PARAM_SPECS)
#: snowpack (frozen) and meltwater (liquid, held in the pack), mm
SNOW_STATES: tuple[str, ...] = ("snowpack", "meltwater")
#: temperature used when the forcing has none (°C): above every threshold, hence no snow
NO_SNOW_TEMPERATURE_C = 50.0
NO_SNOW_MEANING = (
    "no snow routine: all precipitation is liquid and nothing melts (the model runs with a "
    f"constant {NO_SNOW_TEMPERATURE_C:g} °C, above every rain/snow threshold)"
)


def degree_day_snow(
    snowpack: Tensor,
    meltwater: Tensor,
    precip: Tensor,
    temp: Tensor,
    p: Mapping[str, Tensor],
    eps: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One degree-day snow step (module docstring).

    Args:
        snowpack, meltwater: states before the step, mm.
        precip: precipitation of the step, mm/step; temp: air temperature, °C.
        p: ``tt`` (°C), ``cfmax`` (mm/°C/step), ``cfr`` (-), ``cwh`` (-).
        eps: threshold smoothing width; 0 = exact.

    Returns:
        snowpack and meltwater after the step (mm), rain and tosoil (mm/step).

    Shapes:
        any broadcastable shapes, e.g. states and parameters ``[N, m]``, forcing ``[N, 1]``.
    """
    dtemp = temp - p["tt"]
    rain = precip * step_s(dtemp, eps)
    snowpack = snowpack + (precip - rain)
    melt = min_s(p["cfmax"] * relu_s(dtemp, eps), snowpack, eps)
    snowpack = snowpack - melt
    meltwater = meltwater + melt
    refr = min_s(p["cfr"] * p["cfmax"] * relu_s(-dtemp, eps), meltwater, eps)
    snowpack = snowpack + refr
    meltwater = meltwater - refr
    tosoil = relu_s(meltwater - p["cwh"] * snowpack, eps)
    meltwater = meltwater - tosoil
    return snowpack, meltwater, rain, tosoil


def with_snow(inner: TorchStepper) -> TorchStepper:
    """``inner`` with the snow routine in front: one snowpack per node (``[R, 1]`` stores,
    parameters ``[R]``), whose liquid water (rain + tosoil) ``inner`` reads as precipitation.

    The combined step reads ``temperature`` as well, carries the states
    ``(snowpack, meltwater, *inner.states)`` and adds the outputs ``snowpack``, ``meltwater``
    and ``liquid_water`` (mm, mm, mm/step) to ``inner``'s.
    """

    def prepare(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = inner.prepare({k: v for k, v in params.items() if k not in SNOW_PARAM_SPECS})
        for k in SNOW_PARAMS:
            out[k] = params[k].reshape(-1, 1)
        return out

    def step(st, forcing, p):
        sp, mw, *rest = st
        sp, mw, rain, tosoil = degree_day_snow(
            sp, mw, forcing["precipitation"], forcing["temperature"], p
        )
        liquid = rain + tosoil
        rest, out = inner.step(tuple(rest), {**forcing, "precipitation": liquid}, p)
        out["snowpack"], out["meltwater"], out["liquid_water"] = sp, mw, liquid
        return (sp, mw, *rest), out

    def pack(states: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
        return (states["snowpack"], states["meltwater"], *inner.pack(states))

    def unpack(st: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return {"snowpack": st[0], "meltwater": st[1], **inner.unpack(st[2:])}

    return TorchStepper(
        forcing=(*inner.forcing, "temperature"),
        states=(*SNOW_STATES, *inner.states),
        outputs=(*inner.outputs, *SNOW_STATES, "liquid_water"),
        step=step,
        pack=pack,
        unpack=unpack,
        prepare=prepare,
    )

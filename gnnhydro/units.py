"""Unit conversions and forcing utilities: the one module where physical units change.

Conventions used across gnnhydro: water depths in mm per time step, discharge in m³/s, areas in
km², lengths in m, temperatures in °C, time steps given in seconds where a conversion needs them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SECONDS_PER_DAY",
    "mm_per_step_to_m3s",
    "m3s_to_mm_per_step",
    "inches_to_mm",
    "fahrenheit_to_celsius",
    "cfs_to_m3s",
    "acres_to_km2",
    "extraterrestrial_radiation_mm",
    "hargreaves_pet",
    "convert_units",
    "to_canonical",
    "unit_registry",
    "UNIT_ALIASES",
]

SECONDS_PER_DAY = 86_400.0
CFS_TO_M3S = 0.028316846592  # 1 ft³/s in m³/s (exact: 0.3048³)
ACRE_TO_KM2 = 4046.8564224e-6  # 1 international acre in km² (exact)
INCH_TO_MM = 25.4


def mm_per_step_to_m3s(depth_mm: Tensor, area_km2: Tensor, step_seconds: float) -> Tensor:
    """Convert a water depth per time step over an area into a discharge.

    ``Q [m³/s] = depth [mm] · 1e-3 [m/mm] · area [km²] · 1e6 [m²/km²] / Δt [s]``.

    Shapes:
        depth_mm: ``[..., N, T]`` mm per step; area_km2: ``[N]`` km² (broadcast over the last
        axis); result ``[..., N, T]`` m³/s.
    """
    return depth_mm * (area_km2.unsqueeze(-1) * (1e3 / step_seconds))


def m3s_to_mm_per_step(discharge_m3s: Tensor, area_km2: Tensor, step_seconds: float) -> Tensor:
    """Inverse of :func:`mm_per_step_to_m3s`.

    Shapes:
        discharge_m3s: ``[..., N, T]`` m³/s; area_km2: ``[N]`` km²; result ``[..., N, T]`` mm/step.
    """
    return discharge_m3s * (step_seconds / 1e3) / area_km2.unsqueeze(-1)


def inches_to_mm(value):
    """Inches → millimetres (×25.4)."""
    return value * INCH_TO_MM


def fahrenheit_to_celsius(value):
    """Degrees Fahrenheit → degrees Celsius."""
    return (value - 32.0) * (5.0 / 9.0)


def cfs_to_m3s(value):
    """Cubic feet per second → cubic metres per second."""
    return value * CFS_TO_M3S


def acres_to_km2(value):
    """Acres → square kilometres."""
    return value * ACRE_TO_KM2


def extraterrestrial_radiation_mm(latitude_deg, day_of_year):
    """Daily extraterrestrial radiation Ra as an equivalent evaporation depth [mm/day].

    FAO-56 (Allen et al. 1998, eq. 21-25): ``Ra = 24·60/π · Gsc · dr · (ωs sinφ sinδ +
    cosφ cosδ sin ωs)`` in MJ m⁻² day⁻¹ with ``Gsc = 0.0820`` MJ m⁻² min⁻¹, converted to mm/day by
    ×0.408 (1 / latent heat of vaporisation, 2.45 MJ/kg).

    Shapes:
        latitude_deg and day_of_year broadcast against each other (numpy arrays or tensors).
    """
    if isinstance(latitude_deg, Tensor) or isinstance(day_of_year, Tensor):
        lib = torch
        ref = (
            latitude_deg
            if isinstance(latitude_deg, Tensor) and latitude_deg.is_floating_point()
            else None
        )
        dtype = ref.dtype if ref is not None else torch.float64
        device = (latitude_deg if isinstance(latitude_deg, Tensor) else day_of_year).device
        latitude_deg = torch.as_tensor(latitude_deg, dtype=dtype, device=device)
        day_of_year = torch.as_tensor(day_of_year, device=device).to(dtype)
    else:
        lib = np
        latitude_deg = np.asarray(latitude_deg, dtype=np.float64)
        day_of_year = np.asarray(day_of_year, dtype=np.float64)
    phi = latitude_deg * (math.pi / 180.0)
    j = day_of_year
    dr = 1.0 + 0.033 * lib.cos(2.0 * math.pi * j / 365.0)
    delta = 0.409 * lib.sin(2.0 * math.pi * j / 365.0 - 1.39)
    x = -lib.tan(phi) * lib.tan(delta)
    x = lib.clip(x, -1.0, 1.0) if lib is np else x.clamp(-1.0, 1.0)
    omega_s = lib.arccos(x)
    ra_mj = (
        (24.0 * 60.0 / math.pi)
        * 0.0820
        * dr
        * (
            omega_s * lib.sin(phi) * lib.sin(delta)
            + lib.cos(phi) * lib.cos(delta) * lib.sin(omega_s)
        )
    )
    return 0.408 * ra_mj


def hargreaves_pet(tmin_c, tmax_c, latitude_deg, day_of_year):
    """Potential evapotranspiration by Hargreaves & Samani (1985) [mm/day].

    ``PET = 0.0023 · Ra · (Tmean + 17.8) · sqrt(max(Tmax − Tmin, 0))`` with Ra in mm/day from
    :func:`extraterrestrial_radiation_mm` and ``Tmean = (Tmax + Tmin)/2`` in °C; negative values
    (very cold days) are set to 0.

    Shapes:
        tmin_c, tmax_c: ``[N, T]`` °C; latitude_deg: ``[N, 1]`` (or broadcastable) degrees north;
        day_of_year: ``[T]`` or ``[1, T]`` (1..366). Result ``[N, T]`` mm/day.
    """
    ra = extraterrestrial_radiation_mm(latitude_deg, day_of_year)
    tmean = 0.5 * (tmax_c + tmin_c)
    if isinstance(tmin_c, Tensor):
        trange = (tmax_c - tmin_c).clamp_min(0.0)
        return (0.0023 * ra * (tmean + 17.8) * trange.sqrt()).clamp_min(0.0)
    trange = np.maximum(tmax_c - tmin_c, 0.0)
    return np.maximum(0.0023 * ra * (tmean + 17.8) * np.sqrt(trange), 0.0)


# Unit strings are parsed by pint with cf-xarray's registry, which reads CF / UDUNITS
# spellings ("mm d-1", "kg m-2 s-1", "m3 s-1", "degree_Celsius"). Only hydrological
# abbreviations pint does not define, and single-letter temperature spellings that pint reads
# as other units ("C" coulomb, "F" farad), are rewritten first.
UNIT_ALIASES: dict[str, str] = {
    "cfs": "ft^3/s",
    "cms": "m^3/s",
    "cumecs": "m^3/s",
    "mm/step": "mm",
    "acre": "international_acre",  # pint's "acre" is the US survey acre (4046.8726 m²)
    "acres": "international_acre",
    "inches": "inch",
    "inches/day": "inch/day",
    "cubic_feet_per_second": "ft^3/s",
    "cubic_meters_per_second": "m^3/s",
}
_TEMPERATURE_ALIASES: dict[str, str] = {
    **{k: "degC" for k in ("c", "°c", "celsius", "degreesc", "degreec", "deg_celsius")},
    **{k: "degC" for k in ("degrees_celsius", "degree_c", "degrees_c", "deg_c")},
    **{k: "degF" for k in ("f", "°f", "fahrenheit", "degreesf", "degreef", "deg_f")},
    **{k: "degF" for k in ("degree_fahrenheit", "degrees_fahrenheit", "degree_f", "degrees_f")},
    **{k: "K" for k in ("k", "kelvin")},
}
#: canonical units: name -> (pint unit, what it measures)
_CANONICAL: dict[str, tuple[str, str]] = {
    "mm": ("mm", "a water depth (per time step) or a depth rate"),
    "degC": ("degC", "a temperature"),
    "m3/s": ("m^3/s", "a discharge"),
    "km2": ("km^2", "an area"),
    "m": ("m", "a length"),
}
WATER_DENSITY_KG_M3 = 1000.0  # 1 kg m-2 of water = 1 mm


def unit_registry() -> Any:
    """The pint unit registry that reads unit strings (cf-xarray's: CF / UDUNITS spellings)."""
    global _REGISTRY
    if _REGISTRY is None:
        from cf_xarray.units import units

        if "international_acre" not in units:  # the acre of 43,560 international square feet
            units.define("international_acre = 43560 * international_foot ** 2")
        _REGISTRY = units
    return _REGISTRY


_REGISTRY: Any = None


def _parse(units: str, expected: str, variable: str) -> Any:
    """The pint unit of ``units`` (aliases first; then as written; then lower-case)."""
    import tokenize

    import pint

    # what pint's parser raises on a string that is not a unit expression
    not_a_unit = (pint.errors.PintError, tokenize.TokenError, SyntaxError, AssertionError)
    not_a_unit += (ZeroDivisionError, ValueError, TypeError, AttributeError)
    ureg = unit_registry()
    text = str(units).strip()
    key = text.lower().replace(" ", "")
    if expected == "degC" and key in _TEMPERATURE_ALIASES:
        return ureg.Unit(_TEMPERATURE_ALIASES[key])
    candidates = [UNIT_ALIASES.get(key), text, text.lower()]
    for candidate in (c for c in candidates if c):
        try:
            return ureg.parse_units(candidate)
        except not_a_unit:
            continue
    raise ValueError(
        f"variable {variable!r}: unknown units {units!r}; expected {expected!r} or any unit of "
        f"{_CANONICAL[expected][1]} that pint/UDUNITS knows"
    )


def _affine(unit: Any, target: str) -> tuple[float, float]:
    """``(scale, offset)`` with ``value_in_target = scale·value + offset``."""
    ureg = unit_registry()
    zero = ureg.Quantity(0.0, unit).to(target).magnitude
    one = ureg.Quantity(1.0, unit).to(target).magnitude
    return float(one - zero), float(zero)


@functools.lru_cache(maxsize=256)  # readers convert every window: parse each unit string once
def _conversion(
    units: str, expected: str, *, variable: str, step_seconds: float | None = None
) -> tuple[float, float]:
    """``(scale, offset)`` converting ``units`` to the canonical ``expected`` unit; for
    ``expected="mm"`` rates become depths per step of ``step_seconds`` and masses of water per
    area become depths."""
    if expected not in _CANONICAL:
        raise ValueError(f"expected unit must be one of {sorted(_CANONICAL)}, got {expected!r}")
    ureg = unit_registry()
    unit = _parse(units, expected, variable)
    dims = ureg.Quantity(1.0, unit).dimensionality
    target, what = _CANONICAL[expected]
    if expected == "mm":
        scale = 1.0
        if (
            dims == ureg.Quantity(1.0, "kg/m^2").dimensionality
            or dims == ureg.Quantity(1.0, "kg/m^2/s").dimensionality
        ):
            unit = unit / ureg.Unit("kg/m^3")  # mass per area of water → depth
            scale = 1.0 / WATER_DENSITY_KG_M3
            dims = ureg.Quantity(1.0, unit).dimensionality
        if dims == ureg.Quantity(1.0, "mm/s").dimensionality:
            if step_seconds is None:
                raise ValueError(
                    f"variable {variable!r}: units {units!r} are a rate; the time step is unknown"
                )
            factor, _ = _affine(unit, "mm/s")
            return scale * factor * float(step_seconds), 0.0
    if dims != ureg.Quantity(1.0, target).dimensionality:
        raise ValueError(
            f"variable {variable!r}: units {units!r} measure {dims}, expected {expected!r} ({what})"
        )
    factor, offset = _affine(unit, target)
    return (scale if expected == "mm" else 1.0) * factor, offset


def convert_units(value, units: str, expected: str, *, variable: str = "value"):
    """Convert ``value`` from ``units`` to the canonical ``expected`` unit (``"mm"``,
    ``"degC"``, ``"m3/s"``, ``"km2"``, ``"m"``); any unit pint (with CF / UDUNITS spellings)
    knows converts.

    Raises a ``ValueError`` naming the variable and the unit when the unit is unknown or
    measures another quantity (e.g. a temperature given where a depth is expected).
    """
    scale, offset = _conversion(units, expected, variable=variable)
    if scale == 1.0 and offset == 0.0:
        return value
    return value * scale + offset if offset != 0.0 else value * scale


def to_canonical(
    values: Any,
    units: str | None,
    expected: str,
    *,
    variable: str,
    step_seconds: float | None = None,
) -> Any:
    """Convert ``values`` given in ``units`` to the canonical ``expected`` unit.

    ``expected`` is ``"mm"`` (water depth per time step), ``"degC"`` or ``"m3/s"``. For depths a
    rate (``mm/day``, ``mm h-1``, ``kg m-2 s-1``, ``in/day``) is turned into a depth per step
    using ``step_seconds``; a plain depth (``mm``, ``in``) is taken as per step. ``units=None``
    means the canonical unit. Raises ``ValueError`` naming the variable and the unit when the unit
    is unknown or measures another quantity.
    """
    if units is None or str(units).strip() == "":
        return values
    scale, offset = _conversion(units, expected, variable=variable, step_seconds=step_seconds)
    if scale == 1.0 and offset == 0.0:
        return values
    return values * scale + offset if offset != 0.0 else values * scale

"""Unit conversions and forcing utilities: the one module where physical units change.

Conventions used across gnnhydro: water depths in mm per time step, discharge in m³/s, areas in
km², lengths in m, temperatures in °C, time steps given in seconds where a conversion needs them.
"""

from __future__ import annotations

import math
import re
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


# Known unit spellings → (canonical unit, converter). Canonical units: mm (depth per step),
# degC, m3/s, km2, m.
_UNIT_TABLE: dict[str, tuple[str, object]] = {}


def _register(canonical: str, converter, *spellings: str) -> None:
    for s in spellings:
        _UNIT_TABLE[s.lower().replace(" ", "")] = (canonical, converter)


def _identity(v):
    return v


_register("mm", _identity, "mm", "mm/day", "mmday-1", "mmd-1", "mm/d", "millimeters", "mm/step")
_register("mm", inches_to_mm, "in", "inch", "inches", "in/day", "inches/day")
_register("mm", lambda v: v * 1e3, "m", "m/day")
_register("degC", _identity, "c", "degc", "°c", "celsius", "degreesc", "deg_c", "degree_celsius")
_register("degC", fahrenheit_to_celsius, "f", "degf", "°f", "fahrenheit", "degreesf", "deg_f")
_register("degC", lambda v: v - 273.15, "k", "kelvin")
_register("m3/s", _identity, "m3/s", "m3s-1", "m^3/s", "m³/s", "cms", "cumecs")
_register("m3/s", cfs_to_m3s, "cfs", "ft3/s", "ft3s-1", "ft^3/s", "cubic_feet_per_second")
_register("km2", _identity, "km2", "km^2", "km²")
_register("km2", acres_to_km2, "acre", "acres")
_register("km2", lambda v: v * 1e-6, "m2", "m^2")


def convert_units(value, units: str, expected: str, *, variable: str = "value"):
    """Convert ``value`` from ``units`` to the canonical ``expected`` unit.

    Raises a ``ValueError`` naming the variable and the unit when the unit is unknown or
    measures another quantity (e.g. a temperature given where a depth is expected).
    """
    key = str(units).lower().replace(" ", "")
    if key not in _UNIT_TABLE:
        known = sorted(k for k, (c, _) in _UNIT_TABLE.items() if c == expected)
        raise ValueError(
            f"variable {variable!r}: unknown units {units!r}; expected {expected!r} or one of {known}"
        )
    canonical, converter = _UNIT_TABLE[key]
    if canonical != expected:
        raise ValueError(
            f"variable {variable!r}: units {units!r} measure {canonical!r}, expected {expected!r}"
        )
    return converter(value)


#: CF-style and other spellings, mapped to spellings of the table above.
UNIT_ALIASES: dict[str, str] = {
    "degree_fahrenheit": "degf",
    "degrees_fahrenheit": "degf",
    "degree_f": "degf",
    "degrees_f": "degf",
    "degreef": "degf",
    "degrees_celsius": "degc",
    "degree_c": "degc",
    "degrees_c": "degc",
    "degreec": "degc",
    "deg_celsius": "degc",
    "m3s^-1": "m3/s",
    "m^3s^-1": "m3/s",
    "m^3/s": "m3/s",
    "cubic_meters_per_second": "m3/s",
    "ft3/sec": "ft3/s",
    "ft^3s^-1": "ft3/s",
    "inch": "in",
    "millimeter": "mm",
    "millimetre": "mm",
    "millimetres": "mm",
    "kgm-2": "mm",
    "kg/m2": "mm",
    "kg/m^2": "mm",
}

# Rate suffixes of depth units: (pattern, seconds of the rate's time unit).
_RATE_SUFFIXES: tuple[tuple[str, float], ...] = (
    (r"(/day|/d|day-1|d-1|day\^-1|perday)$", 86_400.0),
    (r"(/hour|/hr|/h|h-1|hr-1|hour-1|h\^-1)$", 3_600.0),
    (r"(/s|/sec|s-1|s\^-1)$", 1.0),
)


def _key(units: str) -> str:
    return str(units).strip().lower().replace(" ", "")


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
    key = _key(units)
    if expected == "mm":
        factor = 1.0
        for pattern, seconds in _RATE_SUFFIXES:
            m = re.search(pattern, key)
            if m and key != "m3/s":
                depth = key[: m.start()]
                if depth == "":
                    break
                if step_seconds is None:
                    raise ValueError(
                        f"variable {variable!r}: units {units!r} are a rate; the time step is unknown"
                    )
                key = depth
                factor = step_seconds / seconds
                break
        key = UNIT_ALIASES.get(key, key)
        try:
            out = convert_units(values, key, expected, variable=variable)
        except ValueError as err:
            raise ValueError(
                f"variable {variable!r}: unknown or wrong units {units!r} ({err})"
            ) from None
        return out * factor if factor != 1.0 else out
    key = UNIT_ALIASES.get(key, key)
    try:
        return convert_units(values, key, expected, variable=variable)
    except ValueError as err:
        raise ValueError(
            f"variable {variable!r}: unknown or wrong units {units!r} ({err})"
        ) from None

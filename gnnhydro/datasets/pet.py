r"""Potential evapotranspiration (PET) from daily temperature (and radiation), by several methods.

One function, :func:`potential_evapotranspiration`, vectorised over nodes (numpy ``[N, T]`` in,
numpy ``[N, T]`` mm/day out), and a dict registry :data:`PET_METHODS` of the methods a dataset
may choose with its ``pet_method`` option:

``hargreaves`` (default)
    Hargreaves & Samani (1985), as FAO-56 eq. 52:
    :math:`PET = 0.0023\,R_a\,(T_{mean} + 17.8)\,\sqrt{\max(T_{max} - T_{min}, 0)}` with
    :math:`R_a` in mm/day (×0.408) and :math:`T_{mean} = (T_{max} + T_{min})/2` by definition
    (``tmean`` is not used). Negative values (:math:`T_{mean} < -17.8` °C) are set to 0. This is
    the hand-written :func:`gnnhydro.units.hargreaves_pet`, not :func:`pyet.hargreaves`: pyet
    divides :math:`R_a` by a temperature-dependent latent heat
    :math:`\lambda(T) = 2.501 - 0.002361\,T` MJ kg⁻¹ where FAO-56 and every dataset built so
    far use the constant 0.408 (≈ 1/2.45), which makes pyet's values 1.5 % lower on a typical
    day (up to 3.6 % on cold days) and would change every cached dataset.
``oudin``
    Oudin et al. (2005, J. Hydrol. 303, eq. 3), the PET GR4J is calibrated with (airGR's
    ``PE_Oudin``): :math:`PET = \frac{R_a}{\lambda\rho}\frac{T_{mean} + 5}{100}` for
    :math:`T_{mean} + 5 > 0`, else 0, with :math:`R_a` in MJ m⁻² d⁻¹, :math:`\lambda = 2.45`
    MJ kg⁻¹, :math:`\rho = 1000` kg m⁻³. Computed by :func:`pyet.oudin`, whose
    :math:`\lambda(T)` is replaced by the paper's constant (its result × λ(T)/2.45).
``hamon``
    Hamon (1961) as Oudin et al. (2005) write it (:func:`pyet.hamon`, ``method=0``):
    :math:`PET = (DL/12)^2 \exp(T_{mean}/16)` with the daylight hours :math:`DL` of FAO-56
    eq. 34. Always positive: nothing to clip.
``priestley_taylor``
    Priestley & Taylor (1972), :func:`pyet.priestley_taylor` with α = 1.26 and soil heat flux
    G = 0 (daily): :math:`PET = \alpha\frac{\Delta}{\Delta + \gamma}\frac{R_n - G}{\lambda(T)}`
    (Δ FAO-56 eq. 13, γ = 0.000665 P eq. 8 with P from ``elevation_m`` eq. 7,
    λ(T) = 2.501 − 0.002361 T). Needs radiation: ``net_radiation`` :math:`R_n`, or incoming
    shortwave ``radiation`` :math:`R_s` from which :func:`pyet.calc_rad_net` derives
    :math:`R_n` (FAO-56 eqs. 37–39: albedo 0.23, actual vapour pressure e°(Tmin), eq. 48,
    :math:`R_s/R_{so}` clipped to [0.3, 1] as ASCE-EWRI 2005).
    Negative values (net radiation < 0) are set to 0.

All temperatures in °C, radiation in MJ m⁻² d⁻¹, latitude in degrees north, daily steps.
NaN inputs give NaN outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gnnhydro.units import hargreaves_pet

__all__ = [
    "potential_evapotranspiration",
    "check_pet_method",
    "PET_METHODS",
    "DEFAULT_PET_METHOD",
    "OUDIN_LATENT_HEAT_MJ_KG",
]

DEFAULT_PET_METHOD = "hargreaves"
#: Latent heat of vaporisation of Oudin et al. (2005) and airGR's ``PE_Oudin`` [MJ kg⁻¹].
OUDIN_LATENT_HEAT_MJ_KG = 2.45


def _frame(a: np.ndarray, index: Any) -> Any:
    """``[N, T]`` numpy → xarray ``DataArray`` ``[time, node]`` (the layout pyet vectorises)."""
    import xarray as xr

    return xr.DataArray(np.asarray(a, np.float64).T, coords={"time": index}, dims=("time", "node"))


def _nodes(a: np.ndarray) -> Any:
    import xarray as xr

    return xr.DataArray(np.asarray(a, np.float64), dims=("node",))


def _out(pet: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(pet, np.float64).T)


def _hargreaves(v: dict[str, Any]) -> np.ndarray:
    return hargreaves_pet(v["tmin"], v["tmax"], v["latitude_deg"][:, None], v["doy"][None, :])


def _oudin(v: dict[str, Any]) -> np.ndarray:
    import pyet

    tmean = _frame(v["tmean"], v["index"])
    pet = pyet.oudin(tmean, _nodes(np.deg2rad(v["latitude_deg"])))
    return _out(pet * (pyet.calc_lambda(tmean) / OUDIN_LATENT_HEAT_MJ_KG))


def _hamon(v: dict[str, Any]) -> np.ndarray:
    import pyet

    tmean = _frame(v["tmean"], v["index"])
    return _out(pyet.hamon(tmean, _nodes(np.deg2rad(v["latitude_deg"])), method=0))


def _priestley_taylor(v: dict[str, Any]) -> np.ndarray:
    import pyet

    if v["elevation_m"] is None:
        raise ValueError(f"{v['what']}pet_method 'priestley_taylor' needs elevation_m (pressure)")

    def frame(a: np.ndarray) -> Any:
        return _frame(a, v["index"])

    tmean = frame(v["tmean"])
    elevation = _nodes(v["elevation_m"])
    if v["net_radiation"] is not None:
        rn = frame(v["net_radiation"])
    elif v["radiation"] is not None:
        tmin = frame(v["tmin"])
        rn = pyet.calc_rad_net(
            tmean,
            rs=frame(v["radiation"]),
            lat=_nodes(np.deg2rad(v["latitude_deg"])),
            tmax=frame(v["tmax"]),
            tmin=tmin,
            elevation=elevation,
            ea=pyet.calc_e0(tmin),  # dew point ≈ Tmin (FAO-56 eq. 48): no humidity needed
        )
    else:
        raise ValueError(
            f"{v['what']}pet_method 'priestley_taylor' needs radiation, which the data do not have"
        )
    return _out(pyet.priestley_taylor(tmean, rn=rn, elevation=elevation, alpha=1.26))


#: PET methods by name: each takes the prepared inputs and returns ``[N, T]`` mm/day.
PET_METHODS: dict[str, Callable[[dict[str, Any]], np.ndarray]] = {
    "hargreaves": _hargreaves,
    "oudin": _oudin,
    "hamon": _hamon,
    "priestley_taylor": _priestley_taylor,
}


def check_pet_method(method: str, what: str = "") -> str:
    """``method`` if it is a key of :data:`PET_METHODS`, else a ``ValueError`` naming the choices
    (``what`` prefixes the message, e.g. the dataset's name)."""
    if method not in PET_METHODS:
        raise ValueError(
            f"{what}unknown pet_method {method!r}; choose one of {', '.join(PET_METHODS)}"
        )
    return method


def potential_evapotranspiration(
    method: str,
    *,
    tmin: np.ndarray,
    tmax: np.ndarray,
    latitude_deg: np.ndarray | float,
    time: Any,
    tmean: np.ndarray | None = None,
    radiation: np.ndarray | None = None,
    net_radiation: np.ndarray | None = None,
    elevation_m: np.ndarray | float | None = None,
    what: str = "",
) -> np.ndarray:
    """Daily potential evapotranspiration of every node by ``method`` (module docstring).

    Args:
        method: a key of :data:`PET_METHODS` (``hargreaves``, ``oudin``, ``hamon``,
            ``priestley_taylor``).
        tmin, tmax: daily minimum / maximum air temperature [°C].
        latitude_deg: latitude of each node [° north].
        time: the days (datetime64 or anything ``pandas.DatetimeIndex`` takes), daily steps.
        tmean: daily mean temperature [°C] (default ``(tmin + tmax)/2``; not used by
            ``hargreaves``, whose definition is the mean of the extremes).
        radiation: incoming shortwave (solar) radiation [MJ m⁻² d⁻¹] (``priestley_taylor``).
        net_radiation: net radiation [MJ m⁻² d⁻¹] (``priestley_taylor``; preferred over
            ``radiation`` when both are given).
        elevation_m: elevation of each node [m] (``priestley_taylor``: air pressure).
        what: prefix of error messages (e.g. ``"SyntheticRiverBasin: "``).

    Returns:
        ``[N, T]`` float64 PET [mm/day].

    Shapes:
        tmin, tmax, tmean, radiation, net_radiation: ``[N, T]``; latitude_deg, elevation_m:
        ``[N]`` (or scalars); time: ``[T]``.
    """
    import pandas as pd

    check_pet_method(method, what)
    tmin = np.asarray(tmin, np.float64)
    tmax = np.asarray(tmax, np.float64)
    if tmin.ndim != 2 or tmax.shape != tmin.shape:
        raise ValueError(f"{what}PET: tmin {tmin.shape} and tmax {tmax.shape} must both be [N, T]")
    n, t_len = tmin.shape
    index = pd.DatetimeIndex(np.asarray(time, "datetime64[ns]"))
    if index.shape != (t_len,):
        raise ValueError(f"{what}PET: time has {index.shape[0]} days, the series {t_len}")
    lat = np.broadcast_to(np.asarray(latitude_deg, np.float64), (n,))
    if not (np.abs(lat) <= 90.0).all():
        raise ValueError(f"{what}PET: latitude_deg must be in [-90, 90] degrees north")

    def field(a: np.ndarray | None, name: str) -> np.ndarray | None:
        if a is None:
            return None
        a = np.asarray(a, np.float64)
        if a.shape != (n, t_len):
            raise ValueError(f"{what}PET: {name} {a.shape} must be [N, T] = {(n, t_len)}")
        return a

    inputs = {
        "tmin": tmin,
        "tmax": tmax,
        "tmean": field(tmean, "tmean") if tmean is not None else 0.5 * (tmin + tmax),
        "radiation": field(radiation, "radiation"),
        "net_radiation": field(net_radiation, "net_radiation"),
        "elevation_m": None
        if elevation_m is None
        else np.broadcast_to(np.asarray(elevation_m, np.float64), (n,)),
        "latitude_deg": lat,
        "index": index,
        "doy": index.day_of_year.to_numpy().astype(np.float64),
        "what": what,
    }
    return PET_METHODS[method](inputs)

"""Hydrological signatures of observed discharge: what a gauge knows about its basin.

Signatures summarise a gauge's record in a few numbers that classical regionalization transfers
to ungauged places (Sawicz et al. 2011, HESS 15, 2895; Addor et al. 2018, WRR 54, 8792, the
CAMELS signatures). All are computed from the days with an observation (NaN elsewhere):

``q_mean``
    mean specific discharge [mm/day]: ``Q · 86.4 / A`` with Q in m³/s and the drainage area A in
    km².
``runoff_ratio``
    ``q_mean`` over the basin-mean precipitation of the same days [-] (NaN without
    precipitation).
``baseflow_index``
    share of the Lyne–Hollick baseflow (α = 0.925, forward–backward–forward passes; Ladson et
    al. 2013, Aust. J. Water Res. 17) in the total flow [-]; gaps linearly interpolated for the
    filter only.
``fdc_slope``
    slope of the flow-duration curve between the 33 % and 66 % exceedance flows in log space,
    ``(ln q33 − ln q66) / (0.66 − 0.33)`` (Sawicz et al. 2011) [-].
``q95``, ``q5``
    high-flow (95th percentile: 5 % exceedance) and low-flow (5th percentile) specific
    discharge [mm/day].
``season_cos``, ``season_sin``
    the flow-weighted mean of ``(cos, sin)(2π · day of year / 365.25)`` [-]: direction and
    concentration of the flow's timing in the year (a circular statistic; 0 = no seasonality).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SIGNATURE_NAMES", "SIGNATURE_UNITS", "hydrological_signatures", "lyne_hollick_baseflow"]

SIGNATURE_NAMES = (
    "q_mean",
    "runoff_ratio",
    "baseflow_index",
    "fdc_slope",
    "q95",
    "q5",
    "season_cos",
    "season_sin",
)
SIGNATURE_UNITS = ("mm/day", "1", "1", "1", "mm/day", "mm/day", "1", "1")

#: m³/s over 1 km² for one day, in mm
_MM_PER_DAY_PER_M3S_KM2 = 86.4
#: added to specific discharge before logarithms [mm/day]
_LOG_FLOOR = 1e-3


def lyne_hollick_baseflow(q: np.ndarray, alpha: float = 0.925, passes: int = 3) -> np.ndarray:
    """Baseflow of a gap-free series by the Lyne–Hollick digital filter (alternating passes).

    Each pass filters quickflow ``f_t = α f_{t−1} + (1 + α)/2 (q_t − q_{t−1})``, clipped to
    ``[0, q_t]``; baseflow ``q − f``; the next pass filters the baseflow in the other direction.

    Shapes:
        q ``[T]`` (any discharge unit) → ``[T]`` in the same unit.
    """
    base = np.asarray(q, dtype=np.float64).copy()
    for k in range(passes):
        series = base if k % 2 == 0 else base[::-1]
        quick = np.zeros_like(series)
        for t in range(1, series.size):
            value = alpha * quick[t - 1] + 0.5 * (1.0 + alpha) * (series[t] - series[t - 1])
            quick[t] = min(max(value, 0.0), series[t])
        filtered = series - quick
        base = filtered if k % 2 == 0 else filtered[::-1]
    return base


def hydrological_signatures(
    discharge: np.ndarray,
    drainage_area_km2: np.ndarray,
    day_of_year: np.ndarray,
    precipitation: np.ndarray | None = None,
    *,
    min_days: int = 180,
) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`SIGNATURE_NAMES` of each gauge and whether it had enough data.

    Args:
        discharge: observed discharge [m³/s], NaN where missing.
        drainage_area_km2: each gauge's drainage area [km²].
        day_of_year: day of year (1–366) of every step.
        precipitation: basin-mean precipitation [mm/day] (``None``: no runoff ratio).
        min_days: steps with an observation a gauge needs for signatures; fewer: not available.

    Shapes:
        discharge ``[G, T]``, drainage_area_km2 ``[G]``, day_of_year ``[T]``, precipitation
        ``[G, T]`` → signatures ``[G, 8]`` (NaN where not available), available ``[G]`` bool.
    """
    q = np.asarray(discharge, dtype=np.float64)
    if q.ndim != 2:
        raise ValueError(f"signatures need discharge [G, T], got shape {list(q.shape)}")
    area = np.asarray(drainage_area_km2, dtype=np.float64)
    bad = np.flatnonzero(~(area > 0))
    if bad.size:
        raise ValueError(f"signatures need positive drainage areas; gauge rows {bad[:10].tolist()} have {area[bad[:10]].tolist()} km²")
    specific = q * _MM_PER_DAY_PER_M3S_KM2 / area[:, None]
    angle = 2.0 * np.pi * np.asarray(day_of_year, dtype=np.float64) / 365.25
    out = np.full((q.shape[0], len(SIGNATURE_NAMES)), np.nan)
    available = np.zeros(q.shape[0], dtype=bool)
    for g in range(q.shape[0]):
        valid = np.isfinite(specific[g]) & (specific[g] >= 0)
        if valid.sum() < max(int(min_days), 2):
            continue
        available[g] = True
        s = specific[g, valid]
        mean = s.mean()
        ratio = np.nan
        if precipitation is not None:
            p = np.asarray(precipitation[g], dtype=np.float64)[valid]
            if np.isfinite(p).all() and p.mean() > 0:
                ratio = mean / p.mean()
        filled = np.interp(np.arange(q.shape[1]), np.flatnonzero(valid), s)
        first, last = np.flatnonzero(valid)[[0, -1]]
        span = filled[first : last + 1]
        bfi = lyne_hollick_baseflow(span).sum() / max(span.sum(), 1e-12)
        q33, q66 = np.percentile(s, [67.0, 34.0])  # 33 % and 66 % exceedance
        slope = (np.log(q33 + _LOG_FLOOR) - np.log(q66 + _LOG_FLOOR)) / (0.66 - 0.33)
        high, low = np.percentile(s, [95.0, 5.0])
        weight = s / max(s.sum(), 1e-12)
        out[g] = [
            mean,
            ratio,
            bfi,
            slope,
            high,
            low,
            float((weight * np.cos(angle[valid])).sum()),
            float((weight * np.sin(angle[valid])).sum()),
        ]
    return out, available

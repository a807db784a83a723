"""Shared input checks and unit handling of the dataset readers. Every check raises a
``ValueError`` naming the offending variable, ids, time or unit; nothing is dropped silently.
Values that are possible but physically implausible (a temperature that looks like kelvin) get
a ``UserWarning`` naming the variable and the ids.

``infer_step_seconds`` and ``match_ids`` live in :mod:`gnnhydro.checks` (shared with the file
readers of :mod:`gnnhydro.routing.io`) and are re-exported here."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from gnnhydro.checks import infer_step_seconds, match_ids
from gnnhydro.graph.errors import format_ids
from gnnhydro.units import UNIT_ALIASES, to_canonical

__all__ = [
    "to_canonical",
    "infer_step_seconds",
    "check_finite",
    "match_ids",
    "forcing_summary",
    "check_forcing_plausible",
    "check_item_forcing",
    "UNIT_ALIASES",
    "TEMPERATURE_RANGE_DEGC",
]

#: Plausible range of air temperature in °C (records: −89.2 °C at Vostok, 56.7 °C in Death
#: Valley), with a small margin.
TEMPERATURE_RANGE_DEGC = (-95.0, 65.0)
#: Mean temperatures (read as °C) above these thresholds look like kelvin / degrees Fahrenheit:
#: no place on Earth has a mean air temperature above ~35 °C, kelvin values are ~230–320 and
#: Fahrenheit means of warm places ~60–95.
_KELVIN_MEAN_ABOVE = 150.0
_FAHRENHEIT_MEAN_ABOVE = 45.0
#: Forcing variables that are water depths and must not be negative.
_NON_NEGATIVE = ("precipitation", "pet")


def check_finite(
    values: np.ndarray,
    *,
    variable: str,
    ids: Sequence[Hashable],
    time: np.ndarray,
    axis_time: int = 1,
) -> None:
    """Raise ``ValueError`` naming the variable, the ids and the first time with NaN/inf values.

    Shapes:
        values ``[N, T]`` (``axis_time=1``) or ``[T, N]`` (``axis_time=0``).
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    per_id = bad.any(axis=axis_time)
    per_t = bad.any(axis=1 - axis_time)
    first = int(np.argmax(per_t))
    bad_ids = [ids[i] for i in np.flatnonzero(per_id)]
    raise ValueError(
        f"forcing variable {variable!r} has NaN/inf values at ids {format_ids(bad_ids)}; first at time "
        f"{np.asarray(time)[first]}. Forcing must be complete (fill or drop those nodes)."
    )


def forcing_summary(values: np.ndarray, *, axis_time: int = 1) -> dict[str, np.ndarray]:
    """Per-id ``min``, ``mean`` and ``max`` of one forcing variable (NaN ignored).

    Shapes:
        values ``[N, T]`` (``axis_time=1``) or ``[T, N]`` (``axis_time=0``) → each ``[N]``.
    """
    v = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():  # all-NaN rows: NaN statistics (check_finite reports them)
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "min": np.nanmin(v, axis=axis_time),
            "mean": np.nanmean(v, axis=axis_time),
            "max": np.nanmax(v, axis=axis_time),
        }


def _units_hint(units: str | None, suggestion: str) -> str:
    if units is None or str(units).strip() == "":
        return f"it has no units attribute, so °C was assumed: give it units {suggestion!r} (converted on load) or convert it to °C"
    return f"its units are {units!r}: correct them ({suggestion!r}) or convert the values to °C"


def check_forcing_plausible(
    variable: str,
    summary: dict[str, np.ndarray],
    *,
    ids: Sequence[Hashable],
    what: str,
    units: str | None = None,
) -> None:
    """Check one forcing variable, in canonical units, for physically implausible values.

    * ``precipitation`` or ``pet`` below 0 → ``ValueError`` naming the ids (water depths are
      non-negative; ERA5's potential evaporation, negative for evaporation, must be negated).
    * ``temperature`` whose mean looks like kelvin (> 150) or degrees Fahrenheit (> 45), or with
      values outside :data:`TEMPERATURE_RANGE_DEGC` → ``UserWarning`` naming the ids.

    ``summary`` holds per-id ``min``/``mean``/``max`` (see :func:`forcing_summary`), in the order
    of ``ids``; ``units`` is the units attribute the file gave (``None``: none, canonical
    assumed), used in the hint only. Other variables are not checked.
    """
    lo, mean, hi = (np.asarray(summary[k], dtype=np.float64) for k in ("min", "mean", "max"))
    if variable in _NON_NEGATIVE:
        bad = np.flatnonzero(lo < 0)
        if bad.size:
            hint = (
                " (ERA5's potential evaporation is negative for evaporation: use its negative)"
                if variable == "pet"
                else ""
            )
            raise ValueError(
                f"{what}: forcing variable {variable!r} is negative at ids "
                f"{format_ids([ids[i] for i in bad])} (minimum {float(lo[bad].min()):g} mm/step); "
                f"{variable} is a water depth and must be >= 0{hint}."
            )
        return
    if variable != "temperature":
        return
    kelvin = mean > _KELVIN_MEAN_ABOVE
    fahrenheit = (mean > _FAHRENHEIT_MEAN_ABOVE) & ~kelvin
    for mask, scale, suggestion in (
        (kelvin, "kelvin", "K"),
        (fahrenheit, "degrees Fahrenheit", "degF"),
    ):
        if mask.any():
            bad = np.flatnonzero(mask)
            warnings.warn(
                f"{what}: temperature looks like {scale} (mean {float(np.median(mean[bad])):.0f}, "
                f"taken as °C) at ids {format_ids([ids[i] for i in bad])}; "
                f"{_units_hint(units, suggestion)}.",
                UserWarning,
                stacklevel=3,
            )
    t_lo, t_hi = TEMPERATURE_RANGE_DEGC
    outside = ((lo < t_lo) | (hi > t_hi)) & ~kelvin & ~fahrenheit
    if outside.any():
        bad = np.flatnonzero(outside)
        warnings.warn(
            f"{what}: temperature outside the plausible range {t_lo:g}..{t_hi:g} °C at ids "
            f"{format_ids([ids[i] for i in bad])} (min {float(lo[bad].min()):g}, max "
            f"{float(hi[bad].max()):g} °C).",
            UserWarning,
            stacklevel=3,
        )


def check_item_forcing(graph: Any, *, what: str) -> None:
    """:func:`check_forcing_plausible` for every named variable of an item's ``forcing``
    ``[N, T, F]`` (canonical units); items without ``forcing`` are skipped."""
    forcing = getattr(graph, "forcing", None)
    names = getattr(graph, "forcing_names", None)
    if forcing is None or not names:
        return
    values = forcing.detach().cpu().numpy() if hasattr(forcing, "detach") else np.asarray(forcing)
    ids = list(getattr(graph, "node_id", None) or range(values.shape[0]))
    for k, name in enumerate(names):
        if name in _NON_NEGATIVE or name == "temperature":
            check_forcing_plausible(name, forcing_summary(values[:, :, k]), ids=ids, what=what)

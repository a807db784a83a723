"""Shared input checks and unit handling of the dataset readers. Every check raises a
``ValueError`` naming the offending variable, ids, time or unit; nothing is dropped silently."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from gnnhydro.graph.errors import format_ids
from gnnhydro.units import UNIT_ALIASES, to_canonical

__all__ = [
    "to_canonical",
    "infer_step_seconds",
    "check_finite",
    "match_ids",
    "UNIT_ALIASES",
]


def infer_step_seconds(
    time: np.ndarray, *, what: str = "time series", step_seconds: float | None = None
) -> float:
    """The (single) time step of ``time`` in seconds; raise ``ValueError`` naming the first gap.

    ``time`` must be strictly increasing with one constant step (given, or the first one). With a
    single time step, ``step_seconds`` must be given (else one day is assumed).
    """
    t = np.asarray(time, dtype="datetime64[ns]")
    if t.size == 0:
        raise ValueError(f"{what}: the time axis is empty")
    if np.isnat(t).any():
        raise ValueError(
            f"{what}: the time axis has missing (NaT) values at positions {np.flatnonzero(np.isnat(t))[:20].tolist()}"
        )
    if t.size == 1:
        return float(step_seconds) if step_seconds is not None else 86_400.0
    diffs = np.diff(t).astype(np.int64)
    step = int(round(step_seconds * 1e9)) if step_seconds is not None else int(diffs[0])
    if step <= 0:
        raise ValueError(f"{what}: time is not increasing at {t[0]} -> {t[1]}")
    bad = np.flatnonzero(diffs != step)
    if bad.size:
        i = int(bad[0])
        kind = "gap" if diffs[i] > step else "irregular/duplicate step"
        raise ValueError(
            f"{what}: time {kind} between {t[i]} and {t[i + 1]} (step {diffs[i] / 1e9:g} s, expected "
            f"{step / 1e9:g} s); {bad.size} irregular step(s) in all. Fill missing steps with NaN "
            "(observations) or complete the forcing."
        )
    return step / 1e9


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


def match_ids(
    series_ids: Sequence[Hashable],
    network_ids: Sequence[Hashable],
    *,
    what: str,
    require_all_network: bool = True,
) -> np.ndarray:
    """Positions in ``series_ids`` of each network id (network order).

    Raises ``ValueError`` naming ids of the series that are not in the network, and (when
    ``require_all_network``) network ids that the series lacks, and duplicate series ids.
    Missing network ids get position ``-1`` when not required.
    """
    from gnnhydro.graph.river_graph import normalize_id

    series = [normalize_id(i) for i in series_ids]
    network = [normalize_id(i) for i in network_ids]
    lookup: dict = {}
    dups = []
    for k, i in enumerate(series):
        if i in lookup:
            dups.append(i)
        lookup.setdefault(i, k)
    if dups:
        raise ValueError(f"{what}: duplicate ids {format_ids(sorted(set(dups), key=str))}")
    net_set = set(network)
    extra = [i for i in series if i not in net_set]
    if extra:
        raise ValueError(f"{what}: ids not in the river network: {format_ids(extra)}")
    missing = [i for i in network if i not in lookup]
    if missing and require_all_network:
        raise ValueError(f"{what}: network ids missing from the time series: {format_ids(missing)}")
    return np.array([lookup.get(i, -1) for i in network], dtype=np.int64)

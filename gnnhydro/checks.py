"""Checks shared by every reader of time series (datasets and ``gnnhydro route`` alike): ids
matched by id, never by position, and time axes with one constant step. Each raises a
``ValueError`` naming the offending ids or the first gap; nothing is dropped silently.

This module imports nothing of :mod:`gnnhydro.datasets` or :mod:`gnnhydro.routing`, so both can
use it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from gnnhydro.graph.errors import format_ids

__all__ = ["infer_step_seconds", "match_ids"]


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

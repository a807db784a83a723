"""What the training gauges know, as node inputs of regionalization parameterizers.

:func:`gauge_table` summarises every training gauge from its observations **in the training
period only** (hydrological signatures, :mod:`gnnhydro.datasets.signatures`), with its basin's
area-weighted centroid; held-out gauges and other periods never enter it, so nothing of what
is evaluated leaks into the inputs. The table is saved in the run directory
(``gauge_table.csv``) so that ``predict`` gives a trained model the same context on any graph.

:func:`attach_gauge_context` turns the table into node-level tensors of a graph:

* ``gauge_signatures`` ``[N, 8]``: the signatures of the training gauge at that node
  (log10 for ``q_mean``, ``q95``, ``q5``; standardised over the table's gauges; 0 where there
  is none or a signature is undefined), ``signature_mask`` ``[N]`` 1 at training gauges with
  enough observations;
* ``donor_row`` / ``donor_weight`` ``[N, k]``: the training basin each node lies in (the
  nearest training gauge downstream of it, weight 1), or else the ``k`` training basins with the
  nearest centroids, weighted by inverse squared distance;
* ``proximity_signatures`` ``[N, 8]`` / ``proximity_distance`` ``[N]``: the signatures of the
  ``k`` nearest training gauges whose basin does not hold the node, inverse-squared-distance
  weighted, and the log10 distance to the nearest (:func:`proximity_signatures`);
  ``proximity_row`` / ``proximity_weight`` ``[N, k]``: those gauges (table rows) and weights
  (rows sum to 1, or 0 where a node has none), for a learned residual transferred the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gnnhydro.datasets.signatures import SIGNATURE_NAMES, hydrological_signatures
from gnnhydro.graph.regional import drainage_area, great_circle_km
from gnnhydro.graph.topology import NodeWalker

__all__ = [
    "gauge_table",
    "attach_gauge_context",
    "proximity_signatures",
    "needs_gauge_context",
    "GAUGE_TABLE",
]

GAUGE_TABLE = "gauge_table.csv"
#: signatures standardised in log10 (positive, skewed)
_LOG_SIGNATURES = ("q_mean", "q95", "q5")
#: smallest distance of the inverse-distance weights [km]
_MIN_DISTANCE_KM = 1.0


def needs_gauge_context(parameterizer_name: str) -> bool:
    """Whether the registered parameterizer reads the training gauges' context."""
    from gnnhydro.nn import get_parameterizer

    return bool(getattr(get_parameterizer(parameterizer_name), "needs_gauge_context", False))


def _basins(graph: Any, gauges: np.ndarray) -> list[np.ndarray]:
    walker = NodeWalker(graph.edge_index, int(graph.num_nodes))
    return [walker.upstream(int(g)).numpy() for g in gauges]


def gauge_table(
    graph: Any,
    gauges: torch.Tensor,
    discharge: torch.Tensor | np.ndarray,
    time: np.ndarray,
    precipitation: torch.Tensor | np.ndarray | None = None,
    *,
    min_days: int = 180,
) -> pd.DataFrame:
    """One row per training gauge: ``gauge_id``, ``node_id``, ``lon``/``lat`` of its basin's
    area-weighted centroid [degrees], ``area_km2`` (drainage area), ``available`` and the
    :data:`~gnnhydro.datasets.signatures.SIGNATURE_NAMES`.

    Args:
        graph: the river graph (``pos`` for centroids; NaN centroids without it).
        gauges: node indices of the training gauges ``[G]``.
        discharge: their observed discharge over the training period ``[G, T]`` m³/s (NaN gaps).
        time: the dates of those steps ``[T]``.
        precipitation: forcing precipitation of every node over the same steps ``[N, T]``
            mm/day (basin means for the runoff ratio), or ``None``.
        min_days: observed steps a gauge needs for its signatures.
    """
    gauges_np = torch.as_tensor(gauges).long().numpy()
    basins = _basins(graph, gauges_np)
    local = getattr(graph, "area_km2", None)
    local = np.ones(int(graph.num_nodes)) if local is None else local.double().numpy()
    pos = getattr(graph, "pos", None)
    pos = None if pos is None else np.asarray(pos, dtype=np.float64)
    area = drainage_area(graph).double().numpy()[gauges_np]
    p_basin = None
    if precipitation is not None:
        p = np.asarray(precipitation, dtype=np.float64)
        p_basin = np.stack(
            [(p[b] * local[b, None]).sum(0) / max(local[b].sum(), 1e-12) for b in basins]
        )
    day_of_year = pd.DatetimeIndex(np.asarray(time)).dayofyear.to_numpy()
    values, available = hydrological_signatures(
        np.asarray(discharge, dtype=np.float64), area, day_of_year, p_basin, min_days=min_days
    )
    centroid = np.full((len(basins), 2), np.nan)
    if pos is not None:
        for k, b in enumerate(basins):
            w = local[b] / max(local[b].sum(), 1e-12)
            centroid[k] = (pos[b] * w[:, None]).sum(0)
    node_ids = list(getattr(graph, "node_id", range(int(graph.num_nodes))))
    gauge_names = dict(
        zip(graph.gauge_index.tolist(), [str(g) for g in graph.gauge_id], strict=True)
    )
    frame = pd.DataFrame(
        {
            "gauge_id": [gauge_names[int(g)] for g in gauges_np],
            "node_id": [str(node_ids[int(g)]) for g in gauges_np],
            "lon": centroid[:, 0],
            "lat": centroid[:, 1],
            "area_km2": area,
            "available": available,
        }
    )
    for j, name in enumerate(SIGNATURE_NAMES):
        frame[name] = values[:, j]
    return frame


def standardised_signatures(table: pd.DataFrame) -> np.ndarray:
    """``[G, 8]`` signatures of the table's gauges, log10 where skewed, standardised over the
    available gauges; 0 where not available or undefined."""
    values = table[list(SIGNATURE_NAMES)].to_numpy(dtype=np.float64).copy()
    for j, name in enumerate(SIGNATURE_NAMES):
        if name in _LOG_SIGNATURES:
            values[:, j] = np.log10(np.clip(values[:, j], 0.0, None) + 1e-3)
    ok = table["available"].to_numpy(dtype=bool)
    values[~ok] = np.nan
    mean = np.nanmean(values, axis=0) if ok.any() else np.zeros(values.shape[1])
    std = np.nanstd(values, axis=0) if ok.sum() > 1 else np.ones(values.shape[1])
    std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
    out = (values - np.nan_to_num(mean)) / std
    return np.nan_to_num(out, nan=0.0)


def attach_gauge_context(graph: Any, table: pd.DataFrame, donors: int = 4) -> Any:
    """Put the training gauges' context on ``graph`` (see the module docstring); gauges are
    matched to nodes by ``node_id``; a gauge absent from the graph still serves as a donor by
    its centroid. Returns ``graph``.

    Shapes:
        → gauge_signatures ``[N, 8]``, signature_mask ``[N]``, donor_row ``[N, k]`` int64,
        donor_weight ``[N, k]`` float32, ``k = min(donors, G)``.
    """
    n = int(graph.num_nodes)
    g = len(table)
    if g == 0:
        raise ValueError("the gauge context needs at least one training gauge")
    index_of = {str(v): i for i, v in enumerate(getattr(graph, "node_id", range(n)))}
    rows = [
        (k, index_of[str(nid)]) for k, nid in enumerate(table["node_id"]) if str(nid) in index_of
    ]
    signatures = standardised_signatures(table)
    node_signatures = torch.zeros(n, len(SIGNATURE_NAMES))
    mask = torch.zeros(n)
    available = table["available"].to_numpy(dtype=bool)
    for k, node in rows:
        if available[k]:
            node_signatures[node] = torch.from_numpy(signatures[k]).float()
            mask[node] = 1.0
    graph.gauge_signatures = node_signatures
    graph.signature_mask = mask

    k = min(int(donors), g)
    donor_row = torch.full((n, k), -1, dtype=torch.long)
    donor_weight = torch.zeros(n, k)
    # each node in the basin of its nearest training gauge downstream: smaller basins first
    present = sorted(rows, key=lambda r: float(table["area_km2"].iloc[r[0]]))
    if present:
        walker = NodeWalker(graph.edge_index, n)
        for row, node in present:
            basin = walker.upstream(node)
            free = basin[donor_row[basin, 0] < 0]
            donor_row[free] = row
            donor_weight[free, 0] = 1.0
    outside = (donor_row[:, 0] < 0).nonzero().flatten()
    if outside.numel():
        pos = getattr(graph, "pos", None)
        centroids = table[["lon", "lat"]].to_numpy(dtype=np.float64)
        if pos is None or not np.isfinite(centroids).all():
            raise ValueError(
                "donor weights of nodes outside the training basins need positions: graph.pos "
                "(lon, lat) and basin centroids in the gauge table"
            )
        lonlat = np.asarray(pos, dtype=np.float64)[outside.numpy()]
        distance = great_circle_km(
            np.repeat(lonlat[:, None, :], g, axis=1),
            np.broadcast_to(centroids, (len(lonlat), g, 2)),
        )
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
        d = np.take_along_axis(distance, nearest, axis=1).clip(_MIN_DISTANCE_KM, None)
        w = 1.0 / d**2
        donor_row[outside] = torch.from_numpy(nearest)
        donor_weight[outside] = torch.from_numpy(w / w.sum(axis=1, keepdims=True)).float()
    donor_row.clamp_(min=0)  # unused slots (weight 0) point at a valid row
    graph.donor_row = donor_row
    graph.donor_weight = donor_weight
    (
        graph.proximity_signatures,
        graph.proximity_distance,
        graph.proximity_row,
        graph.proximity_weight,
    ) = proximity_signatures(graph, table, signatures, rows, k=int(donors))
    return graph


def proximity_signatures(
    graph: Any,
    table: pd.DataFrame,
    signatures: np.ndarray,
    rows: list[tuple[int, int]],
    *,
    k: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signatures transferred by spatial proximity, as a held-out basin would see them.

    For every node: the inverse-squared-distance weighted mean of the standardised signatures of
    the ``k`` nearest available training gauges (by basin centroid) whose basin does **not**
    contain the node, and the log10 distance (km) to the nearest of them.  A training gauge's
    own record never enters its own nodes' value, so in training every node sees what a
    held-out node sees (Oudin et al. 2008's proximity transfer, as an input that the message
    passing refines).  Also returned: which gauges (table rows) and weights make each node's
    value, so that a learned quantity per training basin can be transferred the same way.
    Without node positions or donors all are zero.

    Shapes:
        signatures ``[G, 8]`` (:func:`standardised_signatures`); rows ``(table row, node)``
        of the gauges on the graph → signatures ``[N, 8]`` float32, distance ``[N]`` float32,
        donor rows ``[N, k]`` int64 and weights ``[N, k]`` float32 (``k = min(k, G)``; rows
        sum to 1, or to 0 for a node without donors).
    """
    n = int(graph.num_nodes)
    out = torch.zeros(n, signatures.shape[1])
    distance_out = torch.zeros(n)
    width = max(min(int(k), len(table)), 1)
    row_out = torch.zeros(n, width, dtype=torch.long)
    weight_out = torch.zeros(n, width)
    pos = getattr(graph, "pos", None)
    centroids = table[["lon", "lat"]].to_numpy(dtype=np.float64)
    available = table["available"].to_numpy(dtype=bool)
    if pos is None or not available.any() or not np.isfinite(centroids[available]).all():
        return out, distance_out, row_out, weight_out
    donors = np.flatnonzero(available)
    inside = np.zeros((len(donors), n), dtype=bool)  # donor's basin holds the node
    node_of = dict(rows)
    walker = NodeWalker(graph.edge_index, n)
    for i, row in enumerate(donors):
        if row in node_of:
            inside[i, walker.upstream(node_of[row]).numpy()] = True
    lonlat = np.asarray(pos, dtype=np.float64)
    distance = great_circle_km(
        np.repeat(lonlat[:, None, :], len(donors), axis=1),
        np.broadcast_to(centroids[donors], (n, len(donors), 2)),
    ).clip(_MIN_DISTANCE_KM, None)
    distance[inside.T] = np.inf
    k = min(int(k), len(donors))
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    d = np.take_along_axis(distance, nearest, axis=1)
    w = np.where(np.isfinite(d), 1.0 / d**2, 0.0)
    total = w.sum(axis=1, keepdims=True)
    has = total[:, 0] > 0
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    values = (w[..., None] * signatures[donors][nearest]).sum(axis=1)
    out[torch.from_numpy(has)] = torch.from_numpy(values[has]).float()
    distance_out[torch.from_numpy(has)] = torch.from_numpy(np.log10(d[has, 0])).float()
    row_out[:, :k] = torch.from_numpy(donors[nearest])
    weight_out[:, :k] = torch.from_numpy(w).float()
    return out, distance_out, row_out, weight_out


def save_gauge_table(table: pd.DataFrame, run_dir: str | Path) -> Path:
    path = Path(run_dir) / GAUGE_TABLE
    table.to_csv(path, index=False)
    return path


def load_gauge_table(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / GAUGE_TABLE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the run's parameterizer needs the training gauges' table"
        )
    return pd.read_csv(path, dtype={"gauge_id": str, "node_id": str})

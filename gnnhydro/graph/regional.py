"""Graph constructions for regionalization: river edges, spatial neighbour edges and their
edge attributes.

A parameterizer that transfers what gauges know to ungauged places needs more than the river
network: classical regionalization finds spatial proximity the best single transfer method
(Oudin et al. 2008, WRR 44, W03413) and isolated catchments (each its own outlet) have no river
edges at all. :func:`regional_edges` builds one directed edge set of three relations, each edge
a message ``source → target``:

* ``upstream``: the target hears a reach directly upstream of it (the river edges as stored);
* ``downstream``: the target hears the reach directly downstream (the river edges flipped);
* ``spatial``: the target hears one of its ``k`` nearest catchment centroids within
  ``max_distance_km`` (great-circle distance), in any basin; pairs already joined by a river
  edge are not repeated.  In a batch of graphs (PyG ``Batch``: training windows, gauge
  basins) the neighbours are searched in each graph on its own: copies of a network in a batch
  share their positions, and would otherwise hear their own twins at distance 0.

Edge attributes (:data:`REGIONAL_EDGE_FEATURES`, ``[E, 5]``): the centroid distance divided by
``max_distance_km``, the relation one-hot (upstream, downstream, spatial) and
``log(A_source / A_target)`` of the upstream (drainage) areas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "REGIONAL_EDGE_FEATURES",
    "RELATIONS",
    "EARTH_RADIUS_KM",
    "river_edge_attributes",
    "spatial_neighbours",
    "regional_edges",
    "drainage_area",
]

EARTH_RADIUS_KM = 6371.0
RELATIONS = ("upstream", "downstream", "spatial")
REGIONAL_EDGE_FEATURES = (
    "distance",
    "relation_upstream",
    "relation_downstream",
    "relation_spatial",
    "log_area_ratio",
)


def river_edge_attributes(graph: Any) -> Tensor | None:
    """``[E, 2]`` per-edge attributes of the river edges from the upstream reach:
    ``log10(length in km + 0.01)`` and ``sqrt(slope)``; ``None`` when the graph has neither."""
    src = graph.edge_index[0]
    cols = []
    length = getattr(graph, "length_m", None)
    if length is not None:
        cols.append(torch.log10(length[src].float() / 1e3 + 0.01))
    slope = getattr(graph, "slope", None)
    if slope is not None:
        cols.append(slope[src].float().clamp_min(0).sqrt())
    return torch.stack(cols, dim=-1) if cols else None


def _unit_vectors(lonlat: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def great_circle_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance [km] between (lon, lat) points ``a`` and ``b`` (degrees, ``[..., 2]``)."""
    ua, ub = _unit_vectors(np.reshape(a, (-1, 2))), _unit_vectors(np.reshape(b, (-1, 2)))
    chord = np.linalg.norm(ua - ub, axis=1).clip(0.0, 2.0)
    return (2.0 * EARTH_RADIUS_KM * np.arcsin(chord / 2.0)).reshape(np.shape(a)[:-1])


def spatial_neighbours(
    pos: Tensor | np.ndarray, k: int, max_distance_km: float
) -> tuple[Tensor, Tensor]:
    """Directed edges ``neighbour → node`` to each node from its ``k`` nearest other nodes
    within ``max_distance_km`` (great-circle distance between the (lon, lat) centroids; scipy's
    ``cKDTree`` on unit vectors).

    Shapes:
        pos ``[N, 2]`` (lon, lat) degrees → edge_index ``[2, E]`` int64 (row 0 the neighbour,
        row 1 the node), distance ``[E]`` km; ``E ≤ N·k``.
    """
    from scipy.spatial import cKDTree

    lonlat = np.asarray(pos, dtype=np.float64)
    n = lonlat.shape[0]
    if lonlat.ndim != 2 or lonlat.shape[1] != 2:
        raise ValueError(f"spatial neighbours need pos [N, 2] (lon, lat), got {list(lonlat.shape)}")
    bad = np.flatnonzero(~np.isfinite(lonlat).all(axis=1))
    if bad.size:
        raise ValueError(
            f"spatial neighbours: pos (lon, lat) is NaN/inf at node indices {bad[:10].tolist()}"
        )
    if k < 1 or max_distance_km <= 0:
        raise ValueError(
            f"spatial neighbours need k ≥ 1 and max_distance_km > 0, got {k}, {max_distance_km}"
        )
    if n < 2:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
    xyz = _unit_vectors(lonlat)
    chord_max = 2.0 * np.sin(min(max_distance_km / EARTH_RADIUS_KM, np.pi) / 2.0)
    chord, idx = cKDTree(xyz).query(
        xyz, k=min(k + 1, n), distance_upper_bound=chord_max * (1 + 1e-12)
    )
    chord, idx = np.atleast_2d(chord), np.atleast_2d(idx)
    node = np.repeat(np.arange(n), idx.shape[1]).reshape(idx.shape)
    keep = (idx < n) & (idx != node)
    # nodes at identical positions: the query may list the node itself anywhere; keep k others
    rank = np.cumsum(keep, axis=1)
    keep &= rank <= k
    src, dst = idx[keep], node[keep]
    distance = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord[keep], 0.0, 2.0) / 2.0)
    return (
        torch.from_numpy(np.stack([src, dst]).astype(np.int64)),
        torch.from_numpy(distance.astype(np.float32)),
    )


def drainage_area(graph: Any) -> Tensor:
    """Upstream (drainage) area ``[N]`` km² of every node, the node's own ``area_km2`` included
    (ones without ``area_km2``): the graph's cached ``upstream_area_km2`` when it is a
    :class:`~gnnhydro.graph.RiverGraph`, else accumulated along ``edge_index`` in topological
    order (one split fraction per edge is not assumed: every edge carries all of its source)."""
    n = int(graph.num_nodes)
    area = getattr(graph, "area_km2", None)
    if area is None:
        return torch.ones(n)
    if hasattr(type(graph), "upstream_area_km2"):
        return graph.upstream_area_km2.float()
    src, dst = (v.numpy() for v in graph.edge_index.long())
    total = area.double().numpy().copy()
    indegree = np.bincount(dst, minlength=n)
    order = np.argsort(src, kind="stable")
    ptr = np.searchsorted(src[order], np.arange(n + 1))
    ready = list(np.flatnonzero(indegree == 0))
    while ready:
        u = ready.pop()
        for e in order[ptr[u] : ptr[u + 1]]:
            v = dst[e]
            total[v] += total[u]
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    return torch.from_numpy(total).float()


def _graph_ptr(graph: Any, n: int) -> list[int]:
    """Node offsets of the graphs of a batch (``[0, n]`` for one graph)."""
    ptr = getattr(graph, "ptr", None)
    if ptr is None or getattr(graph, "num_graphs", 1) <= 1:
        return [0, n]
    return [int(v) for v in ptr]


def _spatial_neighbours_per_graph(
    pos: Tensor, ptr: list[int], k: int, max_distance_km: float
) -> Tensor:
    """:func:`spatial_neighbours` in each graph ``ptr[g] … ptr[g+1]−1`` of a batch, as one
    ``[2, E]`` edge index of batch node indices."""
    parts = []
    for start, stop in zip(ptr[:-1], ptr[1:], strict=True):
        near, _ = spatial_neighbours(pos[start:stop], k, max_distance_km)
        parts.append(near + start)
    return torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.long)


def regional_edges(
    graph: Any,
    *,
    river: bool = True,
    spatial: bool = True,
    k: int = 8,
    max_distance_km: float = 100.0,
) -> tuple[Tensor, Tensor]:
    """The regional edge set of ``graph`` (see the module docstring) and its attributes.

    Args:
        graph: a river graph with ``edge_index`` (upstream → downstream) and, for spatial edges,
            ``pos`` (lon, lat); ``area_km2`` for the area ratio (ratio 1 without it).
        river: include the river edges in both directions.
        spatial: include the ``k`` nearest centroids within ``max_distance_km``.

    Shapes:
        → edge_index ``[2, E]`` (row 0 source, row 1 target: the target hears the source),
        edge_attr ``[E, 5]`` float32 (:data:`REGIONAL_EDGE_FEATURES`).
    """
    if not (river or spatial):
        raise ValueError("regional edges: choose river and/or spatial edges")
    n = int(graph.num_nodes)
    pos = getattr(graph, "pos", None)
    parts: list[tuple[Tensor, int]] = []
    ei = graph.edge_index.long()
    if river and ei.numel():
        parts += [(ei, 0), (ei.flip(0), 1)]
    if spatial:
        if pos is None:
            raise ValueError(
                "spatial neighbour edges need node positions (graph.pos: lon, lat in degrees; "
                "columns lon/lat of nodes.csv for the generic layout)"
            )
        near = _spatial_neighbours_per_graph(pos, _graph_ptr(graph, n), k, max_distance_km)
        if ei.numel() and near.numel():  # pairs joined by a river edge already
            joined = torch.cat([ei[0] * n + ei[1], ei[1] * n + ei[0]])
            near = near[:, ~torch.isin(near[0] * n + near[1], joined)]
        parts.append((near, 2))
    edge_index = (
        torch.cat([p for p, _ in parts], dim=1) if parts else torch.zeros(2, 0, dtype=torch.long)
    )
    relation = (
        torch.cat([torch.full((p.shape[1],), r, dtype=torch.long) for p, r in parts])
        if parts
        else torch.zeros(0, dtype=torch.long)
    )
    if pos is not None and edge_index.numel():
        lonlat = np.asarray(pos, dtype=np.float64)
        distance = torch.from_numpy(
            great_circle_km(lonlat[edge_index[0].numpy()], lonlat[edge_index[1].numpy()])
        ).float()
    else:
        distance = torch.zeros(edge_index.shape[1])
    area = drainage_area(graph).clamp_min(1e-6)
    log_ratio = torch.log(area[edge_index[0]] / area[edge_index[1]])
    one_hot = torch.nn.functional.one_hot(relation, len(RELATIONS)).float()
    edge_attr = torch.cat(
        [(distance / float(max_distance_km)).unsqueeze(-1), one_hot, log_ratio.unsqueeze(-1)],
        dim=-1,
    )
    return edge_index, edge_attr

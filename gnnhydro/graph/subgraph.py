"""Node subsets of river graphs (and of batches of them): the one place that knows which
attributes are node-level."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

__all__ = ["node_subset", "NOT_NODE_LEVEL"]

#: attributes that are never node-level, whatever their length
NOT_NODE_LEVEL = frozenset(
    {
        "edge_index",
        "edge_weight",
        "edge_attr",
        "ptr",
        "physics_mask",
        "gauge_index",
        "gauge_id",
        "holdout_gauge_ids",
        "time",
        "forcing_names",
        "forcing_units",
        "x_names",
        "x_units",
        "true_params",
    }
)


def node_subset(graph: Any, nodes: Tensor) -> Any:
    """A shallow copy of ``graph`` (a :class:`~gnnhydro.graph.RiverGraph` or a PyG batch)
    restricted to ``nodes``, in that order: every node-level tensor (``[N, ...]``, time series
    included) and list of length ``N`` is indexed, ``edge_index`` keeps the edges between kept
    nodes, renumbered; ``gauge_index``/``gauge_id`` keep the gauges among them.

    Shapes:
        nodes ``[M]`` int64 (or a ``[N]`` bool mask); node-level ``[N, ...]`` → ``[M, ...]``.
    """
    from torch_geometric.utils import subgraph

    n = int(graph.num_nodes)
    if nodes.dtype == torch.bool:
        nodes = nodes.nonzero().flatten()
    nodes = nodes.long()
    view = copy.copy(graph)
    for key, value in list(graph._store.items()):
        if key in NOT_NODE_LEVEL:
            continue
        if isinstance(value, Tensor) and value.dim() >= 1 and value.size(0) == n:
            view[key] = value[nodes]
        elif isinstance(value, list) and len(value) == n:
            view[key] = [value[i] for i in nodes.tolist()]
    edge_index, edge_weight = subgraph(
        nodes,
        graph.edge_index,
        getattr(graph, "edge_weight", None),
        relabel_nodes=True,
        num_nodes=n,
    )
    view.edge_index = edge_index
    if edge_weight is not None:
        view.edge_weight = edge_weight
    gauges = getattr(graph, "gauge_index", None)
    if isinstance(gauges, Tensor):
        position = torch.full((n,), -1, dtype=torch.long)
        position[nodes] = torch.arange(nodes.numel())
        kept = position[gauges.long()] >= 0
        view.gauge_index = position[gauges.long()][kept]
        ids = getattr(graph, "gauge_id", None)
        if isinstance(ids, list) and len(ids) == gauges.numel():
            view.gauge_id = [g for g, k in zip(ids, kept.tolist(), strict=True) if k]
    for key in ("ptr", "physics_mask"):
        if key in view._store:
            del view[key]
    view.num_nodes = int(nodes.numel())
    return view

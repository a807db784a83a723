"""Spatial splits of gauges: hold-out gauges and k-fold cross-validation over gauges.

Definitions (node sets are node indices of the graph):

* ``upstream(S)`` — nodes from which water reaches some gauge in ``S`` (gauges included).
* ``train_nodes = upstream(train gauges)`` — the nodes whose parameters the training loss sees.
* ``holdout_exclusive = upstream(holdout gauges) \\ upstream(train gauges)`` — the nodes that drain
  to a held-out gauge but to no training gauge: the truly "ungauged" part of a held-out basin.
  A held-out gauge nested inside a training basin has an empty exclusive area (its whole basin
  was seen through the downstream training gauge); ``exclusive_fraction`` reports this per
  held-out gauge so that evaluations can tell nested from independent hold-outs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gnnhydro.graph import RiverGraph

__all__ = [
    "GaugeSplit",
    "upstream_mask",
    "spatial_holdout",
    "k_fold_gauges",
    "cv_folds",
    "split_from_gauges",
]


def upstream_mask(graph: RiverGraph, nodes: Tensor) -> Tensor:
    """Bool ``[N]``: nodes upstream of (or equal to) any node in ``nodes``.

    A reverse breadth-first sweep over ``edge_index`` (upstream→downstream edges).
    """
    n = graph.num_nodes
    src, dst = graph.edge_index[0].numpy(), graph.edge_index[1].numpy()
    order = np.argsort(dst, kind="stable")
    src_sorted = src[order]
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(ptr, dst + 1, 1)
    ptr = np.cumsum(ptr)
    mask = np.zeros(n, dtype=bool)
    frontier = np.unique(np.asarray(torch.as_tensor(nodes).long().flatten().numpy()))
    mask[frontier] = True
    while frontier.size:
        ups = (
            np.concatenate([src_sorted[ptr[i] : ptr[i + 1]] for i in frontier])
            if frontier.size
            else frontier
        )
        ups = ups[~mask[ups]]
        ups = np.unique(ups)
        mask[ups] = True
        frontier = ups
    return torch.from_numpy(mask)


@dataclass
class GaugeSplit:
    """A split of the gauges of one graph.

    Attributes:
        train_index: ``[Gt]`` node indices of training gauges.
        holdout_index: ``[Gh]`` node indices of held-out gauges.
        train_gauge_id / holdout_gauge_id: their gauge ids.
        train_nodes: bool ``[N]``, nodes upstream of a training gauge (fit normalisation here).
        holdout_exclusive: bool ``[N]``, nodes upstream of a held-out gauge and of no training gauge.
        exclusive_fraction: ``[Gh]`` share of each held-out gauge's upstream nodes that are in
            ``holdout_exclusive`` (0 = fully nested in a training basin, 1 = independent).
        excluded_index / excluded_gauge_id: gauges neither trained nor held out (downstream of a
            held-out gauge in a downstream-closed fold: their basins contain held-out areas).
    """

    train_index: Tensor
    holdout_index: Tensor
    train_gauge_id: list
    holdout_gauge_id: list
    train_nodes: Tensor
    holdout_exclusive: Tensor
    exclusive_fraction: Tensor
    excluded_index: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    excluded_gauge_id: list = field(default_factory=list)


def _gauges(graph: RiverGraph) -> tuple[Tensor, list]:
    gi = getattr(graph, "gauge_index", None)
    if gi is None or gi.numel() == 0:
        raise ValueError("graph has no gauges (gauge_index is missing or empty)")
    ids = getattr(graph, "gauge_id", None) or [graph.node_id[int(i)] for i in gi]
    return gi.long(), list(ids)


def split_from_gauges(
    graph: RiverGraph, holdout: Tensor, exclude: Tensor | None = None
) -> GaugeSplit:
    """The :class:`GaugeSplit` holding out the gauges at positions ``holdout`` of
    ``gauge_index`` (and leaving those at positions ``exclude`` out of training)."""
    gi, ids = _gauges(graph)
    hold = torch.zeros(gi.numel(), dtype=torch.bool)
    hold[torch.as_tensor(holdout, dtype=torch.long)] = True
    out = torch.zeros(gi.numel(), dtype=torch.bool)
    if exclude is not None:
        out[torch.as_tensor(exclude, dtype=torch.long)] = True
    out &= ~hold
    train_pos, hold_pos = (~hold & ~out).nonzero().flatten(), hold.nonzero().flatten()
    out_pos = out.nonzero().flatten()
    train_nodes = (
        upstream_mask(graph, gi[train_pos])
        if train_pos.numel()
        else torch.zeros(graph.num_nodes, dtype=torch.bool)
    )
    hold_up = (
        upstream_mask(graph, gi[hold_pos])
        if hold_pos.numel()
        else torch.zeros(graph.num_nodes, dtype=torch.bool)
    )
    exclusive = hold_up & ~train_nodes
    frac = []
    for p in hold_pos.tolist():
        up = upstream_mask(graph, gi[p : p + 1])
        frac.append(float((up & exclusive).sum()) / float(up.sum()))
    return GaugeSplit(
        train_index=gi[train_pos],
        holdout_index=gi[hold_pos],
        train_gauge_id=[ids[i] for i in train_pos.tolist()],
        holdout_gauge_id=[ids[i] for i in hold_pos.tolist()],
        train_nodes=train_nodes,
        holdout_exclusive=exclusive,
        exclusive_fraction=torch.tensor(frac, dtype=torch.float32),
        excluded_index=gi[out_pos],
        excluded_gauge_id=[ids[i] for i in out_pos.tolist()],
    )


def spatial_holdout(
    graph: RiverGraph, fraction: float, seed: int = 0, *, downstream_closed: bool = False
) -> GaugeSplit:
    """Hold out ``round(fraction · G)`` gauges chosen at random (seeded), at least one and at most
    ``G - 1``; see the module docstring for the node sets it marks.

    With ``downstream_closed=True`` a held-out gauge brings every gauge downstream of it into the
    hold-out too (gauges are drawn in random order and added with their downstream closure while
    the total stays within ``round(fraction · G)``, at least one closure). Then no held-out gauge
    lies upstream of a training gauge, so each has a non-empty exclusive area (unless training
    gauges upstream cover its whole basin): a truly ungauged test, not only nested gauges.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    gi, _ = _gauges(graph)
    g = gi.numel()
    if g < 2:
        raise ValueError(f"spatial_holdout needs at least 2 gauges, the graph has {g}")
    k = min(max(int(round(fraction * g)), 1), g - 1)
    perm = torch.randperm(g, generator=torch.Generator().manual_seed(seed))
    if not downstream_closed:
        return split_from_gauges(graph, perm[:k].sort().values)
    chosen: set[int] = set()
    for p in perm.tolist():
        # gauges downstream of gauge p: those whose basin contains it
        closure = {
            q for q in range(g) if q not in chosen and _drains_to(graph, int(gi[p]), int(gi[q]))
        }
        if chosen and len(chosen) + len(closure) > k:
            continue
        if len(chosen) + len(closure) > g - 1:
            continue
        chosen |= closure
        if len(chosen) >= k:
            break
    return split_from_gauges(graph, torch.tensor(sorted(chosen), dtype=torch.long))


def _drains_to(graph: RiverGraph, upstream: int, downstream: int) -> bool:
    """Whether node ``upstream`` lies in the basin of node ``downstream`` (or is it)."""
    return bool(upstream_mask(graph, torch.tensor([downstream]))[upstream])


def k_fold_gauges(graph: RiverGraph, k: int, seed: int = 0) -> list[GaugeSplit]:
    """``k`` splits whose held-out gauge sets partition the gauges (random, seeded, sizes
    differing by at most one): :func:`cv_folds` with its defaults."""
    return cv_folds(graph, k, seed)


def _nesting(graph: RiverGraph, gi: Tensor) -> np.ndarray:
    """``[G, G]`` bool: ``[q, p]`` when gauge ``p`` lies in the basin of gauge ``q`` (or is it)."""
    from gnnhydro.graph.topology import NodeWalker

    walker = NodeWalker(graph.edge_index, int(graph.num_nodes))
    nodes = gi.numpy()
    out = np.zeros((nodes.size, nodes.size), dtype=bool)
    for q, node in enumerate(nodes.tolist()):
        out[q] = np.isin(nodes, walker.upstream(node).numpy())
    return out


def _regional_groups(graph: RiverGraph, gi: Tensor, k: int, seed: int) -> list[Tensor]:
    """``k`` spatially clustered groups of gauge positions (k-means on the gauges' (lon, lat)
    projected to km, seeded; re-seeded until no group is empty)."""
    from scipy.cluster.vq import kmeans2

    pos = getattr(graph, "pos", None)
    if pos is None:
        raise ValueError("regional folds need gauge positions (graph.pos: lon, lat)")
    lonlat = np.asarray(pos, dtype=np.float64)[gi.numpy()]
    lat0 = np.radians(lonlat[:, 1].mean())
    xy = np.stack([lonlat[:, 0] * 111.2 * np.cos(lat0), lonlat[:, 1] * 111.2], axis=1)
    for attempt in range(20):
        _, label = kmeans2(xy, k, seed=seed + 7919 * attempt, minit="++")
        if np.bincount(label, minlength=k).min() > 0:
            return [torch.from_numpy(np.flatnonzero(label == c)) for c in range(k)]
    raise ValueError(f"regional folds: could not form {k} non-empty spatial clusters of the gauges")


def cv_folds(
    graph: RiverGraph,
    k: int,
    seed: int = 0,
    *,
    strategy: str = "random",
    downstream_closed: bool = False,
) -> list[GaugeSplit]:
    """``k`` cross-validation splits whose held-out gauge sets partition the gauges.

    Args:
        strategy: ``"random"`` (seeded permutation, fold sizes differing by at most one) or
            ``"regional"`` (spatially clustered folds: k-means of the gauge positions, so a
            held-out gauge's neighbours tend to be held out with it).
        downstream_closed: in each fold, gauges downstream of a held-out gauge (whose basins
            contain held-out areas) are left out of training (``excluded_index``): then no
            training gauge sees any part of a held-out gauge's basin, and every held-out
            gauge's whole basin is ungauged in that fold. Every gauge is still held out exactly
            once.
    """
    gi, _ = _gauges(graph)
    g = gi.numel()
    if not 2 <= k <= g:
        raise ValueError(f"k must be between 2 and the number of gauges ({g}), got {k}")
    if strategy == "random":
        perm = torch.randperm(g, generator=torch.Generator().manual_seed(seed))
        groups = [fold.sort().values for fold in torch.tensor_split(perm, k)]
    elif strategy == "regional":
        groups = _regional_groups(graph, gi, k, seed)
    else:
        raise ValueError(f"fold strategy must be 'random' or 'regional', got {strategy!r}")
    nesting = _nesting(graph, gi) if downstream_closed else None
    splits = []
    for held in groups:
        exclude = None
        if nesting is not None:
            downstream = nesting[:, held.numpy()].any(axis=1)
            downstream[held.numpy()] = False
            exclude = torch.from_numpy(np.flatnonzero(downstream))
            if exclude.numel() + held.numel() >= g:
                raise ValueError(
                    "a downstream-closed fold leaves no training gauge (every other gauge lies "
                    "downstream of a held-out one): use more folds or downstream_closed=false"
                )
        splits.append(split_from_gauges(graph, held, exclude))
    return splits

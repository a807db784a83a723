"""Pure topology functions on a river network given as ``edge_index`` (upstream→downstream).

These are the building blocks :class:`~gnnhydro.graph.RiverGraph` caches; they work on plain
tensors so routing kernels and tests can use them alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing

from gnnhydro._numba import njit

__all__ = [
    "csr_downstream",
    "topological_levels",
    "find_cycle",
    "accumulate",
    "UpstreamSum",
    "upstream_nodes",
    "NodeWalker",
    "StagePlan",
    "stage_plan",
]


def csr_downstream(edge_index: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency of downstream neighbours: ``order``-sorted edge ids and row pointers.

    Returns ``(indptr, edge_ids)`` such that the edges leaving node ``u`` are
    ``edge_ids[indptr[u]:indptr[u + 1]]`` (ascending edge id).
    """
    src = edge_index[0]
    edge_ids = np.argsort(src, kind="stable")
    counts = np.bincount(src, minlength=num_nodes)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, edge_ids


def _as_numpy(edge_index: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(edge_index, Tensor):
        return edge_index.detach().cpu().numpy().astype(np.int64, copy=False)
    return np.asarray(edge_index, dtype=np.int64)


@njit
def _kahn_levels(
    indptr: np.ndarray, targets: np.ndarray, indeg: np.ndarray
) -> tuple[np.ndarray, int]:
    """Longest-path levels by Kahn's algorithm in O(N + E); returns (levels, nodes reached)."""
    n = indeg.size
    remaining = indeg.copy()
    levels = np.zeros(n, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for v in range(n):
        if remaining[v] == 0:
            queue[tail] = v
            tail += 1
    while head < tail:
        u = queue[head]
        head += 1
        for k in range(indptr[u], indptr[u + 1]):
            v = targets[k]
            if levels[u] + 1 > levels[v]:
                levels[v] = levels[u] + 1
            remaining[v] -= 1
            if remaining[v] == 0:
                queue[tail] = v
                tail += 1
    return levels, tail


def topological_levels(edge_index: Tensor | np.ndarray, num_nodes: int) -> Tensor:
    """Topological level of every node: 0 for headwaters, else 1 + max level of its upstream nodes
    (the length of the longest path from any headwater). O(N + E) (Kahn's algorithm).

    Raises ``ValueError`` if the graph has a cycle (use :func:`find_cycle` to name it).

    Shapes:
        edge_index: ``[2, E]``; result ``[N]`` (int64).
    """
    ei = _as_numpy(edge_index)
    indptr, edge_ids = csr_downstream(ei, num_nodes)
    targets = np.ascontiguousarray(ei[1][edge_ids])
    indeg = np.bincount(ei[1], minlength=num_nodes).astype(np.int64)
    levels, reached = _kahn_levels(indptr, targets, indeg)
    if reached != num_nodes:
        raise ValueError(f"network has a cycle through {num_nodes - reached} node(s)")
    return torch.from_numpy(levels)


def find_cycle(edge_index: Tensor | np.ndarray, num_nodes: int) -> list[int] | None:
    """Node indices of one directed cycle (in flow order), or ``None`` for an acyclic graph.

    O(N + E): strongly connected components (scipy); a component with more than one node (or a
    self loop) holds a cycle, which is then walked within that component.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ei = _as_numpy(edge_index)
    src, dst = ei[0], ei[1]
    loops = np.flatnonzero(src == dst)
    if loops.size:
        return [int(src[loops[0]])]
    if src.size == 0:
        return None
    adjacency = coo_matrix(
        (np.ones(src.size, dtype=np.int8), (src, dst)), shape=(num_nodes, num_nodes)
    )
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    sizes = np.bincount(labels)
    if sizes.max() <= 1:
        return None
    component = int(np.argmax(sizes > 1))
    inside = (labels[src] == component) & (labels[dst] == component)
    nxt: dict[int, int] = {}
    for u, v in zip(src[inside].tolist(), dst[inside].tolist(), strict=True):
        nxt.setdefault(u, v)
    node = int(src[inside][0])
    order: dict[int, int] = {}
    while node not in order:
        order[node] = len(order)
        node = nxt[node]
    path = list(order)
    return path[order[node] :]


class UpstreamSum(MessagePassing):
    r"""One message-passing step of upstream accumulation: :math:`y_v = \sum_{u \to v} w_{uv} x_u`
    (``aggr="add"``, edges upstream→downstream, ``flow="source_to_target"``).

    Shapes:
        x ``[N]`` or ``[N, F]``; edge_index ``[2, E]``; edge_weight ``[E]`` or None → like ``x``.
    """

    def __init__(self) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        return self.propagate(edge_index, x=x, edge_weight=edge_weight, size=(x.size(0), x.size(0)))

    def message(self, x_j: Tensor, edge_weight: Tensor | None) -> Tensor:
        if edge_weight is None:
            return x_j
        return x_j * edge_weight.view(-1, *([1] * (x_j.dim() - 1)))


_UPSTREAM_SUM = UpstreamSum()


def accumulate(
    values: Tensor, edge_index: Tensor, edge_weight: Tensor | None, levels: Tensor
) -> Tensor:
    """Total upstream accumulation: ``acc[v] = values[v] + Σ_{u→v} w_uv · acc[u]``.

    Message passing level by level (upstream first): the edges leaving level ``l`` carry final
    values, one :class:`UpstreamSum` step each. Differentiable w.r.t. ``values`` and
    ``edge_weight``. With ``values = area_km2`` it gives the total upstream area.

    Shapes:
        values: ``[N]`` or ``[N, F]``; edge_index ``[2, E]``; edge_weight ``[E]`` or None (ones);
        levels ``[N]``; result like ``values``.
    """
    src_level = levels[edge_index[0]]
    order = torch.argsort(src_level, stable=True)
    num_levels = int(levels.max().item()) + 1 if levels.numel() else 0
    counts = torch.bincount(src_level, minlength=num_levels)
    out = values
    for edge_ids in torch.split(order, counts.tolist()):
        if edge_ids.numel() == 0:
            continue
        w = edge_weight[edge_ids] if edge_weight is not None else None
        out = out + _UPSTREAM_SUM(out, edge_index[:, edge_ids], w)
    return out


def upstream_nodes(edge_index: Tensor, num_nodes: int, node: int) -> Tensor:
    """Indices of ``node`` and every node upstream of it (its basin), ascending.

    Shapes:
        result ``[M]`` int64.
    """
    return NodeWalker(edge_index, num_nodes).upstream(node)


class NodeWalker:
    """Basins and neighbourhoods of many nodes of one network, from adjacency built once
    (each query costs the size of its answer, not of the network).

    Shapes:
        :meth:`upstream` ``[M]`` int64 ascending (the node and every node draining to it);
        :meth:`neighbourhood` ``[K]`` int64 ascending: nodes within ``hops`` edges (either
        direction) of ``nodes``, ``nodes`` excluded.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        ei = _as_numpy(edge_index)
        self.num_nodes = int(num_nodes)
        self._up = _adjacency(ei[1], ei[0], self.num_nodes)  # dst → its upstream neighbours
        both = (np.concatenate([ei[0], ei[1]]), np.concatenate([ei[1], ei[0]]))
        self._any = _adjacency(both[0], both[1], self.num_nodes)
        self._seen = np.zeros(self.num_nodes, dtype=bool)

    def _expand(
        self, adjacency: tuple[np.ndarray, np.ndarray], start: np.ndarray, hops: int | None
    ) -> np.ndarray:
        indptr, nbr = adjacency
        seen = self._seen
        seen[start] = True
        found = [start]
        frontier = start
        hop = 0
        while frontier.size and (hops is None or hop < hops):
            lo, hi = indptr[frontier], indptr[frontier + 1]
            total = int((hi - lo).sum())
            if total == 0:
                break
            idx = np.repeat(hi - (hi - lo).cumsum(), hi - lo) + np.arange(total)
            ups = np.unique(nbr[idx])
            ups = ups[~seen[ups]]
            seen[ups] = True
            found.append(ups)
            frontier = ups
            hop += 1
        out = np.concatenate(found)
        seen[out] = False  # leave the scratch mask clean for the next query
        return out

    def upstream(self, node: int) -> Tensor:
        out = self._expand(self._up, np.array([int(node)], dtype=np.int64), None)
        return torch.from_numpy(np.sort(out))

    def neighbourhood(self, nodes: Tensor, hops: int) -> Tensor:
        start = _as_numpy(nodes).astype(np.int64)
        out = self._expand(self._any, start, hops)[start.size :]
        return torch.from_numpy(np.sort(out))


def _adjacency(key: np.ndarray, value: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, values)``: the ``value`` s of each ``key``."""
    order = np.argsort(key, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=n), out=indptr[1:])
    return indptr, value[order].astype(np.int64)


@dataclass
class StagePlan:
    """A partition of a river network into connected stages for staged routing.

    Attributes:
        stages: node indices of each stage (ascending topological level within a stage), listed
            in a valid execution order: every stage comes after all stages that drain into it.
        stage_of_node: ``[N]`` the stage number of each node.
        cut_edges: ``[C]`` column indices into ``edge_index`` of edges whose ends lie in different
            stages (boundary flows carried from one stage to a later one).
        max_nodes / max_paths: the budgets the plan was built with.
    """

    stages: list[Tensor]
    stage_of_node: Tensor
    cut_edges: Tensor
    max_nodes: int | None = None
    max_paths: int | None = None
    num_paths: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stages)


def stage_plan(
    edge_index: Tensor,
    num_nodes: int,
    levels: Tensor,
    *,
    edge_weight: Tensor | None = None,
    max_nodes: int | None = None,
    max_paths: int | None = None,
) -> StagePlan:
    """Deterministic partition into connected stages of bounded size.

    Each node keeps one *primary* downstream edge (the one with the largest split fraction,
    ties to the lowest edge id); along this spanning forest, subtrees are greedily closed into
    stages, upstream first: when a node's pending subtree would exceed ``max_nodes`` nodes or
    ``max_paths`` upstream→downstream pairs (the cost of a path-kernel cluster), its largest
    pending upstream subtrees are cut off as stages of their own. Every stage is connected and
    within budget (a single node always fits). Stages are then ordered topologically.

    Shapes:
        edge_index ``[2, E]``; levels ``[N]``. See :class:`StagePlan` for the result.
    """
    if max_nodes is None and max_paths is None:
        max_nodes = num_nodes
    node_budget = max_nodes if max_nodes is not None else np.iinfo(np.int64).max
    path_budget = max_paths if max_paths is not None else np.iinfo(np.int64).max
    if node_budget < 1 or path_budget < 1:
        raise ValueError(
            f"stage budgets must be >= 1, got max_nodes={max_nodes}, max_paths={max_paths}"
        )
    ei = _as_numpy(edge_index)
    src, dst = ei[0], ei[1]
    num_edges = src.size
    weight = (
        np.ones(num_edges) if edge_weight is None else edge_weight.detach().cpu().double().numpy()
    )
    # primary downstream edge per node
    primary = np.full(num_nodes, -1, dtype=np.int64)
    if num_edges:
        order = np.lexsort((np.arange(num_edges), -weight, src))
        first = np.ones(num_edges, dtype=bool)
        first[1:] = src[order][1:] != src[order][:-1]
        chosen = order[first]
        primary[src[chosen]] = chosen
    parent = np.where(primary >= 0, dst[np.maximum(primary, 0)], -1)
    lv = levels.cpu().numpy()
    topo = np.argsort(lv, kind="stable")
    # children lists along the primary forest
    children: list[list[int]] = [[] for _ in range(num_nodes)]
    for v in topo.tolist():
        p = parent[v]
        if p >= 0:
            children[p].append(v)
    pend_nodes = np.zeros(num_nodes, dtype=np.int64)
    pend_paths = np.zeros(num_nodes, dtype=np.int64)
    root_of_stage: list[int] = []  # a stage is the pending subtree rooted at a node
    for v in topo.tolist():
        kids = children[v]
        n = 1 + sum(int(pend_nodes[c]) for c in kids)
        p_cnt = sum(int(pend_paths[c]) for c in kids) + n
        if n > node_budget or p_cnt > path_budget:
            # cut largest pending children first (deterministic: size, then index)
            for c in sorted(kids, key=lambda c: (-int(pend_paths[c]), -int(pend_nodes[c]), c)):
                if n <= node_budget and p_cnt <= path_budget:
                    break
                root_of_stage.append(c)
                n -= int(pend_nodes[c])
                p_cnt -= int(pend_paths[c]) + int(pend_nodes[c])
                pend_nodes[c] = 0
                pend_paths[c] = 0
        pend_nodes[v] = n
        pend_paths[v] = p_cnt
        if parent[v] < 0:
            root_of_stage.append(v)
    # mark stage roots and assign each node the stage of its nearest root downstream (incl. self)
    is_root = np.zeros(num_nodes, dtype=bool)
    is_root[root_of_stage] = True
    stage_label = np.full(num_nodes, -1, dtype=np.int64)
    root_index = {r: i for i, r in enumerate(sorted(root_of_stage, key=lambda r: (lv[r], r)))}
    for v in topo[::-1].tolist():  # downstream first
        if is_root[v]:
            stage_label[v] = root_index[v]
        else:
            stage_label[v] = stage_label[parent[v]]
    num_stages = len(root_index)
    # order stages topologically over the stage graph (cut edges)
    cut = (
        np.flatnonzero(stage_label[src] != stage_label[dst]) if num_edges else np.zeros(0, np.int64)
    )
    s_src, s_dst = stage_label[src[cut]], stage_label[dst[cut]]
    stage_edges = (
        np.unique(np.stack([s_src, s_dst]), axis=1) if cut.size else np.zeros((2, 0), np.int64)
    )
    try:
        stage_levels = topological_levels(stage_edges, num_stages).numpy()
    except ValueError:  # a bifurcation created a cycle between stages: merge everything cyclic
        return _merge_cyclic(edge_index, num_nodes, levels, stage_label, max_nodes, max_paths)
    # execution order: by stage level, then by the (level, index) of the root (deterministic)
    stage_order = np.lexsort((np.arange(num_stages), stage_levels))
    rank = np.empty(num_stages, dtype=np.int64)
    rank[stage_order] = np.arange(num_stages)
    stage_of_node = rank[stage_label]
    return _make_plan(stage_of_node, num_stages, lv, cut, max_nodes, max_paths, src, dst)


def _make_plan(stage_of_node, num_stages, lv, cut, max_nodes, max_paths, src, dst) -> StagePlan:
    order = np.lexsort((np.arange(stage_of_node.size), lv, stage_of_node))
    counts = np.bincount(stage_of_node, minlength=num_stages)
    stages = [torch.from_numpy(s.copy()) for s in np.split(order, np.cumsum(counts)[:-1])]
    return StagePlan(
        stages=stages,
        stage_of_node=torch.from_numpy(stage_of_node),
        cut_edges=torch.from_numpy(np.asarray(cut, dtype=np.int64)),
        max_nodes=max_nodes,
        max_paths=max_paths,
    )


def _merge_cyclic(edge_index, num_nodes, levels, stage_label, max_nodes, max_paths) -> StagePlan:
    import networkx as nx

    ei = _as_numpy(edge_index)
    src, dst = ei[0], ei[1]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(int(stage_label.max()) + 1))
    cut = stage_label[src] != stage_label[dst]
    graph.add_edges_from(
        zip(stage_label[src[cut]].tolist(), stage_label[dst[cut]].tolist(), strict=True)
    )
    cond = nx.condensation(graph)
    topo = list(
        nx.lexicographical_topological_sort(cond, key=lambda c: min(cond.nodes[c]["members"]))
    )
    rank = {c: i for i, c in enumerate(topo)}
    mapping = cond.graph["mapping"]
    stage_of_node = np.array([rank[mapping[s]] for s in stage_label.tolist()], dtype=np.int64)
    new_cut = np.flatnonzero(stage_of_node[src] != stage_of_node[dst])
    return _make_plan(
        stage_of_node, len(topo), levels.cpu().numpy(), new_cut, max_nodes, max_paths, src, dst
    )

"""Routing view of a river network: topological order, CSR adjacency in both directions and
level groups, computed once per network and cached."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gnnhydro.graph.topology import topological_levels

__all__ = ["RoutingNetwork", "routing_network"]


@dataclass
class RoutingNetwork:
    """Index structures the routing kernels need (all CPU).

    Attributes:
        num_nodes: N.
        edge_index: ``[2, E]`` upstream→downstream (CPU int64).
        levels: ``[N]`` topological level (0 = headwater).
        order: ``[N]`` int64 numpy topological order (by level, stable).
        up_ptr / up_eid: incoming edge ids grouped by destination (CSR, numpy).
        down_ptr / down_eid: outgoing edge ids grouped by source (CSR, numpy).
        level_nodes: node indices of each level (LongTensor list, for level-by-level paths).
        level_edges: ids of the edges entering each level's nodes.
        pos_in_level: ``[N]`` the position of each node inside its level group.
    """

    num_nodes: int
    edge_index: Tensor
    levels: Tensor
    order: np.ndarray
    up_ptr: np.ndarray
    up_eid: np.ndarray
    down_ptr: np.ndarray
    down_eid: np.ndarray
    _level_groups: tuple | None = field(default=None, repr=False)
    _device_cache: dict = field(default_factory=dict, repr=False)

    @property
    def src(self) -> np.ndarray:
        return self.edge_index[0].numpy()

    @property
    def dst(self) -> np.ndarray:
        return self.edge_index[1].numpy()

    def csr_arrays(self, edge_weight: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(up_ptr, up_src, up_w, down_ptr, down_dst, down_w)`` for the numba kernels."""
        src, dst = self.src, self.dst
        w = np.ascontiguousarray(edge_weight, dtype=np.float64)
        return (
            self.up_ptr,
            np.ascontiguousarray(src[self.up_eid]),
            np.ascontiguousarray(w[self.up_eid]),
            self.down_ptr,
            np.ascontiguousarray(dst[self.down_eid]),
            np.ascontiguousarray(w[self.down_eid]),
        )

    def level_groups(
        self, device: torch.device | None = None
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """``(level_nodes, level_edges, pos_in_level)`` on ``device``."""
        if self._level_groups is None:
            lv = self.levels
            order = torch.from_numpy(self.order)
            counts = torch.bincount(lv, minlength=int(lv.max()) + 1 if lv.numel() else 0)
            nodes = list(torch.split(order, counts.tolist()))
            pos = torch.empty(self.num_nodes, dtype=torch.long)
            for grp in nodes:
                pos[grp] = torch.arange(grp.numel())
            dst_level = lv[self.edge_index[1]]
            e_order = torch.argsort(dst_level, stable=True)
            e_counts = torch.bincount(dst_level, minlength=counts.numel())
            edges = list(torch.split(e_order, e_counts.tolist()))
            self._level_groups = (nodes, edges, pos)
        if device is None or torch.device(device).type == "cpu":
            return self._level_groups
        key = ("levels", str(device))
        if key not in self._device_cache:
            n, e, p = self._level_groups
            self._device_cache[key] = (
                [t.to(device) for t in n],
                [t.to(device) for t in e],
                p.to(device),
            )
        return self._device_cache[key]

    def edge_index_on(self, device: torch.device) -> Tensor:
        if torch.device(device).type == "cpu":
            return self.edge_index
        key = ("ei", str(device))
        if key not in self._device_cache:
            self._device_cache[key] = self.edge_index.to(device)
        return self._device_cache[key]


def _csr(keys: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    eid = np.argsort(keys, kind="stable").astype(np.int64)
    ptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=num_nodes), out=ptr[1:])
    return ptr, eid


def build_network(
    edge_index: Tensor, num_nodes: int, levels: Tensor | None = None
) -> RoutingNetwork:
    """Build the routing index structures (raises ``ValueError`` on cycles or bad indices)."""
    ei = edge_index.detach().to("cpu", torch.long).contiguous()
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must be [2, E], got {tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= num_nodes):
        raise ValueError(
            f"edge_index refers to node indices outside [0, {num_nodes}): "
            f"min {int(ei.min())}, max {int(ei.max())}"
        )
    if levels is None:
        levels = topological_levels(ei, num_nodes)
    levels = levels.detach().to("cpu", torch.long)
    order = np.argsort(levels.numpy(), kind="stable").astype(np.int64)
    src, dst = ei[0].numpy(), ei[1].numpy()
    up_ptr, up_eid = _csr(dst, num_nodes)
    down_ptr, down_eid = _csr(src, num_nodes)
    return RoutingNetwork(num_nodes, ei, levels, order, up_ptr, up_eid, down_ptr, down_eid)


_CACHE: OrderedDict[tuple, tuple[Tensor, RoutingNetwork]] = OrderedDict()
_CACHE_SIZE = 16


def routing_network(graph, num_nodes: int | None = None) -> RoutingNetwork:
    """The cached :class:`RoutingNetwork` of a RiverGraph or of an ``edge_index`` tensor."""
    if isinstance(graph, Tensor):
        edge_index, levels = graph, None
        if num_nodes is None:
            raise ValueError("num_nodes is required when routing on a bare edge_index")
    else:
        edge_index, num_nodes = graph.edge_index, int(graph.num_nodes)
        levels = getattr(graph, "topo_level", None)
    key = (int(num_nodes), tuple(edge_index.shape), edge_index.data_ptr(), str(edge_index.device))
    hit = _CACHE.get(key)
    if (
        hit is not None
        and hit[0].shape == edge_index.shape
        and torch.equal(hit[0], edge_index.detach().cpu())
    ):
        _CACHE.move_to_end(key)
        return hit[1]
    net = build_network(edge_index, int(num_nodes), levels)
    _CACHE[key] = (net.edge_index.clone(), net)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return net


def subnetwork(net: RoutingNetwork, nodes: Tensor) -> tuple[RoutingNetwork, Tensor, Tensor]:
    """Induced sub-network on ``nodes`` (in the given order, which must be topological).

    Returns ``(sub, inner_edges, local_of)``: ``inner_edges`` the global ids of the edges kept
    (both ends in ``nodes``), ``local_of`` ``[N]`` the local index of each global node (−1 outside).
    """
    local_of = torch.full((net.num_nodes,), -1, dtype=torch.long)
    local_of[nodes] = torch.arange(nodes.numel())
    src, dst = net.edge_index
    inner = torch.nonzero((local_of[src] >= 0) & (local_of[dst] >= 0)).flatten()
    sub_ei = torch.stack([local_of[src[inner]], local_of[dst[inner]]])
    sub_levels = net.levels[nodes]
    n = nodes.numel()
    order = np.argsort(sub_levels.numpy(), kind="stable").astype(np.int64)
    s, d = sub_ei[0].numpy(), sub_ei[1].numpy()
    up_ptr, up_eid = _csr(d, n)
    down_ptr, down_eid = _csr(s, n)
    sub = RoutingNetwork(
        n, sub_ei.contiguous(), sub_levels, order, up_ptr, up_eid, down_ptr, down_eid
    )
    return sub, inner, local_of

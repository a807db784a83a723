"""Staged execution: route a river network stage after stage, carrying boundary outflows.

A :class:`~gnnhydro.graph.StagePlan` splits the reaches into stages such that every edge runs
from an earlier stage to the same or a later one. Each stage is routed on its own sub-network;
the outflows of earlier stages that drain into it enter as extra lateral inflow (weighted by
the edge's split fraction). The result equals unstaged routing exactly, and gradients flow
across the stage boundaries.

The fused numba kernel does not need sub-networks: it walks the stages' nodes one after another
over the full ``[B, N, T]`` arrays (:func:`staged_network` only replaces the execution order).

Reservoirs (:mod:`.reservoirs`) are cuts between stages: :func:`reservoir_stage_plan` gives every
node a reservoir level, the largest number of reservoirs strictly upstream of it on any path, and
makes each level a stage (split further along a given plan's stages). Every edge then runs to the
same or a higher level, and every edge leaving a reservoir to a higher one; the ``after_stage``
hook of :func:`route_stages` lets a finished stage's reservoirs replace their outflow by their
release before later stages read it.

Shapes:
    lateral inflow ``[B, N, T]`` (internal steps); per-stage outflow ``[B, n_s, T]``; result
    ``[B, N, T]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.routing.irf import ImpulseResponse, RoutingContext
from gnnhydro.routing.network import RoutingNetwork, subnetwork

__all__ = [
    "StageStruct",
    "stage_structs",
    "staged_network",
    "route_stages",
    "slice_params",
    "reservoir_levels",
    "reservoir_stage_plan",
]

#: ``(nodes [n_s], sub-network, inner edges [E_s], boundary groups)``; each boundary group is
#: ``(source stage, edges, source positions in that stage, destination positions in this stage)``
StageStruct = tuple[Tensor, RoutingNetwork, Tensor, list[tuple[int, Tensor, Tensor, Tensor]]]

#: route one (sub)network: ``(lateral [B, n, T], net, edge_weight [E'], params, ctx, state)
#: -> (outflow [B, n, T], state or None)``
RouteOne = Callable[..., tuple[Tensor, Any]]


def slice_params(
    irf: ImpulseResponse, params: Mapping[str, Tensor], nodes: Tensor
) -> dict[str, Tensor]:
    """The IRF parameters of ``nodes`` only (each sliced on its node axis)."""
    out = {}
    for name, t in params.items():
        ax = irf.node_axis(name)
        out[name] = t.index_select(t.dim() + ax, nodes.to(t.device))
    return out


def slice_context(ctx: RoutingContext, nodes: Tensor) -> RoutingContext:
    """The routing context of ``nodes`` only (per-reach fields sliced, scalars kept)."""
    fields = {}
    for f in dataclasses.fields(ctx):
        value = getattr(ctx, f.name)
        if isinstance(value, Tensor) and value.dim() >= 1:  # node axis last: [N] or [B, N]
            value = value.index_select(-1, nodes.to(value.device))
        fields[f.name] = value
    return RoutingContext(**fields)


def stage_structs(net: RoutingNetwork, plan: Any) -> list[StageStruct]:
    """Per-stage sub-networks and boundary edges of ``plan`` (cached on ``net`` per plan)."""
    cache = net._device_cache
    key = ("stages", id(plan))
    if key in cache and cache[key][0] is plan:
        return cache[key][1]
    stage_of = plan.stage_of_node.cpu()
    structs = []
    src, dst = net.edge_index
    local_all = torch.empty(net.num_nodes, dtype=torch.long)
    for nodes in plan.stages:
        local_all[nodes.cpu()] = torch.arange(nodes.numel())
    for s, nodes in enumerate(plan.stages):
        nodes = nodes.cpu()
        sub, inner, local_of = subnetwork(net, nodes)
        into = torch.nonzero((stage_of[dst] == s) & (stage_of[src] != s)).flatten()
        # boundary edges grouped by source stage
        src_stage = stage_of[src[into]]
        groups = []
        for ss in torch.unique(src_stage).tolist():
            e = into[src_stage == ss]
            groups.append((ss, e, local_all[src[e]], local_of[dst[e]]))
        structs.append((nodes, sub, inner, groups))
    cache[key] = (plan, structs)
    return structs


def staged_network(net: RoutingNetwork, plan: Any) -> RoutingNetwork:
    """``net`` with its execution order replaced by the stages' nodes, stage after stage (cached
    per plan); raises ``ValueError`` if the stages are not a valid execution order."""
    cache = net._device_cache
    key = ("staged_order", id(plan))
    if key in cache and cache[key][0] is plan:
        return cache[key][1]
    order = torch.cat([n.cpu() for n in plan.stages]).numpy().astype(np.int64)
    N = net.num_nodes
    pos = np.full(N, -1, dtype=np.int64)
    pos[order] = np.arange(order.size)
    if order.size != N or (pos < 0).any():
        raise ValueError(
            f"stage plan covers {np.unique(order).size} distinct of N = {N} nodes "
            f"({order.size} entries): every node must be in exactly one stage"
        )
    src, dst = net.src, net.dst
    bad = np.nonzero(pos[src] >= pos[dst])[0]
    if bad.size:
        raise ValueError(
            f"stage plan is not a valid execution order: {bad.size} edge(s) run from a later "
            f"to an earlier position, e.g. node {int(src[bad[0]])} -> {int(dst[bad[0]])}"
        )
    staged = dataclasses.replace(net, order=np.ascontiguousarray(order), _device_cache={})
    cache[key] = (plan, staged)
    return staged


class _Permute(torch.autograd.Function):
    """``x.index_select(1, idx)`` for a permutation ``idx`` whose inverse is ``inv``: the backward
    is the inverse gather (index_select's own backward zero-fills a gradient and scatter-adds)."""

    @staticmethod
    def forward(ctx, x, idx, inv):  # type: ignore[override]
        ctx.inv = inv
        return x.index_select(1, idx)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g.index_select(1, ctx.inv), None, None


def route_stages(
    lat: Tensor,
    net: RoutingNetwork,
    plan: Any,
    edge_weight: Tensor,
    irf: ImpulseResponse,
    params: Mapping[str, Tensor],
    ctx: RoutingContext,
    state: Any,
    route_one: RouteOne,
    want_state: bool,
    after_stage: Callable[[int, Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Any]:
    """Route ``lat [B, N, T]`` stage after stage with ``route_one`` on each stage's sub-network.

    Each stage's inflow is its lateral inflow plus the weighted outflows of earlier stages along
    the boundary edges; the stages' outflows (and states) are reassembled in node order.
    ``after_stage(stage_index, nodes, out_stage) -> out_stage``, if given, may replace a finished
    stage's outflow ``[B, n_s, T]`` before later stages read it (reservoir releases); states stay
    those of the reaches.
    """
    from gnnhydro.routing.lti import RoutingState

    outs: list[Tensor] = []
    states: list[Any] = []
    B, _, T = lat.shape
    structs = stage_structs(net, plan)
    perm = torch.cat([n for n, *_ in structs]).to(lat.device)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=lat.device)
    # one gather and views of it (the backward of a gather per stage zero-fills and adds a
    # [B, N, T] gradient for every stage)
    sizes = [n.numel() for n, *_ in structs]
    lat_stages = _Permute.apply(lat, perm, inv).split(sizes, dim=1)
    # the boundary sources of each stage, gathered once when it is done (a gather per boundary
    # group would zero-fill a gradient of the whole source stage for every group)
    sources: dict[int, list[Tensor]] = {}
    offsets = []
    for _, _, _, groups in structs:
        offsets.append([])
        for ss, _, src_local, _ in groups:
            rows = sources.setdefault(ss, [])
            offsets[-1].append(sum(r.numel() for r in rows))
            rows.append(src_local)
    boundary: dict[int, Tensor] = {}
    for k, ((nodes, sub, inner, groups), lat_s) in enumerate(zip(structs, lat_stages, strict=True)):
        dev_nodes = nodes.to(lat.device)
        if groups:
            msgs = [
                boundary[ss].narrow(1, off, e.numel())
                * edge_weight[e.to(edge_weight.device)].view(1, -1, 1)
                for (ss, e, _, _), off in zip(groups, offsets[k], strict=True)
            ]
            dst = torch.cat([g[3] for g in groups]).to(lat.device)
            lat_s = lat_s.index_add(1, dst, torch.cat(msgs, 1).to(lat_s.dtype))
        out_s, st_s = route_one(
            lat_s,
            sub,
            edge_weight[inner.to(edge_weight.device)],
            slice_params(irf, params, nodes),
            slice_context(ctx, dev_nodes),
            state.index_nodes(dev_nodes) if state is not None else None,
        )
        if after_stage is not None:
            out_s = after_stage(len(outs), nodes, out_s)
        outs.append(out_s)
        if k in sources:
            boundary[k] = out_s.index_select(1, torch.cat(sources[k]).to(lat.device))
        if st_s is not None:
            states.append(st_s)
    out = _Permute.apply(torch.cat(outs, dim=1), inv, perm)
    new_state = None
    if want_state:
        new_state = RoutingState(
            torch.cat([s.inflow for s in states], dim=1).index_select(1, inv),
            torch.cat([s.outflow for s in states], dim=1).index_select(1, inv),
        )
    return out, new_state


def reservoir_levels(net: RoutingNetwork, reservoir: np.ndarray) -> np.ndarray:
    """``[N]`` int64: the largest number of reservoirs strictly upstream of each node on any path
    (``reservoir`` a bool ``[N]`` mask)."""
    level = np.zeros(net.num_nodes, dtype=np.int64)
    src, dst = net.src, net.dst
    bump = reservoir.astype(np.int64)
    nodes, edges, _ = net.level_groups()
    for e in edges:  # edges entering each topological level, in order
        if e.numel():
            e = e.numpy()
            np.maximum.at(level, dst[e], level[src[e]] + bump[src[e]])
    return level


def reservoir_stage_plan(net: RoutingNetwork, reservoir: Tensor, plan: Any = None) -> Any:
    """A :class:`~gnnhydro.graph.topology.StagePlan` cutting at the reservoirs: stage key
    (reservoir level, stage of ``plan``), in lexicographic order (a valid execution order, since
    both keys never decrease along an edge); nodes ascending in topological level within a stage.
    Cached on ``net`` per mask and plan."""
    from gnnhydro.graph.topology import StagePlan

    mask = reservoir.detach().cpu().numpy().astype(bool)
    cache = net._device_cache
    key = ("reservoir_plan", mask.tobytes(), id(plan))
    hit = cache.get(key)
    if hit is not None and hit[0] is plan:
        return hit[1]
    N = net.num_nodes
    level = reservoir_levels(net, mask)
    outer = (
        plan.stage_of_node.cpu().numpy().astype(np.int64)
        if plan is not None
        else np.zeros(N, dtype=np.int64)
    )
    if plan is not None:  # stage numbers in the plan's execution order
        rank = np.empty(len(plan.stages), dtype=np.int64)
        for k, nodes in enumerate(plan.stages):
            if nodes.numel():
                rank[int(outer[int(nodes[0])])] = k
        outer = rank[outer]
    combined = level * (int(outer.max()) + 1 if N else 1) + outer
    keys, stage_of = np.unique(combined, return_inverse=True)
    topo = net.levels.numpy()
    order = np.lexsort((np.arange(N), topo, stage_of))
    counts = np.bincount(stage_of, minlength=keys.size)
    stages = [
        torch.from_numpy(np.ascontiguousarray(c)) for c in np.split(order, np.cumsum(counts)[:-1])
    ]
    src, dst = net.src, net.dst
    cut = torch.from_numpy(np.nonzero(stage_of[src] != stage_of[dst])[0].astype(np.int64))
    result = StagePlan(
        stages=stages, stage_of_node=torch.from_numpy(stage_of.astype(np.int64)), cut_edges=cut
    )
    cache[key] = (plan, result)
    return result

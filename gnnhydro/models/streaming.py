"""Streamed simulation: a trained model over a whole network and a long record in bounded memory.

The in-memory forward (:meth:`HydroModel.forward`) holds the forcing of every node over the whole
record (``[N, T, F]``) and every flux of the runoff model. At continental scale (10^5–10^6 reaches
× decades) that does not fit, so :func:`stream_discharge` runs the same model steps chunk by
chunk:

.. code-block:: text

    parameters: the parameterizer once over the whole graph (attributes only)
    for each time chunk [t0, t1):
        for each node chunk [a, b):   forcing read from the files for those nodes and steps only
            runoff from the states the previous time chunk ended in  → lateral inflow [b−a, t1−t0]
        routing of the chunk's lateral inflow [N, t1−t0] along the stage plan, from the routing
        state the previous chunk ended in                        → discharge [N, t1−t0] → sink

Runoff and routing states are carried exactly (HBV stores per node, the routing recursion's last
inflow/outflow per reach), so the result equals the in-memory forward up to float rounding.
Peak memory is set by ``time_chunk × N`` (lateral inflow and discharge of one chunk) and
``node_chunk × time_chunk`` (the runoff model's fluxes), not by the record length.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["stream_discharge", "streamable", "DEFAULT_TIME_CHUNK", "DEFAULT_NODE_CHUNK"]

#: default time steps per chunk (a year of daily steps)
DEFAULT_TIME_CHUNK = 365
#: default nodes per runoff chunk
DEFAULT_NODE_CHUNK = 16_384

#: forcing of steps [t0, t1) for ``nodes`` (a slice or int64 indices of the network):
#: ``[M, t1 − t0, F]`` in canonical units
ForcingSource = Callable[[int, int, Any], Tensor]
#: receives ``(t0, discharge [N, t1 − t0] m³/s)`` once per time chunk, in time order
DischargeSink = Callable[[int, Tensor], None]


def _members(model: torch.nn.Module) -> list[Any]:
    return list(getattr(model, "members", [model]))


def streamable(model: torch.nn.Module) -> None:
    """Raise ``ValueError`` naming what keeps ``model`` from being streamed chunk by chunk."""
    for member in _members(model):
        if member.dynamic_names:
            raise ValueError(
                f"streamed prediction needs static parameters; this model's parameters vary in "
                f"time with the forcing {member.dynamic_names} (predict in memory: dataset.lazy=false)"
            )
        if getattr(member.runoff, "unit_hydrograph", False):
            raise ValueError(
                "streamed prediction does not carry the state of HBV's unit hydrograph "
                "(model.runoff.options.unit_hydrograph); predict in memory: dataset.lazy=false"
            )
        if member.initial_discharge_from is not None:
            raise ValueError(
                f"streamed prediction cannot warm-start routing from the data "
                f"(initial_discharge_from={member.initial_discharge_from!r}); predict in memory"
            )


def stream_discharge(
    model: torch.nn.Module,
    graph: Any,
    forcing: ForcingSource,
    forcing_names: Sequence[str],
    sink: DischargeSink,
    *,
    num_steps: int,
    time: np.ndarray | None = None,
    time_chunk: int = DEFAULT_TIME_CHUNK,
    node_chunk: int = DEFAULT_NODE_CHUNK,
    stage_nodes: int = 200_000,
    progress: Callable[[int, int], None] | None = None,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Tensor]:
    """Run ``model`` (a :class:`~gnnhydro.models.HydroModel` or an ensemble: member mean) over
    all nodes of ``graph`` and ``num_steps`` steps, chunk by chunk, without gradients.

    Args:
        model: the trained model (eval mode is set by the caller).
        graph: the network with static attributes (``x`` in the model's attribute order,
            ``edge_index``, ``area_km2``, ``step_seconds``); no forcing needed.
        forcing: ``forcing(t0, t1, nodes)`` → ``[M, t1 − t0, F]`` for ``nodes`` a ``slice`` or
            an int64 index tensor of the network (mode ``routing``: the lateral inflow [m³/s]
            among the variables).
        forcing_names: the names of the ``F`` variables.
        sink: called with ``(t0, discharge)`` for each time chunk in order.
        num_steps: record length T.
        time: ``[T]`` datetime64 (seasonal forcing corrections need it).
        time_chunk / node_chunk: chunk sizes (memory ∝ ``time_chunk × N``).
        stage_nodes: node budget of a routing stage (:meth:`RiverGraph.stage_plan`).
        progress: called with ``(steps done, num_steps)`` after each chunk.
        rank / world: under ``torch.distributed`` (``world`` > 1) the network is sharded by
            the stage plan (:class:`_Shard`: whole stages, consecutive in execution order,
            balanced by nodes): each rank runs runoff and routing of its own reaches, reading
            only their forcing, receives the boundary outflows of upstream shards and sends its
            own downstream; rank 0 gathers the discharge and alone calls ``sink``.

    Returns:
        The parameters by name (member mean for an ensemble), as from the in-memory forward.

    Shapes:
        discharge passed to ``sink`` ``[N, t1 − t0]`` float32 m³/s; parameters ``[N, m]`` /
        ``[N]``.
    """
    streamable(model)
    if time_chunk < 1 or node_chunk < 1:
        raise ValueError(f"time_chunk and node_chunk must be >= 1, got {time_chunk}, {node_chunk}")
    members = _members(model)
    device = graph.x.device  # forcing chunks are moved there; the sink gets tensors there
    names = list(forcing_names)
    step_seconds = float(getattr(graph, "step_seconds", 86400.0))
    with torch.no_grad():
        full_params = [member.parameters_of(graph)[0] for member in members]
        upstream = (
            graph.upstream_area_km2
            if any(getattr(m.runoff, "groundwater_exchange", False) for m in members)
            else None
        )
        if world > 1:
            shard = _Shard(graph, rank, world, stage_nodes)
            mine, local = shard.nodes, shard.graph
            params = [{k: v[mine] for k, v in p.items()} for p in full_params]
            area = graph.area_km2[mine]
            upstream = upstream[mine] if upstream is not None else None
        else:
            shard, mine, local, params, area = None, None, graph, full_params, graph.area_km2
        m = int(local.num_nodes)
        runoff_states: list[dict[int, dict[str, Tensor]]] = [{} for _ in members]
        routing_states: list[Any] = [None] * len(members)

        def read(t0: int, t1: int, a: int, b: int) -> Tensor:
            nodes = slice(a, b) if mine is None else mine[a:b]
            return forcing(t0, t1, nodes).to(device)

        def node_chunk_view(a: int, b: int, t0: int, t1: int, values: Tensor) -> Any:
            view = types.SimpleNamespace(
                forcing=values,
                forcing_names=names,
                area_km2=area[a:b],
                num_nodes=b - a,
                step_seconds=step_seconds,
                time=None if time is None else time[t0:t1],
            )
            if upstream is not None:
                view.upstream_area_km2 = upstream[a:b]
            return view

        routing_mode = all(member.mode == "routing" for member in members)
        for t0 in range(0, num_steps, time_chunk):
            t1 = min(num_steps, t0 + time_chunk)
            if routing_mode:  # lateral inflow is read like forcing
                lateral = read(t0, t1, 0, m)[..., names.index("lateral_inflow")].float()
                laterals = [lateral] * len(members)
            else:  # each node chunk's forcing is read once for all members
                laterals = [torch.empty(m, t1 - t0, device=device) for _ in members]
                for a in range(0, m, node_chunk):
                    b = min(m, a + node_chunk)
                    view = node_chunk_view(a, b, t0, t1, read(t0, t1, a, b))
                    spin = min(max(mb.spinup_steps for mb in members), num_steps)
                    head_view = None
                    if t0 == 0 and spin > t1:  # the spin-up reaches past the first chunk
                        head_view = node_chunk_view(a, b, 0, spin, read(0, spin, a, b))
                    for k, member in enumerate(members):
                        p = {name: value[a:b] for name, value in params[k].items()}
                        runoff_forcing = member.runoff_forcing(view, p)
                        states = runoff_states[k].get(a)
                        if t0 == 0 and member.spinup_steps > 0:  # as the in-memory forward
                            head = runoff_forcing
                            if head_view is not None and member.spinup_steps > t1:
                                head = member.runoff_forcing(head_view, p)
                            runoff_params = {
                                name: p[name] for name in member.runoff_specs(member.runoff)
                            }
                            states = member.spun_up_states(head, runoff_params)
                        lat, result = member.runoff_lateral(
                            view, runoff_forcing, p, states, return_states=True
                        )
                        runoff_states[k][a] = member.runoff.final_states(result)
                        laterals[k][a:b] = lat.float()
            total: Tensor | None = None
            for k, member in enumerate(members):
                discharge = laterals[k]
                if member.mode != "runoff":
                    if shard is not None:  # outflows of upstream shards enter here
                        discharge = shard.receive_boundary(discharge)
                    discharge, routing_states[k] = member.route_lateral(
                        discharge,
                        local,
                        params[k],
                        routing_states[k],
                        return_state=True,
                        stage_plan="auto",
                        max_nodes=stage_nodes,
                    )
                    if shard is not None:
                        shard.send_boundary(discharge)
                total = discharge if total is None else total + discharge
            total = total / len(members)
            if shard is not None:
                total = shard.gather(total)  # the whole network on rank 0, None elsewhere
            if total is not None:
                sink(t0, total)
            if progress is not None:
                progress(t1, num_steps)
    if len(full_params) == 1:
        return full_params[0]
    return {name: torch.stack([p[name] for p in full_params]).mean(0) for name in full_params[0]}


class _Shard:
    """This rank's part of the network for distributed streaming: whole stages of the stage
    plan, consecutive in execution order and balanced by nodes, so every edge between shards
    runs from a lower rank to a higher one. Per time chunk a rank receives the outflows of its
    upstream shards' boundary reaches (added to its lateral inflow, as staged routing adds
    them), routes its own reaches, sends its boundary outflows downstream, and rank 0 gathers
    the discharge of every shard.

    Shapes:
        ``nodes`` ``[M]`` int64 global indices of this rank's reaches (ascending).
    """

    def __init__(self, graph: Any, rank: int, world: int, stage_nodes: int) -> None:
        n = int(graph.num_nodes)
        budget = max(1, min(int(stage_nodes), -(-n // (4 * world))))
        plan = graph.stage_plan(max_nodes=budget)
        sizes = torch.tensor([len(stage) for stage in plan.stages])
        before = torch.cumsum(sizes, 0) - sizes
        owner_of_stage = torch.clamp(before * world // n, max=world - 1)
        owner = owner_of_stage[plan.stage_of_node.long()]
        self.rank, self.world = rank, world
        self.all_nodes = [torch.nonzero(owner == q).flatten() for q in range(world)]
        self.nodes = self.all_nodes[rank]
        local = torch.full((n,), -1, dtype=torch.long)
        for q in range(world):
            local[self.all_nodes[q]] = torch.arange(self.all_nodes[q].numel())
        src, dst = graph.edge_index
        weight = getattr(graph, "edge_weight", None)
        weight = torch.ones(src.numel()) if weight is None else weight
        cut = owner[src] != owner[dst]
        if bool((owner[src][cut] > owner[dst][cut]).any()):  # pragma: no cover - plan invariant
            raise RuntimeError("stage plan: an edge runs from a later shard to an earlier one")
        self.incoming: dict[int, tuple[Tensor, Tensor]] = {}  # q → (local dst, weight)
        self.outgoing: dict[int, Tensor] = {}  # q → local src
        for q in range(world):
            into_me = cut & (owner[src] == q) & (owner[dst] == rank)
            if q < rank and bool(into_me.any()):
                self.incoming[q] = (local[dst[into_me]], weight[into_me].float())
            from_me = cut & (owner[src] == rank) & (owner[dst] == q)
            if q > rank and bool(from_me.any()):
                self.outgoing[q] = local[src[from_me]]
        self.graph = graph.subgraph_nodes(self.nodes)
        self.graph.step_seconds = getattr(graph, "step_seconds", 86400.0)

    def receive_boundary(self, lateral: Tensor) -> Tensor:
        import torch.distributed as dist

        for q, (dst_local, weight) in self.incoming.items():
            flow = torch.empty(dst_local.numel(), lateral.shape[1], dtype=lateral.dtype)
            dist.recv(flow, src=q)
            lateral = lateral.index_add(0, dst_local, flow.to(lateral.device) * weight[:, None])
        return lateral

    def send_boundary(self, discharge: Tensor) -> None:
        import torch.distributed as dist

        for q, src_local in self.outgoing.items():
            dist.send(discharge[src_local].float().cpu().contiguous(), dst=q)

    def gather(self, discharge: Tensor) -> Tensor | None:
        import torch.distributed as dist

        if self.rank != 0:
            dist.send(discharge.float().cpu().contiguous(), dst=0)
            return None
        n = sum(nodes.numel() for nodes in self.all_nodes)
        full = torch.empty(n, discharge.shape[1], dtype=torch.float32)
        full[self.nodes] = discharge.float().cpu()
        for q in range(1, self.world):
            part = torch.empty(self.all_nodes[q].numel(), discharge.shape[1])
            dist.recv(part, src=q)
            full[self.all_nodes[q]] = part
        return full.to(discharge.device)

"""Exact, differentiable, staged LTI river routing as message passing.

Every reach ``i`` receives its lateral inflow at its upstream end, together with the weighted
outflow of the reaches draining into it, and routes the sum through its own impulse response
(RAPID / NWM convention):

.. math::
    I_i(t) = q_i(t) + \\sum_{j \\to i} w_{ji}\\, O_j(t), \\qquad O_i = h_i * I_i

On CPU a fused numba kernel walks the reaches in topological order (exact adjoint in reverse
order); a pure-torch path routes level by level (any device, autograd); CUDA tensors use triton.
Staged execution on the numba backend walks the stages one after another over the full
``[B, N, T]`` arrays (each stage's outflow written in place, no per-stage copies); the other
backends route each stage on its own sub-network, carrying the boundary outflows.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing

from gnnhydro.routing.backends import RoutingBackend, pick_backend
from gnnhydro.routing.irf import (
    ImpulseResponse,
    KernelIRF,
    RecursiveIRF,
    RoutingContext,
    get_irf,
)
from gnnhydro.routing.kernels.reservoir_fused import route_fused
from gnnhydro.routing.network import RoutingNetwork, routing_network
from gnnhydro.routing.reservoirs import empty_result, reservoir_run
from gnnhydro.routing.staged import reservoir_stage_plan, route_stages, staged_network

__all__ = [
    "route",
    "RouteOptions",
    "LTIRouter",
    "RoutingState",
    "lti_route",
    "parse_substeps",
    "AUTO_MAX_SUBSTEPS",
]

Backend = Literal["auto", "numba", "torch", "triton"]


@dataclass
class RoutingState:
    """Routing state at the end of a run, to continue exactly from it (time chunking, warm starts).

    Attributes:
        inflow: ``[B, N, H]`` the last ``H`` inflows of every reach (internal steps, oldest first;
            ``H = 1`` for recursive IRFs, kernel length − 1 for kernel IRFs).
        outflow: ``[B, N]`` the last outflow of every reach (m³/s or the unit of the inflow).
        reservoir_storage: ``[B, R]`` storage [m³] of the reservoirs (:mod:`.reservoirs`), or None.
    """

    inflow: Tensor
    outflow: Tensor
    reservoir_storage: Tensor | None = None

    def index_nodes(self, nodes: Tensor) -> RoutingState:
        return RoutingState(self.inflow[:, nodes], self.outflow[:, nodes])


_OPTION_DOCS = (
    "substeps, stage_plan, max_nodes, time_chunk, step_seconds, backend, reservoir, reservoir_nodes"
)


@dataclass(frozen=True)
class RouteOptions:
    """How :func:`route` routes (everything but the data, the IRF and its parameters); every
    field is also a keyword of :func:`route` and :class:`LTIRouter`, documented in :func:`route`.

    Attributes:
        substeps: internal time steps per input step: an integer, ``"auto"`` or ``[N]`` tensor.
        stage_plan: None, ``"auto"`` or a :class:`~gnnhydro.graph.StagePlan`.
        max_nodes: node budget per stage for ``stage_plan="auto"``.
        time_chunk: route in chunks of this many input steps, carrying the state.
        step_seconds: length of one input step [s].
        backend: ``"auto"``, or a name in :data:`~gnnhydro.routing.backends.BACKENDS`.
        reservoir: reservoir operator at the reservoir nodes (None / ``"none"``: plain reaches).
        reservoir_nodes: ``[N]`` bool reservoir nodes (default ``graph.reservoir_mask``).
    """

    substeps: int | str | Tensor = 1
    stage_plan: Any = None
    max_nodes: int | None = None
    time_chunk: int | None = None
    step_seconds: float | None = None
    backend: Backend = "auto"
    reservoir: Any = None
    reservoir_nodes: Tensor | None = None

    def replace(self, **changes: Any) -> RouteOptions:
        """A copy with ``changes`` (raises ``TypeError`` naming an unknown option)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown routing option(s) {unknown}; the options are {_OPTION_DOCS}")
        return dataclasses.replace(self, **changes) if changes else self


# ------------------------------------------------------------------------------- validation
def _node_ids(graph: Any, idx: list[int]) -> list:
    """The ids of the nodes at positions ``idx`` (positions where the graph has no ids; a PyG
    batch keeps one id list per graph, concatenated here)."""
    ids = getattr(graph, "node_id", None)
    if ids is None or isinstance(graph, Tensor):
        return idx
    if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
        ids = [i for part in ids for i in part]
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    if len(ids) <= max(idx, default=-1):
        return idx
    return [ids[i] for i in idx]


def _check_lateral(lateral: Tensor, graph: Any, num_nodes: int) -> Tensor:
    if not isinstance(lateral, Tensor):
        raise ValueError(
            f"lateral inflow must be a tensor [N, T] or [B, N, T], got {type(lateral)}"
        )
    if lateral.dim() not in (2, 3):
        raise ValueError(
            f"lateral inflow must be [N, T] or [B, N, T], got shape {tuple(lateral.shape)}"
        )
    if lateral.shape[-2] != num_nodes:
        raise ValueError(
            f"lateral inflow has {lateral.shape[-2]} nodes on axis -2 (shape {tuple(lateral.shape)}) "
            f"but the network has N = {num_nodes} nodes"
        )
    if not lateral.is_floating_point():
        raise ValueError(f"lateral inflow must be floating point, got {lateral.dtype}")
    # one fast reduction (numpy on CPU: torch's threaded reductions stall on busy cores);
    # locate the NaN only when the sum is not finite
    total = (
        lateral.detach().numpy().sum()
        if lateral.device.type == "cpu"
        else lateral.detach().sum().item()
    )
    if np.isfinite(total):
        return lateral
    nan = torch.isnan(lateral)
    if nan.any():
        bad = torch.nonzero(nan.reshape(-1, num_nodes, lateral.shape[-1]).any(0).any(-1)).flatten()
        raise ValueError(
            f"lateral inflow contains NaN at {bad.numel()} node(s), ids {_node_ids(graph, bad.tolist()[:20])}"
        )
    return lateral


#: per-reach data that ``params`` may carry besides the IRF's parameters (shaped and batched
#: like them, not checked against the IRF's spec); they override the graph's in the context
CONTEXT_DATA = ("length_m", "slope", "reference_discharge")


def _prepare_params(
    irf: ImpulseResponse, params: Mapping[str, Any] | None, num_nodes: int, batch: int, ref: Tensor
) -> dict[str, Tensor]:
    if params is None:
        params = {}
    out: dict[str, Tensor] = {}
    for name, value in params.items():
        t = torch.as_tensor(value, device=ref.device)
        if not t.is_floating_point():
            t = t.to(ref.dtype)
        node_axis = irf.node_axis(name)
        if t.dim() == 0:
            t = t.expand(num_nodes)
        elif t.dim() < -node_axis or t.shape[node_axis] != num_nodes:
            raise ValueError(
                f"IRF {irf.name!r}: parameter {name!r} has shape {tuple(t.shape)}; expected N = "
                f"{num_nodes} nodes on axis {node_axis} ([N] or [B, N])"
            )
        extra = t.dim() + node_axis  # number of leading (batch) axes
        if extra > 1:
            raise ValueError(
                f"IRF {irf.name!r}: parameter {name!r} has too many axes {tuple(t.shape)}"
            )
        if extra == 1 and t.shape[0] not in (1, batch):
            raise ValueError(
                f"IRF {irf.name!r}: parameter {name!r} has batch size {t.shape[0]} but the lateral "
                f"inflow has B = {batch}"
            )
        out[name] = t
    irf.check_params({name: t for name, t in out.items() if name not in CONTEXT_DATA})
    return out


def _lead(t: Tensor, node_dims: int) -> Tensor:
    """Give a per-node tensor a leading batch axis of 1 if it has none."""
    return t.unsqueeze(0) if t.dim() == node_dims else t


# ------------------------------------------------------------------------------- core
#: ``substeps="auto"``: a reach needing more internal steps than this passes its inflow through
AUTO_MAX_SUBSTEPS = 24


def parse_substeps(value: Any) -> int | str:
    """A ``substeps`` setting from a config or command line: a positive integer or ``"auto"``
    (raises ``ValueError`` naming the value otherwise)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        steps = int(str(value).strip()) if not isinstance(value, (int, np.integer)) else int(value)
    except ValueError:
        steps = 0
    if isinstance(value, bool) or steps < 1 or (isinstance(value, float) and value != steps):
        raise ValueError(f"substeps must be a positive integer or 'auto', got {value!r}")
    return steps


def _uniform_substeps(substeps: Any) -> int:
    """The network-wide number of internal steps (``int`` substeps), or 0 for per-reach steps
    (``"auto"`` or a tensor)."""
    if isinstance(substeps, str):
        if substeps != "auto":
            raise ValueError(
                f"substeps must be a positive integer, 'auto' or an [N] tensor, got {substeps!r}"
            )
        return 0
    if isinstance(substeps, Tensor):
        return 0
    if isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)) or substeps < 1:
        raise ValueError(
            f"substeps must be a positive integer, 'auto' or an [N] tensor, got {substeps!r}"
        )
    return int(substeps)


def _reach_substeps(
    substeps: str | Tensor,
    irf: ImpulseResponse,
    params: Mapping[str, Tensor],
    ctx: RoutingContext,
    N: int,
) -> Tensor | None:
    """Per-reach internal steps ``[N]`` / ``[B, N]`` (int64) for ``"auto"`` or a given tensor."""
    if not isinstance(irf, RecursiveIRF):
        if isinstance(substeps, str):
            return None  # kernels are exact step integrals: nothing to choose
        raise ValueError(
            f"per-reach substeps apply to recursive IRFs (muskingum, linear_storage); IRF "
            f"{irf.name!r} is a kernel: give substeps as an integer"
        )
    if isinstance(substeps, str):
        return irf.auto_substeps(params, ctx, AUTO_MAX_SUBSTEPS)
    steps = substeps.detach()
    if steps.is_floating_point() and not bool((steps == steps.round()).all()):
        raise ValueError("per-reach substeps must be whole numbers of internal steps")
    steps = steps.long()
    if steps.shape[-1] != N or steps.dim() > 2:
        raise ValueError(
            f"per-reach substeps must be [N] or [B, N] with N = {N}, got {tuple(steps.shape)}"
        )
    if bool((steps < 0).any()):
        bad = torch.nonzero((steps < 0).reshape(-1, N).any(0)).flatten().tolist()[:20]
        raise ValueError(
            f"per-reach substeps must be >= 0 (0 = pass through), negative at node indices {bad}"
        )
    return steps


#: per IRF name, the count of reaches with a negative coefficient last warned about
_WARNED_NEGATIVE: dict[str, int] = {}


def _warn_negative(
    irf: ImpulseResponse, params: Mapping[str, Tensor], ctx: RoutingContext, graph: Any
) -> None:
    """Warn how many reaches route with a negative recursion coefficient at their internal step
    (their outflow can turn negative): the first time in a process for an IRF, and again only
    when the count has at least doubled (a training run does not repeat it every step)."""
    if not isinstance(irf, RecursiveIRF) or not params:
        return
    inner = ctx
    steps = ctx.reach_substeps
    if steps is not None:
        ref = next(iter(params.values()))
        inner = dataclasses.replace(ctx, dt=ctx.dt / steps.clamp(min=1).to(ref.device, ref.dtype))
    with torch.no_grad():
        lowest = irf.coefficients(params, inner).amin(-1)
        if steps is not None:  # pass-through reaches route with (1, 0, 0)
            lowest = torch.where(steps.to(lowest.device) > 0, lowest, torch.ones_like(lowest))
        lowest = lowest.reshape(-1, lowest.shape[-1]).amin(0)
        bad = lowest < 0
        count = int(bad.sum().item())
    if count == 0 or count < 2 * _WARNED_NEGATIVE.get(irf.name, 0):
        return
    _WARNED_NEGATIVE[irf.name] = count
    ids = _node_ids(graph, torch.nonzero(bad).flatten().tolist()[:10])
    warnings.warn(
        f"routing: {count} of {bad.numel()} reaches route with a negative {irf.name} coefficient "
        f"at their time step (as low as {float(lowest.min()):.3g}; their outflow can turn "
        f"negative), e.g. ids {ids}; substeps='auto' removes C2 < 0 (k(1-x) < dt/2), "
        f"C0 < 0 needs k*x <= dt/2",
        RuntimeWarning,
        stacklevel=4,
    )


def _last_inflow(
    lat: Tensor, out: Tensor, net: RoutingNetwork, edge_weight: Tensor, steps: int
) -> Tensor:
    """Inflow of every reach over the last ``steps`` steps (differentiable, torch)."""
    ei = net.edge_index_on(lat.device)
    lat_t, out_t = lat[..., -steps:], out[..., -steps:]
    msg = out_t[:, ei[0]] * edge_weight.view(1, -1, 1)
    return lat_t.index_add(1, ei[1], msg)


def _route_core(
    lat: Tensor,
    net: RoutingNetwork,
    edge_weight: Tensor,
    irf: ImpulseResponse,
    params: Mapping[str, Tensor],
    ctx: RoutingContext,
    state: RoutingState | None,
    kfull: int | None,
    backend: RoutingBackend,
    aggregate: Callable | None,
    want_state: bool,
) -> tuple[Tensor, RoutingState | None]:
    """Route ``lat [B, N, T]`` (internal steps) through one (sub)network."""
    B, N, T = lat.shape
    dtype = lat.dtype
    if isinstance(irf, RecursiveIRF):
        coef = _lead(irf.step_coefficients(params, ctx), 2).to(dtype)
        if state is None:
            init_in = lat.new_zeros(B, N)
            init_out = lat.new_zeros(B, N)
        else:
            init_in = state.inflow[..., -1].to(dtype)
            init_out = state.outflow.to(dtype)
        out = backend.recursive(lat, coef, init_in, init_out, edge_weight, net, aggregate)
        new_state = None
        if want_state:
            new_state = RoutingState(_last_inflow(lat, out, net, edge_weight, 1), out[..., -1])
        return out, new_state

    assert isinstance(irf, KernelIRF)
    kfull = kfull if kfull is not None else irf.full_length(params, ctx)
    hist = state.inflow.to(dtype) if state is not None else lat.new_zeros(B, N, 0)
    H = hist.shape[-1]
    K = max(1, min(kfull, T + H))
    h = _lead(irf.kernel(params, ctx, max_len=K), 2).to(dtype)
    K = h.shape[-1]
    if H > K - 1:
        hist = hist[..., H - (K - 1) :] if K > 1 else hist[..., :0]
    sup = irf.support(params, ctx, K)
    if sup is None:
        sup = torch.tensor([0, K], dtype=torch.long).expand(h.shape[0], N, 2)
    else:
        sup = _lead(sup, 2).expand(h.shape[0], N, 2)
    out = backend.kernel(lat, h, hist, sup, edge_weight, net, aggregate)
    new_state = None
    if want_state:
        keep = max(kfull - 1, 0)
        inflow = (
            _last_inflow(lat, out, net, edge_weight, min(keep, T))
            if keep
            else lat.new_zeros(B, N, 0)
        )
        if keep > T:
            prev = state.inflow.to(dtype) if state is not None else lat.new_zeros(B, N, 0)
            inflow = torch.cat([prev, inflow], dim=-1)
            if inflow.shape[-1] < keep:
                inflow = torch.nn.functional.pad(inflow, (keep - inflow.shape[-1], 0))
            inflow = inflow[..., -keep:]
        new_state = RoutingState(inflow, out[..., -1])
    return out, new_state


def _route_window(
    lat: Tensor,
    net: RoutingNetwork,
    edge_weight: Tensor,
    irf: ImpulseResponse,
    params: Mapping[str, Tensor],
    ctx: RoutingContext,
    state: RoutingState | None,
    kfull: int | None,
    plan: Any,
    backend: RoutingBackend,
    aggregate: Callable | None,
    want_state: bool,
    reservoirs: Any = None,
) -> tuple[Tensor, RoutingState | None]:
    """Route one time window, in stages where ``plan`` has several (:mod:`.staged`); with
    ``reservoirs`` (a :class:`~gnnhydro.routing.reservoirs.ReservoirRun`) always stage by stage,
    the reservoirs of each finished stage releasing into the later ones."""

    def route_one(lat_s, net_s, ew_s, params_s, ctx_s, state_s):
        return _route_core(
            lat_s, net_s, ew_s, irf, params_s, ctx_s, state_s, kfull, backend, aggregate, want_state
        )

    if reservoirs is not None:  # cut at the reservoirs: each stage on its own sub-network
        fused = route_fused(
            reservoirs, lat, net, edge_weight, irf, params, ctx, state, backend, want_state
        )  # forward without gradients: one numba pass, the reservoirs inline
        if fused is not None:
            return fused, None
        out, new_state = route_stages(
            lat, net, plan, edge_weight, irf, params, ctx, state, route_one, want_state,
            after_stage=reservoirs.after_stage,
        )  # fmt: skip
        reservoirs.end_window(lat.shape[-1])
        return out, new_state
    if plan is None or len(plan.stages) <= 1:
        return route_one(lat, net, edge_weight, params, ctx, state)
    if backend.fused_stages:
        # the fused kernel walks the stages one after another over the full arrays, writing
        # every stage's outflow in place (no per-stage gathers, boundary messages or reassembly)
        return route_one(lat, staged_network(net, plan), edge_weight, params, ctx, state)
    return route_stages(lat, net, plan, edge_weight, irf, params, ctx, state, route_one, want_state)


def _initial_state(
    initial_state: Any, irf: ImpulseResponse, kfull: int | None, B: int, N: int, ref: Tensor
) -> RoutingState | None:
    if initial_state is None:
        return None
    if isinstance(initial_state, RoutingState):
        st = initial_state
        if st.inflow.dim() == 2:
            st = RoutingState(st.inflow.unsqueeze(0), st.outflow.unsqueeze(0))
        if st.inflow.shape[:2] != (B, N) and st.inflow.shape[:2] != (1, N):
            raise ValueError(
                f"initial_state has shape {tuple(st.inflow.shape)}; expected [B={B}, N={N}, H]"
            )
        if st.inflow.shape[0] != B:
            st = RoutingState(st.inflow.expand(B, *st.inflow.shape[1:]), st.outflow.expand(B, N))
        return st
    q0 = torch.as_tensor(initial_state, dtype=ref.dtype, device=ref.device)
    if q0.dim() == 1:
        q0 = q0.unsqueeze(0)
    if q0.dim() != 2 or q0.shape[-1] != N:
        raise ValueError(
            f"initial discharge must be [N] or [B, N] with N = {N}, got shape {tuple(q0.shape)}"
        )
    q0 = q0.expand(B, N)
    H = 1 if isinstance(irf, RecursiveIRF) else max((kfull or 1) - 1, 0)
    return RoutingState(q0.unsqueeze(-1).expand(B, N, H), q0)


def lti_route(
    lateral: Tensor,
    graph: Any,
    irf: str | ImpulseResponse = "muskingum",
    params: Mapping[str, Any] | None = None,
    *,
    kernels: Tensor | None = None,
    initial_state: RoutingState | Tensor | None = None,
    return_state: bool = False,
    edge_weight: Tensor | None = None,
    num_nodes: int | None = None,
    reservoir_params: Mapping[str, Any] | None = None,
    return_reservoirs: bool = False,
    options: RouteOptions = RouteOptions(),
    aggregate: Callable | None = None,
) -> Tensor | tuple[Tensor, RoutingState]:
    """Route lateral inflow through a river network; see :func:`route` (the routing options in
    ``options``, plus ``aggregate``: a callable ``(out, src, local_dst, weight, n_dst) ->
    [B, n_dst, T]`` the pure-torch path sums upstream outflows with, e.g. PyG ``propagate``)."""
    substeps, stage_plan, max_nodes = options.substeps, options.stage_plan, options.max_nodes
    time_chunk, step_seconds, backend = options.time_chunk, options.step_seconds, options.backend
    reservoir, reservoir_nodes = options.reservoir, options.reservoir_nodes
    if kernels is not None:
        irf, params = "explicit", {"h": kernels}
    irf_obj = get_irf(irf)
    if isinstance(graph, Tensor):
        n = (
            num_nodes
            if num_nodes is not None
            else (lateral.shape[-2] if isinstance(lateral, Tensor) else None)
        )
        net = routing_network(graph, n)
        ew = (
            edge_weight
            if edge_weight is not None
            else torch.ones(graph.shape[1], dtype=lateral.dtype)
        )
        length_m = None
    else:
        net = routing_network(graph)
        ew = edge_weight if edge_weight is not None else getattr(graph, "edge_weight", None)
        if ew is None:
            ew = torch.ones(net.edge_index.shape[1])
        length_m = getattr(graph, "length_m", None)
    N = net.num_nodes
    _check_lateral(lateral, graph, N)
    uniform = _uniform_substeps(substeps)
    squeeze = lateral.dim() == 2
    lat = lateral.unsqueeze(0) if squeeze else lateral
    B, _, T = lat.shape
    pdict = _prepare_params(irf_obj, params, N, B, lat)
    ew = ew.to(device=lat.device, dtype=lat.dtype)
    if ew.shape != (net.edge_index.shape[1],):
        raise ValueError(
            f"edge_weight must be [E = {net.edge_index.shape[1]}], got {tuple(ew.shape)}"
        )
    be = pick_backend(backend, lat.device)
    ctx = RoutingContext(
        dt=1.0 / max(uniform, 1),
        num_steps=T * max(uniform, 1),
        step_seconds=step_seconds,
        length_m=None if length_m is None else length_m.to(lat.device),
    )
    if "length_m" in pdict:  # explicit reach lengths as a parameter override the graph's
        ctx.length_m = pdict.pop("length_m")
    if not isinstance(graph, Tensor) and getattr(graph, "slope", None) is not None:
        ctx.slope = graph.slope.to(lat.device)
    for name in ("slope", "reference_discharge"):  # per-reach data given with the parameters
        if name in pdict:
            setattr(ctx, name, pdict.pop(name))
    if uniform == 0:
        ctx.reach_substeps = _reach_substeps(substeps, irf_obj, pdict, ctx, N)
    _warn_negative(irf_obj, pdict, ctx, graph)
    substeps = max(uniform, 1)
    kfull = irf_obj.full_length(pdict, ctx) if isinstance(irf_obj, KernelIRF) else None
    plan = None
    if isinstance(stage_plan, str):
        if stage_plan != "auto":
            raise ValueError(f"stage_plan must be None, 'auto' or a StagePlan, got {stage_plan!r}")
        budget = max_nodes if max_nodes is not None else 200_000
        if hasattr(graph, "stage_plan"):
            plan = graph.stage_plan(max_nodes=budget)
        else:
            from gnnhydro.graph.topology import stage_plan as make_plan

            plan = make_plan(
                net.edge_index, N, net.levels, edge_weight=ew.detach().cpu(), max_nodes=budget
            )
    elif stage_plan is not None:
        plan = stage_plan
    state = _initial_state(initial_state, irf_obj, kfull, B, N, lat)
    reservoirs = reservoir_run(
        reservoir, reservoir_params, reservoir_nodes, graph, N, lat, step_seconds, substeps,
        initial_state, lambda idx: _node_ids(graph, idx),
    )  # fmt: skip
    if reservoirs is not None:  # stages cut at the reservoirs (within the plan's stages)
        plan = reservoir_stage_plan(net, reservoirs.res_of >= 0, plan)
    chunk = T if time_chunk is None else int(time_chunk)
    if chunk < 1:
        raise ValueError(f"time_chunk must be >= 1, got {time_chunk}")
    outs = []
    for t0 in range(0, T, chunk):
        piece = lat[..., t0 : t0 + chunk]
        if substeps > 1:
            piece = piece.repeat_interleave(substeps, dim=-1)
        last = t0 + chunk >= T
        out, state = _route_window(
            piece,
            net,
            ew,
            irf_obj,
            pdict,
            ctx,
            state,
            kfull,
            plan,
            be,
            aggregate,
            want_state=return_state or not last,
            reservoirs=reservoirs,
        )
        if substeps > 1:
            out = out.view(B, N, -1, substeps).mean(-1)
        outs.append(out)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    if squeeze:
        out = out.squeeze(0)
    if reservoirs is not None and state is not None:
        state.reservoir_storage = reservoirs.storage
    if return_reservoirs:
        res = reservoirs.result(squeeze) if reservoirs is not None else empty_result(lat, squeeze)
        return (out, state, res) if return_state else (out, res)
    if return_state:
        return out, state
    return out


def route(
    lateral: Tensor,
    graph: Any,
    irf: str | ImpulseResponse = "muskingum",
    params: Mapping[str, Any] | None = None,
    *,
    kernels: Tensor | None = None,
    initial_state: RoutingState | Tensor | None = None,
    return_state: bool = False,
    edge_weight: Tensor | None = None,
    num_nodes: int | None = None,
    reservoir_params: Mapping[str, Any] | None = None,
    return_reservoirs: bool = False,
    options: RouteOptions | None = None,
    **option_values: Any,
) -> Tensor | tuple[Tensor, RoutingState]:
    """Route lateral inflow through a river network with per-reach LTI impulse responses.

    Args:
        lateral: lateral inflow of every reach (enters at the reach's upstream end), in graph
            node order, any discharge unit (m³/s by convention).
        graph: a :class:`~gnnhydro.graph.RiverGraph`, or an ``edge_index`` ``[2, E]``
            (upstream→downstream; then ``num_nodes`` defaults to ``lateral.shape[-2]``).
        irf: name of a registered IRF (:func:`~gnnhydro.routing.available_irfs`) or an instance.
        params: the IRF's parameters by name, each ``[N]`` or ``[B, N]`` (scalars broadcast);
            time-valued parameters in input time steps; checked against the IRF's ``param_spec``.
            May also carry per-reach data (``CONTEXT_DATA``: ``length_m`` [m], ``slope`` [m/m],
            ``reference_discharge`` [m³/s]) overriding the graph's (e.g. ``muskingum_cunge``).
        options: a :class:`RouteOptions` (how to route); the keywords ``substeps``,
            ``stage_plan``, ``max_nodes``, ``time_chunk``, ``step_seconds``, ``backend``,
            ``reservoir``, ``reservoir_nodes`` below set (or override) its fields.
        kernels: explicit impulse responses ``[N, K]`` or ``[B, N, K]`` (``h[..., 0]`` = lag 0);
            replaces ``irf``/``params``.
        substeps: internal time steps per input step; the inflow is held within an input step
            and each reach's output is the mean of its internal outflows (volume is conserved).
            An integer runs the whole network at ``Δt/substeps`` (any IRF). ``"auto"`` gives
            every reach its own step (recursive IRFs; kernels are exact step integrals and stay
            at the input step): the fewest internal steps for which Muskingum's coefficients are
            non-negative, and reaches needing more than ``AUTO_MAX_SUBSTEPS`` (24) pass their
            inflow straight through; a per-reach int tensor ``[N]`` (or ``[B, N]``, 0 = pass
            through) gives the steps. Per-reach steps cost nothing in the routing kernels
            (:meth:`~gnnhydro.routing.RecursiveIRF.step_coefficients`). A ``RuntimeWarning``
            says how many reaches route with a negative coefficient at their step.
        initial_state: None (empty channels), an initial discharge ``[N]`` / ``[B, N]`` (steady
            flow through every reach), or a :class:`RoutingState` from ``return_state=True``.
        return_state: also return the final :class:`RoutingState` (internal-step resolution).
        stage_plan: None (one stage), ``"auto"`` (``graph.stage_plan(max_nodes=max_nodes)``) or
            a :class:`~gnnhydro.graph.StagePlan`; stages run one after another carrying boundary
            outflows, exactly equal to unstaged routing, gradients flow across stages.
        max_nodes: node budget per stage for ``stage_plan="auto"`` (default 200,000).
        time_chunk: route the series in chunks of this many input steps carrying the state
            (exact; bounds the size of per-chunk work arrays).
        step_seconds: length of one input step in seconds (needed by ``diffusive_wave`` and
            ``muskingum_cunge``).
        edge_weight: split fractions ``[E]`` overriding ``graph.edge_weight`` (differentiable).
        backend: ``"auto"`` (numba on CPU, triton on CUDA), ``"numba"``, ``"torch"``, ``"triton"``.
        reservoir: None / ``"none"`` (reservoir nodes route as plain reaches) or a registered
            reservoir operator (:func:`~gnnhydro.routing.reservoirs.available_reservoirs`:
            ``level_pool``, ``learned``, ``observed``) or an instance. The reservoir node's reach
            routes its inflow as usual; the reservoir takes that outflow as inflow [m³/s] and its
            release + spill replace the node's outflow (and discharge). Routing then runs in
            stages cut at the reservoirs (:func:`~gnnhydro.routing.staged.reservoir_stage_plan`,
            within ``stage_plan``'s stages); with ``initial_state`` a :class:`RoutingState`, its
            ``reservoir_storage`` continues the storage. Needs ``step_seconds`` (or the graph's).
        reservoir_params: the operator's inputs by name, per node ``[N]`` / ``[B, N]`` (series
            ``[N, T]``), values at non-reservoir nodes ignored; a ``data_spec``/``series`` input
            not given is taken from the graph attribute of the same name.
        reservoir_nodes: bool mask ``[N]`` or node indices of the reservoirs (default
            ``graph.reservoir_mask``).
        return_reservoirs: also return a :class:`~gnnhydro.routing.reservoirs.ReservoirResult`
            (storage, inflow, outflow, spill of every reservoir), last in the tuple.

    Returns:
        Outflow of every reach, same shape and dtype as ``lateral`` (and the final state if
        ``return_state``, and the reservoirs' result if ``return_reservoirs``).

    Shapes:
        lateral ``[N, T]`` or ``[B, N, T]``; params ``[N]`` or ``[B, N]``; kernels ``[N, K]`` or
        ``[B, N, K]``; result like ``lateral``.

    Raises:
        ValueError: shape mismatch with N, parameters outside their bounds (naming the
            parameter), NaN lateral inflow (naming the node ids), unknown IRF (listing them).
    """
    return lti_route(
        lateral,
        graph,
        irf,
        params,
        kernels=kernels,
        initial_state=initial_state,
        return_state=return_state,
        edge_weight=edge_weight,
        num_nodes=num_nodes,
        reservoir_params=reservoir_params,
        return_reservoirs=return_reservoirs,
        options=(options or RouteOptions()).replace(**option_values),
    )


_CALL_KEYWORDS = ("reservoir_params", "return_reservoirs", "num_nodes")


class LTIRouter(MessagePassing):
    """LTI river routing as message passing along ``edge_index`` (upstream→downstream).

    Each reach's inflow is its lateral inflow plus the sum over incoming edges of the messages
    ``w_ji · O_j`` (``aggr="add"``, ``flow="source_to_target"``); its outflow is the inflow
    convolved with the reach's impulse response (:mod:`gnnhydro.routing.irf`). Messages are
    passed in topological order, so one forward call routes the whole network exactly.

    .. math::
        O_i = h_i * \\Big(q_i + \\sum_{j \\in \\mathcal{N}^{\\uparrow}(i)} w_{ji} O_j\\Big)

    Args:
        irf: name of a registered IRF or an instance (default ``"muskingum"``).
        substeps: internal steps per input step: an integer (default 1), ``"auto"`` or a
            per-reach tensor (see :func:`route`).
        backend: ``"auto"`` (default), ``"numba"``, ``"torch"`` or ``"triton"``; the
            ``"torch"`` path aggregates with this module's :meth:`propagate`.
        **options: further :class:`RouteOptions` (``stage_plan``, ``max_nodes``,
            ``time_chunk``, ``step_seconds``, ``reservoir``, ``reservoir_nodes``).

    Shapes:
        lateral ``[N, T]`` or ``[B, N, T]``; params each ``[N]`` or ``[B, N]``; output like
        ``lateral``.
    """

    def __init__(
        self,
        irf: str | ImpulseResponse = "muskingum",
        substeps: int | str | Tensor = 1,
        backend: Backend = "auto",
        **options: Any,
    ) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=-2)
        self.irf = get_irf(irf)
        self.options = RouteOptions(substeps=substeps, backend=backend).replace(**options)
        self.reset_parameters()

    @property
    def substeps(self) -> int | str | Tensor:
        return self.options.substeps

    @property
    def param_spec(self):
        return self.irf.param_spec

    def reset_parameters(self) -> None:
        super().reset_parameters()

    def forward(
        self,
        lateral: Tensor,
        graph: Any,
        params: Mapping[str, Tensor] | None = None,
        edge_weight: Tensor | None = None,
        *,
        kernels: Tensor | None = None,
        initial_state: RoutingState | Tensor | None = None,
        return_state: bool = False,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, RoutingState]:
        """Route ``lateral`` through ``graph`` (a RiverGraph or an ``edge_index``); ``kwargs``
        are :func:`route`'s remaining keywords (``reservoir_params``, ``return_reservoirs``,
        ``num_nodes``) and routing options overriding this module's for this call."""
        extra = {n: kwargs.pop(n) for n in _CALL_KEYWORDS if n in kwargs}
        return lti_route(
            lateral,
            graph,
            self.irf,
            params,
            kernels=kernels,
            initial_state=initial_state,
            return_state=return_state,
            edge_weight=edge_weight,
            options=self.options.replace(**kwargs),
            aggregate=self._aggregate,
            **extra,
        )

    def _aggregate(
        self, out: Tensor, src: Tensor, local_dst: Tensor, weight: Tensor, n_dst: int
    ) -> Tensor:
        edge_index = torch.stack([src, local_dst])
        return self.propagate(
            edge_index, x=(out, None), edge_weight=weight, size=(out.shape[-2], n_dst)
        )

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        """Weighted upstream outflow ``w_ji · O_j``. Shapes: x_j ``[B, E, T]``; edge_weight ``[E]``."""
        return x_j * edge_weight.view(-1, 1)

    def __repr__(self) -> str:
        steps = self.substeps if not isinstance(self.substeps, Tensor) else "per-reach"
        return f"{type(self).__name__}(irf={self.irf.name!r}, substeps={steps!r})"

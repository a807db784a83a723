"""HydroModel: parameterizer → runoff per node → m³/s → LTI routing → discharge at every node.

.. code-block:: text

    x (static attributes) ──► parameterizer (GNN over edge_index) ──► physical params by NAME
    forcing [N, T, F] ──► (learned forcing correction) ──► runoff model (per node) ──► runoff [N, T] mm/step
    runoff × area_km2 / Δt ──► lateral inflow [N, T] m³/s ──► router ──► discharge [N, T] m³/s

Modes: ``"full"`` (as above), ``"routing"`` (lateral inflow given by the data, e.g. NWM/RAPID),
``"runoff"`` (lumped basins, e.g. CAMELS: discharge = runoff × area, no network routing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gnnhydro.routing.lti import LTIRouter, parse_substeps
from gnnhydro.spec import ParamSpec
from gnnhydro.units import mm_per_step_to_m3s

__all__ = ["HydroModel", "MODES"]

MODES = ("full", "routing", "runoff")


class HydroModel(nn.Module):
    """End-to-end differentiable hydrological model over a river graph.

    Args:
        parameterizer: maps ``(x_normalised [N, F], edge_index, edge_attr, dynamic_input)`` to a
            dict of physical parameters by name (runoff names → ``[N, nmul]`` or
            ``[N, T, nmul]``; routing names → ``[N]``).
        runoff: a :class:`~gnnhydro.runoff.RunoffModel` (``None`` in routing mode).
        irf: the routing impulse-response function name (``None`` in runoff mode).
        mode: ``"full"``, ``"routing"`` or ``"runoff"``.
        substeps: routing time steps per input step: an integer, ``"auto"`` (each reach its own
            step, the fewest with non-negative Muskingum coefficients) or a per-reach tensor.
        x_mean, x_std: ``[F]`` attribute normalisation (fitted on training nodes only).
        dynamic_names: forcing variables fed to the parameterizer's temporal encoder.
        spinup_steps: runoff-model spin-up: the first ``spinup_steps`` of the forcing are run
            once (without gradient) from empty stores, and the real run starts from the states
            reached — the usual "recycle the first year" spin-up (use 365 for daily data: the
            states then belong to the same day of the year as the start).
        spinup_cycles: how many times the spin-up period is cycled (each cycle starts from the
            states the previous one reached); slow stores (e.g. HBV's lower zone with ``k2`` of
            1/1000 day⁻¹) need several years to reach their equilibrium.
        forcing_correction: a :class:`~gnnhydro.models.ForcingCorrection` whose per-node
            multipliers (from the same parameterizer) scale the runoff model's forcing before
            spin-up and run; ``None``: the forcing is used as given.
        checkpoint_nodes: with gradients, run the runoff model in chunks of this many nodes under
            gradient checkpointing: the backward recomputes one chunk at a time, so the memory
            of the runoff model's adjoint is that of one chunk, not of the batch (a gauge basin
            above the batch budget trains in bounded memory); ``out["fluxes"]`` then holds the
            runoff only. ``None``: the whole batch at once.
        initial_discharge_from: name of a time-shaped discharge attribute of the data (e.g.
            ``"q_nwm"``, NWM's own simulation) whose first step warm-starts routing as a steady
            flow [m³/s] (NaN, e.g. at lakes, counts as 0); ``None``: routing starts empty.
        reference_fraction: IRFs whose parameters depend on the flow
            (``needs_reference_discharge``, e.g. ``muskingum_cunge``) are linearised at this
            fraction of every reach's mean discharge (:meth:`reference_discharge`); default 1.0
            (the mean flow itself; bankfull flows are a few times larger).

    Shapes:
        batch.x ``[N, F]``; batch.forcing ``[N, T, Ff]`` (or batch.lateral_inflow ``[N, T]`` m³/s
        in routing mode); batch.area_km2 ``[N]``. Output ``discharge`` ``[N, T]`` m³/s, ``runoff``
        ``[N, T]`` mm/step, ``lateral_inflow`` ``[N, T]`` m³/s, ``params`` name → tensor.
    """

    def __init__(
        self,
        parameterizer: nn.Module,
        runoff: nn.Module | None,
        irf: str | None,
        *,
        mode: str = "full",
        substeps: int | str | Tensor = 1,
        x_mean: Tensor | None = None,
        x_std: Tensor | None = None,
        x_names: Sequence[str] | None = None,
        dynamic_names: Sequence[str] = (),
        spinup_steps: int = 0,
        spinup_cycles: int = 1,
        initial_discharge_from: str | None = None,
        forcing_correction: nn.Module | None = None,
        checkpoint_nodes: int | None = None,
        reference_fraction: float = 1.0,
        reservoir: str | None = None,
    ) -> None:
        super().__init__()
        #: reservoir operator at the data's reservoir nodes (None/"none": plain reaches)
        self.reservoir = None if reservoir in (None, "none") else str(reservoir)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode in ("full", "runoff") and runoff is None:
            raise ValueError(f"mode {mode!r} needs a runoff model")
        if mode in ("full", "routing") and irf is None:
            raise ValueError(f"mode {mode!r} needs a routing IRF")
        self.mode = mode
        self.parameterizer = parameterizer
        self.runoff = runoff
        self.irf = irf if mode != "runoff" else None
        #: the routing: message passing along the graph's edges (None in runoff mode)
        self.router = (
            LTIRouter(
                self.irf,
                substeps=parse_substeps(substeps) if not isinstance(substeps, Tensor) else substeps,
                reservoir=self.reservoir,
            )
            if self.irf is not None
            else None
        )
        self.x_names = list(x_names) if x_names is not None else None
        self.dynamic_names = list(dynamic_names)
        self.spinup_steps = int(spinup_steps)
        if int(spinup_cycles) < 1:
            raise ValueError(f"spinup_cycles must be at least 1, got {spinup_cycles}")
        self.spinup_cycles = int(spinup_cycles)
        self.initial_discharge_from = initial_discharge_from
        if forcing_correction is not None and mode == "routing":
            raise ValueError("a forcing correction needs a runoff model (mode 'routing' has none)")
        self.forcing_correction = forcing_correction
        if checkpoint_nodes is not None and int(checkpoint_nodes) < 1:
            raise ValueError(f"checkpoint_nodes must be a positive number, got {checkpoint_nodes}")
        self.checkpoint_nodes = int(checkpoint_nodes) if checkpoint_nodes else None
        if not float(reference_fraction) > 0:
            raise ValueError(f"reference_fraction must be > 0, got {reference_fraction}")
        self.reference_fraction = float(reference_fraction)
        self.register_buffer("x_mean", x_mean.clone().float() if x_mean is not None else None)
        self.register_buffer("x_std", x_std.clone().float() if x_std is not None else None)

    # ------------------------------------------------------------------ specs
    @staticmethod
    def runoff_specs(runoff: nn.Module | None) -> dict[str, ParamSpec]:
        return dict(runoff.param_spec) if runoff is not None else {}

    @staticmethod
    def routing_specs(irf: str | None) -> dict[str, ParamSpec]:
        if irf is None:
            return {}
        from gnnhydro.routing import get_irf

        return dict(get_irf(irf).param_spec)

    @staticmethod
    def forcing_specs(forcing_correction: nn.Module | None) -> dict[str, ParamSpec]:
        return dict(forcing_correction.param_spec) if forcing_correction is not None else {}

    @staticmethod
    def reservoir_specs(reservoir: str | None) -> dict[str, ParamSpec]:
        """The parameters a parameterizer predicts for the reservoir operator (per node)."""
        from gnnhydro.routing.reservoirs import get_reservoir

        operator = get_reservoir(reservoir)
        return dict(operator.param_spec) if operator is not None else {}

    @property
    def param_specs(self) -> dict[str, ParamSpec]:
        return {
            **self.runoff_specs(self.runoff),
            **self.forcing_specs(self.forcing_correction),
            **self.routing_specs(self.irf),
            **self.reservoir_specs(self.reservoir),
        }

    # ------------------------------------------------------------------ inputs
    def normalise(self, x: Tensor) -> Tensor:
        """Standardise static attributes with the stored (training-node) statistics."""
        if self.x_mean is None:
            return x
        if x.size(-1) != self.x_mean.numel():
            raise ValueError(
                f"static attributes have {x.size(-1)} columns but the model was fitted on "
                f"{self.x_mean.numel()} ({self.x_names})"
            )
        return (x - self.x_mean) / self.x_std

    @staticmethod
    def edge_attributes(batch: Any) -> Tensor | None:
        """``[E, 2]`` river edge attributes (:func:`gnnhydro.graph.regional.river_edge_attributes`)."""
        from gnnhydro.graph.regional import river_edge_attributes

        return river_edge_attributes(batch)

    def forcing_dict(self, batch: Any) -> dict[str, Tensor]:
        names = _forcing_names(batch)
        forcing = batch.forcing
        needed = getattr(self.runoff, "forcing_names", None) or names
        optional = getattr(self.runoff, "optional_forcing", {})
        missing = [n for n in needed if n not in names and n not in optional]
        if missing:
            raise ValueError(f"runoff model needs forcing {missing}; the dataset has {names}")
        out = {}
        for name in needed:
            if name in names:
                out[name] = forcing[..., names.index(name)]
            else:  # documented fill (e.g. HBV without temperature: no snow)
                out[name] = torch.full_like(forcing[..., 0], optional[name][0])
        if getattr(self.runoff, "groundwater_exchange", False):
            out["upstream_area_km2"] = batch.upstream_area_km2.to(forcing.dtype)
        return out

    def correct_forcing(
        self, batch: Any, forcing: dict[str, Tensor], params: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The runoff forcing after the learned correction (dates from ``batch.time``)."""
        from gnnhydro.models.forcing_correction import day_of_year

        doy = None
        if self.forcing_correction.seasonal and getattr(batch, "time", None) is not None:
            doy = day_of_year(
                batch.time, batch=getattr(batch, "batch", None), num_nodes=batch.num_nodes
            )
        names = self.forcing_specs(self.forcing_correction)
        return self.forcing_correction(forcing, {n: params[n] for n in names}, doy)

    def spun_up_states(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor]
    ) -> dict[str, Tensor] | None:
        """Initial runoff states after cycling the first ``spinup_steps`` of ``forcing``
        ``spinup_cycles`` times (no gradient), or ``None`` (empty stores) when spin-up is off."""
        steps = min(self.spinup_steps, next(iter(forcing.values())).shape[-1])
        if steps <= 0:
            return None
        with torch.no_grad():
            head, head_params = _time_slice(forcing, params, 0, steps)
            head_params = {k: v.detach() for k, v in head_params.items()}
            states = None
            for _ in range(self.spinup_cycles):
                out = self.runoff(head, head_params, states=states, return_states=True)
                states = {
                    k: v.reshape(-1, v.shape[-1]) for k, v in self.runoff.final_states(out).items()
                }
            return states

    # ------------------------------------------------------------------ steps
    def parameters_of(self, batch: Any) -> tuple[dict[str, Tensor], Any]:
        """The physical parameters of every node of ``batch`` by name, and the graph the physics
        runs on (``batch`` itself, or its ``physics_mask`` nodes: halo nodes feed the
        parameterizer only).

        A batch of ``B`` time windows of one whole network (``trainer.sampler=windows``) has
        static parameters that are the same in every window: the parameterizer runs on one copy
        of the network and its parameters are repeated ``B`` times (one dropout draw for the
        batch; 4× less parameterizer work at ``batch_size=4``).

        Shapes:
            batch.x ``[N, F]`` → runoff parameters ``[N', m]`` (or ``[N', T, m]`` dynamic),
            routing parameters ``[N']``; ``N'`` the physics nodes.
        """
        copies = 1 if self.dynamic_names else windows_of_one_graph(batch)
        if copies > 1:
            params = self._parameterizer_output(batch.get_example(0))
            params = {k: v.repeat(copies, *([1] * (v.dim() - 1))) for k, v in params.items()}
        else:
            params = self._parameterizer_output(batch)
        physics_mask = getattr(batch, "physics_mask", None)
        if physics_mask is not None:  # halo nodes fed the parameterizer; the physics skips them
            from gnnhydro.graph.subgraph import node_subset

            batch = node_subset(batch, physics_mask)
            params = {name: value[physics_mask] for name, value in params.items()}
        return params, batch

    def _parameterizer_output(self, batch: Any) -> dict[str, Tensor]:
        """The parameterizer's output on every node of ``batch`` (:meth:`parameters_of`)."""
        x = self.normalise(batch.x.float())
        dynamic_input = None
        if self.dynamic_names:
            names = _forcing_names(batch)
            idx = [names.index(n) for n in self.dynamic_names]
            dyn = batch.forcing[..., idx].float()
            dynamic_input = (dyn - dyn.mean(dim=(0, 1))) / (dyn.std(dim=(0, 1)) + 1e-6)
        graph_inputs = getattr(self.parameterizer, "graph_inputs", None)
        if graph_inputs is not None:  # the parameterizer says which graph it passes messages on
            params = self.parameterizer(**graph_inputs(batch, x), dynamic_input=dynamic_input)
        else:
            params = self.parameterizer(
                x,
                batch.edge_index,
                edge_attr=self.edge_attributes(batch)
                if getattr(self.parameterizer, "edge_dim", None)
                else None,
                dynamic_input=dynamic_input,
            )
        return params

    def runoff_forcing(self, batch: Any, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """The runoff model's forcing by name (after the learned correction when there is one)."""
        forcing = self.forcing_dict(batch)
        if self.forcing_correction is not None:
            forcing = self.correct_forcing(batch, forcing, params)
        return forcing

    def runoff_lateral(
        self,
        batch: Any,
        forcing: dict[str, Tensor],
        params: dict[str, Tensor],
        states: dict[str, Tensor] | None,
        *,
        return_states: bool = False,
        detach_steps: int = 0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Runoff of every node from ``states`` (``None``: empty stores) and its lateral inflow.

        ``detach_steps`` > 0 (with autograd on): the first ``detach_steps`` steps run without
        gradient and their final states start the rest (:meth:`_runoff_after_detached_head`).

        Returns ``(lateral_inflow, result)``: ``lateral_inflow`` ``[N, T]`` m³/s (runoff after the
        model's own unit hydrograph when it has one, × ``batch.area_km2`` / step) and the runoff
        model's outputs (fluxes and states; ``final_<state>`` ``[N, m]`` with ``return_states``).
        """
        step_seconds = float(_first(getattr(batch, "step_seconds", 86400.0)))
        runoff_params = {name: params[name] for name in self.runoff_specs(self.runoff)}
        if int(detach_steps) > 0 and torch.is_grad_enabled():
            result = self._runoff_after_detached_head(
                forcing, runoff_params, states, int(detach_steps), return_states
            )
        else:
            result = self._runoff(forcing, runoff_params, states, return_states)
        runoff = result.get("runoff_routed", result["runoff"])
        return mm_per_step_to_m3s(runoff, batch.area_km2.to(runoff.dtype), step_seconds), result

    def _runoff(
        self,
        forcing: dict[str, Tensor],
        params: dict[str, Tensor],
        states: dict[str, Tensor] | None,
        return_states: bool,
    ) -> dict[str, Tensor]:
        """One run of the runoff model (node chunks under checkpointing when configured)."""
        n = next(iter(forcing.values())).shape[0]
        chunk = self.checkpoint_nodes
        if chunk and n > chunk and torch.is_grad_enabled() and not return_states:
            return {"runoff": self._checkpointed_runoff(forcing, params, states, chunk)}
        return self.runoff(forcing, params, states=states, return_states=return_states)

    def _runoff_after_detached_head(
        self,
        forcing: dict[str, Tensor],
        params: dict[str, Tensor],
        states: dict[str, Tensor] | None,
        steps: int,
        return_states: bool,
    ) -> dict[str, Tensor]:
        """The runoff model's outputs over the whole forcing, its first ``steps`` steps run
        without autograd (a training window's warm-up) and the rest, with
        gradients, from the states they reach: the backward (and the adjoint's tape) covers
        the loss period only.  The values equal one run over the whole period; the gradient
        leaves out the parameters' influence through the warm-up's final states.

        Shapes:
            forcing ``[N, T]`` per variable; result ``[N, T]`` per flux (the first ``steps``
            detached), ``final_<state>`` as :meth:`runoff_lateral`.
        """
        total = next(v for v in forcing.values() if v.dim() >= 2).shape[-1]
        if not 0 < steps < total:
            raise ValueError(f"detach_steps must be in [1, {total}) for {total} steps, got {steps}")
        head_forcing, head_params = _time_slice(forcing, params, 0, steps)
        with torch.no_grad():
            head = self.runoff(head_forcing, head_params, states=states, return_states=True)
        seed = {k: v.reshape(-1, v.shape[-1]) for k, v in self.runoff.final_states(head).items()}
        tail_forcing, tail_params = _time_slice(forcing, params, steps, total)
        tail = self._runoff(tail_forcing, tail_params, seed, return_states)
        if "runoff_routed" in head and "runoff_routed" not in tail:
            raise ValueError(
                "trainer.warmup_gradient=false cannot combine an in-model unit hydrograph with "
                "model.runoff.checkpoint_nodes; set one of them off"
            )
        result: dict[str, Tensor] = {}
        for key, val in tail.items():
            if key == "storage_initial":
                result[key] = head[key]
            elif key.startswith("final_") or key not in head or key == "runoff_routed":
                result[key] = val
            else:
                result[key] = torch.cat([head[key], val], dim=-1)
        if "runoff_routed" in result:  # the unit hydrograph spans both parts
            result["runoff_routed"] = self.runoff.routed_runoff(result["runoff"], params)
        return result

    def _checkpointed_runoff(
        self,
        forcing: dict[str, Tensor],
        params: dict[str, Tensor],
        states: dict[str, Tensor] | None,
        chunk: int,
    ) -> Tensor:
        """``[N, T]`` runoff (after the model's unit hydrograph), node chunk by node chunk under
        :func:`torch.utils.checkpoint.checkpoint` (every input leads with the node axis)."""
        from torch.utils.checkpoint import checkpoint

        groups = {"f": forcing, "p": params, "s": states or {}}
        keys = [(g, k) for g, d in groups.items() for k in d]

        def run(*tensors: Tensor) -> Tensor:
            parts: dict[str, dict[str, Tensor]] = {"f": {}, "p": {}, "s": {}}
            for (g, k), v in zip(keys, tensors, strict=True):
                parts[g][k] = v
            out = self.runoff(parts["f"], parts["p"], states=parts["s"] or None)
            return out.get("runoff_routed", out["runoff"])

        n = next(iter(forcing.values())).shape[0]
        pieces = []
        for a in range(0, n, chunk):
            tensors = [groups[g][k][a : a + chunk] for g, k in keys]
            # reentrant: the first forward runs without autograd, so the kernels keep no tape
            pieces.append(checkpoint(run, *tensors, use_reentrant=True))
        return torch.cat(pieces, dim=0)

    def initial_discharge(self, batch: Any, dtype: torch.dtype) -> Tensor | None:
        """``[N]`` m³/s steady flow routing starts from (``initial_discharge_from``), or ``None``."""
        if self.initial_discharge_from is None:
            return None
        source = getattr(batch, self.initial_discharge_from, None)
        if source is None:
            raise ValueError(
                f"initial_discharge_from={self.initial_discharge_from!r}: the data have no such attribute"
            )
        return torch.nan_to_num(source[:, 0].to(dtype), nan=0.0)

    def route_lateral(
        self,
        lateral: Tensor,
        batch: Any,
        params: dict[str, Tensor],
        initial_state: Any = None,
        **route_options: Any,
    ) -> Any:
        """Discharge ``[N, T]`` m³/s from lateral inflow ``[N, T]`` m³/s through ``batch``'s
        network (``route_options`` go to :func:`~gnnhydro.routing.route`, e.g.
        ``return_state``, ``stage_plan``)."""
        routing_params = {name: params[name] for name in self.routing_specs(self.irf)}
        if getattr(self.router.irf, "needs_reference_discharge", False):
            routing_params["reference_discharge"] = self.reference_discharge(lateral, batch)
        step_seconds = float(_first(getattr(batch, "step_seconds", 86400.0)))
        route_options.setdefault("step_seconds", step_seconds)
        if self.reservoir is not None:  # streamed runs route through the reservoirs too
            names = self.reservoir_specs(self.reservoir)
            route_options.setdefault("reservoir_params", {n: params[n] for n in names})
        return self.router(
            lateral, batch, routing_params, initial_state=initial_state, **route_options
        )

    def reference_discharge(self, lateral: Tensor, batch: Any) -> Tensor:
        """Discharge [m³/s] at which flow-dependent IRFs are linearised: ``reference_fraction``
        × the time mean of the lateral inflow accumulated down ``batch``'s network (edge
        weights included), i.e. every reach's mean discharge over the routed period (a window
        in training, a time chunk when streaming).

        Detached: it stands for the channel's flow regime, data like its length and slope, so
        the routing parameters (``n``, ``p``, ``q``) alone set the travel times and the runoff
        parameters get no gradient through it (only through the inflow they route).

        Shapes:
            lateral ``[N, T]`` or ``[B, N, T]`` m³/s; result ``[N]`` or ``[B, N]`` m³/s.
        """
        from gnnhydro.routing import route

        with torch.no_grad():
            mean = lateral.detach().mean(-1, keepdim=True)
            through = torch.ones(mean.shape[-2], 1, dtype=mean.dtype, device=mean.device)
            total = route(mean, batch, kernels=through)  # accumulation: every kernel h = [1]
        return self.reference_fraction * total[..., 0]

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Any, *, detach_steps: int = 0) -> dict[str, Any]:
        """Parameters, runoff, lateral inflow and routed discharge of ``batch``.

        ``detach_steps``: with autograd on, the runoff model's first ``detach_steps`` steps (a
        training window's warm-up) run without gradient (``trainer.warmup_gradient=false``);
        the outputs are the same.
        """
        params, graph = self.parameters_of(batch)
        out: dict[str, Any] = {"params": params}
        if graph is not batch:
            out["graph"] = graph
        if self.mode in ("full", "runoff"):
            forcing = self.runoff_forcing(graph, params)
            if self.forcing_correction is not None:
                out["forcing"] = forcing
            runoff_params = {name: params[name] for name in self.runoff_specs(self.runoff)}
            states = self.spun_up_states(forcing, runoff_params)
            lateral, result = self.runoff_lateral(
                graph, forcing, params, states, detach_steps=detach_steps
            )
            out["runoff"] = result.get("runoff_routed", result["runoff"])
            out["fluxes"] = result
        else:
            lateral = graph.lateral_inflow.float()
        out["lateral_inflow"] = lateral
        if self.mode == "runoff":
            out["discharge"] = lateral
            return out
        reservoir = {"return_reservoirs": True} if self.reservoir is not None else {}
        routed = self.route_lateral(
            lateral, graph, params, self.initial_discharge(graph, lateral.dtype), **reservoir
        )
        if reservoir:  # storage and outflow of the reservoirs in the output
            routed, res = routed
            out["reservoir_index"] = res.nodes
            out["reservoir_storage"] = res.storage
            out["reservoir_outflow"] = res.outflow + res.spill
            out["reservoir_spill"] = res.spill
        out["discharge"] = routed
        return out


def _time_slice(
    forcing: dict[str, Tensor], params: dict[str, Tensor], start: int, stop: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Steps ``start … stop−1`` of the forcing series (``[…, T]``; ``upstream_area_km2`` is
    static) and of the time-varying parameters (``[N, T, m]``); static ones unchanged."""
    f = {
        k: (v[..., start:stop] if v.dim() >= 2 and k != "upstream_area_km2" else v)
        for k, v in forcing.items()
    }
    p = {k: (v[:, start:stop] if v.dim() == 3 else v) for k, v in params.items()}
    return f, p


def windows_of_one_graph(batch: Any) -> int:
    """The number of windows in ``batch`` when it is a batch of time windows of one whole
    network (:class:`~gnnhydro.datasets.windows.WindowSamples` marks its items
    ``whole_graph_window``), else 1."""
    marks = getattr(batch, "whole_graph_window", None)
    copies = int(getattr(batch, "num_graphs", 1) or 1)
    if copies <= 1 or marks is None:
        return 1
    marks = torch.as_tensor(marks)  # collated: one mark per window
    return copies if marks.numel() == copies and bool(marks.all()) else 1


def _forcing_names(batch: Any) -> list[str]:
    names = batch.forcing_names
    return list(names[0] if isinstance(names[0], list) else names)


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0]
    if isinstance(value, Tensor) and value.numel() > 1:
        return value.flatten()[0].item()
    return value.item() if isinstance(value, Tensor) else value

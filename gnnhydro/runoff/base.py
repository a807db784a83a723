"""Runoff-model base class, input validation, mass balance and the runoff-model registry.

A runoff model turns forcing per node (precipitation, temperature, potential evapotranspiration,
each ``[N, T]`` or ``[B, N, T]``) and physical parameters (by NAME, ``[N, m]`` static or
``[N, T, m]`` dynamic, ``m`` parallel components) into runoff ``[N, T]`` in mm per time step plus
named fluxes and states.  Every model declares its parameters through
:class:`gnnhydro.spec.ParamSpec` (units, bounds, default, static/dynamic); nothing is looked up by
column position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from gnnhydro.registry import Registry
from gnnhydro.runoff.sensitivity import sensitivity_apply
from gnnhydro.runoff.snow import (
    NO_SNOW_MEANING,
    NO_SNOW_TEMPERATURE_C,
    SNOW_PARAM_SPECS,
    SNOW_STATES,
    with_snow,
)
from gnnhydro.runoff.stepping import TorchStepper, run_steps
from gnnhydro.spec import ParamSpec

__all__ = [
    "RunoffModel",
    "FusedRunoffModel",
    "register_runoff_model",
    "get_runoff_model",
    "list_runoff_models",
    "mass_balance",
]

RUNOFF_MODELS: Registry[type[RunoffModel]] = Registry(
    "runoff model", entry_point_group="gnnhydro.runoff_models"
)


def register_runoff_model(name: str) -> Callable[[type[RunoffModel]], type[RunoffModel]]:
    """Class decorator registering a :class:`RunoffModel` subclass under ``name`` (lower-case)."""
    return RUNOFF_MODELS.register(name)


def get_runoff_model(name: str) -> type[RunoffModel]:
    """Return the runoff-model class registered as ``name`` (built-ins or entry points)."""
    return RUNOFF_MODELS.get(name)


def list_runoff_models() -> list[str]:
    """Names of all registered runoff models (built-ins and entry-point plugins)."""
    return RUNOFF_MODELS.names()


class RunoffModel(nn.Module):
    """Base class of per-node runoff models (vectorised over nodes, batch members, components).

    Subclasses set :attr:`forcing_names`, :attr:`state_names`, build :attr:`param_spec` and
    implement :meth:`_run`, which receives validated ``[N, T]`` forcing and ``[N, m]`` /
    ``[N, T, m]`` parameters and returns the full (warm-up included) output dict.

    Output conventions (all in mm per time step or mm):
        ``runoff`` ``[N, T]``: runoff generated per step (mean over components);
        ``evapotranspiration`` ``[N, T]``; ``storage`` ``[N, T]`` total water stored at the end of
        each step; ``storage_initial`` ``[N]`` stored water before the first returned step;
        further named fluxes/states; with ``return_states=True`` the final states
        ``final_<state>`` ``[N, m]``.
    """

    registry_name: str = ""
    forcing_names: tuple[str, ...] = ()
    #: forcing the model can run without: name -> (constant filled in, in the forcing's units;
    #: what that means). HBV without ``temperature`` runs without snow.
    optional_forcing: dict[str, tuple[float, str]] = {}
    state_names: tuple[str, ...] = ()
    #: extra outputs (besides ET and runoff) that leave (+) or enter (−) the modelled water column
    external_fluxes: tuple[str, ...] = ()
    #: extra outputs that enter (+) the modelled water column from outside (e.g. groundwater gain)
    external_inflows: tuple[str, ...] = ()
    #: :meth:`init_states` takes the parameters (default stores as fractions of capacities)
    states_from_params: bool = False
    #: every parameter is per component, so one given ``[N]`` is the same for all components
    node_params_per_component: bool = False

    def __init__(self, nmul: int = 1) -> None:
        super().__init__()
        if int(nmul) < 1:
            raise ValueError(f"nmul must be ≥ 1, got {nmul}")
        self.nmul = int(nmul)
        self.param_spec: dict[str, ParamSpec] = {}

    # ------------------------------------------------------------------ states
    def init_states(
        self, num_nodes: int, *, dtype: torch.dtype = torch.float32, device=None
    ) -> dict[str, Tensor]:
        """Initial states ``{name: [N, m]}`` in mm (subclasses override the fill value)."""
        return {
            s: torch.zeros(num_nodes, self.nmul, dtype=dtype, device=device)
            for s in self.state_names
        }

    def default_states(
        self, num_rows: int, params: Mapping[str, Tensor], *, dtype: torch.dtype, device=None
    ) -> dict[str, Tensor]:
        """Initial states when none are given; ``params`` are the validated parameters, passed
        to :meth:`init_states` by models whose default stores depend on them
        (``states_from_params``, e.g. GR4J's ``0.3·x1``)."""
        if self.states_from_params:
            return self.init_states(num_rows, dtype=dtype, device=device, params=params)
        return self.init_states(num_rows, dtype=dtype, device=device)

    def _state_shape(self, name: str, num_rows: int) -> tuple[int, int]:
        """Shape of state ``name``: ``[N, nmul]`` (one store per component) by default."""
        return (num_rows, self.nmul)

    # -------------------------------------------------------------- validation
    def check_forcing(self, forcing: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], tuple]:
        """Validate forcing; return it flattened to ``[B·N, T]`` and the leading shape."""
        if not isinstance(forcing, Mapping):
            raise ValueError(f"{type(self).__name__}: forcing must be a dict name -> tensor")
        missing = [v for v in self.forcing_names if v not in forcing]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: missing forcing variable(s) {missing}; "
                f"expected {list(self.forcing_names)}"
            )
        shape = None
        out: dict[str, Tensor] = {}
        for name in self.forcing_names:
            x = forcing[name]
            if not isinstance(x, Tensor):
                x = torch.as_tensor(x)
            if x.dim() not in (2, 3):
                raise ValueError(
                    f"{type(self).__name__}: forcing {name!r} must be [N, T] or [B, N, T], "
                    f"got shape {tuple(x.shape)}"
                )
            if shape is None:
                shape = tuple(x.shape)
            elif tuple(x.shape) != shape:
                raise ValueError(
                    f"{type(self).__name__}: forcing {name!r} has shape {tuple(x.shape)}, "
                    f"expected {shape} like {self.forcing_names[0]!r}"
                )
            bad = torch.isnan(x)
            if bad.any():
                flat = bad.reshape(-1, x.shape[-1])
                rows = torch.nonzero(flat.any(dim=1)).flatten()
                first_t = int(torch.nonzero(flat[rows[0]])[0, 0])
                ids = rows[:10].tolist()
                raise ValueError(
                    f"{type(self).__name__}: forcing {name!r} contains NaN at node (row) "
                    f"ids {ids}{' ...' if rows.numel() > 10 else ''}; first NaN at time index "
                    f"{first_t} of row {ids[0]}"
                )
            out[name] = x.reshape(-1, x.shape[-1])
        assert shape is not None
        return out, shape[:-1]

    def check_params(
        self, params: Mapping[str, Tensor], num_nodes: int, num_steps: int, *, batch: int = 1
    ) -> dict[str, Tensor]:
        """Validate parameters by name (shape, bounds, NaN); return them as tensors.

        Static parameters are ``[N, m]`` (or ``[N]`` where ``node_params_per_component``: the
        same for every component), dynamic ones ``[N, T, m]`` (only where the spec allows).
        With a batch of ``B`` forcing members, parameters are repeated to ``[B·N, ...]``.
        """
        owner = type(self).__name__
        if not isinstance(params, Mapping):
            raise ValueError(f"{owner}: params must be a dict name -> tensor")
        if self.node_params_per_component:  # a parameter [N] is the same for every component
            params = {
                name: value.unsqueeze(-1).expand(num_nodes, self.nmul)
                if isinstance(value, Tensor)
                and tuple(value.shape) == (num_nodes,)
                and name in self.param_spec
                and len(self._static_shape(name, num_nodes)) == 2
                else value
                for name, value in params.items()
            }
        unknown = sorted(set(params) - set(self.param_spec))
        if unknown:
            raise ValueError(
                f"{owner}: unknown parameter(s) {unknown}; expected {sorted(self.param_spec)}"
            )
        missing = sorted(set(self.param_spec) - set(params))
        if missing:
            raise ValueError(
                f"{owner}: missing parameter(s) {missing}; expected {sorted(self.param_spec)}"
            )
        out: dict[str, Tensor] = {}
        for name, spec in self.param_spec.items():
            value = params[name]
            if not isinstance(value, Tensor):
                value = torch.as_tensor(value)
            static_shape = self._static_shape(name, num_nodes)
            if tuple(value.shape) == static_shape:
                pass
            elif (
                spec.dynamic
                and value.dim() == 3
                and tuple(value.shape) == (num_nodes, num_steps, static_shape[-1])
            ):
                pass
            else:
                allowed = f"{list(static_shape)}"
                if not spec.dynamic and value.dim() == len(static_shape) + 1:
                    allowed += " (it is not declared dynamic: time-varying values need the model's dynamic= option)"
                if spec.dynamic:
                    allowed += f" or (dynamic) {[num_nodes, num_steps, static_shape[-1]]}"
                raise ValueError(
                    f"{owner}: parameter {name!r} has shape {list(value.shape)}, expected {allowed}"
                )
            if torch.isnan(value).any():
                raise ValueError(f"{owner}: parameter {name!r} contains NaN")
            tol = 1e-6 * max(abs(spec.low), abs(spec.high), 1.0)
            lo, hi = value.min().item(), value.max().item()
            if lo < spec.low - tol or hi > spec.high + tol:
                raise ValueError(
                    f"{owner}: parameter {name!r} has values in [{lo:g}, {hi:g}] outside its "
                    f"bounds [{spec.low:g}, {spec.high:g}] {spec.units}"
                )
            if batch > 1:
                value = value.repeat((batch,) + (1,) * (value.dim() - 1))
            out[name] = value
        return out

    def _static_shape(self, name: str, num_nodes: int) -> tuple[int, ...]:
        return (num_nodes, self.nmul)

    def values_per_node(self, name: str) -> int | None:
        """How many values parameter ``name`` takes per node: ``nmul`` (one per parallel
        component, shape ``[N, nmul]``) or ``None`` (one per node, shape ``[N]``, e.g. the
        parameters of HBV's unit hydrograph)."""
        return self.nmul if len(self._static_shape(name, 1)) == 2 else None

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        forcing: Mapping[str, Tensor],
        params: Mapping[str, Tensor],
        *,
        states: Mapping[str, Tensor] | None = None,
        warmup_steps: int = 0,
        return_states: bool = False,
    ) -> dict[str, Tensor]:
        """Run the model over the forcing period.

        Args:
            forcing: ``{name: [N, T] or [B, N, T]}`` in the units of :attr:`forcing_names`.
            params: ``{name: [N, m] or [N, T, m]}`` physical parameters (see :attr:`param_spec`).
            states: optional initial states ``{name: [N, m]}`` (mm); defaults to
                :meth:`init_states`.
            warmup_steps: the first ``warmup_steps`` steps spin the states up and are dropped
                from every ``[N, T]`` output (``storage_initial`` is the storage after them).
            return_states: also return the final states as ``final_<name>`` ``[N, m]``.

        Shapes:
            output ``[N, T - warmup_steps]`` (or ``[B, N, T - warmup_steps]``) per flux/state.
        """
        flat, lead = self.check_forcing(forcing)
        first = flat[self.forcing_names[0]]
        n_rows, n_steps = first.shape
        batch = 1
        num_nodes = n_rows
        if len(lead) == 2:
            batch, num_nodes = lead
        if not 0 <= int(warmup_steps) < n_steps:
            raise ValueError(f"warmup_steps must be in [0, {n_steps}), got {warmup_steps}")
        p = self.check_params(params, num_nodes, n_steps, batch=batch)
        if states is None:
            st = self.default_states(n_rows, p, dtype=first.dtype, device=first.device)
        else:
            st = {}
            for s in self.state_names:
                if s not in states:
                    raise ValueError(f"{type(self).__name__}: missing initial state {s!r}")
                v = torch.as_tensor(states[s])
                shape = self._state_shape(s, n_rows)
                if v.shape[-1] != shape[-1] or v.numel() != shape[0] * shape[1]:
                    raise ValueError(
                        f"{type(self).__name__}: initial state {s!r} has shape "
                        f"{list(v.shape)}, expected {list(shape)}"
                    )
                st[s] = v.reshape(shape)
        out = self._run(flat, p, st)
        w = int(warmup_steps)
        result: dict[str, Tensor] = {}
        for key, val in out.items():
            if key.startswith("final_"):
                if return_states:
                    result[key] = val.reshape(*lead, val.shape[-1])
                continue
            if key == "storage_initial":
                val = out["storage"][:, w - 1] if w > 0 else val
                result[key] = val.reshape(lead)
                continue
            result[key] = val[:, w:].reshape(*lead, n_steps - w)
        return result

    def _run(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------ diagnostics
    def mass_balance(
        self, out: Mapping[str, Tensor], forcing: Mapping[str, Tensor], *, warmup_steps: int = 0
    ) -> Tensor:
        """Water-balance residual per node over the run, mm (see :func:`mass_balance`)."""
        return mass_balance(
            out,
            forcing,
            warmup_steps=warmup_steps,
            extra=self.external_fluxes,
            inflows=self.external_inflows,
        )

    def final_states(self, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Extract ``{state: [N, m]}`` from an output made with ``return_states=True``."""
        try:
            return {s: out[f"final_{s}"] for s in self.state_names}
        except KeyError as err:
            raise ValueError(
                "final states missing: call the model with return_states=True"
            ) from err


class FusedRunoffModel(RunoffModel):
    """A runoff model with two backends, two gradient modes and optional snow (GR4J, SAC-SMA).

    Backends: a per-step torch loop of :attr:`stepper` (the reference; any device, autograd)
    and a fused numba CPU kernel with an exact hand-written adjoint (:meth:`_numba_apply`).
    Gradients: ``"autograd"`` (reverse mode through the chosen backend) or ``"sensitivity"``
    (forward sensitivities through :attr:`stepper`, memory flat in T, static parameters only:
    :mod:`gnnhydro.runoff.sensitivity`).  Subclasses set :attr:`stepper`, call
    :meth:`_set_backend` and :meth:`_set_snow` in ``__init__``, implement
    :meth:`_kernel_apply`, and run with :meth:`_run_stepper` in ``_run``.  With ``snow=True``
    the degree-day snow routine shared with HBV runs in front (:meth:`_set_snow`).
    """

    #: without temperature the snow routine is off (only read with ``snow=True``)
    optional_forcing = {"temperature": (NO_SNOW_TEMPERATURE_C, NO_SNOW_MEANING)}
    snow: bool = False

    BACKENDS: tuple[str, ...] = ("auto", "torch", "numba")
    GRADIENTS: tuple[str, ...] = ("autograd", "sensitivity")
    #: the model's step in PyTorch (:class:`gnnhydro.runoff.stepping.TorchStepper`)
    stepper: TorchStepper

    def _set_backend(self, backend: str, gradient: str) -> None:
        if backend not in self.BACKENDS:
            raise ValueError(
                f"{type(self).__name__}: unknown backend {backend!r} ({', '.join(self.BACKENDS)})"
            )
        self.backend = backend
        self.gradient = gradient
        self._check_gradient()

    def _check_gradient(self) -> None:
        name = type(self).__name__
        if self.gradient not in self.GRADIENTS:
            raise ValueError(
                f"{name}: gradient must be one of {list(self.GRADIENTS)}, got {self.gradient!r}"
            )
        dynamic = tuple(getattr(self, "dynamic", ()))
        if self.gradient == "sensitivity" and dynamic:
            raise ValueError(
                f"{name}: gradient='sensitivity' supports static parameters only (forward "
                f"sensitivities of per-step values would be T directions); dynamic={list(dynamic)}"
            )

    def _select_backend(self, device: torch.device) -> str:
        """``torch`` or ``numba`` (``auto``: the fused kernel on CPU, the loop elsewhere); checks
        the gradient mode again, which a config may set after construction."""
        self._check_gradient()
        if self.backend != "auto":
            return self.backend
        return "torch" if device.type == "cuda" else "numba"

    # ------------------------------------------------------------------- snow
    def _set_snow(self, snow: bool) -> None:
        """With ``snow``, put the degree-day snow routine (:mod:`gnnhydro.runoff.snow`, HBV's)
        in front of the model: one snowpack per node, parameters ``tt``, ``cfmax``, ``cfr``,
        ``cwh`` ``[N]`` (static), forcing ``temperature`` (°C; optional: without it there is no
        snow), states ``snowpack``, ``meltwater`` ``[N, 1]`` (mm, empty by default); the model
        reads the liquid water (rain + tosoil) as its precipitation.  Call after
        :attr:`param_spec` is set."""
        self.snow = bool(snow)
        if not self.snow:
            return
        cls = type(self)
        self.forcing_names = (*cls.forcing_names, "temperature")
        self.state_names = (*SNOW_STATES, *cls.state_names)
        self.stepper = with_snow(cls.stepper)
        for name, spec in SNOW_PARAM_SPECS.items():
            self.param_spec[name] = ParamSpec(
                spec.name, spec.units, spec.low, spec.high, spec.default, False, spec.description
            )

    def _static_shape(self, name: str, num_nodes: int) -> tuple[int, ...]:
        if getattr(self, "snow", False) and name in SNOW_PARAM_SPECS:
            return (num_nodes,)
        return super()._static_shape(name, num_nodes)

    def _state_shape(self, name: str, num_rows: int) -> tuple[int, int]:
        if getattr(self, "snow", False) and name in SNOW_STATES:
            return (num_rows, 1)
        return super()._state_shape(name, num_rows)

    def _snow_states(self, num_nodes: int, *, dtype: torch.dtype, device=None) -> dict:
        """Empty snow stores ``[N, 1]`` (``{}`` without snow), for :meth:`init_states`."""
        if not getattr(self, "snow", False):
            return {}
        return {s: torch.zeros(num_nodes, 1, dtype=dtype, device=device) for s in SNOW_STATES}

    def _add_snow_storage(self, out: dict[str, Tensor], states: Mapping[str, Tensor]) -> None:
        """Count the snow stores in ``storage`` / ``storage_initial`` and add ``swe``."""
        if not getattr(self, "snow", False):
            return
        out["swe"] = out["snowpack"] + out["meltwater"]
        out["storage"] = out["storage"] + out["swe"]
        swe0 = (states["snowpack"] + states["meltwater"]).reshape(-1)
        out["storage_initial"] = out["storage_initial"] + swe0

    # ---------------------------------------------------------------- backends
    def _kernel_apply(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The model's fused numba kernel (without snow): its stepper's outputs ``[R, T]`` and
        ``final_<state>``."""
        raise NotImplementedError

    def _numba_apply(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The fused numba path: the snow pass (:class:`~gnnhydro.runoff.kernels.snow_numba.
        SnowFused`) when there is snow, then the model's kernel on the liquid water."""
        if not self.snow:
            return self._kernel_apply(forcing, params, states)
        from gnnhydro.runoff.kernels.snow_numba import snow_numba_apply

        snow = snow_numba_apply(forcing["precipitation"], forcing["temperature"], params, states)
        inner_forcing = {k: v for k, v in forcing.items() if k != "temperature"}
        inner_forcing["precipitation"] = snow.pop("liquid_water")
        out = self._kernel_apply(
            inner_forcing,
            {k: v for k, v in params.items() if k not in SNOW_PARAM_SPECS},
            {k: v for k, v in states.items() if k not in SNOW_STATES},
        )
        out["liquid_water"] = inner_forcing["precipitation"]
        out.update(snow)
        return out

    def _run_stepper(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Run the chosen backend with the chosen gradient mode (outputs of :attr:`stepper`)."""
        first = forcing[self.stepper.forcing[0]]
        if self._select_backend(first.device) == "torch":

            def fast(f, p, s):
                return run_steps(self.stepper, f, p, s)
        else:
            fast = self._numba_apply
        if self.gradient == "sensitivity" and torch.is_grad_enabled():
            return sensitivity_apply(self.stepper, fast, forcing, params, states)
        return fast(forcing, params, states)


def mass_balance(
    out: Mapping[str, Tensor],
    forcing: Mapping[str, Tensor],
    *,
    warmup_steps: int = 0,
    extra: tuple[str, ...] = (),
    inflows: tuple[str, ...] = (),
) -> Tensor:
    """Residual ``ΣP + Σinflows − ΣET − Σrunoff − Σextra − (S_end − S_start)`` per node, in mm.

    Args:
        out: model output with ``runoff``, ``evapotranspiration``, ``storage`` and
            ``storage_initial`` (mm per step / mm).
        forcing: the forcing given to the model (``precipitation`` in mm per step).
        warmup_steps: the ``warmup_steps`` the output was produced with (dropped from ``P``).
        extra: names of further outputs that leave the system (mm per step, positive out).
        inflows: names of further outputs that enter the system (mm per step, positive in;
            e.g. HBV's signed ``groundwater_exchange``).

    Shapes:
        result ``[N]`` (or ``[B, N]``) mm; zero up to rounding for a closed model.
    """
    p = torch.as_tensor(forcing["precipitation"])[..., warmup_steps:]
    resid = p.sum(-1) - out["evapotranspiration"].sum(-1) - out["runoff"].sum(-1)
    for name in extra:
        resid = resid - out[name].sum(-1)
    for name in inflows:
        resid = resid + out[name].sum(-1)
    return resid - (out["storage"][..., -1] - out["storage_initial"])

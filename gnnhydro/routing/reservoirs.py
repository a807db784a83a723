"""Reservoir and lake operators: stateful non-linear nodes at the cuts between LTI stages.

A reservoir node's reach routes its inflow (lateral + upstream) with its impulse response as
every reach does; that routed outflow ``I`` is the reservoir's inflow. The reservoir integrates
its storage ``S`` [m³] and releases ``O`` (controlled outflow) and ``P`` (spill), which replace the
node's outflow downstream (and are its reported discharge):

.. math::
    \\frac{dS}{dt} = I - O(S) - P(S), \\qquad O, P \\ge 0, \\quad S \\ge 0

Integration (one scheme for every operator): the inflow is held within a data step (as the
routing holds it), the step is cut into ``n`` equal sub-steps, and each sub-step is an explicit
Euler step whose release volumes are limited by the water available, ``S + I·h``:
``V_O = min(O(S)·h, S + I·h)``, ``V_P = min(P(S)·h, S + I·h − V_O)``, then an operator with a
capacity spills what exceeds it. So storage and outflows are never negative and the mass
balance ``S_t − S_{t−1} = (I_t − O_t − P_t)·Δt`` holds exactly per step (``O_t``, ``P_t`` the
sub-step means). ``n = ⌈2·Δt·L⌉`` (``substeps="auto"``) from each operator's bound ``L`` [1/s] on
``dO/dS + dP/dS`` over the storage range it can reach, so that ``h·L ≤ 1/2`` (monotone, no
oscillation); one ``n`` for all reservoirs of a run (the largest), so results do not depend on
how the network is staged.

Cost: on CPU the built-in operators integrate in one numba kernel with an exact hand-written
adjoint (a ``torch.autograd.Function``, float64 inside, :mod:`.kernels.reservoir_numba`), all
reservoirs of a stage and the batch at once. Elsewhere (other devices, user operators that only
define :meth:`~ReservoirOperator.rates`) a Python loop over time steps × sub-steps in torch
(about 15 small ops each, vectorised the same way) that autograd records; it is also the
reference (``integrate(..., method="torch")``). It is run once per reservoir level of the
network (:mod:`.staged`).

Operators register with :func:`register_reservoir` (or the entry-point group
``"gnnhydro.reservoirs"``). Each declares three kinds of inputs, all given to
:func:`~gnnhydro.routing.route` in ``reservoir_params`` by name, per node ``[N]`` / ``[B, N]``
(values at non-reservoir nodes are ignored):

* ``param_spec``: parameters a parameterizer predicts (``learned``);
* ``data_spec``: physical properties from the data (graph attributes of the same name, e.g.
  LAKEPARM's level-pool properties, ``reservoir_capacity_m3``);
* ``series``: time series from the data ``[N, T]`` (``observed``: the release).

Shapes:
    inflow ``[B, R, T]`` m³/s; parameters ``[B, R]`` (or ``[1, R]``); outflow, spill ``[B, R, T]``
    m³/s; storage ``[B, R, T]`` m³ (end of each step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gnnhydro.registry import Registry
from gnnhydro.spec import ParamSpec, check_in_bounds

__all__ = [
    "RESERVOIR_REGISTRY",
    "reservoir_parameter_names",
    "ReservoirOperator",
    "ReservoirSeries",
    "ReservoirResult",
    "register_reservoir",
    "get_reservoir",
    "available_reservoirs",
    "LevelPool",
    "LearnedRelease",
    "ObservedRelease",
    "level_pool_discharge",
    "GRAVITY",
    "MAX_SUBSTEPS",
]

GRAVITY = 9.81  # m/s², as WRF-Hydro's level pool
#: ``substeps="auto"`` never cuts a data step into more sub-steps than this
MAX_SUBSTEPS = 1000

RESERVOIR_REGISTRY: Registry[type[ReservoirOperator]] = Registry(
    "reservoir operator", entry_point_group="gnnhydro.reservoirs"
)


def register_reservoir(
    name: str,
) -> Callable[[type[ReservoirOperator]], type[ReservoirOperator]]:
    """Class decorator: register a :class:`ReservoirOperator` subclass under ``name``."""

    def deco(cls: type[ReservoirOperator]) -> type[ReservoirOperator]:
        if not (isinstance(cls, type) and issubclass(cls, ReservoirOperator)):
            raise TypeError(
                f"register_reservoir({name!r}) expects a ReservoirOperator subclass, got {cls}"
            )
        cls.name = name
        return RESERVOIR_REGISTRY.register(name)(cls)

    return deco


def available_reservoirs() -> list[str]:
    """Names of the registered reservoir operators (``"none"`` is not one: it means plain
    reaches)."""
    return RESERVOIR_REGISTRY.names()


def reservoir_parameter_names() -> set[str]:
    """Names of the parameters any registered operator predicts (they mean something at
    reservoir nodes only; parameter maps leave them empty elsewhere)."""
    return {n for op in available_reservoirs() for n in RESERVOIR_REGISTRY.get(op).param_spec}


def get_reservoir(
    name: str | ReservoirOperator | type[ReservoirOperator] | None,
) -> ReservoirOperator | None:
    """An instance of the operator registered as ``name`` (instances/classes pass through);
    ``None`` or ``"none"`` → ``None`` (reservoir nodes route as plain reaches).

    Raises ``ValueError`` listing the registered names if ``name`` is unknown.
    """
    if name is None or (isinstance(name, str) and name.lower() == "none"):
        return None
    if isinstance(name, ReservoirOperator):
        return name
    if isinstance(name, type) and issubclass(name, ReservoirOperator):
        return name()
    return RESERVOIR_REGISTRY.get(name)()


@dataclass
class ReservoirSeries:
    """What :meth:`ReservoirOperator.integrate` returns (each ``[B, R, T]``): ``outflow`` and
    ``spill`` [m³/s] (step means), ``storage`` [m³] at the end of each step."""

    outflow: Tensor
    spill: Tensor
    storage: Tensor


@dataclass
class ReservoirResult:
    """Reservoir outputs of a routing run (``route(..., return_reservoirs=True)``).

    Attributes:
        nodes: ``[R]`` node index of every reservoir (ascending).
        inflow: ``[B, R, T]`` m³/s routed outflow of the reservoir's reach (its inflow).
        outflow: ``[B, R, T]`` m³/s controlled release.
        spill: ``[B, R, T]`` m³/s spill (overtopping / above capacity); the node's discharge is
            ``outflow + spill``.
        storage: ``[B, R, T]`` m³ at the end of each step.
        initial_storage: ``[B, R]`` m³ at the start of the run.
        operator: the operator's name.

    Without a batch axis in the inflow, the ``B`` axis is dropped.
    """

    nodes: Tensor
    inflow: Tensor
    outflow: Tensor
    spill: Tensor
    storage: Tensor
    initial_storage: Tensor
    operator: str = ""

    def mass_balance_error(self, step_seconds: float) -> Tensor:
        """``[.., R, T]`` ΔS − (I − O − P)·Δt [m³] (zero up to rounding)."""
        prev = torch.cat([self.initial_storage.unsqueeze(-1), self.storage[..., :-1]], -1)
        return (self.storage - prev) - (self.inflow - self.outflow - self.spill) * step_seconds


def _safe_pow(base: Tensor, exponent: Tensor | float) -> Tensor:
    """``base ** exponent`` for ``base >= 0``, 0 at 0 with finite gradients (also in the
    exponent)."""
    pos = base > 0
    return torch.where(pos, torch.where(pos, base, torch.ones_like(base)) ** exponent, 0.0)


class ReservoirOperator:
    """Base class of reservoir operators: declare the specs, implement :meth:`rates` (release and
    spill rates of a storage), :meth:`rate_bound` and :meth:`initial_storage`; an operator with a
    capacity returns it from :meth:`capacity`. :meth:`integrate` is shared."""

    name: ClassVar[str] = ""
    param_spec: ClassVar[dict[str, ParamSpec]] = {}
    data_spec: ClassVar[dict[str, ParamSpec]] = {}
    series: ClassVar[tuple[str, ...]] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        return (*self.param_spec, *self.data_spec, *self.series)

    def check_params(self, params: Mapping[str, Tensor], ids: Callable[[Tensor], list]) -> None:
        """Raise ``ValueError`` naming a missing/unknown/NaN/out-of-bounds input (and, for NaN,
        the reservoir ids: ``ids(bad_mask [R])``). ``params`` are gathered at the reservoirs."""
        missing = sorted(set(self.input_names) - set(params))
        if missing:
            raise ValueError(
                f"reservoir operator {self.name!r}: missing input(s) {missing}; it needs "
                f"{list(self.input_names)} (per node, in reservoir_params or as graph attributes)"
            )
        unknown = sorted(set(params) - set(self.input_names))
        if unknown:
            raise ValueError(
                f"reservoir operator {self.name!r}: unknown input(s) {unknown}; expected "
                f"{list(self.input_names)}"
            )
        for name, value in params.items():
            nan = torch.isnan(value.detach())
            if nan.any():  # [B, R] or [B, R, T] (series): per reservoir
                bad = nan.reshape(nan.shape[0], nan.shape[1], -1).any(0).any(-1)
                raise ValueError(
                    f"reservoir operator {self.name!r}: {name!r} is missing (NaN) at reservoir "
                    f"ids {ids(bad)}"
                )
        specs = {**self.param_spec, **self.data_spec}
        check_in_bounds(
            {k: params[k] for k in specs}, specs, owner=f"reservoir operator {self.name!r}"
        )

    # ---------------------------------------------------------------- physics
    def rates(self, storage: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Release and spill rates [m³/s] ``(O(S), P(S))`` of storage ``S`` [m³], ``[B, R]``."""
        raise NotImplementedError

    def rate_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        """``[.., R]`` an upper bound [1/s] of ``d(O + P)/dS`` over the reachable storage."""
        raise NotImplementedError

    def initial_storage(self, params: Mapping[str, Tensor]) -> Tensor:
        """``[.., R]`` storage [m³] at the start of a run (no state given)."""
        raise NotImplementedError

    def capacity(self, params: Mapping[str, Tensor]) -> Tensor | None:
        """``[.., R]`` storage [m³] above which everything spills at once, or None."""
        return None

    def substeps(self, params: Mapping[str, Tensor], step_seconds: float) -> int:
        """Sub-steps per data step for ``substeps="auto"``: ``⌈2·Δt·L⌉`` (at least 1, at most
        :data:`MAX_SUBSTEPS`)."""
        with torch.no_grad():
            bound = self.rate_bound(params)
            lmax = float(bound.max()) if bound.numel() else 0.0
        return int(min(MAX_SUBSTEPS, max(1, math.ceil(2.0 * step_seconds * lmax - 1e-9))))

    def integrate(
        self,
        inflow: Tensor,
        params: Mapping[str, Tensor],
        step_seconds: float,
        storage: Tensor | None = None,
        substeps: int | str = "auto",
        t0: int = 0,
        method: str = "auto",
    ) -> ReservoirSeries:
        """Integrate the storage of every reservoir over the series (see the module docstring).

        Args:
            inflow: ``[B, R, T]`` m³/s, held within each step.
            params: inputs by name, each ``[B, R]`` or ``[1, R]`` (series ``[B, R, T_all]``).
            step_seconds: length of one step [s].
            storage: ``[B, R]`` m³ at the start, or None (:meth:`initial_storage`).
            substeps: sub-steps per step, or ``"auto"`` (:meth:`substeps`).
            t0: index of the first step in the series inputs (time-chunked runs).
            method: ``"auto"`` (the numba kernel with its exact adjoint for a built-in
                operator on CPU, else the torch loop), ``"numba"`` or ``"torch"`` (the loop
                over steps × sub-steps that autograd records: the reference).
        """
        B, R, T = inflow.shape
        if storage is None:
            storage = self.initial_storage(params)
        s = storage.to(inflow.dtype).expand(B, R)
        n = self.substeps(params, step_seconds) if substeps == "auto" else int(substeps)
        if n < 1:
            raise ValueError(f"reservoir substeps must be >= 1 or 'auto', got {substeps!r}")
        if _use_kernel(self, inflow, method):
            return _integrate_numba(self, inflow, params, step_seconds, s, n)
        h = step_seconds / n
        cap = self.capacity(params)
        outs, spills, stores = [], [], []
        for t in range(T):
            q_in = inflow[..., t]
            v_out = inflow.new_zeros(B, R)
            v_spill = inflow.new_zeros(B, R)
            for _ in range(n):
                o_rate, p_rate = self.rates(s, params)
                avail = s + q_in * h
                vo = torch.minimum(o_rate * h, avail)
                vp = torch.minimum(p_rate * h, avail - vo)
                s = avail - vo - vp
                if cap is not None:
                    over = torch.relu(s - cap)
                    vp = vp + over
                    s = s - over
                v_out = v_out + vo
                v_spill = v_spill + vp
            outs.append(v_out / step_seconds)
            spills.append(v_spill / step_seconds)
            stores.append(s)
        return ReservoirSeries(
            torch.stack(outs, -1), torch.stack(spills, -1), torch.stack(stores, -1)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def level_pool_discharge(elevation: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """WRF-Hydro / t-route level-pool discharge [m³/s] at water elevation ``h`` [m]:
    ``(orifice + weir, overtop)``.

    .. math::
        Q_o = C_o A_o \\sqrt{2 g (h - h_o)}\\ (h > h_o), \\quad
        Q_w = C_w L_w \\min(h - h_w, h_{max} - h_w)^{3/2}\\ (h > h_w), \\quad
        Q_{top} = C_w L_w D_l (h - h_{max})^{3/2}\\ (h > h_{max})

    (WRF-Hydro ``LEVELPOOL_PHYSICS``: the weir depth is capped at the maximum elevation, above
    it the dam overtops over its length ``D_l``).
    """
    g = GRAVITY
    ho = params["reservoir_orifice_elevation_m"]
    hw = params["reservoir_weir_elevation_m"]
    hmax = params["reservoir_max_elevation_m"]
    cw, lw = params["reservoir_weir_coefficient"], params["reservoir_weir_length_m"]
    co, ao = params["reservoir_orifice_coefficient"], params["reservoir_orifice_area_m2"]
    dl = params["reservoir_dam_length_m"]
    orifice = co * ao * _safe_pow(2.0 * g * torch.relu(elevation - ho), 0.5)
    weir_depth = torch.minimum(torch.relu(elevation - hw), torch.relu(hmax - hw))
    weir = cw * lw * _safe_pow(weir_depth, 1.5)
    overtop = cw * lw * dl * _safe_pow(torch.relu(elevation - hmax), 1.5)
    return orifice + weir, overtop


def _spec(name: str, units: str, low: float, high: float, default: float, what: str) -> ParamSpec:
    return ParamSpec(name, units, low, high, default, description=what)


@register_reservoir("level_pool")
class LevelPool(ReservoirOperator):
    """Level-pool lake (WRF-Hydro / t-route, parameters from NWM's ``LAKEPARM.nc``).

    A flat pool of area ``A`` (``LkArea``; vertical walls, as WRF-Hydro assumes): storage is the
    volume above the orifice, ``S = A·(h − h_o)`` (the dead pool below the orifice never drains),
    release = orifice + weir, spill = overtopping above ``LkMxE`` (:func:`level_pool_discharge`).
    Initial elevation ``h_o + ifd·(LkMxE − h_o)`` (WRF-Hydro / t-route without a restart). The
    sub-stepped explicit scheme of the module replaces WRF-Hydro's third-order Runge–Kutta step,
    which does not close the mass balance exactly.
    """

    data_spec: ClassVar[dict[str, ParamSpec]] = {
        s.name: s
        for s in (
            _spec("reservoir_area_km2", "km2", 1e-6, 1e5, 1.0, "lake surface area (LkArea)"),
            _spec("reservoir_max_elevation_m", "m", -500.0, 9000.0, 100.0, "LkMxE"),
            _spec("reservoir_weir_elevation_m", "m", -500.0, 9000.0, 100.0, "WeirE"),
            _spec("reservoir_weir_coefficient", "-", 0.0, 10.0, 0.4, "WeirC"),
            _spec("reservoir_weir_length_m", "m", 0.0, 1e5, 10.0, "WeirL"),
            _spec("reservoir_dam_length_m", "m", 0.0, 1e5, 10.0, "Dam_Length"),
            _spec("reservoir_orifice_elevation_m", "m", -500.0, 9000.0, 100.0, "OrificeE"),
            _spec("reservoir_orifice_coefficient", "-", 0.0, 10.0, 0.1, "OrificeC"),
            _spec("reservoir_orifice_area_m2", "m2", 0.0, 1e6, 1.0, "OrificeA"),
            _spec("reservoir_initial_fraction", "-", 0.0, 1.0, 0.9, "ifd: initial depth fraction"),
        )
    }

    @staticmethod
    def _area_m2(params: Mapping[str, Tensor]) -> Tensor:
        return params["reservoir_area_km2"] * 1e6

    def elevation(self, storage: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Water elevation [m] of storage ``S`` [m³]: ``h_o + S / A``."""
        return params["reservoir_orifice_elevation_m"] + storage / self._area_m2(params)

    def rates(self, storage: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return level_pool_discharge(self.elevation(storage, params), params)

    def rate_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        # orifice bounded 1 cm above its elevation (below, the volume limiter takes over), weir at
        # its full depth, overtopping up to 1 m above the dam crest
        g = GRAVITY
        cw, lw = params["reservoir_weir_coefficient"], params["reservoir_weir_length_m"]
        co, ao = params["reservoir_orifice_coefficient"], params["reservoir_orifice_area_m2"]
        depth = torch.relu(
            params["reservoir_max_elevation_m"] - params["reservoir_weir_elevation_m"]
        )
        dq = (
            co * ao * g / math.sqrt(2.0 * g * 0.01)
            + 1.5 * cw * lw * depth.sqrt()
            + 1.5 * cw * lw * params["reservoir_dam_length_m"]
        )
        return dq / self._area_m2(params)

    def initial_storage(self, params: Mapping[str, Tensor]) -> Tensor:
        active = torch.relu(
            params["reservoir_max_elevation_m"] - params["reservoir_orifice_elevation_m"]
        )
        return self._area_m2(params) * params["reservoir_initial_fraction"] * active


@register_reservoir("learned")
class LearnedRelease(ReservoirOperator):
    """A storage–release rule whose parameters a parameterizer predicts per reservoir: a power
    law of the storage above a dead pool, and spill of all storage above the capacity ``C``:

    .. math::
        O = \\frac{C - S_d}{\\tau} \\Big(\\frac{S - S_d}{C - S_d}\\Big)_+^{b}, \\qquad
        S_d = f_d\\, C, \\qquad P: S \\le C

    (``τ``: the time the full active storage takes to drain at the full-pool release; ``b = 1``
    is a linear reservoir). Starts at the dead pool (an empty active storage, as the channels
    start empty). ``dO/dS = b/τ·u^{b−1} ≤ b/τ`` for ``b ≥ 1``.
    """

    param_spec: ClassVar[dict[str, ParamSpec]] = {
        s.name: s
        for s in (
            _spec(
                "reservoir_release_days",
                "days",
                0.1,
                1000.0,
                30.0,
                "drain time of the active storage at the full-pool release",
            ),
            _spec("reservoir_exponent", "-", 1.0, 3.0, 1.5, "release exponent b"),
            _spec(
                "reservoir_dead_fraction",
                "-",
                0.0,
                0.5,
                0.1,
                "dead pool (no release below it) as a fraction of the capacity",
            ),
        )
    }
    data_spec: ClassVar[dict[str, ParamSpec]] = {
        "reservoir_capacity_m3": _spec(
            "reservoir_capacity_m3", "m3", 1.0, 1e13, 1e7, "storage capacity (spill above it)"
        )
    }

    @staticmethod
    def _split(params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        cap = params["reservoir_capacity_m3"]
        dead = params["reservoir_dead_fraction"] * cap
        tau = params["reservoir_release_days"] * 86400.0
        return cap, dead, tau

    def rates(self, storage: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        cap, dead, tau = self._split(params)
        active = cap - dead
        u = torch.relu(storage - dead) / active
        release = active / tau * _safe_pow(u, params["reservoir_exponent"])
        return release, torch.zeros_like(release)

    def rate_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        return params["reservoir_exponent"] / (params["reservoir_release_days"] * 86400.0)

    def initial_storage(self, params: Mapping[str, Tensor]) -> Tensor:
        return self._split(params)[1]

    def capacity(self, params: Mapping[str, Tensor]) -> Tensor | None:
        return params["reservoir_capacity_m3"]


@register_reservoir("observed")
class ObservedRelease(ReservoirOperator):
    """A given release series as boundary: the reservoir releases ``reservoir_release``
    ``[N, T]`` m³/s (e.g. a dam's reported outflow), whatever its inflow; no spill. Its storage
    is the storage change since the start (``S_0 = 0``; it may turn negative where the given
    release exceeds the modelled inflow) and closes the mass balance."""

    series: ClassVar[tuple[str, ...]] = ("reservoir_release",)

    def initial_storage(self, params: Mapping[str, Tensor]) -> Tensor:
        return torch.zeros_like(params["reservoir_release"][..., 0])

    def rate_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        return torch.zeros_like(params["reservoir_release"][..., 0])  # no integration

    def integrate(
        self,
        inflow: Tensor,
        params: Mapping[str, Tensor],
        step_seconds: float,
        storage: Tensor | None = None,
        substeps: int | str = "auto",
        t0: int = 0,
        method: str = "auto",
    ) -> ReservoirSeries:
        B, R, T = inflow.shape
        release = params["reservoir_release"][..., t0 : t0 + T].to(inflow.dtype)
        if release.shape[-1] != T:
            raise ValueError(
                f"reservoir operator 'observed': reservoir_release has {params['reservoir_release'].shape[-1]} "
                f"steps, the routing needs {t0 + T}"
            )
        release = release.expand(B, R, T)
        if storage is None:
            storage = self.initial_storage(params)
        s0 = storage.to(inflow.dtype).expand(B, R)
        if _use_kernel(self, inflow, method):
            return _integrate_numba(
                self, inflow, {"reservoir_release": release}, step_seconds, s0, 1
            )
        stored = s0.unsqueeze(-1) + torch.cumsum((inflow - release) * step_seconds, -1)
        return ReservoirSeries(release, torch.zeros_like(release), stored)


# ------------------------------------------------------- storage integration: numba + adjoint
#: methods that define a built-in operator's physics (a subclass overriding one of them is
#: integrated by the torch loop)
_PHYSICS = ("rates", "capacity", "elevation", "_area_m2")


def _kernel_name(op: ReservoirOperator) -> str | None:
    """The built-in operator whose kernel integrates ``op`` (its physics not overridden)."""
    for cls in (LearnedRelease, LevelPool, ObservedRelease):
        if isinstance(op, cls) and all(
            getattr(type(op), m, None) is getattr(cls, m, None) for m in _PHYSICS
        ):
            return cls.name
    return None


def _use_kernel(op: ReservoirOperator, inflow: Tensor, method: str) -> bool:
    if method not in ("auto", "numba", "torch"):
        raise ValueError(f"reservoir integration method must be auto|numba|torch, got {method!r}")
    ok = inflow.device.type == "cpu" and _kernel_name(op) is not None
    if method == "numba" and not ok:
        raise ValueError(
            f"reservoir operator {op.name!r}: the numba integration serves the built-in "
            "operators on CPU only"
        )
    return ok and method != "torch"


class _IntegrateNumba(torch.autograd.Function):
    """The storage integration of a built-in operator (numba forward, exact numba adjoint:
    :mod:`gnnhydro.routing.kernels.reservoir_numba`), float64 inside, results in the inflow's
    dtype. Inputs ``inflow [B, R, T]``, ``s0 [B, R]``, ``release [B, R, T]`` (or empty) and
    the properties, each ``[B, R]``; outputs ``outflow, spill, storage [B, R, T]``."""

    @staticmethod
    def forward(ctx, code, n, dt, inflow, s0, release, *props):  # type: ignore[override]
        from gnnhydro.routing.kernels.reservoir_numba import integrate_forward

        B, R, T = inflow.shape
        arrays = [_np64(inflow), _np64(s0), _np64_props(props, B, R), _np64(release)]
        out, spill, store = (np.empty((B, R, T)) for _ in range(3))
        integrate_forward(code, n, float(dt), *arrays, out, spill, store)
        ctx.args, ctx.arrays, ctx.store = (code, n, float(dt)), arrays, store
        ctx.dtypes = [t.dtype for t in (inflow, s0, release, *props)]
        return tuple(torch.from_numpy(a).to(inflow.dtype) for a in (out, spill, store))

    @staticmethod
    def backward(ctx, g_out, g_spill, g_store):  # type: ignore[override]
        from gnnhydro.routing.kernels.reservoir_numba import integrate_backward

        inflow, s0, props, release = ctx.arrays
        g_in, g_s0, g_props, g_rel = (np.zeros_like(a) for a in ctx.arrays)
        integrate_backward(
            *ctx.args, inflow, s0, props, release, ctx.store,
            *(_np64(g) for g in (g_out, g_spill, g_store)), g_in, g_s0, g_props, g_rel,
        )  # fmt: skip
        grads = [g_in, g_s0, g_rel, *(g_props[..., i] for i in range(len(ctx.dtypes) - 3))]
        need = ctx.needs_input_grad[3:]
        return (None, None, None) + tuple(
            torch.from_numpy(np.ascontiguousarray(g)).to(dt) if want else None
            for g, dt, want in zip(grads, ctx.dtypes, need, strict=True)
        )


def _np64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


def _np64_props(props: tuple[Tensor, ...], B: int, R: int) -> np.ndarray:
    """``[B, R, P]`` float64 (``[B, R, 1]`` zeros without properties)."""
    if not props:
        return np.zeros((B, R, 1))
    return np.ascontiguousarray(np.stack([t.detach().cpu().numpy() for t in props], -1), np.float64)


def _integrate_numba(
    op: ReservoirOperator,
    inflow: Tensor,
    params: Mapping[str, Tensor],
    step_seconds: float,
    storage: Tensor,
    n: int,
) -> ReservoirSeries:
    """:meth:`ReservoirOperator.integrate` by :class:`_IntegrateNumba` (``storage [B, R]``;
    ``observed``: ``params`` holds the release ``[B, R, T]`` of this series)."""
    B, R, T = inflow.shape
    code, names = _FUSED[_kernel_name(op)]
    props = [params[k].to(inflow.dtype).expand(B, R) for k in names]
    release = params["reservoir_release"] if code == 2 else inflow.new_zeros(1, 1, 1)
    out, spill, store = _IntegrateNumba.apply(
        code, n, step_seconds, inflow, storage, release, *props
    )
    return ReservoirSeries(out, spill, store)


def gather_params(
    operator: ReservoirOperator,
    params: Mapping[str, Any],
    nodes: Tensor,
    num_nodes: int,
    ref: Tensor,
) -> dict[str, Tensor]:
    """Operator inputs given per node (``[N]`` / ``[B, N]``, series ``[N, T]`` / ``[B, N, T]``;
    scalars broadcast) gathered at the reservoir ``nodes`` → ``[B or 1, R]`` (series
    ``[B or 1, R, T]``)."""
    out = {}
    for name, value in params.items():
        t = torch.as_tensor(value, device=ref.device)
        t = t.to(ref.dtype)
        series = name in operator.series
        axis = -2 if series else -1
        if t.dim() == 0 and not series:
            t = t.expand(num_nodes)
        if t.dim() < -axis or t.shape[axis] != num_nodes or t.dim() > 1 - axis:
            want = "[N, T] or [B, N, T]" if series else "[N] or [B, N]"
            raise ValueError(
                f"reservoir operator {operator.name!r}: input {name!r} has shape "
                f"{tuple(t.shape)}; expected {want} with N = {num_nodes}"
            )
        t = t.index_select(t.dim() + axis, nodes.to(t.device))
        out[name] = t.unsqueeze(0) if t.dim() == -axis else t
    return out


class ReservoirRun:
    """The reservoirs of one routing call: the operator, its inputs at the reservoirs, the
    storage carried from window to window, and the pieces of output collected stage by stage.

    :meth:`after_stage` is the hook of :func:`~gnnhydro.routing.staged.route_stages`: the
    reservoirs of a finished stage take its routed outflow as inflow and replace it by their
    release + spill before later stages read it. :meth:`end_window` closes one time window.
    """

    def __init__(
        self,
        operator: ReservoirOperator,
        nodes: Tensor,
        params: dict[str, Tensor],
        num_nodes: int,
        step_seconds: float,
        substeps: int,
        storage: Tensor | None,
        reservoir_substeps: int | str = "auto",
    ) -> None:
        self.operator = operator
        self.nodes = nodes
        self.params = params
        self.step_seconds = float(step_seconds)  # of one internal step
        self.substeps = int(substeps)  # internal steps per input step
        self.res_of = torch.full((num_nodes,), -1, dtype=torch.long)
        self.res_of[nodes] = torch.arange(nodes.numel())
        if storage is None:
            storage = operator.initial_storage(params)
        if reservoir_substeps == "auto":  # one count for all (independent of the staging)
            reservoir_substeps = operator.substeps(params, self.step_seconds)
        self.reservoir_substeps = reservoir_substeps
        self.initial_storage = storage
        self.storage = storage
        self.t = 0  # internal steps done
        self._pieces: list[tuple[Tensor, Tensor, ReservoirSeries]] = []
        self._windows: list[tuple[Tensor, ...]] = []

    def after_stage(self, stage: int, nodes: Tensor, out: Tensor) -> Tensor:
        """``out [B, n_s, T]`` of the stage's ``nodes`` with the reservoirs' release + spill."""
        r = self.res_of[nodes.cpu()]
        local = torch.nonzero(r >= 0).flatten()
        if local.numel() == 0:
            return out
        ridx = r[local]
        dev_local, dev_ridx = local.to(out.device), ridx.to(out.device)
        inflow = out.index_select(1, dev_local)
        params = {k: v.index_select(1, dev_ridx) for k, v in self.params.items()}
        storage = self.storage.expand(out.shape[0], -1).index_select(1, dev_ridx)
        series = self.operator.integrate(
            inflow, params, self.step_seconds, storage, self.reservoir_substeps, t0=self.t
        )
        self._pieces.append((ridx, inflow, series))
        return out.index_copy(1, dev_local, (series.outflow + series.spill).to(out.dtype))

    def end_window(self, steps: int) -> None:
        """Assemble the window's pieces in reservoir order; carry the storage on."""
        if len(self._pieces) == 0:
            raise RuntimeError("reservoir run: no stage held the reservoirs")
        ridx = torch.cat([p[0] for p in self._pieces])
        inv = torch.empty_like(ridx)
        inv[ridx] = torch.arange(ridx.numel())
        dev_inv = inv.to(self._pieces[0][1].device)

        def cat(get: Callable) -> Tensor:
            return torch.cat([get(p) for p in self._pieces], 1).index_select(1, dev_inv)

        window = (
            cat(lambda p: p[1]),
            cat(lambda p: p[2].outflow),
            cat(lambda p: p[2].spill),
            cat(lambda p: p[2].storage),
        )
        self._pieces = []
        self._windows.append(window)
        self.storage = window[3][..., -1]
        self.t += int(steps)

    def result(self, squeeze: bool) -> ReservoirResult:
        """The run's :class:`ReservoirResult` at input steps (internal steps: means of the flows,
        storage at the end of each input step)."""
        parts = [torch.cat(x, -1) for x in zip(*self._windows, strict=True)]
        s = self.substeps
        B, R, T = parts[0].shape
        flows = [p.view(B, R, T // s, s).mean(-1) for p in parts[:3]]
        storage = parts[3].view(B, R, T // s, s)[..., -1]
        init = self.initial_storage.expand(B, R)
        out = [*flows, storage, init]
        if squeeze:
            out = [x.squeeze(0) for x in out]
        return ReservoirResult(self.nodes, *out, operator=self.operator.name)


def empty_result(ref: Tensor, squeeze: bool, name: str = "") -> ReservoirResult:
    """A :class:`ReservoirResult` with no reservoirs (``R = 0``)."""
    B, _, T = ref.shape
    z = ref.new_zeros(B, 0, T)
    out = [z, z, z, z, ref.new_zeros(B, 0)]
    if squeeze:
        out = [x.squeeze(0) for x in out]
    return ReservoirResult(torch.zeros(0, dtype=torch.long), *out, operator=name)


def reservoir_run(
    reservoir: Any,
    reservoir_params: Mapping[str, Any] | None,
    reservoir_nodes: Tensor | None,
    graph: Any,
    num_nodes: int,
    lat: Tensor,
    step_seconds: float | None,
    substeps: int,
    initial_state: Any,
    node_ids: Callable[[list[int]], list],
    reservoir_substeps: int | str = "auto",
) -> ReservoirRun | None:
    """The :class:`ReservoirRun` of a routing call, or None (no operator or no reservoir nodes).

    Reservoir nodes: ``reservoir_nodes`` (a bool mask ``[N]`` or node indices), else the graph's
    ``reservoir_mask``. Inputs: ``reservoir_params`` by name, else the graph attribute of the
    same name (``data_spec`` and ``series``). ``lat`` is at internal steps (``substeps`` per
    input step); series inputs are at input steps.
    """
    operator = get_reservoir(reservoir)
    if operator is None:
        return None
    mask = reservoir_nodes
    if mask is None and not isinstance(graph, Tensor):
        mask = getattr(graph, "reservoir_mask", None)
    if mask is None:
        return None
    mask = torch.as_tensor(mask).detach().cpu()
    if mask.dtype == torch.bool:
        if mask.shape != (num_nodes,):
            raise ValueError(
                f"reservoir mask must be [N = {num_nodes}] bool, got {tuple(mask.shape)}"
            )
        nodes = torch.nonzero(mask).flatten()
    else:
        nodes = torch.unique(mask.long())
        if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes):
            raise ValueError(f"reservoir node indices outside [0, {num_nodes})")
    if nodes.numel() == 0:
        return None
    given = dict(reservoir_params or {})
    for name in (*operator.data_spec, *operator.series):
        if name not in given and not isinstance(graph, Tensor):
            value = getattr(graph, name, None)
            if value is not None:
                given[name] = value
    if step_seconds is None and not isinstance(graph, Tensor):
        step_seconds = getattr(graph, "step_seconds", None)
        if isinstance(step_seconds, (list, tuple)):
            step_seconds = step_seconds[0]
        if isinstance(step_seconds, Tensor):
            step_seconds = float(step_seconds.flatten()[0])
    if step_seconds is None:
        raise ValueError(
            "reservoirs need the length of a time step: pass step_seconds (or give the graph "
            "a step_seconds attribute)"
        )
    params = gather_params(operator, given, nodes, num_nodes, lat)
    nodes_list = nodes.tolist()
    operator.check_params(
        params, lambda bad: node_ids([nodes_list[i] for i in torch.nonzero(bad).flatten()[:20]])
    )
    for name in operator.series:
        params[name] = (
            params[name].repeat_interleave(substeps, dim=-1) if substeps > 1 else params[name]
        )
    storage = getattr(initial_state, "reservoir_storage", None)
    if storage is not None:
        storage = torch.as_tensor(storage, dtype=lat.dtype, device=lat.device)
        storage = storage.unsqueeze(0) if storage.dim() == 1 else storage
        if storage.shape[-1] != nodes.numel():
            raise ValueError(
                f"initial_state.reservoir_storage has {storage.shape[-1]} reservoirs, the "
                f"network has {nodes.numel()}"
            )
    return ReservoirRun(
        operator,
        nodes,
        params,
        num_nodes,
        float(step_seconds) / substeps,
        substeps,
        storage,
        reservoir_substeps,
    )


# ---------------------------------------- kernel packing (the fused forward: kernels/reservoir_fused.py)
#: operator → (kernel code, packed property names) of the fused numba forward
_FUSED = {
    "learned": (
        0,
        (
            "reservoir_capacity_m3",
            "reservoir_dead_fraction",
            "reservoir_release_days",
            "reservoir_exponent",
        ),
    ),
    "level_pool": (
        1,
        (
            "reservoir_area_km2",
            "reservoir_max_elevation_m",
            "reservoir_weir_elevation_m",
            "reservoir_weir_coefficient",
            "reservoir_weir_length_m",
            "reservoir_dam_length_m",
            "reservoir_orifice_elevation_m",
            "reservoir_orifice_coefficient",
            "reservoir_orifice_area_m2",
        ),
    ),
    "observed": (2, ()),
}

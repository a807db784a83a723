"""Impulse-response functions (IRFs) of single river reaches, and their registry.

Every reach of a river network routes its inflow ``I`` (lateral inflow entering at its upstream
end plus the weighted outflow of upstream reaches) into an outflow ``O = h ∗ I`` with a linear
time-invariant impulse response ``h``. Two families exist:

* :class:`RecursiveIRF` — first-order recursions ``O_t = c0·I_t + c1·I_{t−1} + c2·O_{t−1}``
  (Muskingum, linear storage). Exact for any travel time; no kernel window at all.
* :class:`KernelIRF` — finite kernels ``h[0..K)`` (pure lag, Nash cascade, diffusive wave,
  explicit per-reach kernels). A kernel is built from the exact step-integrated response
  (differences of a closed-form cumulative distribution), so each ``h_j`` is the fraction of a
  unit input of one time step that leaves the reach during step ``j``. Its window ends where the
  remaining tail mass is below ``tail_tol`` (stated tolerance, default 1e-10) or at the end of
  the series, whichever comes first — kernels are never renormalised.

Time-valued parameters (``k``, ``lag``) are in units of the *input* time step. The router passes
``dt`` = the internal step in input steps (``1 / substeps``).

User IRFs register with :func:`register_irf` or through the entry-point group
``"gnnhydro.irfs"`` (``name = "package.module:Class"``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from gnnhydro.registry import Registry
from gnnhydro.spec import ParamSpec, check_in_bounds

__all__ = [
    "IRF_REGISTRY",
    "ImpulseResponse",
    "RecursiveIRF",
    "KernelIRF",
    "RoutingContext",
    "register_irf",
    "get_irf",
    "available_irfs",
    "Muskingum",
    "MuskingumCunge",
    "LinearStorage",
    "PureLag",
    "NashCascade",
    "DiffusiveWave",
    "ExplicitKernel",
    "muskingum_coefficients",
    "muskingum_substeps",
    "muskingum_cunge_kx",
    "regularized_gamma_p",
]

IRF_REGISTRY: Registry[type[ImpulseResponse]] = Registry("IRF", entry_point_group="gnnhydro.irfs")


def register_irf(name: str) -> Callable[[type[ImpulseResponse]], type[ImpulseResponse]]:
    """Class decorator: register an :class:`ImpulseResponse` subclass under ``name``."""

    def deco(cls: type[ImpulseResponse]) -> type[ImpulseResponse]:
        if not (isinstance(cls, type) and issubclass(cls, ImpulseResponse)):
            raise TypeError(
                f"register_irf({name!r}) expects an ImpulseResponse subclass, got {cls}"
            )
        cls.name = name
        return IRF_REGISTRY.register(name)(cls)

    return deco


def available_irfs() -> list[str]:
    """Names of the registered IRFs (built-ins and ``gnnhydro.irfs`` entry points)."""
    return IRF_REGISTRY.names()


def get_irf(name: str | ImpulseResponse | type[ImpulseResponse]) -> ImpulseResponse:
    """Return an instance of the IRF registered as ``name`` (instances/classes pass through).

    Raises ``ValueError`` listing the registered names if ``name`` is unknown.
    """
    if isinstance(name, ImpulseResponse):
        return name
    if isinstance(name, type) and issubclass(name, ImpulseResponse):
        return name()
    return IRF_REGISTRY.get(name)()


@dataclass
class RoutingContext:
    """What an IRF may need besides its parameters.

    Attributes:
        dt: internal time step in units of the input time step (``1 / substeps``).
        num_steps: number of internal steps the kernel will be applied to (a kernel never needs
            to be longer than ``num_steps`` plus the carried input history).
        step_seconds: length of one *input* time step in seconds (needed by IRFs with
            parameters in SI units, e.g. the diffusive wave), or None.
        length_m: ``[N]`` reach lengths in metres, or None.
        reach_substeps: ``[N]`` or ``[B, N]`` int64 internal steps of every reach per input step
            (per-reach time steps of a :class:`RecursiveIRF`, see
            :meth:`RecursiveIRF.step_coefficients`; 0 = the inflow passes straight through), or
            None: every reach at ``dt``.
        slope: ``[N]`` channel bed slopes [m/m] (from ``graph.slope``), or None.
        reference_discharge: ``[N]`` or ``[B, N]`` discharge [m³/s] at which an IRF with
            flow-dependent parameters (Muskingum–Cunge) is linearised, or None.

    Every per-reach tensor has the node axis last (staged routing slices it per stage).
    """

    dt: float = 1.0
    num_steps: int = 1
    step_seconds: float | None = None
    length_m: Tensor | None = None
    reach_substeps: Tensor | None = None
    slope: Tensor | None = None
    reference_discharge: Tensor | None = None


class ImpulseResponse:
    """Base class of all reach impulse responses. Subclass :class:`RecursiveIRF` or
    :class:`KernelIRF`, declare ``param_spec`` and register with :func:`register_irf`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    param_spec: ClassVar[dict[str, ParamSpec]] = {}

    def node_axis(self, name: str) -> int:
        """Axis of the node dimension of parameter ``name`` (−1: ``[N]`` / ``[B, N]``)."""
        return -1

    def check_params(self, params: Mapping[str, Tensor]) -> None:
        """Raise ``ValueError`` naming any missing/unknown/NaN/out-of-bounds parameter."""
        check_in_bounds(params, self.param_spec, owner=f"IRF {self.name!r}")

    def impulse_response(
        self, params: Mapping[str, Tensor], length: int, ctx: RoutingContext | None = None
    ) -> Tensor:
        """Discrete response to a unit inflow during step 0, over ``length`` steps.

        Shapes:
            params: each ``[N]`` or ``[B, N]``; result ``[N, length]`` or ``[B, N, length]``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class RecursiveIRF(ImpulseResponse):
    """``O_t = c0·I_t + c1·I_{t−1} + c2·O_{t−1}`` with per-reach coefficients.

    Subclasses implement :meth:`coefficients`; they may implement :meth:`auto_substeps` (the
    per-reach time steps ``substeps="auto"`` chooses; default: one step per input step).
    """

    kind: ClassVar[str] = "recursive"

    def coefficients(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> Tensor:
        """Recursion coefficients ``(c0, c1, c2)`` at the step ``ctx.dt`` (a float, or a
        per-reach tensor broadcasting with the parameters), differentiable in the parameters.

        Shapes:
            params: each ``[N]`` or ``[B, N]``; result ``[..., N, 3]``.
        """
        raise NotImplementedError

    def auto_substeps(
        self, params: Mapping[str, Tensor], ctx: RoutingContext, max_substeps: int
    ) -> Tensor:
        """Internal steps per input step of every reach for ``substeps="auto"`` (int64; 0 = pass
        the inflow straight through). Default: 1 everywhere.

        Shapes: params each ``[N]`` or ``[B, N]``; result ``[N]`` or ``[B, N]``.
        """
        ref = next(iter(params.values()), None)
        n = ref.shape[-1] if ref is not None else 0
        return torch.ones(n, dtype=torch.long)

    def step_coefficients(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> Tensor:
        """Coefficients at the input step of reaches that take ``s = ctx.reach_substeps`` internal
        steps per input step.

        Within an input step the reach's inflow is held, the recursion runs ``s`` times at
        ``Δt/s``, and the reach's outflow for the step is the mean of its ``s`` internal outflows
        (so volume is conserved; ``s = 1`` is the plain recursion). With the inflow held, the
        mean ``y_t`` and the end-of-step internal outflow ``S_t`` obey
        ``y_t = α I_t + β I_{t−1} + γ S_{t−1}`` and ``S_t = a I_t + b I_{t−1} + c S_{t−1}``;
        eliminating ``S`` leaves the first-order recursion

        .. math::
            y_t = α I_t + (β + γa − cα) I_{t−1} + c · y_{t−1}

        (the ``I_{t−2}`` term ``γb − cβ`` vanishes identically: ``γ = c_2 m``, ``b = c_1
        c_2^{s−1}``, ``c = c_2^s``, ``β = c_1 m``). So per-reach time steps cost nothing in the
        routing kernels. ``α, β, γ, a, b, c`` are the internal recursion run over one input
        step on the three unit inputs, in closed form: sums of powers of ``c_2`` (differentiable;
        the tests compare with the recursion run literally).
        Reaches with ``s = 0`` pass their inflow straight through (``(1, 0, 0)``).

        Shapes:
            params: each ``[N]`` or ``[B, N]``; ``ctx.reach_substeps`` ``[N]`` or ``[B, N]``;
            result ``[..., N, 3]``.
        """
        steps = ctx.reach_substeps
        if steps is None:
            return self.coefficients(params, ctx)
        ref = next(iter(params.values()))
        steps = steps.to(ref.device)
        dt_inner = ctx.dt / steps.clamp(min=1).to(ref.dtype)
        inner = self.coefficients(params, dataclasses.replace(ctx, dt=dt_inner))
        c0, c1, c2 = inner.unbind(-1)
        c0, c1, c2, steps = torch.broadcast_tensors(c0, c1, c2, steps)
        s = steps.clamp(min=1)
        s_max = int(s.max().item()) if s.numel() else 1
        # the internal recursion over one input step in closed form: with r = c2 and g = c0 + c1,
        # O_1 = c0·I_t + c1·I_{t−1} + r·S_{t−1} and O_j = r·O_{j−1} + g·I_t (j ≥ 2), so every
        # quantity is a sum of powers r^i (P), their partial sums G_n = Σ_{i<n} r^i and the sums
        # of those (H), read at each reach's own s
        powers = torch.cumprod(
            torch.cat(
                [torch.ones_like(c2).unsqueeze(-1), c2.unsqueeze(-1).expand(*c2.shape, s_max)], -1
            ),
            dim=-1,
        )  # [..., s_max + 1]: r^0 … r^s_max
        partial = torch.cumsum(powers, -1) - powers  # G_n, n = 0 … s_max
        nested = torch.cumsum(partial, -1)  # Σ_{m ≤ n} G_m

        def at(table: Tensor, index: Tensor) -> Tensor:
            return table.gather(-1, index.unsqueeze(-1)).squeeze(-1)

        s_f = s.to(c2.dtype)
        mean_power = at(partial, s) / s_f  # (1/s)·Σ_{j=1..s} r^{j−1}
        mean_partial = at(nested, s - 1) / s_f  # (1/s)·Σ_{j=1..s} G_{j−1}
        g = c0 + c1
        alpha = c0 * mean_power + g * mean_partial  # mean outflow per unit I_t
        beta = c1 * mean_power  # … per unit I_{t−1}
        gamma = c2 * mean_power  # … per unit S_{t−1}
        a = c0 * at(powers, s - 1) + g * at(partial, s - 1)  # end-of-step outflow per unit I_t
        c = at(powers, s)  # … per unit S_{t−1}: r^s
        coef = torch.stack(torch.broadcast_tensors(alpha, beta + gamma * a - c * alpha, c), -1)
        through = torch.tensor([1.0, 0.0, 0.0], dtype=coef.dtype, device=coef.device)
        return torch.where((steps == 0).unsqueeze(-1), through, coef)

    def impulse_response(
        self, params: Mapping[str, Tensor], length: int, ctx: RoutingContext | None = None
    ) -> Tensor:
        ctx = ctx or RoutingContext()
        coef = self.step_coefficients(params, ctx)
        c0, c1, c2 = coef[..., 0], coef[..., 1], coef[..., 2]
        out = [c0]
        if length > 1:
            out.append(c0 * c2 + c1)
        for _ in range(2, length):
            out.append(out[-1] * c2)
        return torch.stack(out[:length], dim=-1)


class KernelIRF(ImpulseResponse):
    """Finite impulse response ``h[..., N, K]``.

    Subclasses implement :meth:`kernel`; :meth:`support` may return per-reach ``[start, end)``
    index ranges outside of which the kernel is structurally zero (e.g. a pure lag).
    """

    kind: ClassVar[str] = "kernel"
    tail_tol: float = 1e-10

    def kernel(self, params: Mapping[str, Tensor], ctx: RoutingContext, max_len: int) -> Tensor:
        """Kernel of at most ``max_len`` lags (fewer where the tail mass is below ``tail_tol``).

        Shapes:
            params: each ``[N]`` or ``[B, N]``; result ``[..., N, K]`` with ``K <= max_len``.
        """
        raise NotImplementedError

    def full_length(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> int:
        """Number of lags until the tail mass is below ``tail_tol`` (uncapped by the series)."""
        raise NotImplementedError

    def support(self, params: Mapping[str, Tensor], ctx: RoutingContext, K: int) -> Tensor | None:
        """Optional ``[..., N, 2]`` int64 ``[start, end)`` ranges of non-zero lags (None = all)."""
        return None

    def impulse_response(
        self, params: Mapping[str, Tensor], length: int, ctx: RoutingContext | None = None
    ) -> Tensor:
        ctx = ctx or RoutingContext(num_steps=length)
        h = self.kernel(params, ctx, max_len=length)
        if h.shape[-1] < length:
            h = torch.nn.functional.pad(h, (0, length - h.shape[-1]))
        return h


def _time_params(params: Mapping[str, Tensor], names: tuple[str, ...]) -> list[Tensor]:
    out = [torch.as_tensor(params[n]) for n in names]
    dtype = torch.promote_types(out[0].dtype, torch.get_default_dtype())
    for t in out[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in out]


def muskingum_coefficients(k: Tensor, x: Tensor, dt: float = 1.0) -> Tensor:
    """Muskingum coefficients (McCarthy 1938; e.g. Chow, Maidment & Mays 1988, §8.4).

    .. math::
        C_0 = \\frac{Δt − 2kx}{2k(1−x) + Δt},\\;
        C_1 = \\frac{Δt + 2kx}{2k(1−x) + Δt},\\;
        C_2 = \\frac{2k(1−x) − Δt}{2k(1−x) + Δt}

    ``C0`` is negative whenever ``k·x > Δt/2``; it is never clipped. ``C0 + C1 + C2 = 1``.

    Shapes:
        k, x: broadcastable (``k`` and ``dt`` in the same time unit); result ``[..., 3]``.
    """
    denom = 2 * k * (1 - x) + dt
    c0 = (dt - 2 * k * x) / denom
    c1 = (dt + 2 * k * x) / denom
    c2 = (2 * k * (1 - x) - dt) / denom
    return torch.stack(torch.broadcast_tensors(c0, c1, c2), dim=-1)


def muskingum_substeps(k: Tensor, x: Tensor, max_substeps: int) -> Tensor:
    """Internal steps per input step with non-negative Muskingum coefficients (fewest such).

    ``C2 ≥ 0`` needs ``Δt/s ≤ 2k(1−x)``, i.e. ``s ≥ s_hi = ⌈1/(2k(1−x))⌉``; ``C0 ≥ 0`` needs
    ``Δt/s ≥ 2kx``, i.e. ``s ≤ 1/(2kx)``. Where ``s_hi`` satisfies both it is the answer. Where
    no integer does (``x`` near ½, or ``k·x > Δt/2`` where ``C0 < 0`` at every ``s``), the
    negativity of ``C2`` falls with ``s`` below ``s_hi`` and that of ``C0`` grows above it, so
    the least negative worst coefficient is at ``s_hi`` or ``s_hi − 1``: the better of the two is
    taken. A reach that would need more than ``max_substeps`` (travel time far below the step)
    gets 0: its inflow passes straight through.

    Shapes: k, x broadcastable (``k`` in input steps); result int64, their broadcast shape.
    """
    k, x = torch.broadcast_tensors(k.detach(), x.detach())
    hi = torch.ceil(1.0 / (2.0 * k * (1.0 - x)) - 1e-9).clamp(min=1.0)
    hi = torch.where(torch.isfinite(hi), hi, torch.full_like(hi, max_substeps + 1.0))
    lo = (hi - 1).clamp(min=1.0)

    def worst(s: Tensor) -> Tensor:
        return muskingum_coefficients(k, x, 1.0 / s).amin(-1)

    steps = torch.where((worst(hi) < 0) & (worst(lo) > worst(hi)), lo, hi)
    return torch.where(steps > max_substeps, torch.zeros_like(steps), steps).long()


@register_irf("muskingum")
class Muskingum(RecursiveIRF):
    """Muskingum routing ``O_t = C0·I_t + C1·I_{t−1} + C2·O_{t−1}`` (storage ``S = k[xI + (1−x)O]``).

    Parameters: ``k`` (storage time constant, input time steps) and ``x`` (weighting factor).
    Subclasses that derive ``k`` and ``x`` from other quantities override :meth:`storage_kx`.
    """

    param_spec: ClassVar[dict[str, ParamSpec]] = {
        "k": ParamSpec(
            "k", "time steps", 0.01, 100.0, 1.0, description="Muskingum storage constant"
        ),
        "x": ParamSpec("x", "-", 0.0, 0.5, 0.2, description="Muskingum weighting factor"),
    }

    def storage_kx(
        self, params: Mapping[str, Tensor], ctx: RoutingContext
    ) -> tuple[Tensor, Tensor]:
        """``(k, x)`` of every reach, ``k`` in input time steps. Shapes: ``[N]`` or ``[B, N]``."""
        k, x = _time_params(params, ("k", "x"))
        return k, x

    def coefficients(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> Tensor:
        k, x = self.storage_kx(params, ctx)
        return muskingum_coefficients(k, x, ctx.dt)

    def auto_substeps(
        self, params: Mapping[str, Tensor], ctx: RoutingContext, max_substeps: int
    ) -> Tensor:
        k, x = self.storage_kx(params, ctx)
        return muskingum_substeps(k / ctx.dt, x, max_substeps)


def muskingum_cunge_kx(
    length_m: Tensor,
    slope: Tensor,
    n: Tensor,
    p: Tensor,
    q: Tensor,
    discharge: Tensor,
) -> tuple[Tensor, Tensor]:
    """Muskingum–Cunge ``k`` [s] and ``x`` [-] of a wide power-law channel at a discharge.

    Cunge (1969) chose Muskingum's ``k`` and ``x`` so that the scheme's numerical diffusion
    equals the physical diffusion of the linearised diffusive wave: ``k = L/c`` and
    ``x = ½ − Q/(2 w S₀ c L)``, with ``c`` the kinematic celerity and ``w`` the top width at the
    reference discharge ``Q``. The channel is a power-law section (top width ``w = p·d^q``, the
    hydraulic-geometry form of Leopold & Maddock 1953; ``q = 0`` rectangular, ``q = 1``
    triangular), wide enough that the hydraulic radius is the hydraulic depth ``R ≈ A/w``, in
    uniform flow (Manning):

    .. math::
        w = p\\,d^{q}, \\quad A = \\int_0^d w\\,dη = \\frac{w\\,d}{q+1}, \\quad R ≈ \\frac{A}{w}
        = \\frac{d}{q+1}, \\quad Q = \\frac{1}{n} A R^{2/3} S_0^{1/2}
        = \\frac{p\\sqrt{S_0}}{n\\,(q+1)^{5/3}}\\, d^{\\,q+5/3}

    so the depth at ``Q`` is closed-form, and with it the celerity and Cunge's ``k`` and ``x``:

    .. math::
        d = \\Big(\\frac{n\\,Q\\,(q+1)^{5/3}}{p\\sqrt{S_0}}\\Big)^{1/(q+5/3)}, \\quad
        c = \\frac{dQ}{dA} = \\frac{q + 5/3}{q + 1}\\,\\frac{Q}{A}, \\quad
        k = \\frac{L}{c}, \\quad
        x = \\frac12 - \\frac{Q}{2\\,w\\,S_0\\,c\\,L} = \\frac12 - \\frac{d}{2\\,(q+5/3)\\,S_0\\,L}

    ``x < ½`` always; long, flat reaches give ``x < 0`` (more diffusion than Muskingum can
    represent at that length), and ``x`` is clipped to ``[0, ½]``: at the clip the reach routes
    with ``x = 0`` and the gradient of ``x`` is zero (``k`` keeps its gradient). DDR / δMC
    (Bindas et al. 2024) take ``R ≈ d`` instead of ``A/w``, which changes ``d`` by the factor
    ``(q+1)^{2/(3q+5)}`` (none for the rectangle).

    Args:
        length_m: reach length ``L`` [m] (> 0).
        slope: channel bed slope ``S₀`` [m/m] (> 0).
        n: Manning's roughness [s m^(-1/3)].
        p: top-width coefficient [m^(1−q)].
        q: top-width exponent [-].
        discharge: reference discharge ``Q`` [m³/s] (> 0).

    Returns:
        ``(k, x)``: storage constant [s] and weighting factor [-].

    Shapes:
        all inputs broadcastable (``[N]`` or ``[B, N]``); results their broadcast shape.

    References:
        Cunge, J. A. (1969). On the subject of a flood propagation computation method (Muskingum
        method). J. Hydraul. Res. 7(2), 205–230. Leopold, L. B. & Maddock, T. (1953). The
        hydraulic geometry of stream channels and some physiographic implications. USGS
        Professional Paper 252. Bindas, T. et al. (2024). Improving river routing using a
        differentiable Muskingum-Cunge model and physics-informed machine learning. Water
        Resour. Res. 60, e2023WR035337.
    """
    expo = q + 5.0 / 3.0
    log_depth = (
        torch.log(n)
        + torch.log(discharge)
        + (5.0 / 3.0) * torch.log1p(q)
        - torch.log(p)
        - 0.5 * torch.log(slope)
    ) / expo
    depth = torch.exp(log_depth)  # m
    top_width = p * torch.exp(q * log_depth)  # m
    area = top_width * depth / (q + 1.0)  # m²
    celerity = expo / (q + 1.0) * discharge / area  # m/s
    k = length_m / celerity  # s
    x = 0.5 - depth / (2.0 * expo * slope * length_m)
    return k, x.clamp(0.0, 0.5)


@register_irf("muskingum_cunge")
class MuskingumCunge(Muskingum):
    """Muskingum–Cunge routing: Muskingum with ``k`` and ``x`` from the channel's physics
    (:func:`muskingum_cunge_kx`: reach length, slope, Manning's ``n`` and a power-law channel
    ``w = p·d^q`` at a reference discharge), so the parameterizer predicts ``n``, ``p`` and
    ``q``, not travel times. Coefficients, per-reach time steps (``substeps="auto"``) and the
    negative-coefficient warning are Muskingum's.

    The IRF is linear (LTI): ``k`` and ``x`` are fixed at a reference discharge per reach
    (``ctx.reference_discharge``; :class:`~gnnhydro.models.HydroModel` gives a fraction of the
    mean flow accumulated down the network), not re-evaluated with the flow at every step as in
    δMC (Bindas et al. 2024). Reference discharges below ``min_reference_discharge``
    (1e-3 m³/s: dry reaches) are raised to it.

    Needs ``ctx.length_m`` [m], ``ctx.slope`` [m/m] (from ``graph.length_m`` / ``graph.slope``
    or given as ``params["length_m"]`` / ``params["slope"]``), ``ctx.reference_discharge``
    [m³/s] (``params["reference_discharge"]``) and ``ctx.step_seconds``.

    Bounds: ``n`` in [0.015, 0.25] s m^(-1/3) (DDR, Bindas et al.); ``q`` in [0, 1] (rectangle to
    triangle; at-a-station hydraulic geometry, width ∝ Q^0.26 and depth ∝ Q^0.40 (Leopold &
    Maddock 1953), gives ``q ≈ 0.65``); ``p`` in [1, 200] m^(1−q) (DDR's default 21: a 21 m wide
    channel at 1 m depth).
    """

    needs_reference_discharge: ClassVar[bool] = True
    min_reference_discharge: ClassVar[float] = 1e-3
    param_spec: ClassVar[dict[str, ParamSpec]] = {
        "n": ParamSpec("n", "s/m^(1/3)", 0.015, 0.25, 0.035, description="Manning's roughness"),
        "p": ParamSpec(
            "p", "m^(1-q)", 1.0, 200.0, 21.0, description="top width coefficient, w = p d^q"
        ),
        "q": ParamSpec("q", "-", 0.0, 1.0, 0.5, description="top width exponent, w = p d^q"),
    }

    def reach_data(self, ctx: RoutingContext, like: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        """``(length_m, slope, reference_discharge, step_seconds)`` from ``ctx``, checked, in
        ``like``'s dtype and device (``ValueError`` naming what is missing or the bad nodes)."""
        name = f"IRF {self.name!r}"
        if ctx.step_seconds is None:
            raise ValueError(f"{name} needs step_seconds (length of one input step, s)")
        if ctx.length_m is None:
            raise ValueError(f"{name} needs reach lengths: graph.length_m [m] is missing")
        if ctx.slope is None:
            raise ValueError(f"{name} needs channel slopes: graph.slope [m/m] is missing")
        if ctx.reference_discharge is None:
            raise ValueError(
                f"{name} needs a reference discharge: give params['reference_discharge'] [m³/s]"
            )
        out = []
        for what, value in (("length_m", ctx.length_m), ("slope", ctx.slope)):
            value = value.to(like.device, like.dtype)
            bad = ~(value > 0)
            if bool(bad.any()):
                idx = torch.nonzero(bad.reshape(-1, bad.shape[-1]).any(0)).flatten().tolist()
                raise ValueError(f"{name}: {what} must be > 0; bad node indices {idx[:20]}")
            out.append(value)
        qref = ctx.reference_discharge.to(like.device, like.dtype)
        if bool(torch.isnan(qref).any()):
            idx = torch.nonzero(torch.isnan(qref).reshape(-1, qref.shape[-1]).any(0)).flatten()
            raise ValueError(
                f"{name}: reference discharge is NaN at node indices {idx.tolist()[:20]}"
            )
        qref = qref.clamp(min=self.min_reference_discharge)
        return out[0], out[1], qref, float(ctx.step_seconds)

    def storage_kx(
        self, params: Mapping[str, Tensor], ctx: RoutingContext
    ) -> tuple[Tensor, Tensor]:
        """``(k, x)`` from :func:`muskingum_cunge_kx`, ``k`` in input time steps.

        Shapes: params each ``[N]`` or ``[B, N]``; results ``[N]`` or ``[B, N]``.
        """
        n, p, q = _time_params(params, ("n", "p", "q"))
        length, slope, qref, step_seconds = self.reach_data(ctx, n)
        k, x = muskingum_cunge_kx(length, slope, n, p, q, qref)
        return k / step_seconds, x


@register_irf("linear_storage")
class LinearStorage(RecursiveIRF):
    """Linear reservoir ``dS/dt = I − O``, ``O = S/k``, integrated exactly with the inflow held
    constant within a step: ``O_t = a·O_{t−1} + (1 − a)·I_t``, ``a = exp(−Δt/k)``.

    The discrete response ``(1−a)·a^j`` has unit mass. Parameter ``k`` in input time steps.
    """

    param_spec: ClassVar[dict[str, ParamSpec]] = {
        "k": ParamSpec("k", "time steps", 0.01, 1000.0, 1.0, description="reservoir time constant"),
    }

    def coefficients(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> Tensor:
        (k,) = _time_params(params, ("k",))
        a = torch.exp(-ctx.dt / k)
        return torch.stack([1 - a, torch.zeros_like(a), a], dim=-1)


def _cap(length: int, max_len: int) -> int:
    return int(max(1, min(length, max_len)))


@register_irf("pure_lag")
class PureLag(KernelIRF):
    """Pure translation by a fractional ``lag`` (input time steps): the inflow of step ``t`` leaves
    during steps ``t + ⌊lag⌋`` (fraction ``1 − frac``) and ``t + ⌊lag⌋ + 1`` (fraction ``frac``)."""

    param_spec: ClassVar[dict[str, ParamSpec]] = {
        "lag": ParamSpec("lag", "time steps", 0.0, 1.0e4, 1.0, description="travel time"),
    }

    def _lag(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> Tensor:
        (lag,) = _time_params(params, ("lag",))
        return lag / ctx.dt

    def full_length(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> int:
        lag = self._lag(params, ctx).detach()
        return int(torch.floor(lag).max().item()) + 2 if lag.numel() else 1

    def kernel(self, params: Mapping[str, Tensor], ctx: RoutingContext, max_len: int) -> Tensor:
        lag = self._lag(params, ctx)
        K = _cap(self.full_length(params, ctx), max_len)
        base = torch.floor(lag.detach())
        frac = lag - base
        j = torch.arange(K, dtype=lag.dtype, device=lag.device)
        d = j - base.unsqueeze(-1)
        frac = frac.unsqueeze(-1)
        return torch.where(d == 0, 1 - frac, torch.zeros_like(frac)) + torch.where(
            d == 1, frac, torch.zeros_like(frac)
        )

    def support(self, params: Mapping[str, Tensor], ctx: RoutingContext, K: int) -> Tensor | None:
        base = torch.floor(self._lag(params, ctx).detach()).long()
        start = base.clamp(max=K)
        return torch.stack([start, (base + 2).clamp(max=K)], dim=-1)


class _RegularizedGammaP(torch.autograd.Function):
    """``P(a, x)`` (regularized lower incomplete gamma) with gradients in both ``a`` and ``x``.

    ``∂P/∂x`` is the gamma density; ``∂P/∂a`` is summed from the power series
    ``P = x^a e^{−x}/Γ(a+1) · Σ_m x^m / ((a+1)…(a+m))`` differentiated term by term.
    """

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, x)
        return torch.special.gammainc(a, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, x = ctx.saved_tensors
        ga = gx = None
        a_b, x_b = torch.broadcast_tensors(a, x)
        work = torch.float64
        aw, xw = a_b.to(work), x_b.to(work)
        if ctx.needs_input_grad[1]:
            dens = torch.exp((aw - 1) * torch.log(xw) - xw - torch.lgamma(aw))
            dens = torch.where(xw > 0, dens, torch.zeros_like(dens))
            gx = _sum_to(grad * dens.to(grad.dtype), x.shape)
        if ctx.needs_input_grad[0]:
            ga = _sum_to(grad * _dgammainc_da(aw, xw).to(grad.dtype), a.shape)
        return ga, gx


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    while t.dim() > len(shape):
        t = t.sum(0)
    for i, s in enumerate(shape):
        if s == 1 and t.shape[i] != 1:
            t = t.sum(i, keepdim=True)
    return t


def _dgammainc_da(a: Tensor, x: Tensor) -> Tensor:
    """``∂P(a, x)/∂a`` in float64 by the term-wise differentiated power series."""
    q = torch.special.gammaincc(a, x)
    live = (x > 0) & (q > 1e-300)
    xs = torch.where(live, x, torch.ones_like(x))
    logx = torch.log(xs)
    pref = torch.exp(a * logx - xs - torch.lgamma(a + 1))
    term = torch.ones_like(xs)
    s = term.clone()
    ds = torch.zeros_like(xs)  # Σ t_m · (−H_m)
    harmonic = torch.zeros_like(xs)
    max_terms = int(xs.max().item() + 20 * math.sqrt(xs.max().item() + 1) + 60) if xs.numel() else 1
    for m in range(1, max_terms):
        term = term * xs / (a + m)
        harmonic = harmonic + 1.0 / (a + m)
        s = s + term
        ds = ds - term * harmonic
        if m > 5 and bool((term <= 1e-17 * s).all()):
            break
    d = pref * ((logx - torch.digamma(a + 1)) * s + ds)
    return torch.where(live, d, torch.zeros_like(d))


def regularized_gamma_p(a: Tensor, x: Tensor) -> Tensor:
    """Regularized lower incomplete gamma ``P(a, x)``, differentiable in ``a`` and ``x``."""
    return _RegularizedGammaP.apply(a, x)


@register_irf("nash_cascade")
class NashCascade(KernelIRF):
    """Cascade of ``n`` equal linear reservoirs with time constant ``k`` (Nash 1957): the
    continuous response is the gamma density with shape ``n`` (non-integer allowed, learnable)
    and scale ``k``; ``h_j = P(n, (j+1)Δt/k) − P(n, jΔt/k)`` (exact step integral)."""

    param_spec: ClassVar[dict[str, ParamSpec]] = {
        "n": ParamSpec("n", "-", 1.0, 20.0, 2.0, description="number of reservoirs"),
        "k": ParamSpec("k", "time steps", 0.01, 100.0, 1.0, description="reservoir time constant"),
    }

    def full_length(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> int:
        from scipy.special import gammainccinv

        n, k = (t.detach().cpu().double().numpy() for t in _time_params(params, ("n", "k")))
        quant = gammainccinv(n, self.tail_tol) * k / ctx.dt
        return int(np.ceil(np.max(quant))) + 1 if quant.size else 1

    def kernel(self, params: Mapping[str, Tensor], ctx: RoutingContext, max_len: int) -> Tensor:
        n, k = _time_params(params, ("n", "k"))
        n, k = torch.broadcast_tensors(n, k)
        K = _cap(self.full_length(params, ctx), max_len)
        t = torch.arange(1, K + 1, dtype=k.dtype, device=k.device) * ctx.dt
        cdf = regularized_gamma_p(n.unsqueeze(-1), t / k.unsqueeze(-1))
        return torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[..., :1]))


def _inverse_gaussian_cdf(t: Tensor, mean: Tensor, shape: Tensor) -> Tensor:
    """CDF of the inverse Gaussian (first-passage time of advection–diffusion), ``t > 0``."""
    r = torch.sqrt(shape / t)
    a = r * (t / mean - 1)
    b = -r * (t / mean + 1)
    return torch.special.ndtr(a) + torch.exp(2 * shape / mean + torch.special.log_ndtr(b))


@register_irf("diffusive_wave")
class DiffusiveWave(KernelIRF):
    """Linearised diffusive wave (Hayami 1951): the response of a reach of length ``L`` to a pulse
    at its upstream end is the first-passage density of advection–diffusion with celerity ``c``
    and diffusivity ``D``, ``h(t) = L/√(4πDt³) · exp(−(L − ct)²/(4Dt))`` — an inverse Gaussian
    with mean ``L/c`` and shape ``L²/(2D)``. ``h_j`` is its exact integral over step ``j``.

    Needs ``length_m`` (from the graph or as a parameter) and ``step_seconds``.
    """

    param_spec: ClassVar[dict[str, ParamSpec]] = {
        "celerity": ParamSpec("celerity", "m/s", 0.01, 20.0, 1.0, description="wave celerity"),
        "diffusivity": ParamSpec(
            "diffusivity", "m^2/s", 1.0, 1.0e6, 1.0e3, description="hydraulic diffusivity"
        ),
    }

    def _moments(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> tuple[Tensor, Tensor]:
        if ctx.step_seconds is None:
            raise ValueError(
                "IRF 'diffusive_wave' needs step_seconds (length of one input step, s)"
            )
        if ctx.length_m is None:
            raise ValueError("IRF 'diffusive_wave' needs reach lengths: graph.length_m is missing")
        c, d = _time_params(params, ("celerity", "diffusivity"))
        length = ctx.length_m.to(c.dtype)
        if (length <= 0).any() or torch.isnan(length).any():
            bad = torch.nonzero(~(length > 0)).flatten().tolist()[:20]
            raise ValueError(
                f"IRF 'diffusive_wave': length_m must be > 0 m; bad node indices {bad}"
            )
        step = ctx.step_seconds * ctx.dt
        mean = length / c / step  # internal steps
        shape = length**2 / (2 * d) / step
        return torch.broadcast_tensors(mean, shape)

    def full_length(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> int:
        mean, shape = (t.detach().double() for t in self._moments(params, ctx))
        sd = torch.sqrt(mean**3 / shape)
        guess = mean + 40 * sd + 2 * mean**2 / shape * math.log(1 / self.tail_tol) + 2
        hi = int(torch.ceil(guess.max()).item())
        # refine: the first whole step where the tail of every reach is below tail_tol
        t = torch.arange(1, hi + 1, dtype=torch.float64)
        mean_f, shape_f = mean.reshape(-1, 1), shape.reshape(-1, 1)
        need = 1
        for chunk in torch.split(torch.arange(mean_f.shape[0]), 4096):
            tail = 1 - _inverse_gaussian_cdf(t, mean_f[chunk], shape_f[chunk])
            ok = tail < self.tail_tol
            first = torch.where(
                ok.any(-1),
                ok.float().argmax(-1),
                torch.full_like(ok[:, 0], hi - 1, dtype=torch.long),
            )
            need = max(need, int(first.max().item()) + 1)
        return need

    def kernel(self, params: Mapping[str, Tensor], ctx: RoutingContext, max_len: int) -> Tensor:
        mean, shape = self._moments(params, ctx)
        K = _cap(self.full_length(params, ctx), max_len)
        t = torch.arange(1, K + 1, dtype=mean.dtype, device=mean.device)
        cdf = _inverse_gaussian_cdf(t, mean.unsqueeze(-1), shape.unsqueeze(-1))
        return torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[..., :1]))


@register_irf("explicit")
class ExplicitKernel(KernelIRF):
    """Explicit per-reach kernels given as the parameter ``h`` (``[N, K]`` or ``[B, N, K]``,
    ``h[..., 0]`` the response at lag 0, in units of the input step). No bounds are imposed."""

    param_spec: ClassVar[dict[str, ParamSpec]] = {}

    def node_axis(self, name: str) -> int:
        return -2 if name == "h" else -1

    def check_params(self, params: Mapping[str, Tensor]) -> None:
        if set(params) != {"h"}:
            raise ValueError(
                f"IRF 'explicit': expected exactly the parameter 'h', got {sorted(params)}"
            )
        h = params["h"]
        if h.dim() not in (2, 3) or h.shape[-1] < 1:
            raise ValueError(
                f"IRF 'explicit': kernels must be [N, K] or [B, N, K], got {tuple(h.shape)}"
            )
        if not torch.isfinite(h).all():
            bad = torch.nonzero(~torch.isfinite(h).all(-1)).tolist()[:20]
            raise ValueError(f"IRF 'explicit': kernels contain NaN/inf at (batch, node) {bad}")

    def full_length(self, params: Mapping[str, Tensor], ctx: RoutingContext) -> int:
        if ctx.dt != 1.0:
            raise ValueError("explicit kernels are given at the input step: substeps must be 1")
        return int(params["h"].shape[-1])

    def kernel(self, params: Mapping[str, Tensor], ctx: RoutingContext, max_len: int) -> Tensor:
        K = _cap(self.full_length(params, ctx), max_len)
        return params["h"][..., :K]

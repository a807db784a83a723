"""HBV (δHBV family) runoff model: snow, soil and response routines, ``nmul`` parallel components.

References:
    Bergström (1995), The HBV model; Seibert & Vis (2012), HBV-light, HESS 16, 3315–3325;
    Feng et al. (2022), δHBV 1.0, WRR 58, e2022WR032404; Song et al. (2025), δHBV 1.1p / 2.0;
    Vrugt et al. (2026), analytic forward sensitivities for conceptual models.

One explicit, operator-split step of length Δt (all fluxes in mm per step, stores in mm):

.. math::
    \\text{rain} &= P\\,H(T_a - TT),\\quad \\text{snow} = P - \\text{rain} \\\\
    \\text{melt} &= \\min(CFMAX\\,(T_a - TT)^+, SP),\\quad
    \\text{refr} = \\min(CFR\\,CFMAX\\,(TT - T_a)^+, MW) \\\\
    \\text{tosoil} &= (MW - CWH\\,SP)^+,\\quad
    \\text{rech} = (\\text{rain} + \\text{tosoil})\\min((SM/FC)^{BETA}, 1) \\\\
    \\text{exc} &= (SM - FC)^+,\\quad
    ET = \\min(SM, PET\\,\\min(SM/(LP\\,FC), 1)^{BETAET}) \\\\
    \\text{perc} &= \\min(SUZ, PERC),\\quad Q_0 = K0\\,(SUZ - UZL)^+,\\quad Q_1 = K1\\,SUZ,
    \\quad Q_2 = K2\\,SLZ

with each flux applied at once in that order (δHBV 1.0 as in hydrodl2).  The snow part is the
degree-day routine of :mod:`gnnhydro.runoff.snow` (one definition, shared with GR4J and
SAC-SMA's ``snow=True``; the numba kernels call its numba step).  Options
(:class:`HBVOptions`, one object for every backend): the smoothing width ε, the soil floor, BETAET
(δHBV 1.1p), capillary rise ``cap = min(SLZ, C·SLZ·(1 − min(SM/FC, 1)))`` from the lower zone to
the soil (δHBV 1.1p), and the regional groundwater exchange of δHBV 2.0 (Song et al., 2025),
applied to the lower zone after percolation and before ``Q2``:

.. math::
    \\phi(A) &= \\begin{cases} \\operatorname{clamp}((A - AC)/1000, -1, 1) & A < 2500 \\\\
                 \\exp(-\\min((A - 2500)/50, 10)) & A \\ge 2500 \\end{cases} \\\\
    LF &= RT\\,\\phi(A),\\qquad
    \\text{gwx} = LF^+ - \\min(SLZ, LF^-),\\qquad SLZ \\leftarrow SLZ + \\text{gwx}

with ``A`` the upstream (drainage) area of the node in km², ``AC`` a learned area threshold
(km², [0, 2500]) and ``RT`` the exchange rate (mm/day, [0, 20]): catchments smaller than ``AC``
lose water to the regional aquifer (up to ``RT`` per step, never more than the lower zone
holds), larger ones gain it, and beyond 2500 km² the gain decays within ~500 km².  ``gwx``
(mm/step, positive = gain) is returned as ``groundwater_exchange`` and enters the water balance
as an explicit term (``P + gwx − ET − Q − ΔS = 0``).  The loss split ``min(SLZ, LF⁻)`` is the
δHBV 2.0 clamp ``SLZ ← max(SLZ + LF, 0)`` written as a flux (smoothed like every other
``min`` when ε > 0); the sign split of the parameter-only ``LF`` is never smoothed.
Runoff is the mean over the ``nmul`` components of ``Q0 + Q1 + Q2``;
an optional gamma unit hydrograph (δHBV lumped use) gives ``runoff_routed``.

Backends: ``"torch"`` (a per-step PyTorch loop, differentiated by autograd: the reference),
``"numba"`` (fused CPU time loop with a hand-written adjoint or forward sensitivities),
``"triton"`` (fused GPU forward kernel; with ``gradient="sensitivity"`` also a fused
forward-sensitivity backward), ``"auto"`` (numba on CPU, triton on CUDA for forward without
grad, torch otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from gnnhydro.runoff.base import RunoffModel, register_runoff_model
from gnnhydro.runoff.hbv_layout import HBV_OUTPUTS, HBV_STATES, KERNEL_PARAMS, HBVOptions
from gnnhydro.runoff.smooth import clip1_s, min_s, relu_s
from gnnhydro.runoff.snow import NO_SNOW_TEMPERATURE_C, SNOW_PARAM_SPECS, degree_day_snow
from gnnhydro.spec import ParamSpec

__all__ = [
    "HBV",
    "HBVOptions",
    "HBV_PARAM_SPECS",
    "HBV_STATES",
    "hbv_step",
    "hbv_torch_loop",
    "gamma_unit_hydrograph",
    "uh_convolve",
    "groundwater_exchange_factor",
]

_D = "1/day"
#: All HBV parameters known to gnnhydro, bounds as in the δHBV papers.
HBV_PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in [
        ParamSpec("beta", "-", 1.0, 6.0, 2.0, True, "shape of the soil recharge curve"),
        ParamSpec("fc", "mm", 50.0, 1000.0, 250.0, True, "field capacity of the soil box"),
        ParamSpec("k0", _D, 0.05, 0.9, 0.3, True, "fast upper-zone recession coefficient"),
        ParamSpec("k1", _D, 0.01, 0.5, 0.1, True, "upper-zone recession coefficient"),
        ParamSpec("k2", _D, 0.001, 0.2, 0.05, True, "lower-zone recession coefficient"),
        ParamSpec("lp", "-", 0.2, 1.0, 0.7, True, "fraction of FC above which ET is potential"),
        ParamSpec("perc", "mm/day", 0.0, 10.0, 2.0, True, "maximum percolation to lower zone"),
        ParamSpec("uzl", "mm", 0.0, 100.0, 20.0, True, "upper-zone threshold for fast flow"),
        *SNOW_PARAM_SPECS.values(),  # tt, cfmax, cfr, cwh (gnnhydro.runoff.snow)
        ParamSpec("betaet", "-", 0.3, 5.0, 1.0, True, "shape of the ET reduction curve"),
        ParamSpec("c", "1/day", 0.0, 1.0, 0.05, True, "capillary rise coefficient"),
        ParamSpec("rt", "mm/day", 0.0, 20.0, 1.0, True, "regional groundwater exchange rate"),
        ParamSpec("ac", "km²", 0.0, 2500.0, 1000.0, True, "area threshold of the exchange sign"),
    ]
}
UH_PARAM_SPECS: dict[str, ParamSpec] = {
    "route_a": ParamSpec("route_a", "-", 0.0, 2.9, 1.0, False, "gamma UH: shape a = route_a+0.1"),
    "route_b": ParamSpec("route_b", "day", 0.0, 6.5, 1.0, False, "gamma UH: θ = route_b+0.5"),
}
#: the options of :func:`hbv_step` when none are given: exact δHBV 1.0
_DEFAULT_OPTIONS = HBVOptions()
if tuple(HBV_PARAM_SPECS) != KERNEL_PARAMS:  # pragma: no cover - a layout mismatch is a bug
    raise ImportError("HBV_PARAM_SPECS and hbv_layout.KERNEL_PARAMS name different parameters")


def groundwater_exchange_factor(area_km2: Tensor, ac: Tensor) -> Tensor:
    """Dimensionless factor ``φ(A)`` of the δHBV 2.0 exchange ``LF = RT·φ`` (module docstring).

    Shapes:
        area_km2 (upstream area, km²) and ac (km²) broadcast; result of the broadcast shape.
    """
    small = torch.clamp((area_km2 - ac) / 1000.0, -1.0, 1.0)
    large = torch.exp(-torch.clamp((area_km2 - 2500.0) / 50.0, min=0.0, max=10.0))
    return torch.where(area_km2 < 2500.0, small, large)


def hbv_step(
    states: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
    precip: Tensor,
    temp: Tensor,
    pet: Tensor,
    p: Mapping[str, Tensor],
    *,
    options: HBVOptions | None = None,
    area_km2: Tensor | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]:
    """One HBV step (pure function; see the module docstring for the equations).

    Args:
        states: (snowpack, meltwater, soil_moisture, upper_zone, lower_zone) mm.
        precip, temp, pet: forcing of this step (mm/step, °C, mm/step).
        p: parameters of this step by lower-case name, physical units.
        options: smoothing width, soil floor and optional processes (:class:`HBVOptions`;
            default ``HBVOptions()``: exact δHBV 1.0).  With ``groundwater_exchange`` the
            parameters need ``rt`` and ``ac``.
        area_km2: upstream area of each node (km²), needed by the groundwater exchange.

    Shapes:
        states and parameters ``[N, m]``; forcing and ``area_km2`` ``[N, 1]`` (broadcast over
        components).
    """
    o = _DEFAULT_OPTIONS if options is None else options
    eps, nearzero = o.eps, o.nearzero
    sp, mw, sm, suz, slz = states
    sp, mw, rain, tosoil = degree_day_snow(sp, mw, precip, temp, p, eps)
    wet = clip1_s((sm / p["fc"]) ** p["beta"], eps)
    inflow = rain + tosoil
    recharge = inflow * wet
    sm = sm + inflow - recharge
    excess = relu_s(sm - p["fc"], eps)
    sm = sm - excess
    ef = clip1_s(sm / (p["lp"] * p["fc"]), eps)
    if o.betaet:
        ef = ef ** p["betaet"]
    et = min_s(sm, pet * ef, eps)
    sm = torch.clamp(sm - et, min=nearzero)
    if o.capillary:
        cap = min_s(slz, p["c"] * slz * (1.0 - clip1_s(sm / p["fc"], eps)), eps)
        sm = torch.clamp(sm + cap, min=nearzero)
        slz = torch.clamp(slz - cap, min=nearzero)
    else:
        cap = torch.zeros_like(sm)
    suz = suz + recharge + excess
    perc = min_s(suz, p["perc"], eps)
    suz = suz - perc
    slz = slz + perc
    q0 = p["k0"] * relu_s(suz - p["uzl"], eps)
    suz = suz - q0
    q1 = p["k1"] * suz
    suz = suz - q1
    if o.groundwater_exchange:
        if area_km2 is None:
            raise ValueError("hbv_step: groundwater_exchange needs area_km2 (upstream area, km²)")
        lf = p["rt"] * groundwater_exchange_factor(area_km2, p["ac"])
        gwx = torch.clamp(lf, min=0.0) - min_s(slz, torch.clamp(-lf, min=0.0), eps)
        slz = slz + gwx
    else:
        gwx = torch.zeros_like(slz)
    q2 = p["k2"] * slz
    slz = slz - q2
    fluxes = {
        "runoff": q0 + q1 + q2,
        "surface_flow": q0,
        "interflow": q1,
        "baseflow": q2,
        "evapotranspiration": et,
        "recharge": recharge,
        "excess": excess,
        "tosoil": tosoil,
        "percolation": perc,
        "capillary_rise": cap,
        "groundwater_exchange": gwx,
    }
    return (sp, mw, sm, suz, slz), fluxes


def hbv_torch_loop(
    precip: Tensor,
    temp: Tensor,
    pet: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    *,
    options: HBVOptions | None = None,
    area_km2: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-time-step PyTorch loop of :func:`hbv_step` (autograd reference).

    Static parameters are used as they are (no expansion over time: the backward stays O(T));
    dynamic ones are unbound once along time.  ``options``: as :func:`hbv_step`.

    Shapes:
        precip, temp, pet ``[N, T]``; params ``[N, m]`` or ``[N, T, m]``; states ``[N, m]``;
        area_km2 ``[N]`` (upstream area, km², with ``groundwater_exchange``); result: every
        name of :data:`HBV_OUTPUTS` ``[N, T]`` (mean over components) and ``final_<state>``
        ``[N, m]``.
    """
    n_steps = precip.shape[1]
    static = {k: v for k, v in params.items() if v.dim() == 2}
    dyn = {k: v.unbind(1) for k, v in params.items() if v.dim() == 3}
    pcols, tcols, ecols = (x.unsqueeze(-1).unbind(1) for x in (precip, temp, pet))
    st = tuple(states[s] for s in HBV_STATES)
    area = area_km2.reshape(-1, 1) if area_km2 is not None else None
    rec: dict[str, list[Tensor]] = {k: [] for k in HBV_OUTPUTS}
    for t in range(n_steps):
        pt = dict(static)
        for k, v in dyn.items():
            pt[k] = v[t]
        st, fl = hbv_step(
            st,
            pcols[t],
            tcols[t],
            ecols[t],
            pt,
            options=options,
            area_km2=area,
        )
        for k, v in fl.items():
            rec[k].append(v)
        for k, v in zip(HBV_STATES, st, strict=True):
            rec[k].append(v)
    out = {k: torch.stack(v, dim=-1).mean(dim=1) for k, v in rec.items()}
    for k, v in zip(HBV_STATES, st, strict=True):
        out[f"final_{k}"] = v
    return out


def gamma_unit_hydrograph(shape_a: Tensor, scale_theta: Tensor, length: int) -> Tensor:
    """Gamma unit hydrograph ``w_k ∝ t_k^(a−1) exp(−t_k/θ)``, ``t_k = k + ½``, normalised.

    Args:
        shape_a: shape ``a`` (> 0, dimensionless); scale_theta: scale ``θ`` in time steps.
        length: number of lags.

    Shapes:
        shape_a, scale_theta ``[N]``; result ``[N, length]`` (rows sum to 1).
    """
    t = torch.arange(length, dtype=shape_a.dtype, device=shape_a.device) + 0.5
    a = shape_a.unsqueeze(-1)
    th = scale_theta.unsqueeze(-1)
    logw = (a - 1) * torch.log(t) - t / th - torch.lgamma(a) - a * torch.log(th)
    w = torch.exp(logw)
    return w / w.sum(-1, keepdim=True)


def uh_convolve(x: Tensor, weights: Tensor) -> Tensor:
    """Causal convolution ``y_t = Σ_k w_k x_{t−k}`` with zero history, per row.

    Shapes:
        x ``[N, T]``; weights ``[N, L]``; result ``[N, T]``.
    """
    n, t = x.shape
    length = weights.shape[-1]
    xp = torch.nn.functional.pad(x, (length - 1, 0)).unsqueeze(0)  # [1, N, T+L-1]
    w = weights.flip(-1).unsqueeze(1)  # [N, 1, L]
    return torch.nn.functional.conv1d(xp, w, groups=n).squeeze(0)[:, :t]


@register_runoff_model("hbv")
class HBV(RunoffModel):
    """δHBV runoff model with ``nmul`` parallel components (see the module docstring).

    Args:
        nmul: number of parallel components (parameter sets) per node, averaged.
        betaet: use the BETAET exponent on the ET reduction curve (δHBV 1.1p).
        capillary: capillary rise ``C`` from the lower zone to the soil (δHBV 1.1p).
        groundwater_exchange: regional groundwater exchange of the lower zone (δHBV 2.0;
            parameters ``rt``, ``ac``); the forcing dict must then carry
            ``"upstream_area_km2"`` ``[N]`` (or ``[B, N]``), the node's upstream area in km².
        unit_hydrograph: apply the gamma unit hydrograph (params ``route_a``, ``route_b``
            ``[N]``) and return ``runoff_routed`` (``runoff`` stays before the UH).
        uh_length: lags of the unit hydrograph (time steps).
        gradient: ``"autograd"`` (exact reverse mode) or ``"sensitivity"`` (forward
            sensitivities in a custom autograd Function: no tape, memory flat in T; with
            respect to parameters and initial states only, so forcing that needs a gradient,
            e.g. after a learned forcing correction, takes the exact reverse mode instead).
        smoothing: threshold smoothing width ε (:attr:`HBVOptions.eps`, see
            :mod:`gnnhydro.runoff.smooth`); ``None`` means 0 for ``"autograd"`` and 0.01 for
            ``"sensitivity"``.
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"``.
        initial_state: value of every store at the start (mm; 0.001 as in δHBV).
        nearzero: soil-moisture floor (mm).
        dynamic: names of parameters that may be given time-varying ``[N, T, m]``.

    ``smoothing``, ``nearzero``, ``betaet``, ``capillary`` and ``groundwater_exchange`` make
    :attr:`options` (an :class:`HBVOptions`, validated there), which every backend receives;
    they stay readable (not settable) as attributes of the same names.

    Shapes:
        forcing ``precipitation``, ``temperature``, ``pet``: ``[N, T]`` or ``[B, N, T]``
        (``upstream_area_km2`` ``[N]`` / ``[B, N]`` with ``groundwater_exchange``); params
        ``[N, m]`` (or ``[N, T, m]`` for dynamic); ``out["runoff"]`` ``[N, T]`` mm/step.
    """

    forcing_names = ("precipitation", "temperature", "pet")
    #: without temperature: a constant far above every threshold ``tt`` (≤ 2.5 °C), so all
    #: precipitation is rain, nothing freezes and the (empty) snowpack never grows
    optional_forcing = {
        "temperature": (
            NO_SNOW_TEMPERATURE_C,
            "no snow routine: all precipitation is liquid and nothing melts (HBV runs with a "
            f"constant {NO_SNOW_TEMPERATURE_C:g} °C, above every rain/snow threshold)",
        )
    }
    state_names = HBV_STATES

    def __init__(
        self,
        nmul: int = 1,
        *,
        betaet: bool = False,
        capillary: bool = False,
        groundwater_exchange: bool = False,
        unit_hydrograph: bool = False,
        uh_length: int = 15,
        gradient: str = "autograd",
        smoothing: float | None = None,
        backend: str = "auto",
        initial_state: float = 0.001,
        nearzero: float = 1e-5,
        dynamic: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(nmul)
        if gradient not in ("autograd", "sensitivity"):
            raise ValueError(f"gradient must be 'autograd' or 'sensitivity', got {gradient!r}")
        if backend not in ("auto", "torch", "numba", "triton"):
            raise ValueError(f"unknown backend {backend!r}")
        if smoothing is None:
            smoothing = 0.01 if gradient == "sensitivity" else 0.0
        #: the options of the step (:class:`HBVOptions`), passed to every backend
        self.options = HBVOptions(
            eps=smoothing,
            nearzero=nearzero,
            betaet=betaet,
            capillary=capillary,
            groundwater_exchange=groundwater_exchange,
        )
        if self.groundwater_exchange:
            self.external_inflows = ("groundwater_exchange",)
        self.unit_hydrograph = bool(unit_hydrograph)
        self.uh_length = int(uh_length)
        self.gradient = gradient
        self.backend = backend
        self.initial_state = float(initial_state)
        names = list(KERNEL_PARAMS[:12])
        if self.betaet:
            names.append("betaet")
        if self.capillary:
            names.append("c")
        if self.groundwater_exchange:
            names += ["rt", "ac"]
        unknown = sorted(set(dynamic) - set(names))
        if unknown:
            raise ValueError(f"HBV: dynamic parameter(s) {unknown} not in {names}")
        if dynamic and gradient == "sensitivity":
            raise ValueError(
                "HBV: gradient='sensitivity' supports static parameters only (forward "
                f"sensitivities w.r.t. time-varying {sorted(dynamic)} would cost O(T²))"
            )
        self.dynamic = tuple(dynamic)
        spec = {}
        for n in names:
            s = HBV_PARAM_SPECS[n]
            spec[n] = ParamSpec(
                s.name, s.units, s.low, s.high, s.default, n in self.dynamic, s.description
            )
        if self.unit_hydrograph:
            spec.update(UH_PARAM_SPECS)
        self.param_spec = spec

    # the options as attributes, read-only (one source: :attr:`options`)
    smoothing = property(lambda self: self.options.eps, doc="threshold smoothing width ε")
    nearzero = property(lambda self: self.options.nearzero, doc="soil-moisture floor (mm)")
    betaet = property(lambda self: self.options.betaet, doc="ET shape exponent BETAET on")
    capillary = property(lambda self: self.options.capillary, doc="capillary rise on")
    groundwater_exchange = property(
        lambda self: self.options.groundwater_exchange, doc="groundwater exchange on"
    )

    def extra_repr(self) -> str:
        return (
            f"nmul={self.nmul}, betaet={self.betaet}, capillary={self.capillary}, "
            f"groundwater_exchange={self.groundwater_exchange}, "
            f"gradient={self.gradient!r}, smoothing={self.smoothing}, backend={self.backend!r}"
        )

    def _static_shape(self, name: str, num_nodes: int) -> tuple[int, ...]:
        if name in UH_PARAM_SPECS:
            return (num_nodes,)
        return (num_nodes, self.nmul)

    def check_forcing(self, forcing: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], tuple]:
        """As the base class, plus ``upstream_area_km2`` (flattened to ``[B·N]``) when needed."""
        flat, lead = super().check_forcing(forcing)
        if self.groundwater_exchange:
            if "upstream_area_km2" not in forcing:
                raise ValueError(
                    "HBV(groundwater_exchange=True): forcing must carry 'upstream_area_km2' "
                    f"(upstream area per node, km², shape {list(lead)})"
                )
            area = torch.as_tensor(forcing["upstream_area_km2"])
            if tuple(area.shape) != tuple(lead):
                raise ValueError(
                    f"HBV: 'upstream_area_km2' has shape {list(area.shape)}, expected {list(lead)}"
                )
            bad = torch.nonzero(~(area >= 0)).flatten()  # NaN or negative
            if bad.numel():
                raise ValueError(
                    f"HBV: 'upstream_area_km2' is NaN or negative at node (row) ids "
                    f"{bad[:10].tolist()}"
                )
            flat["upstream_area_km2"] = area.reshape(-1).to(flat[self.forcing_names[0]].dtype)
        return flat, lead

    def init_states(
        self, num_nodes: int, *, dtype: torch.dtype = torch.float32, device=None
    ) -> dict[str, Tensor]:
        """All five stores at ``initial_state`` mm (0.001 as in δHBV 1.0)."""
        return {
            s: torch.full((num_nodes, self.nmul), self.initial_state, dtype=dtype, device=device)
            for s in self.state_names
        }

    def _select_backend(self, forcing: dict[str, Tensor], params: dict[str, Tensor]) -> str:
        needs_grad = torch.is_grad_enabled() and any(v.requires_grad for v in forcing.values())
        if self.backend != "auto":
            return self.backend
        device = forcing["precipitation"].device
        if device.type == "cuda":
            grad = torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
            return "torch" if grad or needs_grad else "triton"
        return "numba"  # its adjoint also gives the forcing gradients

    def _run(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        prec = forcing["precipitation"]
        temp = forcing["temperature"]
        pet = forcing["pet"]
        hp = {k: v for k, v in params.items() if k not in UH_PARAM_SPECS}
        backend = self._select_backend(forcing, hp)
        opts = dict(options=self.options, area_km2=forcing.get("upstream_area_km2"))
        forcing_grad = torch.is_grad_enabled() and any(
            forcing[k].requires_grad for k in self.forcing_names
        )
        # forward sensitivities cover parameters and initial states only (w.r.t. every step's
        # forcing they would cost O(T²)): forcing that needs a gradient takes the reverse mode
        sensitivity = self.gradient == "sensitivity" and not forcing_grad
        if backend == "torch":
            if sensitivity:
                from gnnhydro.runoff.kernels.hbv_numba import hbv_sensitivity_apply

                out = hbv_sensitivity_apply(prec, temp, pet, hp, states, **opts)
            else:
                out = hbv_torch_loop(prec, temp, pet, hp, states, **opts)
        elif backend == "numba":
            from gnnhydro.runoff.kernels.hbv_numba import hbv_numba_apply, hbv_sensitivity_apply

            fn = hbv_sensitivity_apply if sensitivity else hbv_numba_apply
            out = fn(prec, temp, pet, hp, states, **opts)
        elif sensitivity:
            from gnnhydro.runoff.kernels.hbv_triton import hbv_triton_sensitivity_apply

            out = hbv_triton_sensitivity_apply(prec, temp, pet, hp, states, **opts)
        elif forcing_grad:  # the triton forward has no backward
            out = hbv_torch_loop(prec, temp, pet, hp, states, **opts)
        else:
            from gnnhydro.runoff.kernels.hbv_triton import hbv_triton_forward

            out = hbv_triton_forward(prec, temp, pet, hp, states, **opts)
        storage = sum(out[s] for s in HBV_STATES)
        out["storage"] = storage
        out["storage_initial"] = sum(states[s] for s in HBV_STATES).mean(dim=1)
        out["swe"] = out["snowpack"] + out["meltwater"]
        if self.unit_hydrograph:
            out["runoff_routed"] = self.routed_runoff(out["runoff"], params)
        return out

    def routed_runoff(self, runoff: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``runoff`` through the gamma unit hydrograph of ``route_a``, ``route_b`` (mm/step).

        Shapes:
            runoff ``[N, T]``; ``route_a``, ``route_b`` ``[N]``; result ``[N, T]``.
        """
        a = torch.relu(params["route_a"]) + 0.1
        th = torch.relu(params["route_b"]) + 0.5
        return uh_convolve(runoff, gamma_unit_hydrograph(a, th, self.uh_length))

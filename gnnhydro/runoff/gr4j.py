"""GR4J (modèle du Génie Rural à 4 paramètres Journalier): daily lumped rainfall-runoff model.

Reference:
    Perrin, C., Michel, C. & Andréassian, V. (2003), Improvement of a parsimonious model for
    streamflow simulation, J. Hydrol. 279, 275–289 (the equations, as airGR's ``RunModel_GR4J``
    applies them: Coron et al. (2017), Environ. Model. Softw. 94, 166–171).

Four parameters: ``x1`` capacity of the production store (mm), ``x2`` groundwater exchange
coefficient (mm/day, negative = loss), ``x3`` capacity of the routing store (mm), ``x4`` base
time of the unit hydrograph UH1 (days).  One daily step (fluxes in mm/day, stores in mm):

**Interception** (net rainfall / net evaporative demand):

.. math::
    P > E:\\; P_n = P - E,\\; E_n = 0,\\; E_i = E \\qquad
    P \\le E:\\; P_n = 0,\\; E_n = E - P,\\; E_i = P

**Production store** ``S`` (capacity ``x1``), with ``\\tanh`` arguments capped at 13 as airGR:

.. math::
    P_s &= \\frac{x_1 (1 - (S/x_1)^2) \\tanh(P_n/x_1)}{1 + (S/x_1) \\tanh(P_n/x_1)},\\qquad
    E_s = \\frac{S (2 - S/x_1) \\tanh(E_n/x_1)}{1 + (1 - S/x_1) \\tanh(E_n/x_1)} \\\\
    S &\\leftarrow \\max(S + P_s - E_s, 0),\\qquad
    \\text{Perc} = S \\{1 - [1 + (4S/(9x_1))^4]^{-1/4}\\},\\qquad S \\leftarrow S - \\text{Perc} \\\\
    P_r &= \\text{Perc} + (P_n - P_s)

**Unit hydrographs**: 90 % of ``P_r`` through UH1 (base ``x4``), 10 % through UH2 (base
``2·x4``), with ordinates ``UH(j) = SH(j) − SH(j−1)`` (``j = 1, 2, …``) of the S-curves

.. math::
    SH_1(t) &= \\begin{cases} 0 & t \\le 0 \\\\ (t/x_4)^{5/2} & 0 < t < x_4 \\\\
              1 & t \\ge x_4 \\end{cases} \\qquad
    SH_2(t) = \\begin{cases} 0 & t \\le 0 \\\\ \\tfrac12 (t/x_4)^{5/2} & 0 < t \\le x_4 \\\\
              1 - \\tfrac12 (2 - t/x_4)^{5/2} & x_4 < t < 2x_4 \\\\ 1 & t \\ge 2x_4 \\end{cases}

so ``Q_9(t) = Σ_j UH_1(j) · 0.9 P_r(t−j+1)`` and ``Q_1(t) = Σ_j UH_2(j) · 0.1 P_r(t−j+1)``
(the first ordinate applies on the day of the rainfall, as airGR).  ``x4`` may be non-integer:
the ordinates are differentiable in ``x4`` through the S-curves.  Every node uses
``⌈x4_max⌉ = 10`` (UH1) and ``⌈2·x4_max⌉ = 20`` (UH2) ordinates, the trailing ones zero where
``x4 < x4_max``; the water on its way through the unit hydrographs is held in the states
``uh1`` / ``uh2`` (9 and 19 values per component: what leaves 1, 2, … days later).

**Groundwater exchange and routing store** ``R`` (capacity ``x3``):

.. math::
    F &= x_2 (R/x_3)^{7/2},\\qquad R \\leftarrow \\max(R + Q_9 + F, 0),\\qquad
    Q_r = R \\{1 - [1 + (R/x_3)^4]^{-1/4}\\},\\qquad R \\leftarrow R - Q_r \\\\
    Q_d &= \\max(0, Q_1 + F),\\qquad Q = Q_r + Q_d

(``F`` with the routing store before the step, as airGR).  ``F`` applies to both branches; the
exchange actually realised (``F`` twice, less what the two ``max(·, 0)`` cut off) is returned
as the signed ``groundwater_exchange`` (positive = gain) and enters the water balance:
``Σ(P + exchange − E_i − E_s − Q) = ΔS + ΔR + Δ(UH contents)``.  The potential ``F`` is
``exchange_potential``.  Evapotranspiration is ``E_i + E_s``.

Default initial states are airGR's: ``S = 0.3·x1``, ``R = 0.5·x3``, empty unit hydrographs.
Snow: off by default (temperature is not read); ``snow=True`` puts HBV's degree-day routine in
front (:mod:`gnnhydro.runoff.snow`, one snowpack per node), whose liquid water (rain + melt
outflow) GR4J reads as its precipitation.  With ``nmul > 1`` the model runs ``nmul`` parameter sets per node and returns the mean.

Backends: ``"torch"`` (:func:`gr4j_torch_loop`, a per-step PyTorch loop differentiated by
autograd: the reference), ``"numba"`` (fused CPU loop with an exact hand-written adjoint,
:mod:`gnnhydro.runoff.kernels.gr4j_numba`), ``"auto"`` (numba on CPU, torch on CUDA).
Gradients: ``"autograd"`` (reverse mode) or ``"sensitivity"`` (forward sensitivities through
the torch step, memory flat in T: :mod:`gnnhydro.runoff.sensitivity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gnnhydro.runoff.base import FusedRunoffModel, register_runoff_model
from gnnhydro.runoff.stepping import TorchStepper, run_steps
from gnnhydro.spec import ParamSpec

__all__ = [
    "GR4J",
    "GR4J_PARAM_SPECS",
    "GR4J_OUTPUTS",
    "GR4J_STATES",
    "GR4J_STEPPER",
    "gr4j_step",
    "gr4j_torch_loop",
    "gr4j_unit_hydrographs",
]

#: GR4J parameters.  The paper's 80 % confidence intervals over 429 catchments are x1 100–1200
#: mm, x2 −5–3 mm/d, x3 20–300 mm, x4 1.1–2.9 d (Perrin et al., 2003, Table 4; medians 350, 0,
#: 90, 1.7); the bounds are wider for regionalisation.  ``x4``'s upper bound sets the number of
#: unit-hydrograph ordinates.
GR4J_PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in [
        ParamSpec("x1", "mm", 10.0, 2000.0, 350.0, True, "capacity of the production store"),
        ParamSpec("x2", "mm/day", -10.0, 5.0, 0.0, True, "groundwater exchange coefficient"),
        ParamSpec("x3", "mm", 1.0, 500.0, 90.0, True, "capacity of the routing store"),
        ParamSpec("x4", "day", 0.5, 10.0, 1.7, False, "base time of unit hydrograph UH1"),
    ]
}
#: parameters that may vary in time (``x4`` shapes the unit hydrographs: static)
DYNAMIC_CAPABLE: tuple[str, ...] = ("x1", "x2", "x3")
#: ordinates of UH1 and UH2 (``⌈x4_max⌉``, ``⌈2·x4_max⌉``)
UH1_LENGTH = math.ceil(GR4J_PARAM_SPECS["x4"].high)
UH2_LENGTH = math.ceil(2 * GR4J_PARAM_SPECS["x4"].high)
#: airGR's default initial fillings: production store 30 % of x1, routing store 50 % of x3
PRODUCTION_FILL = 0.3
ROUTING_FILL = 0.5
#: share of the effective rainfall routed through UH1 (the rest through UH2)
UH1_SHARE = 0.9
#: cap of the tanh arguments (airGR: tanh(13) = 1 to double precision)
TANH_CAP = 13.0

#: State names: production store S (mm), routing store R (mm), unit-hydrograph contents (mm):
#: ``[N, m]``, ``[N, m]``, ``[N, m·(UH1_LENGTH−1)]``, ``[N, m·(UH2_LENGTH−1)]``.
GR4J_STATES: tuple[str, ...] = ("production_store", "routing_store", "uh1", "uh2")
#: Per-step outputs (means over components), in this order in the fused kernel.
GR4J_OUTPUTS: tuple[str, ...] = (
    "runoff",
    "routing_flow",
    "direct_flow",
    "evapotranspiration",
    "net_rainfall",
    "production_inflow",
    "percolation",
    "effective_rainfall",
    "groundwater_exchange",
    "exchange_potential",
    "production_store",
    "routing_store",
    "unit_hydrograph_storage",
)


def gr4j_unit_hydrographs(
    x4: Tensor, length1: int = UH1_LENGTH, length2: int = UH2_LENGTH
) -> tuple[Tensor, Tensor]:
    """Ordinates of UH1 and UH2 from the S-curves ``SH1``, ``SH2`` (module docstring).

    Args:
        x4: base time of UH1 in days (``0 < x4 ≤ length1``, ``2·x4 ≤ length2``).
        length1, length2: number of ordinates (lags 0 … length−1).

    Shapes:
        x4 any shape ``[...]``; results ``[..., length1]``, ``[..., length2]`` (each sums to 1).
    """
    x = x4.unsqueeze(-1)
    j1 = torch.arange(length1 + 1, dtype=x4.dtype, device=x4.device)
    sh1 = torch.clamp(j1 / x, max=1.0) ** 2.5
    j2 = torch.arange(length2 + 1, dtype=x4.dtype, device=x4.device)
    r = j2 / x
    rising = 0.5 * torch.clamp(r, max=1.0) ** 2.5
    falling = 1.0 - 0.5 * torch.clamp(2.0 - r, min=0.0, max=1.0) ** 2.5
    sh2 = torch.where(r <= 1.0, rising, falling)
    return sh1[..., 1:] - sh1[..., :-1], sh2[..., 1:] - sh2[..., :-1]


def _store_outflow(store: Tensor, scale: Tensor) -> Tensor:
    """``store·{1 − [1 + (store/scale)⁴]^(−1/4)}`` (percolation and routing-store outflow)."""
    return store * (1.0 - (1.0 + (store / scale) ** 4) ** -0.25)


def gr4j_step(
    states: tuple[Tensor, Tensor, Tensor, Tensor],
    precip: Tensor,
    pet: Tensor,
    p: Mapping[str, Tensor],
    uh1: Tensor,
    uh2: Tensor,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]:
    """One GR4J day (pure function; the equations are in the module docstring).

    Args:
        states: (production store S, routing store R, UH1 contents, UH2 contents), mm.
        precip, pet: forcing of this step, mm/day.
        p: ``x1``, ``x2``, ``x3`` of this step (physical units).
        uh1, uh2: unit-hydrograph ordinates (:func:`gr4j_unit_hydrographs`).

    Shapes:
        S, R, parameters ``[N, m]``; UH contents ``[N, m, L1−1]`` / ``[N, m, L2−1]``; ordinates
        ``[N, m, L1]`` / ``[N, m, L2]``; forcing ``[N, 1]`` (broadcast over components).
    """
    s, r, u1, u2 = states
    x1, x2, x3 = p["x1"], p["x2"], p["x3"]
    wet = precip > pet  # P = E takes the dry branch, as airGR
    zero = torch.zeros_like(precip)
    pn = torch.where(wet, precip - pet, zero)
    en = torch.where(wet, zero, pet - precip)
    ei = torch.where(wet, pet, precip)
    sr = s / x1
    tp = torch.tanh(torch.clamp(pn / x1, max=TANH_CAP))
    ps = x1 * (1.0 - sr * sr) * tp / (1.0 + sr * tp)
    te = torch.tanh(torch.clamp(en / x1, max=TANH_CAP))
    es = s * (2.0 - sr) * te / (1.0 + (1.0 - sr) * te)
    s = torch.clamp(s + ps - es, min=0.0)
    perc = _store_outflow(s, 2.25 * x1)
    s = s - perc
    pr = perc + pn - ps
    v1 = torch.nn.functional.pad(u1, (0, 1)) + uh1 * (UH1_SHARE * pr).unsqueeze(-1)
    v2 = torch.nn.functional.pad(u2, (0, 1)) + uh2 * ((1.0 - UH1_SHARE) * pr).unsqueeze(-1)
    q9, u1 = v1[..., 0], v1[..., 1:]
    q1, u2 = v2[..., 0], v2[..., 1:]
    f = x2 * (r / x3) ** 3.5
    r1 = torch.clamp(r + q9 + f, min=0.0)
    ex1 = r1 - r - q9
    qr = _store_outflow(r1, x3)
    r = r1 - qr
    qd = torch.clamp(q1 + f, min=0.0)
    ex2 = qd - q1
    fluxes = {
        "runoff": qr + qd,
        "routing_flow": qr,
        "direct_flow": qd,
        "evapotranspiration": ei + es,
        "net_rainfall": pn.expand_as(ps),
        "production_inflow": ps,
        "percolation": perc,
        "effective_rainfall": pr,
        "groundwater_exchange": ex1 + ex2,
        "exchange_potential": f,
    }
    return (s, r, u1, u2), fluxes


def _gr4j_prepare(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The static parameters and the unit-hydrograph ordinates from ``x4``."""
    o1, o2 = gr4j_unit_hydrographs(params["x4"])
    out = {k: v for k, v in params.items() if k != "x4"}
    out["uh1_ordinates"], out["uh2_ordinates"] = o1, o2
    return out


def _gr4j_torch_step(st, forcing, p):
    st, fl = gr4j_step(
        st, forcing["precipitation"], forcing["pet"], p, p["uh1_ordinates"], p["uh2_ordinates"]
    )
    fl["production_store"] = st[0]
    fl["routing_store"] = st[1]
    fl["unit_hydrograph_storage"] = st[2].sum(-1) + st[3].sum(-1)
    return st, fl


def _gr4j_pack(states: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
    s, r = states["production_store"], states["routing_store"]
    n, m = s.shape
    return (s, r, states["uh1"].reshape(n, m, -1), states["uh2"].reshape(n, m, -1))


def _gr4j_unpack(st: tuple[Tensor, ...]) -> dict[str, Tensor]:
    n = st[0].shape[0]
    return {
        "production_store": st[0],
        "routing_store": st[1],
        "uh1": st[2].reshape(n, -1),
        "uh2": st[3].reshape(n, -1),
    }


#: GR4J's step in PyTorch: the reference loop and the forward sensitivities run it
#: (:mod:`gnnhydro.runoff.stepping`).  The unit-hydrograph contents are ``[R, m, L−1]``.
GR4J_STEPPER = TorchStepper(
    forcing=("precipitation", "pet"),
    states=GR4J_STATES,
    outputs=GR4J_OUTPUTS,
    step=_gr4j_torch_step,
    pack=_gr4j_pack,
    unpack=_gr4j_unpack,
    prepare=_gr4j_prepare,
)


def gr4j_torch_loop(
    precip: Tensor, pet: Tensor, params: Mapping[str, Tensor], states: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Per-time-step PyTorch loop of :func:`gr4j_step` (autograd reference, bench baseline):
    :func:`~gnnhydro.runoff.stepping.run_steps` of :data:`GR4J_STEPPER`.

    Shapes:
        precip, pet ``[N, T]`` mm/day; params ``x1``–``x3`` ``[N, m]`` or ``[N, T, m]``, ``x4``
        ``[N, m]``; states as :data:`GR4J_STATES`; result: every name of :data:`GR4J_OUTPUTS`
        ``[N, T]`` (mean over components) and ``final_<state>`` (the states' shapes).
    """
    return run_steps(GR4J_STEPPER, {"precipitation": precip, "pet": pet}, params, states)


@register_runoff_model("gr4j")
class GR4J(FusedRunoffModel):
    """GR4J daily rainfall-runoff model, ``nmul`` parallel parameter sets (module docstring).

    Args:
        nmul: number of parallel components (parameter sets) per node, averaged.
        backend: ``"auto"`` (numba on CPU, torch on CUDA), ``"torch"`` or ``"numba"``.
        gradient: ``"autograd"`` (exact reverse mode) or ``"sensitivity"`` (forward
            sensitivities, memory flat in T; static parameters only:
            :mod:`gnnhydro.runoff.sensitivity`).
        dynamic: names among ``x1``, ``x2``, ``x3`` that may be given time-varying
            ``[N, T, m]`` (``x4`` is static: it shapes the unit hydrographs).
        production_fill, routing_fill: default initial fillings of the production and routing
            stores as fractions of ``x1`` and ``x3`` (airGR: 0.3 and 0.5).
        snow: put HBV's degree-day snow routine in front (:mod:`gnnhydro.runoff.snow`): forcing
            ``temperature`` (°C, optional: without it no snow), parameters ``tt``, ``cfmax``,
            ``cfr``, ``cwh`` ``[N]`` (one snowpack per node), states ``snowpack``,
            ``meltwater`` ``[N, 1]``, outputs ``snowpack``, ``meltwater``, ``swe``,
            ``liquid_water``; GR4J reads the liquid water as its precipitation.

    Shapes:
        forcing ``precipitation``, ``pet`` ``[N, T]`` or ``[B, N, T]`` mm/day (a ``[B, T]``
        batch of basins is ``N = B``); params ``[N, m]`` (or ``[N]``, the same for every
        component; ``[N, T, m]`` dynamic); ``out["runoff"]`` ``[N, T]`` mm/day.
    """

    forcing_names = ("precipitation", "pet")
    stepper = GR4J_STEPPER
    states_from_params = True  # airGR: 30 % of x1, 50 % of x3
    node_params_per_component = True  # parameters [B] or [B, nmul]
    state_names = GR4J_STATES
    external_inflows = ("groundwater_exchange",)

    def __init__(
        self,
        nmul: int = 1,
        *,
        backend: str = "auto",
        gradient: str = "autograd",
        dynamic: Sequence[str] = (),
        production_fill: float = PRODUCTION_FILL,
        routing_fill: float = ROUTING_FILL,
        snow: bool = False,
    ) -> None:
        super().__init__(nmul)
        unknown = sorted(set(dynamic) - set(DYNAMIC_CAPABLE))
        if unknown:
            raise ValueError(
                f"GR4J: dynamic parameter(s) {unknown} not in {list(DYNAMIC_CAPABLE)} "
                "(x4 shapes the unit hydrographs and is static)"
            )
        self.dynamic = tuple(dynamic)
        self._set_backend(backend, gradient)
        self.production_fill = float(production_fill)
        self.routing_fill = float(routing_fill)
        self.param_spec = {
            n: ParamSpec(
                s.name, s.units, s.low, s.high, s.default, n in self.dynamic, s.description
            )
            for n, s in GR4J_PARAM_SPECS.items()
        }
        self._set_snow(snow)

    def extra_repr(self) -> str:
        return (
            f"nmul={self.nmul}, backend={self.backend!r}, dynamic={list(self.dynamic)}, "
            f"snow={self.snow}"
        )

    # ------------------------------------------------------------------ states
    def _state_shape(self, name: str, num_rows: int) -> tuple[int, int]:
        if name == "uh1":
            return (num_rows, self.nmul * (UH1_LENGTH - 1))
        if name == "uh2":
            return (num_rows, self.nmul * (UH2_LENGTH - 1))
        return super()._state_shape(name, num_rows)

    def init_states(
        self,
        num_nodes: int,
        *,
        dtype: torch.dtype = torch.float32,
        device=None,
        params: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """airGR's initial states: production store ``0.3·x1``, routing store ``0.5·x3``
        (``x1``, ``x3`` from ``params`` ``[N, m]`` / ``[N, T, m]`` (their first step), else the
        spec defaults), empty unit hydrographs."""
        shape = (num_nodes, self.nmul)

        def first(name: str) -> Tensor:
            if params is None:
                return torch.full(shape, self.param_spec[name].default, dtype=dtype, device=device)
            v = params[name]
            return (v[:, 0] if v.dim() == 3 else v).to(dtype)

        return {
            **self._snow_states(num_nodes, dtype=dtype, device=device),
            "production_store": self.production_fill * first("x1"),
            "routing_store": self.routing_fill * first("x3"),
            "uh1": torch.zeros(self._state_shape("uh1", num_nodes), dtype=dtype, device=device),
            "uh2": torch.zeros(self._state_shape("uh2", num_nodes), dtype=dtype, device=device),
        }

    # ----------------------------------------------------------------- forward
    def _kernel_apply(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        from gnnhydro.runoff.kernels.gr4j_numba import gr4j_numba_apply

        return gr4j_numba_apply(forcing["precipitation"], forcing["pet"], params, states)

    def _run(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        out = self._run_stepper(forcing, params, states)
        out["storage"] = out["production_store"] + out["routing_store"]
        out["storage"] = out["storage"] + out["unit_hydrograph_storage"]
        s0 = states["production_store"] + states["routing_store"]
        n = s0.shape[0]
        uh0 = states["uh1"].reshape(n, self.nmul, -1).sum(-1)
        uh0 = uh0 + states["uh2"].reshape(n, self.nmul, -1).sum(-1)
        out["storage_initial"] = (s0 + uh0).mean(dim=1)
        self._add_snow_storage(out, states)
        return out

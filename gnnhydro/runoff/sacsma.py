"""SAC-SMA (Sacramento Soil Moisture Accounting): the NWS conceptual soil-moisture model, daily.

References:
    Burnash, R. J. C., Ferral, R. L. & McGuire, R. A. (1973), A generalized streamflow
    simulation system: conceptual modeling for digital computers, US NWS / California DWR;
    Burnash, R. J. C. (1995), The NWS River Forecast System — catchment modeling, in Singh (ed.),
    Computer Models of Watershed Hydrology, 311–366; Peck, E. L. (1976), Catchment modeling and
    initial parameter estimation for the NWS River Forecast System, NOAA TM NWS HYDRO-31.

**Variant.** The NWS operational subroutine ``SAC1`` (E. Anderson, HRL 1979, with Q. Duan's
1995 additions ``PAREA = 1 − ADIMP − PCTIM`` and ``RSERV``; the ``sac1.f`` distributed with the
NWS/OHD and VIC codes) with the frozen-ground switch off (``IFRZE = 0``), one step = one day
(``DT = 1``).  Sixteen parameters (capacities in mm, depletion coefficients per day, fractions
``-``): UZTWM, UZFWM, UZK, PCTIM, ADIMP, RIVA, ZPERC, REXP, LZTWM, LZFSM, LZFPM, LZSK, LZPK,
PFREE, SIDE, RSERV (lower-case names here).  Six stores (mm, each a depth over the area it
describes): UZTWC, UZFWC, LZTWC, LZFSC, LZFPC over the pervious area
``A_p = 1 − ADIMP − PCTIM``, and ADIMC, the tension water (upper + lower) of the additional
impervious area ADIMP.  One day with precipitation ``P`` and potential ET ``E`` (mm/day):

**(A) Upper-zone evapotranspiration.** ``e1 = E·UZTWC/UZTWM``, ``red = E − e1``,
``UZTWC ← UZTWC − e1``, ``e2 = 0``.  If ``UZTWC < 0`` (only when ``E > UZTWM``):
``e1 ← e1 + UZTWC``, ``UZTWC ← 0``, ``red = E − e1``; then if ``UZFWC < red``:
``e2 = UZFWC``, ``UZFWC ← 0``, ``red ← red − e2`` and (A′) is skipped; else ``e2 = red``,
``UZFWC ← UZFWC − e2``, ``red = 0``.  (A′) If ``UZTWC/UZTWM < UZFWC/UZFWM`` the upper zone is
re-balanced: ``r = (UZTWC + UZFWC)/(UZTWM + UZFWM)``, ``UZTWC = UZTWM·r``, ``UZFWC = UZFWM·r``.

**(B) Lower-zone evapotranspiration and tension-water resupply.**
``e3 = red·LZTWC/(UZTWM + LZTWM)``, ``LZTWC ← LZTWC − e3`` (if negative: ``e3 ← e3 + LZTWC``,
``LZTWC ← 0``).  With ``saved = RSERV·(LZFPM + LZFSM)``,

.. math::
    r_t = \\frac{LZTWC}{LZTWM},\\qquad
    r_l = \\frac{LZTWC + LZFPC + LZFSC - saved}{LZTWM + LZFPM + LZFSM - saved}

and if ``r_t < r_l``: ``δ = (r_l − r_t)·LZTWM`` moves from LZFSC to LZTWC (what LZFSC lacks,
from LZFPC: ``LZFPC ← LZFPC + LZFSC``, ``LZFSC ← 0`` when ``LZFSC`` turns negative).

**(C) ADIMP-area evapotranspiration.**
``e5 = e1 + (red + e2)·(ADIMC − e1 − UZTWC)/(UZTWM + LZTWM)``, ``ADIMC ← ADIMC − e5`` (if
negative: ``e5 ← e5 + ADIMC``, ``ADIMC ← 0``); ``e5 ← e5·ADIMP`` (basin-average).

**(D) Excess over tension water and time increments.** ``twx = P + UZTWC − UZTWM``: if
``twx < 0``, ``UZTWC ← UZTWC + P``, ``twx = 0``; else ``UZTWC ← UZTWM``.
``ADIMC ← ADIMC + P − twx``; impervious runoff ``roimp = P·PCTIM``.  The day is split into

.. math::
    n = \\lfloor 1 + 0.2\\,(UZFWC + twx) \\rfloor

increments (no increment carries more than 5 mm of ``UZFWC + twx``), each with
``pinc = twx/n``, ``duz = 1 − (1 − UZK)^{1/n}``, ``dlzp = 1 − (1 − LZPK)^{1/n}``,
``dlzs = 1 − (1 − LZSK)^{1/n}``.  The count ``n`` is piecewise constant in the states and
forcing: it is computed from the values and carries no gradient (the gradient is exact almost
everywhere, as for every other branch of the model).

**(E) One increment** (UZTWC fixed during the increments):

* direct runoff from ADIMP: ``ρ = max((ADIMC − UZTWC)/LZTWM, 0)``, ``addro = pinc·ρ²``;
* baseflow: ``bfp = LZFPC·dlzp``, ``LZFPC ← LZFPC − bfp`` (if ``LZFPC ≤ 10⁻⁴`` mm the rest
  drains too: ``bfp ← bfp + LZFPC``, ``LZFPC ← 0``), likewise ``bfs`` from LZFSC with ``dlzs``;
* if ``pinc + UZFWC ≤ 0.01`` mm: ``UZFWC ← UZFWC + pinc`` and on to the ADIMP balance; else
* percolation ``perc = (LZFPM·dlzp + LZFSM·dlzs)·(UZFWC/UZFWM)·(1 + ZPERC·defr^REXP)`` with
  the lower-zone deficiency ratio ``defr = 1 − (LZTWC + LZFPC + LZFSC)/(LZTWM + LZFPM + LZFSM)``,
  at most ``UZFWC`` (``perc ≥ UZFWC`` takes all of it) and at most the lower-zone deficiency
  (``check = LZTWC + LZFPC + LZFSC + perc − LZTWM − LZFPM − LZFSM > 0`` is given back to UZFWC);
  ``UZFWC ← UZFWC − perc``;
* interflow ``intf = UZFWC·duz``, ``UZFWC ← UZFWC − intf`` (before ``pinc`` is added);
* ``perct = perc·(1 − PFREE)`` fills LZTWC up to LZTWM, the overflow plus ``perc·PFREE`` is
  ``percf``, split with ``hpl = LZFPM/(LZFPM + LZFSM)``, ``r_p = LZFPC/LZFPM``,
  ``r_s = LZFSC/LZFSM``:

  .. math::
      f_p = \\min\\Big(1, \\frac{2\\,hpl\\,(1 - r_p)}{(1 - r_p) + (1 - r_s)}\\Big),\\quad
      percs = percf\\,(1 - f_p)

  ``LZFSC ← LZFSC + percs`` (overflow over LZFSM goes back into ``percf − percs``),
  ``LZFPC ← LZFPC + percf − percs`` (overflow over LZFPM goes to LZTWC);
* surface runoff: if ``pinc + UZFWC > UZFWM``, ``sur = pinc + UZFWC − UZFWM``,
  ``UZFWC ← UZFWM``, ``adsur = sur·(1 − addro/pinc)``; else ``UZFWC ← UZFWC + pinc``;
* ADIMP balance: ``ADIMC ← ADIMC + pinc − addro − adsur``; above ``UZTWM + LZTWM`` the excess
  is direct runoff (``addro ← addro + ADIMC − (UZTWM + LZTWM)``, ``ADIMC ← UZTWM + LZTWM``).

Sums over the increments: ``sdro = Σ addro·ADIMP``, ``ssur = Σ (sur·A_p + adsur·ADIMP)``,
``sif = A_p·Σ intf``, ``sbf = Σ (bfp + bfs)``, ``spbf = Σ bfp``.

**(F) Channel inflow.** ``tbf = A_p·sbf``, ``bfcc = tbf/(1 + SIDE)`` (channel baseflow),
``bfp = A_p·spbf/(1 + SIDE)``, ``bfs = max(bfcc − bfp, 0)``, ``bfncc = tbf − bfcc`` (the
non-channel baseflow, lost to deep groundwater), ``tci = roimp + sdro + ssur + sif + bfcc``;
riparian ET ``e4 = (E − e1 − e2 − e3)·RIVA`` is taken from ``tci`` (at most all of it);
``runoff = tci``, ``ET = A_p·(e1 + e2 + e3) + e5 + e4``.  Finally ``ADIMC ← max(ADIMC, UZTWC)``
(sac1's "check that ADIMC ≥ UZTWC").

**Water balance.** The storage is ``S = A_p·(UZTWC + UZFWC + LZTWC + LZFSC + LZFPC) +
ADIMP·ADIMC`` (mm over the basin), and ``ΔS = P − ET − runoff − bfncc + adj`` exactly, with
``bfncc`` returned as ``baseflow_nonchannel`` (leaves) and ``adj = ADIMP·(UZTWC − ADIMC)⁺`` of
the last ``max`` (water the original creates) as ``adimp_adjustment`` (enters).

**Simplifications / choices.** No frozen ground (``IFRZE = 0``, no ``FGFR1``/``FROST1``); no
snow by default (temperature is not read; ``snow=True`` puts HBV's degree-day routine in front,
:mod:`gnnhydro.runoff.snow`, whose liquid water SAC-SMA reads as its precipitation);
no channel routing or unit hydrograph inside (the router of gnnhydro routes ``runoff``).
``DT = 1`` day.  ``PCTIM + ADIMP ≤ 0.5`` by the bounds (``A_p ≥ 0.5``).  The fraction ``f_p``
has a guarded denominator (``(1 − r_p) + (1 − r_s) ≤ 0`` is impossible after the increment's
baseflow with ``LZPK, LZSK > 0``, and is then taken as 1).  Where the original skips a branch
that changes nothing (``percf = 0``, ``pinc = 0``), both backends take the expression that
gives the same value and the one-sided derivative of the continuous formula.

Default initial states: every store at ``initial_fill`` (0.5) of its capacity, ADIMC at
``initial_fill·(UZTWM + LZTWM)`` (hydromad's default).  Parameters are per node and component
(``nmul`` parallel parameter sets per node, runoff averaged).  **Dynamic parameters**: the rates
and shapes :data:`DYNAMIC_CAPABLE` (UZK, LZSK, LZPK, ZPERC, REXP, PFREE, RIVA, SIDE, RSERV) may
vary in time (``dynamic=``, values ``[N, T, m]``, day ``t`` using its own value): they move
water between the stores and out of them but define no store, so the stores stay within their
capacities and the water balance above holds day by day.  The capacities (UZTWM, UZFWM, LZTWM,
LZFSM, LZFPM) and the area fractions (PCTIM, ADIMP) define the stores and the storage sum
``S`` and are static.

Backends: ``"torch"`` (:func:`sacsma_torch_loop`, a per-step PyTorch loop differentiated by
autograd: the reference), ``"numba"`` (fused CPU kernel with an exact hand-written adjoint over
a tape of the daily states, :mod:`gnnhydro.runoff.kernels.sacsma_numba`), ``"auto"`` (numba on
CPU, torch on CUDA).  Gradients: ``"autograd"`` (reverse mode) or ``"sensitivity"`` (forward
sensitivities through the torch step, memory flat in T: :mod:`gnnhydro.runoff.sensitivity`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gnnhydro.runoff.base import FusedRunoffModel, register_runoff_model
from gnnhydro.runoff.stepping import TorchStepper, run_steps
from gnnhydro.spec import ParamSpec

__all__ = [
    "DYNAMIC_CAPABLE",
    "SACSMA",
    "SACSMA_PARAM_SPECS",
    "SACSMA_OUTPUTS",
    "SACSMA_STATES",
    "SACSMA_STEPPER",
    "sacsma_step",
    "sacsma_torch_loop",
]

#: SAC-SMA parameters.  Bounds: the feasible ranges of SAC-SMA calibration studies (Duan,
#: Sorooshian & Gupta 1992; Boyle, Gupta & Sorooshian 2000; the NWS calibration manual,
#: Anderson 2002), REXP from 1 (bounded gradients of ``defr^REXP``), PCTIM ≤ 0.1 and ADIMP ≤ 0.4;
#: RIVA, SIDE, RSERV as in the NWS manual (defaults 0, 0, 0.3).  Order = the kernel's layout.
SACSMA_PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in [
        ParamSpec("uztwm", "mm", 10.0, 300.0, 50.0, False, "upper zone tension water capacity"),
        ParamSpec("uzfwm", "mm", 5.0, 150.0, 40.0, False, "upper zone free water capacity"),
        ParamSpec("uzk", "1/day", 0.1, 0.75, 0.3, False, "upper zone free water depletion"),
        ParamSpec("pctim", "-", 0.0, 0.1, 0.01, False, "permanent impervious fraction"),
        ParamSpec("adimp", "-", 0.0, 0.4, 0.1, False, "additional impervious fraction"),
        ParamSpec("riva", "-", 0.0, 0.2, 0.0, False, "riparian vegetation fraction"),
        ParamSpec("zperc", "-", 5.0, 350.0, 40.0, False, "maximum percolation ratio"),
        ParamSpec("rexp", "-", 1.0, 5.0, 2.0, False, "percolation curve exponent"),
        ParamSpec("lztwm", "mm", 10.0, 500.0, 130.0, False, "lower zone tension water capacity"),
        ParamSpec("lzfsm", "mm", 5.0, 400.0, 25.0, False, "lower zone supplemental free water"),
        ParamSpec("lzfpm", "mm", 10.0, 1000.0, 60.0, False, "lower zone primary free water"),
        ParamSpec("lzsk", "1/day", 0.01, 0.35, 0.1, False, "supplemental depletion coefficient"),
        ParamSpec("lzpk", "1/day", 0.001, 0.05, 0.01, False, "primary depletion coefficient"),
        ParamSpec("pfree", "-", 0.0, 0.8, 0.1, False, "percolation fraction to free water"),
        ParamSpec("side", "-", 0.0, 0.5, 0.0, False, "non-channel / channel baseflow ratio"),
        ParamSpec("rserv", "-", 0.0, 0.4, 0.3, False, "lower zone free water not transferable"),
    ]
}
PARAM_NAMES: tuple[str, ...] = tuple(SACSMA_PARAM_SPECS)
#: parameters that may vary in time (rates and shapes, in the kernel's order); the capacities and
#: the area fractions define the stores and the storage sum and are static
DYNAMIC_CAPABLE: tuple[str, ...] = (
    "uzk", "riva", "zperc", "rexp", "lzsk", "lzpk", "pfree", "side", "rserv",
)  # fmt: skip
#: the static parameters: capacities (mm) and area fractions
CAPACITIES: tuple[str, ...] = ("uztwm", "uzfwm", "lztwm", "lzfsm", "lzfpm")
AREA_FRACTIONS: tuple[str, ...] = ("pctim", "adimp")
assert set(PARAM_NAMES) == set(DYNAMIC_CAPABLE) | set(CAPACITIES) | set(AREA_FRACTIONS)
#: stores (mm): UZTWC, UZFWC, LZTWC, LZFSC, LZFPC over the pervious area, ADIMC over ADIMP
SACSMA_STATES: tuple[str, ...] = ("uztwc", "uzfwc", "lztwc", "lzfsc", "lzfpc", "adimc")
#: capacity of each store (ADIMC: UZTWM + LZTWM)
STATE_CAPACITY: dict[str, tuple[str, ...]] = {
    "uztwc": ("uztwm",),
    "uzfwc": ("uzfwm",),
    "lztwc": ("lztwm",),
    "lzfsc": ("lzfsm",),
    "lzfpc": ("lzfpm",),
    "adimc": ("uztwm", "lztwm"),
}
INITIAL_FILL = 0.5
#: Per-step outputs (means over components), in this order in the fused kernel: fluxes
#: (mm/day, basin-average), the storage and the six stores after the step (mm).
SACSMA_OUTPUTS: tuple[str, ...] = (
    "runoff",
    "impervious_runoff",
    "direct_runoff",
    "surface_runoff",
    "interflow",
    "baseflow_primary",
    "baseflow_supplemental",
    "baseflow_nonchannel",
    "evapotranspiration",
    "riparian_et",
    "percolation",
    "adimp_adjustment",
    "storage",
    *SACSMA_STATES,
)
#: increments per mm of UZFWC + twx (``n = ⌊1 + 0.2·(UZFWC + twx)⌋``: at most 5 mm each)
NINC_RATE = 0.2
#: below this, LZFPC / LZFSC drain completely (mm)
DRAIN_MM = 1e-4
#: percolation is skipped when ``pinc + UZFWC`` is at most this (mm)
DRY_MM = 0.01


def _where(c: Tensor, a, b) -> Tensor:
    return torch.where(c, a, b)


def _pre(st: tuple[Tensor, ...], P: Tensor, E: Tensor, p: Mapping[str, Tensor]):
    """Phases (A)–(D) of a day: ET, resupply, excess and increments (module docstring)."""
    ut, uf, lt, ls, lp, ad = st
    uztwm, uzfwm, lztwm = p["uztwm"], p["uzfwm"], p["lztwm"]
    lzfsm, lzfpm = p["lzfsm"], p["lzfpm"]
    zero = torch.zeros_like(ut)
    # (A)
    e1 = E * ut / uztwm
    red = E - e1
    ut = ut - e1
    a1 = ut < 0
    e1 = _where(a1, e1 + ut, e1)
    ut = _where(a1, zero, ut)
    red = _where(a1, E - e1, red)
    a1a = a1 & (uf < red)
    a1b = a1 & ~a1a
    e2 = _where(a1a, uf, _where(a1b, red, zero))
    uf = _where(a1a, zero, _where(a1b, uf - red, uf))
    red = _where(a1a, red - e2, _where(a1b, zero, red))
    tr = ~a1a & (ut / uztwm < uf / uzfwm)
    uzrat = (ut + uf) / (uztwm + uzfwm)
    ut = _where(tr, uztwm * uzrat, ut)
    uf = _where(tr, uzfwm * uzrat, uf)
    # (B)
    w = uztwm + lztwm
    e3 = red * lt / w
    lt = lt - e3
    b = lt < 0
    e3 = _where(b, e3 + lt, e3)
    lt = _where(b, zero, lt)
    ratlzt = lt / lztwm
    saved = p["rserv"] * (lzfpm + lzfsm)
    ratlz = (lt + lp + ls - saved) / (lztwm + lzfpm + lzfsm - saved)
    rs = ratlzt < ratlz
    dl = (ratlz - ratlzt) * lztwm
    lt = _where(rs, lt + dl, lt)
    ls = _where(rs, ls - dl, ls)
    neg = rs & (ls < 0)
    lp = _where(neg, lp + ls, lp)
    ls = _where(neg, zero, ls)
    # (C)
    e5 = e1 + (red + e2) * ((ad - e1 - ut) / w)
    ad = ad - e5
    c = ad < 0
    e5 = _where(c, e5 + ad, e5)
    ad = _where(c, zero, ad)
    e5 = e5 * p["adimp"]
    # (D)
    twx = P + ut - uztwm
    d = twx < 0
    ut = _where(d, ut + P, uztwm)
    twx = _where(d, zero, twx)
    ad = ad + P - twx
    roimp = P * p["pctim"]
    ninc = torch.floor(1.0 + NINC_RATE * (uf + twx).detach())
    dinc = 1.0 / ninc
    pinc = twx / ninc
    duz = 1.0 - (1.0 - p["uzk"]) ** dinc
    dlzp = 1.0 - (1.0 - p["lzpk"]) ** dinc
    dlzs = 1.0 - (1.0 - p["lzsk"]) ** dinc
    return (ut, uf, lt, ls, lp, ad), (e1, e2, e3, e5, roimp), ninc, (pinc, duz, dlzp, dlzs)


def _increment(s: tuple[Tensor, ...], ut: Tensor, c: tuple[Tensor, ...], p: Mapping[str, Tensor]):
    """One increment (E): new (UZFWC, LZTWC, LZFSC, LZFPC, ADIMC) and the increment's
    (bfp, bfs, perc, intf, ssur, sdro)."""
    uf, lt, ls, lp, ad = s
    pinc, duz, dlzp, dlzs = c
    uzfwm, lztwm, lzfsm, lzfpm = p["uzfwm"], p["lztwm"], p["lzfsm"], p["lzfpm"]
    pfree, adimp = p["pfree"], p["adimp"]
    parea = 1.0 - adimp - p["pctim"]
    zero = torch.zeros_like(uf)
    r = (ad - ut) / lztwm
    r = _where(r < 0, zero, r)
    addro = pinc * (r * r)
    bp = lp * dlzp
    lp = lp - bp
    z = lp <= DRAIN_MM
    bp = _where(z, bp + lp, bp)
    lp = _where(z, zero, lp)
    bs = ls * dlzs
    ls = ls - bs
    z = ls <= DRAIN_MM
    bs = _where(z, bs + ls, bs)
    ls = _where(z, zero, ls)
    dry = pinc + uf <= DRY_MM
    # percolation
    lzm = lztwm + lzfpm + lzfsm
    percm = lzfpm * dlzp + lzfsm * dlzs
    defr = 1.0 - (lt + lp + ls) / lzm
    defr = _where(defr > 0, defr, zero)  # ≥ 0 up to rounding
    perc = percm * (uf / uzfwm)
    perc = perc * (1.0 + p["zperc"] * defr ** p["rexp"])
    perc = _where(perc >= uf, uf, perc)
    uf1 = uf - perc
    chk = lt + lp + ls + perc - lzm
    over = chk > 0
    perc = _where(over, perc - chk, perc)
    uf1 = _where(over, uf1 + chk, uf1)
    intf = uf1 * duz
    uf1 = uf1 - intf
    perct = perc * (1.0 - pfree)
    tov = perct + lt > lztwm
    percf = _where(tov, perct + lt - lztwm, zero)
    lt1 = _where(tov, lztwm, lt + perct)
    percf = percf + perc * pfree
    hpl = lzfpm / (lzfpm + lzfsm)
    ratlp = lp / lzfpm
    ratls = ls / lzfsm
    den = (1.0 - ratlp) + (1.0 - ratls)
    fracp = hpl * 2.0 * (1.0 - ratlp) / _where(den > 0, den, torch.ones_like(den))
    fracp = _where((fracp > 1.0) | (den <= 0), torch.ones_like(fracp), fracp)
    percp = percf * fracp
    percs = percf - percp
    ls1 = ls + percs
    so = ls1 > lzfsm
    percs = _where(so, percs - ls1 + lzfsm, percs)
    ls1 = _where(so, lzfsm, ls1)
    lp1 = lp + (percf - percs)
    po = lp1 > lzfpm
    lt1 = _where(po, lt1 + (lp1 - lzfpm), lt1)
    lp1 = _where(po, lzfpm, lp1)
    # surface runoff
    sov = (pinc != 0) & (pinc + uf1 > uzfwm)
    sur = _where(sov, pinc + uf1 - uzfwm, zero)
    uf1 = _where(sov, uzfwm, uf1 + pinc)
    adsur = sur * (1.0 - addro / _where(pinc != 0, pinc, torch.ones_like(pinc)))
    ssur = sur * parea + adsur * adimp
    # the dry branch: no percolation, interflow or surface runoff
    uf = _where(dry, uf + pinc, uf1)
    lt = _where(dry, lt, lt1)
    ls = _where(dry, ls, ls1)
    lp = _where(dry, lp, lp1)
    perc = _where(dry, zero, perc)
    intf = _where(dry, zero, intf)
    ssur = _where(dry, zero, ssur)
    adsur = _where(dry, zero, adsur)
    # ADIMP area
    ad = ad + pinc - addro - adsur
    admax = p["uztwm"] + lztwm
    aov = ad > admax
    addro = _where(aov, addro + ad - admax, addro)
    ad = _where(aov, admax, ad)
    return (uf, lt, ls, lp, ad), (bp, bs, perc, intf, ssur, addro * adimp)


def sacsma_step(
    states: tuple[Tensor, ...], precip: Tensor, pet: Tensor, p: Mapping[str, Tensor]
) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    """One SAC-SMA day (pure function; the equations are in the module docstring).

    Cells whose increment count ``n`` is below the largest of the batch keep their stores
    through the extra increments (masked), so every cell runs exactly its own ``n``.

    Args:
        states: (UZTWC, UZFWC, LZTWC, LZFSC, LZFPC, ADIMC), mm.
        precip, pet: forcing of this day, mm/day.
        p: the 16 parameters by name (:data:`SACSMA_PARAM_SPECS`).

    Shapes:
        states and parameters ``[N, m]``; forcing ``[N, 1]`` (broadcast over components).
    """
    (ut, uf, lt, ls, lp, ad), (e1, e2, e3, e5, roimp), ninc, c = _pre(states, precip, pet, p)
    zero = torch.zeros_like(ut)
    sums = [zero] * 6  # bfp, bfs, perc, intf, ssur, sdro
    s = (uf, lt, ls, lp, ad)
    for i in range(int(ninc.max())):
        new, inc = _increment(s, ut, c, p)
        if i == 0:  # every cell has at least one increment
            s = new
            sums = list(inc)
        else:
            act = ninc > i
            s = tuple(_where(act, a, b) for a, b in zip(new, s, strict=True))
            sums = [_where(act, a + b, a) for a, b in zip(sums, inc, strict=True)]
    uf, lt, ls, lp, ad = s
    spbf, sbs, sperc, sintf, ssur, sdro = sums
    adimp = p["adimp"]
    parea = 1.0 - adimp - p["pctim"]
    sif = sintf * parea
    tbf = (spbf + sbs) * parea
    bfcc = tbf * (1.0 / (1.0 + p["side"]))
    bfp = spbf * parea / (1.0 + p["side"])
    bfs = bfcc - bfp
    bfs = _where(bfs < 0, zero, bfs)
    bfncc = tbf - bfcc
    tci = roimp + sdro + ssur + sif + bfcc
    eused = e1 + e2 + e3
    e4 = (pet - eused) * p["riva"]
    tci = tci - e4
    neg = tci < 0
    e4 = _where(neg, e4 + tci, e4)
    tci = _where(neg, zero, tci)
    tet = eused * parea + e5 + e4
    low = ad < ut
    adj = _where(low, (ut - ad) * adimp, zero)
    ad = _where(low, ut, ad)
    storage = parea * (ut + uf + lt + ls + lp) + adimp * ad
    fluxes = {
        "runoff": tci,
        "impervious_runoff": roimp,
        "direct_runoff": sdro,
        "surface_runoff": ssur,
        "interflow": sif,
        "baseflow_primary": bfp,
        "baseflow_supplemental": bfs,
        "baseflow_nonchannel": bfncc,
        "evapotranspiration": tet,
        "riparian_et": e4,
        "percolation": sperc * parea,
        "adimp_adjustment": adj,
        "storage": storage,
    }
    return (ut, uf, lt, ls, lp, ad), fluxes


def sacsma_storage(states: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> Tensor:
    """Water stored ``A_p·(UZTWC + UZFWC + LZTWC + LZFSC + LZFPC) + ADIMP·ADIMC`` (mm) per
    node and component ``[N, m]``."""
    adimp = params["adimp"]
    parea = 1.0 - adimp - params["pctim"]
    soil = sum(states[s] for s in SACSMA_STATES[:5])
    return parea * soil + adimp * states["adimc"]


def _sacsma_torch_step(st, forcing, p):
    st, fl = sacsma_step(st, forcing["precipitation"], forcing["pet"], p)
    for k, v in zip(SACSMA_STATES, st, strict=True):
        fl[k] = v
    return st, fl


#: SAC-SMA's step in PyTorch: the reference loop and the forward sensitivities run it
#: (:mod:`gnnhydro.runoff.stepping`).
SACSMA_STEPPER = TorchStepper(
    forcing=("precipitation", "pet"),
    states=SACSMA_STATES,
    outputs=SACSMA_OUTPUTS,
    step=_sacsma_torch_step,
    pack=lambda states: tuple(states[s] for s in SACSMA_STATES),
    unpack=lambda st: dict(zip(SACSMA_STATES, st, strict=True)),
)


def sacsma_torch_loop(
    precip: Tensor, pet: Tensor, params: Mapping[str, Tensor], states: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Per-time-step PyTorch loop of :func:`sacsma_step` (autograd reference, bench baseline):
    :func:`~gnnhydro.runoff.stepping.run_steps` of :data:`SACSMA_STEPPER`.

    Shapes:
        precip, pet ``[N, T]`` mm/day; params ``[N, m]``; states ``{name: [N, m]}``
        (:data:`SACSMA_STATES`); result: every name of :data:`SACSMA_OUTPUTS` ``[N, T]`` (mean
        over components) and ``final_<state>`` ``[N, m]``.
    """
    return run_steps(SACSMA_STEPPER, {"precipitation": precip, "pet": pet}, params, states)


@register_runoff_model("sacsma")
class SACSMA(FusedRunoffModel):
    """SAC-SMA daily soil-moisture accounting, ``nmul`` parallel parameter sets (module
    docstring: the NWS ``SAC1`` variant without frozen ground).

    Args:
        nmul: number of parallel components (parameter sets) per node, averaged.
        backend: ``"auto"`` (numba on CPU, torch on CUDA), ``"torch"`` or ``"numba"``.
        gradient: ``"autograd"`` (exact reverse mode) or ``"sensitivity"`` (forward
            sensitivities, memory flat in T: :mod:`gnnhydro.runoff.sensitivity`).
        dynamic: names among :data:`DYNAMIC_CAPABLE` (``uzk``, ``riva``, ``zperc``,
            ``rexp``, ``lzsk``, ``lzpk``, ``pfree``, ``side``, ``rserv``) that may be given
            time-varying ``[N, T, m]``; the capacities ``uztwm``, ``uzfwm``, ``lztwm``,
            ``lzfsm``, ``lzfpm`` and the area fractions ``pctim``, ``adimp`` are static (they
            define the stores and the storage sum).  Not with ``gradient="sensitivity"``.
        initial_fill: default initial stores as a fraction of their capacities (0.5).
        snow: put HBV's degree-day snow routine in front (:mod:`gnnhydro.runoff.snow`; as
            :class:`~gnnhydro.runoff.GR4J`'s ``snow``).

    Shapes:
        forcing ``precipitation``, ``pet`` ``[N, T]`` or ``[B, N, T]`` mm/day (a ``[B, T]``
        batch of basins is ``N = B``); params ``[N, m]`` (or ``[N]``, the same for every
        component; ``[N, T, m]`` dynamic); ``out["runoff"]`` ``[N, T]`` mm/day.
    """

    forcing_names = ("precipitation", "pet")
    stepper = SACSMA_STEPPER
    states_from_params = True  # stores start as fractions of their capacities
    node_params_per_component = True  # parameters [B] or [B, nmul]
    state_names = SACSMA_STATES
    external_fluxes = ("baseflow_nonchannel",)
    external_inflows = ("adimp_adjustment",)

    def __init__(
        self,
        nmul: int = 1,
        *,
        backend: str = "auto",
        gradient: str = "autograd",
        dynamic: Sequence[str] = (),
        initial_fill: float = INITIAL_FILL,
        snow: bool = False,
    ) -> None:
        super().__init__(nmul)
        if isinstance(dynamic, str):
            dynamic = (dynamic,)
        bad = sorted(set(dynamic) - set(DYNAMIC_CAPABLE))
        if bad:
            raise ValueError(
                f"SACSMA: parameter(s) {bad} cannot be dynamic (time-varying: "
                f"{list(DYNAMIC_CAPABLE)}; the capacities {list(CAPACITIES)} and the area "
                f"fractions {list(AREA_FRACTIONS)} define the stores and the storage sum and "
                "are static)"
            )
        if not 0.0 <= float(initial_fill) <= 1.0:
            raise ValueError(f"SACSMA: initial_fill must be in [0, 1], got {initial_fill}")
        self.dynamic: tuple[str, ...] = tuple(dict.fromkeys(dynamic))
        self._set_backend(backend, gradient)
        self.initial_fill = float(initial_fill)
        self.param_spec = {
            n: ParamSpec(
                s.name, s.units, s.low, s.high, s.default, n in self.dynamic, s.description
            )
            for n, s in SACSMA_PARAM_SPECS.items()
        }
        self._set_snow(snow)

    def extra_repr(self) -> str:
        return (
            f"nmul={self.nmul}, backend={self.backend!r}, dynamic={list(self.dynamic)}, "
            f"snow={self.snow}"
        )

    # ------------------------------------------------------------------ states
    def init_states(
        self,
        num_nodes: int,
        *,
        dtype: torch.dtype = torch.float32,
        device=None,
        params: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Every store at ``initial_fill`` of its capacity (ADIMC: of ``UZTWM + LZTWM``), the
        capacities from ``params`` ``[N, m]``, else the spec defaults."""
        shape = (num_nodes, self.nmul)

        def cap(name: str) -> Tensor:
            if params is None:
                return torch.full(shape, self.param_spec[name].default, dtype=dtype, device=device)
            return params[name].to(dtype)

        return {
            **self._snow_states(num_nodes, dtype=dtype, device=device),
            **{
                s: self.initial_fill * sum(cap(c) for c in caps)
                for s, caps in STATE_CAPACITY.items()
            },
        }

    # ----------------------------------------------------------------- forward
    def _kernel_apply(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        from gnnhydro.runoff.kernels.sacsma_numba import sacsma_numba_apply

        return sacsma_numba_apply(forcing["precipitation"], forcing["pet"], params, states)

    def _run(
        self, forcing: dict[str, Tensor], params: dict[str, Tensor], states: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        out = self._run_stepper(forcing, params, states)
        out["storage_initial"] = sacsma_storage(states, params).mean(dim=1)
        self._add_snow_storage(out, states)
        return out

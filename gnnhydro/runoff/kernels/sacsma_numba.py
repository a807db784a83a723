"""Fused CPU time loop for SAC-SMA (numba): forward and hand-written adjoint (exact reverse mode).

The day is exactly :func:`gnnhydro.runoff.sacsma.sacsma_step` written for one cell (node ×
component) in float64, in three parts: phases A–D (evapotranspiration, lower-zone resupply,
excess over tension water, increment count), one increment (phase E) and the channel inflow
(phase F: the sums, riparian ET, the ADIMC check and the storage).  Each part has one
definition, :func:`_pre_lin`, :func:`_inc_lin` and :func:`_post_lin`, which returns the forward
values and the intermediates and branch flags of its reverse; the forward parts :func:`_pre`,
:func:`_inc` and the forward kernel's phase F, and the reverse parts :func:`_pre_vjp`,
:func:`_inc_vjp`, :func:`_post_vjp` are built on it (as HBV's ``_step_lin``), and everything
the forward does not read is dead code after LLVM inlining.  Two kernels, each serial over a
range of nodes and sequential in time, run in parallel over chunks of nodes on a thread pool
(:func:`gnnhydro._numba.run_chunks`):

* :func:`_forward_kernel`: stores and per-step outputs (means over components); with gradients
  wanted it also writes the tape: the six stores at the start of every day ``[N, T, m, 6]``.
* :func:`_adjoint_kernel`: reverse sweep over the days from the tape (no re-run of the time
  loop).  Per day it re-derives that day's increments from the stored start (the increment
  count and the increment start states, a local buffer of ``n × 5``) and applies the
  vector-Jacobian products of phase F (:func:`_post_vjp`), the increments in reverse
  (:func:`_inc_vjp`) and phases D–A (:func:`_pre_vjp`).  Gradients with respect to the
  parameters (static: summed over the days; dynamic: per day), the initial stores and the
  forcing.

Parameters (K = 16, order :data:`gnnhydro.runoff.sacsma.PARAM_NAMES`): ``prm`` ``[N, m, K]``
and, for the dynamic ones (:data:`gnnhydro.runoff.sacsma.DYNAMIC_CAPABLE`), ``pdyn``
``[D, N, T, m]`` with their indices ``dyn_idx`` ``[D]`` (HBV's layout): each cell keeps its
parameter row in a local buffer and overwrites the dynamic entries with the day's values, in
the forward and in the reverse sweep alike; the adjoint zeroes their entries before each day's
VJPs and writes them to ``gdyn`` ``[D, N, T, m]`` after.  Without dynamic parameters ``D = 0``
(the same compiled kernels).  Output order (NOUT = 19):
:data:`gnnhydro.runoff.sacsma.SACSMA_OUTPUTS`.  Every array is float64 (one compiled
specialisation; the glue converts), and the kernels are cached on disk
(:func:`gnnhydro._numba.cache_dir`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from gnnhydro._numba import njit, run_chunks
from gnnhydro.runoff.sacsma import (
    DRAIN_MM,
    DRY_MM,
    DYNAMIC_CAPABLE,
    NINC_RATE,
    PARAM_NAMES,
    SACSMA_OUTPUTS,
    SACSMA_STATES,
)

__all__ = ["sacsma_numba_apply", "SACSMAFused"]

K = len(PARAM_NAMES)
NOUT = len(SACSMA_OUTPUTS)
NS = len(SACSMA_STATES)
OUT_STORES = NOUT - NS  # index of the first store among the outputs
assert NOUT == 19 and NS == 6
# parameter layout
UZTWM, UZFWM, UZK, PCTIM, ADIMP, RIVA, ZPERC, REXP = 0, 1, 2, 3, 4, 5, 6, 7
LZTWM, LZFSM, LZFPM, LZSK, LZPK, PFREE, SIDE, RSERV = 8, 9, 10, 11, 12, 13, 14, 15
assert PARAM_NAMES[RSERV] == "rserv" and PARAM_NAMES[LZTWM] == "lztwm"

_jit = njit(fastmath=False, error_model="numpy", forceinline=True)


# ---------------------------------------------------------------------------- forward parts
@_jit
def _pre_lin(ut0, uf0, lt0, ls0, lp0, ad0, P, E, p):
    """Phases A–D and the values their reverse reads: the one definition of phases A–D in numba
    (:func:`_pre` and :func:`_pre_vjp` are built on it).

    Returns ``(outs, lin)``: ``outs`` as :func:`_pre`; ``lin`` the intermediates and branch
    flags of :func:`_pre_vjp` (unused ones are dead code after inlining, so :func:`_pre` costs
    the forward only).
    """
    uztwm = p[UZTWM]
    uzfwm = p[UZFWM]
    lztwm = p[LZTWM]
    lzfsm = p[LZFSM]
    lzfpm = p[LZFPM]
    # (A) upper-zone evapotranspiration
    e1_0 = E * ut0 / uztwm
    e1 = e1_0
    red = E - e1_0
    ut = ut0 - e1_0
    uf = uf0
    e2 = 0.0
    a1 = ut < 0.0  # tension water exhausted
    a1a = False  # … and free water too (no transfer)
    if a1:
        e1 = e1_0 + ut
        ut = 0.0
        red = E - e1
        if uf0 < red:
            e2 = uf0
            uf = 0.0
            red = red - e2
            a1a = True
        else:
            e2 = red
            uf = uf0 - red
            red = 0.0
    # (A′) free to tension water transfer
    uzrat = 0.0
    tr = (not a1a) and ut / uztwm < uf / uzfwm
    if tr:
        uzrat = (ut + uf) / (uztwm + uzfwm)
        ut = uztwm * uzrat
        uf = uzfwm * uzrat
    # (B) lower-zone evapotranspiration and resupply
    w = uztwm + lztwm
    e3_0 = red * lt0 / w
    e3 = e3_0
    lt = lt0 - e3_0
    bneg = lt < 0.0
    if bneg:
        e3 = e3_0 + lt
        lt = 0.0
    ratlzt = lt / lztwm
    saved = p[RSERV] * (lzfpm + lzfsm)
    dd = lztwm + lzfpm + lzfsm - saved
    ratlz = (lt + lp0 + ls0 - saved) / dd
    ls = ls0
    lp = lp0
    rs = ratlzt < ratlz
    neg2 = False
    if rs:
        dl = (ratlz - ratlzt) * lztwm
        lt = lt + dl
        ls = ls0 - dl
        neg2 = ls < 0.0
        if neg2:
            lp = lp0 + ls
            ls = 0.0
    # (C) ADIMP evapotranspiration
    X = ad0 - e1 - ut
    e5c = e1 + (red + e2) * (X / w)
    ad = ad0 - e5c
    cneg = ad < 0.0
    if cneg:
        e5c = e5c + ad
        ad = 0.0
    e5 = e5c * p[ADIMP]
    # (D) excess over tension water, increments
    twx = P + ut - uztwm
    dneg = twx < 0.0
    if dneg:
        ut = ut + P
        twx = 0.0
    else:
        ut = uztwm
    ad = ad + P - twx
    roimp = P * p[PCTIM]
    ninc = np.floor(1.0 + NINC_RATE * (uf + twx))
    dinc = 1.0 / ninc
    pinc = twx / ninc
    duz = 1.0 - (1.0 - p[UZK]) ** dinc
    dlzp = 1.0 - (1.0 - p[LZPK]) ** dinc
    dlzs = 1.0 - (1.0 - p[LZSK]) ** dinc
    # d(duz)/d(uzk) = dinc · (1 − uzk)^(dinc − 1), and the like
    puz = (1.0 - p[UZK]) ** (dinc - 1.0)
    plzp = (1.0 - p[LZPK]) ** (dinc - 1.0)
    plzs = (1.0 - p[LZSK]) ** (dinc - 1.0)
    outs = (ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, int(ninc), pinc, duz, dlzp, dlzs)
    lin = (e1_0, a1, a1a, tr, uzrat, red, e2, w, e3_0, bneg, ratlzt, ratlz, dd, rs, neg2, X,
           e5c, cneg, dneg, ninc, dinc, puz, plzp, plzs)  # fmt: skip
    return outs, lin


@_jit
def _pre(ut, uf, lt, ls, lp, ad, P, E, p):
    """Phases A–D.  Returns the stores after them, (e1, e2, e3, e5, roimp), the increment
    count, pinc, duz, dlzp, dlzs."""
    outs, _ = _pre_lin(ut, uf, lt, ls, lp, ad, P, E, p)
    return outs


@_jit
def _fracp(lp, ls, lzfpm, lzfsm):
    """Fraction of the free-water percolation to the primary store, and (u, den, fr0)."""
    hpl = lzfpm / (lzfpm + lzfsm)
    u = 1.0 - lp / lzfpm
    den = u + (1.0 - ls / lzfsm)
    if den <= 0.0:
        return 1.0, hpl, u, den, 2.0, True
    fr0 = hpl * 2.0 * u / den
    if fr0 > 1.0:
        return 1.0, hpl, u, den, fr0, True
    return fr0, hpl, u, den, fr0, False


@_jit
def _inc_lin(uf0, lt0, ls0, lp0, ad0, ut, pinc, duz, dlzp, dlzs, p):
    """One increment (phase E) and the values its reverse reads: the one definition of the
    increment in numba (:func:`_inc` and :func:`_inc_vjp` are built on it).

    Returns ``(outs, lin)``: ``outs`` as :func:`_inc`; ``lin`` the intermediates and branch
    flags of :func:`_inc_vjp` (unused ones are dead code after inlining).
    """
    uzfwm = p[UZFWM]
    lztwm = p[LZTWM]
    lzfsm = p[LZFSM]
    lzfpm = p[LZFPM]
    pfree = p[PFREE]
    adimp = p[ADIMP]
    parea = 1.0 - adimp - p[PCTIM]
    r = (ad0 - ut) / lztwm
    rneg = r < 0.0
    if rneg:
        r = 0.0
    addro0 = pinc * (r * r)
    # drains of the lower-zone free stores
    bp = lp0 * dlzp
    lp1 = lp0 - bp
    zp = lp1 <= DRAIN_MM
    if zp:
        bp = bp + lp1
        lp1 = 0.0
    bs = ls0 * dlzs
    ls1 = ls0 - bs
    zs = ls1 <= DRAIN_MM
    if zs:
        bs = bs + ls1
        ls1 = 0.0
    uf = uf0
    lt = lt0
    ls = ls1
    lp = lp1
    perc = 0.0
    intf = 0.0
    ssur = 0.0
    adsur = 0.0
    sur = 0.0
    ra = 0.0
    # values of the wet branch (defined on every path for the compiler)
    lzm = percm = q = L = defr = dp = gg = uf1 = 0.0
    percf = fracp = hpl = u = den = fr0 = 1.0
    dpos = cap = over = tov = fcap = so = po = sov = False
    dry = pinc + uf0 <= DRY_MM
    if dry:
        uf = uf0 + pinc
    else:
        lzm = lztwm + lzfpm + lzfsm
        percm = lzfpm * dlzp + lzfsm * dlzs
        q = uf0 / uzfwm
        L = lt0 + lp1 + ls1
        defr = 1.0 - L / lzm
        dpos = defr > 0.0
        if not dpos:
            defr = 0.0
        dp = defr ** p[REXP]
        gg = 1.0 + p[ZPERC] * dp
        perc = percm * q
        perc = perc * gg
        cap = perc >= uf0
        if cap:
            perc = uf0
        uf1 = uf0 - perc
        chk = lt0 + lp1 + ls1 + perc - lzm
        over = chk > 0.0
        if over:
            perc = perc - chk
            uf1 = uf1 + chk
        intf = uf1 * duz
        uf = uf1 - intf
        perct = perc * (1.0 - pfree)
        tov = perct + lt0 > lztwm
        if tov:
            percf = perct + lt0 - lztwm
            lt = lztwm
        else:
            percf = 0.0
            lt = lt0 + perct
        percf = percf + perc * pfree
        fracp, hpl, u, den, fr0, fcap = _fracp(lp1, ls1, lzfpm, lzfsm)
        percs = percf - percf * fracp
        ls2 = ls1 + percs
        so = ls2 > lzfsm
        if so:
            percs = percs - ls2 + lzfsm
            ls2 = lzfsm
        lp2 = lp1 + (percf - percs)
        po = lp2 > lzfpm
        if po:
            lt = lt + (lp2 - lzfpm)
            lp2 = lzfpm
        ls = ls2
        lp = lp2
        sov = pinc != 0.0 and pinc + uf > uzfwm
        if sov:
            sur = pinc + uf - uzfwm
            uf = uzfwm
            ra = addro0 / pinc
            adsur = sur * (1.0 - ra)
            ssur = sur * parea + adsur * adimp
        else:
            uf = uf + pinc
    ad1 = ad0 + pinc - addro0 - adsur
    admax = p[UZTWM] + lztwm
    addro = addro0
    ad = ad1
    if ad1 > admax:
        addro = addro0 + ad1 - admax
        ad = admax
    outs = (uf, lt, ls, lp, ad, bp, bs, perc, intf, ssur, addro * adimp)
    lin = (r, rneg, addro0, lp1, ls1, zp, zs, dry, lzm, percm, q, L, defr, dpos, dp, gg, cap,
           uf1, over, perc, tov, percf, fracp, hpl, u, den, fr0, fcap, so, po, sov, sur, ra, adsur,
           ad1, admax)  # fmt: skip
    return outs, lin


@_jit
def _inc(uf, lt, ls, lp, ad, ut, pinc, duz, dlzp, dlzs, p):
    """One increment (phase E).  Returns the new (UZFWC, LZTWC, LZFSC, LZFPC, ADIMC) and the
    increment's (bfp, bfs, perc, intf, ssur, sdro)."""
    outs, _ = _inc_lin(uf, lt, ls, lp, ad, ut, pinc, duz, dlzp, dlzs, p)
    return outs


@_jit
def _post_lin(ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, spbf, sbs, sperc, sintf, ssur, sdro,
              E, p):  # fmt: skip
    """Phase F (channel inflow, riparian ET, the ADIMC check, the storage) and the values its
    reverse reads: the one definition of phase F in numba (the forward kernel and
    :func:`_post_vjp` are built on it).  Arguments: the stores after the increments, phase A–D's
    (e1, e2, e3, e5, roimp), the increment sums (bfp, bfs, perc, intf, ssur, sdro) and the PET.

    Returns ``(outs, lin)``: ``outs`` the day's outputs in the kernel's order from ``runoff`` to
    ``storage`` (:data:`gnnhydro.runoff.sacsma.SACSMA_OUTPUTS` but ``impervious_runoff``,
    ``direct_runoff``, ``surface_runoff``, which are ``roimp``, ``sdro``, ``ssur``) and ADIMC
    after the check; ``lin`` the intermediates and branch flags of :func:`_post_vjp`.
    """
    adimp = p[ADIMP]
    parea = 1.0 - adimp - p[PCTIM]
    side1 = 1.0 + p[SIDE]
    wside = 1.0 / side1
    sif = sintf * parea
    tbf = (spbf + sbs) * parea
    bfcc = tbf * wside
    bfp = spbf * parea / side1
    bfs = bfcc - bfp
    bneg = bfs < 0.0
    if bneg:
        bfs = 0.0
    tci = roimp + sdro + ssur + sif + bfcc
    eused = e1 + e2 + e3
    e4 = (E - eused) * p[RIVA]
    tci = tci - e4
    tneg = tci < 0.0
    if tneg:
        e4 = e4 + tci
        tci = 0.0
    adj = 0.0
    low = ad < ut
    ad_f = ad
    if low:
        adj = (ut - ad) * adimp
        ad_f = ut
    tet = eused * parea + e5 + e4
    storage = parea * (ut + uf + lt + ls + lp) + adimp * ad_f
    outs = (tci, sif, bfp, bfs, tbf - bfcc, tet, e4, sperc * parea, adj, storage, ad_f)
    lin = (parea, side1, wside, tbf, bfp, eused, bneg, tneg, low)
    return outs, lin


# ---------------------------------------------------------------------------- reverse parts
@_jit
def _post_vjp(ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, spbf, sbs, sperc, sintf, ssur, sdro,
              E, p, ga, g, a_s):  # fmt: skip
    """Reverse of phase F (:func:`_post_lin`, same arguments): given the adjoints of the day's
    outputs ``g`` (:data:`gnnhydro.runoff.sacsma.SACSMA_OUTPUTS`, divided by ``m``) and of the
    stores at the end of the day ``a_s`` (the next day's), returns the adjoints of (ut, uf, lt,
    ls, lp, ad), of e1 + e2 + e3, e5, roimp, sdro, ssur, sintf, of the baseflow sums Σ(bfp + bfs)
    and Σbfp, of sperc and of E, and ADDS the parameter adjoints into ``ga``."""
    adimp = p[ADIMP]
    # ---- values and branches of phase F (its one definition)
    outs, lin = _post_lin(ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, spbf, sbs, sperc, sintf,
                          ssur, sdro, E, p)  # fmt: skip
    ad_f = outs[10]
    parea, side1, wside, tbf, bfp, eused, bneg, tneg, low = lin
    # ---- reverse
    a_ut = a_s[0] + g[OUT_STORES]
    a_uf = a_s[1] + g[OUT_STORES + 1]
    a_lt = a_s[2] + g[OUT_STORES + 2]
    a_ls = a_s[3] + g[OUT_STORES + 3]
    a_lp = a_s[4] + g[OUT_STORES + 4]
    a_adf = a_s[5] + g[OUT_STORES + 5]
    gs = g[12]
    a_ut += gs * parea
    a_uf += gs * parea
    a_lt += gs * parea
    a_ls += gs * parea
    a_lp += gs * parea
    a_adf += gs * adimp
    g_parea = gs * (ut + uf + lt + ls + lp)
    g_adimp = gs * ad_f
    if low:
        g_adimp += g[11] * (ut - ad)
        a_ut += a_adf + g[11] * adimp
        a_ad = -g[11] * adimp
    else:
        a_ad = a_adf
    a_e4 = g[8] + g[9]
    a_e5 = g[8]
    a_eused = g[8] * parea
    g_parea += g[8] * eused
    if tneg:
        a_e4_0 = a_e4
        a_tci = a_e4
    else:
        a_e4_0 = a_e4
        a_tci = g[0]
    a_e4_0 -= a_tci
    a_E = a_e4_0 * p[RIVA]
    a_eused -= a_e4_0 * p[RIVA]
    ga[RIVA] += a_e4_0 * (E - eused)
    a_roimp = a_tci + g[1]
    a_sdro = a_tci + g[2]
    a_ssur = a_tci + g[3]
    a_sif = a_tci + g[4]
    a_bfcc = a_tci
    a_bfp = g[5]
    if not bneg:
        a_bfcc += g[6]
        a_bfp -= g[6]
    a_tbf = g[7]
    a_bfcc -= g[7]
    a_tbf += a_bfcc * wside
    ga[SIDE] -= a_bfcc * tbf * wside * wside
    a_spbf = a_bfp * parea / side1
    g_parea += a_bfp * spbf / side1
    ga[SIDE] -= a_bfp * bfp / side1
    a_sbf = a_tbf * parea
    g_parea += a_tbf * (spbf + sbs)
    a_sintf = a_sif * parea
    g_parea += a_sif * sintf
    a_sperc = g[10] * parea
    g_parea += g[10] * sperc
    ga[ADIMP] += g_adimp - g_parea
    ga[PCTIM] -= g_parea
    return (a_ut, a_uf, a_lt, a_ls, a_lp, a_ad, a_eused, a_e5, a_roimp, a_sdro, a_ssur, a_sintf,
            a_sbf, a_spbf, a_sperc, a_E)  # fmt: skip


@_jit
def _inc_vjp(uf0, lt0, ls0, lp0, ad0, ut, pinc, duz, dlzp, dlzs, p, ga,
             a_uf, a_lt, a_ls, a_lp, a_ad, a_bp, a_bs, a_perc, a_intf, a_ssur, a_sdro):  # fmt: skip
    """Reverse of :func:`_inc` at the increment start ``(uf0 … ad0)``: given the adjoints of
    its outputs, returns those of (uf0, lt0, ls0, lp0, ad0, ut, pinc, duz, dlzp, dlzs) and ADDS
    the parameter adjoints into ``ga``."""
    uzfwm = p[UZFWM]
    lztwm = p[LZTWM]
    lzfsm = p[LZFSM]
    lzfpm = p[LZFPM]
    pfree = p[PFREE]
    adimp = p[ADIMP]
    parea = 1.0 - adimp - p[PCTIM]
    # ---- values and branches of the increment (its one definition)
    _, lin = _inc_lin(uf0, lt0, ls0, lp0, ad0, ut, pinc, duz, dlzp, dlzs, p)
    (r, rneg, addro0, lp1, ls1, zp, zs, dry, lzm, percm, q, L, defr, dpos, dp, gg, cap, uf1,
     over, perc, tov, percf, fracp, hpl, u, den, fr0, fcap, so, po, sov, sur, ra, adsur, ad1,
     admax) = lin  # fmt: skip
    # ---- reverse of the ADIMP balance
    a_addro = a_sdro * adimp
    g_adimp = 0.0
    g_parea = 0.0
    g_uzfwm = 0.0
    g_lztwm = 0.0
    g_lzfsm = 0.0
    g_lzfpm = 0.0
    g_lzm = 0.0
    a_pinc = 0.0
    a_ut = 0.0
    a_duz = 0.0
    a_dlzp = 0.0
    a_dlzs = 0.0
    a_uf0 = 0.0
    a_lt0 = 0.0
    a_ls1 = 0.0
    a_lp1 = 0.0
    g_admax = 0.0
    a_ad1 = a_ad
    if ad1 > admax:
        g_admax += a_ad - a_addro
        a_ad1 = a_addro
    g_adimp += a_sdro * (addro0 + (ad1 - admax if ad1 > admax else 0.0))
    a_addro0 = a_addro
    # ad1 = ad0 + pinc - addro0 - adsur
    a_ad0 = a_ad1
    a_pinc += a_ad1
    a_addro0 -= a_ad1
    a_adsur = -a_ad1
    if not dry:
        # ssur = sur·parea + adsur·adimp (zero unless sov)
        if sov:
            a_sur = a_ssur * parea
            g_parea += a_ssur * sur
            a_adsur += a_ssur * adimp
            g_adimp += a_ssur * adsur
            a_sur += a_adsur * (1.0 - ra)
            a_ra = -a_adsur * sur
            a_addro0 += a_ra / pinc
            a_pinc -= a_ra * ra / pinc
            g_uzfwm += a_uf
            a_pinc += a_sur
            a_uf2 = a_sur
            g_uzfwm -= a_sur
        else:
            a_uf2 = a_uf
            a_pinc += a_uf
        # lzfpc overflow to lztwc
        a_lt1 = a_lt
        if po:
            a_lp2 = a_lt
            g_lzfpm += a_lp - a_lt
        else:
            a_lp2 = a_lp
        a_lp1 += a_lp2
        a_percf = a_lp2
        a_percs = -a_lp2
        if so:
            a_percs0 = a_percs
            a_ls2 = -a_percs
            g_lzfsm += a_percs + a_ls
        else:
            a_percs0 = a_percs
            a_ls2 = a_ls
        a_ls1 += a_ls2
        a_percs0 += a_ls2
        # percs0 = percf − percf·fracp
        a_percf += a_percs0 * (1.0 - fracp)
        a_fracp = -a_percs0 * percf
        if not fcap:
            a_hpl = a_fracp * 2.0 * u / den
            a_u = a_fracp * hpl * 2.0 / den
            a_den = -a_fracp * fr0 / den
            a_u += a_den
            a_v = a_den
            # u = 1 − lp1/lzfpm, v = 1 − ls1/lzfsm
            a_lp1 -= a_u / lzfpm
            g_lzfpm += a_u * lp1 / (lzfpm * lzfpm)
            a_ls1 -= a_v / lzfsm
            g_lzfsm += a_v * ls1 / (lzfsm * lzfsm)
            s2 = (lzfpm + lzfsm) * (lzfpm + lzfsm)
            g_lzfpm += a_hpl * lzfsm / s2
            g_lzfsm -= a_hpl * lzfpm / s2
        # percf = percf0 + perc·pfree
        a_perc = a_perc + a_percf * pfree
        ga[PFREE] += a_percf * perc
        if tov:
            a_perct = a_percf
            a_lt0 += a_percf
            g_lztwm += a_lt1 - a_percf
        else:
            a_lt0 += a_lt1
            a_perct = a_lt1
        a_perc += a_perct * (1.0 - pfree)
        ga[PFREE] -= a_perct * perc
        # intf = uf1·duz, uf2 = uf1 − intf
        a_it = a_intf - a_uf2
        a_uf1 = a_uf2 + a_it * duz
        a_duz += a_it * uf1
        a_perc1 = a_perc
        if over:
            a_chk = a_uf1 - a_perc
            a_lt0 += a_chk
            a_lp1 += a_chk
            a_ls1 += a_chk
            a_perc1 += a_chk
            g_lzm -= a_chk
        # uf1 = uf0 − perc1
        a_uf0 += a_uf1
        a_perc1 -= a_uf1
        if cap:
            a_uf0 += a_perc1
        else:
            a_g = a_perc1 * percm * q
            a_pq = a_perc1 * gg
            a_percm = a_pq * q
            a_q = a_pq * percm
            a_uf0 += a_q / uzfwm
            g_uzfwm -= a_q * q / uzfwm
            ga[ZPERC] += a_g * dp
            a_dp = a_g * p[ZPERC]
            rexp = p[REXP]
            if dpos:
                a_defr = a_dp * rexp * defr ** (rexp - 1.0)
                ga[REXP] += a_dp * dp * np.log(defr)
                a_L = -a_defr / lzm
                g_lzm += a_defr * L / (lzm * lzm)
                a_lt0 += a_L
                a_lp1 += a_L
                a_ls1 += a_L
            g_lzfpm += a_percm * dlzp
            a_dlzp += a_percm * lzfpm
            g_lzfsm += a_percm * dlzs
            a_dlzs += a_percm * lzfsm
    else:
        a_uf0 += a_uf
        a_pinc += a_uf
        a_lt0 += a_lt
        a_ls1 += a_ls
        a_lp1 += a_lp
    # drains
    if zs:
        a_ls0 = a_bs
    else:
        a_ls0 = a_bs * dlzs + a_ls1 * (1.0 - dlzs)
        a_dlzs += (a_bs - a_ls1) * ls0
    if zp:
        a_lp0 = a_bp
    else:
        a_lp0 = a_bp * dlzp + a_lp1 * (1.0 - dlzp)
        a_dlzp += (a_bp - a_lp1) * lp0
    # addro0 = pinc·r²
    a_pinc += a_addro0 * (r * r)
    if not rneg:
        a_r = a_addro0 * 2.0 * pinc * r
        a_ad0 += a_r / lztwm
        a_ut -= a_r / lztwm
        g_lztwm -= a_r * r / lztwm
    # parameter adjoints
    g_lztwm += g_lzm + g_admax
    g_lzfpm += g_lzm
    g_lzfsm += g_lzm
    ga[UZTWM] += g_admax
    ga[UZFWM] += g_uzfwm
    ga[LZTWM] += g_lztwm
    ga[LZFSM] += g_lzfsm
    ga[LZFPM] += g_lzfpm
    ga[ADIMP] += g_adimp - g_parea
    ga[PCTIM] -= g_parea
    return a_uf0, a_lt0, a_ls0, a_lp0, a_ad0, a_ut, a_pinc, a_duz, a_dlzp, a_dlzs


@_jit
def _pre_vjp(ut0, uf0, lt0, ls0, lp0, ad0, P, E, p, ga, a_ut, a_uf, a_lt, a_ls, a_lp, a_ad,
             a_e1, a_e2, a_e3, a_e5, a_roimp, a_pinc, a_duz, a_dlzp, a_dlzs):  # fmt: skip
    """Reverse of :func:`_pre` at the day start: returns the adjoints of (ut0, uf0, lt0, ls0,
    lp0, ad0, P, E) and ADDS the parameter adjoints into ``ga``."""
    uztwm = p[UZTWM]
    uzfwm = p[UZFWM]
    lztwm = p[LZTWM]
    lzfsm = p[LZFSM]
    lzfpm = p[LZFPM]
    adimp = p[ADIMP]
    # ---- values and branches of phases A–D (their one definition)
    _, lin = _pre_lin(ut0, uf0, lt0, ls0, lp0, ad0, P, E, p)
    (e1_0, a1, a1a, tr, uzrat, red, e2, w, e3_0, bneg, ratlzt, ratlz, dd, rs, neg2, X, e5c,
     cneg, dneg, ninc, dinc, puz, plzp, plzs) = lin  # fmt: skip
    # ---- reverse
    g_uztwm = 0.0
    g_uzfwm = 0.0
    g_lztwm = 0.0
    g_lzfsm = 0.0
    g_lzfpm = 0.0
    g_w = 0.0
    a_P = a_roimp * p[PCTIM]
    ga[PCTIM] += a_roimp * P
    a_E = 0.0
    ga[UZK] += a_duz * dinc * puz
    ga[LZPK] += a_dlzp * dinc * plzp
    ga[LZSK] += a_dlzs * dinc * plzs
    a_twx = a_pinc / ninc
    # ad = ad_c + P − twx
    a_adc = a_ad
    a_P += a_ad
    a_twx -= a_ad
    if dneg:
        a_utc = a_ut
        a_P += a_ut
    else:
        g_uztwm += a_ut - a_twx
        a_P += a_twx
        a_utc = a_twx
    # (C) e5 = e5c·adimp
    ga[ADIMP] += a_e5 * e5c
    a_e5c = a_e5 * adimp
    if cneg:
        a_e5_0 = a_e5c
        a_ad1pre = a_e5c
    else:
        a_e5_0 = a_e5c
        a_ad1pre = a_adc
    a_ad0 = a_ad1pre
    a_e5_0 -= a_ad1pre
    a_e1 += a_e5_0
    a_red = a_e5_0 * X / w
    a_e2 += a_e5_0 * X / w
    a_X = a_e5_0 * (red + e2) / w
    g_w -= a_e5_0 * (red + e2) * X / (w * w)
    a_ad0 += a_X
    a_e1 -= a_X
    a_utc -= a_X
    # (B)
    if rs:
        if neg2:
            a_lp0 = a_lp
            a_lsr = a_lp
        else:
            a_lp0 = a_lp
            a_lsr = a_ls
        a_ls0 = a_lsr
        a_dl = a_lt - a_lsr
        a_lt1 = a_lt
        a_ratlz = a_dl * lztwm
        a_ratlzt = -a_dl * lztwm
        g_lztwm += a_dl * (ratlz - ratlzt)
    else:
        a_lt1 = a_lt
        a_ls0 = a_ls
        a_lp0 = a_lp
        a_ratlz = 0.0
        a_ratlzt = 0.0
    a_lt1 += a_ratlzt / lztwm
    g_lztwm -= a_ratlzt * ratlzt / lztwm
    a_num = a_ratlz / dd
    a_dd = -a_ratlz * ratlz / dd
    a_lt1 += a_num
    a_lp0 += a_num
    a_ls0 += a_num
    a_saved = -a_num - a_dd
    g_lztwm += a_dd
    g_lzfpm += a_dd + a_saved * p[RSERV]
    g_lzfsm += a_dd + a_saved * p[RSERV]
    ga[RSERV] += a_saved * (lzfpm + lzfsm)
    if bneg:
        a_e3_0 = a_e3
        a_lt1pre = a_e3
    else:
        a_e3_0 = a_e3
        a_lt1pre = a_lt1
    a_lt0 = a_lt1pre
    a_e3_0 -= a_lt1pre
    a_red += a_e3_0 * lt0 / w
    a_lt0 += a_e3_0 * red / w
    g_w -= a_e3_0 * e3_0 / w
    # (A′) transfer
    if tr:
        a_uzrat = a_utc * uztwm + a_uf * uzfwm
        g_uztwm += a_utc * uzrat
        g_uzfwm += a_uf * uzrat
        uu = uztwm + uzfwm
        a_uta = a_uzrat / uu
        a_ufa = a_uzrat / uu
        g_u = -a_uzrat * uzrat / uu
        g_uztwm += g_u
        g_uzfwm += g_u
    else:
        a_uta = a_utc
        a_ufa = a_uf
    # (A)
    a_uf0 = 0.0
    if a1:
        if a1a:
            a_red1 = a_red
            a_uf0 = a_e2 - a_red
        else:
            a_e2t = a_e2 - a_ufa
            a_uf0 = a_ufa
            a_red1 = a_e2t
        a_E += a_red1
        a_e1 -= a_red1
        a_e1_0 = a_e1
        a_ut1pre = a_e1
        a_ut0 = a_ut1pre
        a_e1_0 -= a_ut1pre
    else:
        a_uf0 = a_ufa
        a_E += a_red
        a_e1_0 = a_e1 - a_red
        a_ut0 = a_uta
        a_e1_0 -= a_uta
    a_E += a_e1_0 * ut0 / uztwm
    a_ut0 += a_e1_0 * E / uztwm
    g_uztwm -= a_e1_0 * e1_0 / uztwm
    ga[UZTWM] += g_uztwm + g_w
    ga[UZFWM] += g_uzfwm
    ga[LZTWM] += g_lztwm + g_w
    ga[LZFSM] += g_lzfsm
    ga[LZFPM] += g_lzfpm
    return a_ut0, a_uf0, a_lt0, a_ls0, a_lp0, a_ad0, a_P, a_E


# ---------------------------------------------------------------------------- kernels
_kjit = njit(fastmath=False, error_model="numpy", nogil=True, kernel="SAC-SMA")


@_kjit
def _forward_kernel(n0, n1, prc, pet, prm, pdyn, dyn_idx, s0, out, s_fin, tape):
    """Forward over the cells of nodes ``n0 … n1−1``; ``tape`` ``[N, T, m, 6]`` (or empty):
    the stores at the start of every day.  The parameters are ``prm`` ``[N, m, K]``, but those
    of ``dyn_idx`` ``[D]``, which are ``pdyn`` ``[D, N, T, m]`` (day by day)."""
    n_steps = prc.shape[1]
    m = prm.shape[1]
    inv_m = 1.0 / m
    nd = dyn_idx.shape[0]
    want_tape = tape.shape[0] > 0
    acc = np.empty(NOUT)
    st = np.empty((m, NS))
    pl = np.empty((m, K))
    for n in range(n0, n1):
        for j in range(m):
            for k in range(NS):
                st[j, k] = s0[k, n, j]
            for k in range(K):
                pl[j, k] = prm[n, j, k]
        for t in range(n_steps):
            for i in range(NOUT):
                acc[i] = 0.0
            P = prc[n, t]
            E = pet[n, t]
            for j in range(m):
                p = pl[j]
                for d in range(nd):
                    p[dyn_idx[d]] = pdyn[d, n, t, j]
                if want_tape:
                    for k in range(NS):
                        tape[n, t, j, k] = st[j, k]
                ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, ninc, pinc, duz, dlzp, dlzs = _pre(
                    st[j, 0], st[j, 1], st[j, 2], st[j, 3], st[j, 4], st[j, 5], P, E, p
                )
                spbf = 0.0
                sbs = 0.0
                sperc = 0.0
                sintf = 0.0
                ssur = 0.0
                sdro = 0.0
                for _ in range(ninc):
                    uf, lt, ls, lp, ad, bp, bs, pc, it, su, dr = _inc(
                        uf, lt, ls, lp, ad, ut, pinc, duz, dlzp, dlzs, p
                    )
                    spbf += bp
                    sbs += bs
                    sperc += pc
                    sintf += it
                    ssur += su
                    sdro += dr
                outs, _ = _post_lin(ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, spbf, sbs,
                                    sperc, sintf, ssur, sdro, E, p)  # fmt: skip
                tci, sif, bfp, bfs, bfncc, tet, e4, perc, adj, storage, ad = outs
                acc[0] += tci
                acc[1] += roimp
                acc[2] += sdro
                acc[3] += ssur
                acc[4] += sif
                acc[5] += bfp
                acc[6] += bfs
                acc[7] += bfncc
                acc[8] += tet
                acc[9] += e4
                acc[10] += perc
                acc[11] += adj
                acc[12] += storage
                st[j, 0] = ut
                st[j, 1] = uf
                st[j, 2] = lt
                st[j, 3] = ls
                st[j, 4] = lp
                st[j, 5] = ad
                for k in range(NS):
                    acc[OUT_STORES + k] += st[j, k]
            for i in range(NOUT):
                out[i, n, t] = acc[i] * inv_m
        for j in range(m):
            for k in range(NS):
                s_fin[k, n, j] = st[j, k]


@_kjit
def _adjoint_kernel(n0, n1, prc, pet, prm, pdyn, dyn_idx, tape, gout, gidx, gs_fin, gprm, gdyn,
                    gs0, gforce):  # fmt: skip
    """Reverse sweep over the cells of nodes ``n0 … n1−1`` from the tape of daily stores.
    Parameters as :func:`_forward_kernel`; their adjoints go to ``gprm`` ``[N, m, K]`` (summed
    over the days; zero at ``dyn_idx``) and ``gdyn`` ``[D, N, T, m]`` (day by day).  With a
    non-empty ``gforce`` ``[2, N, T]`` the forcing adjoint (summed over components) is written
    there too."""
    n_steps = prc.shape[1]
    m = prm.shape[1]
    inv_m = 1.0 / m
    nd = dyn_idx.shape[0]
    ng = gidx.shape[0]
    want_forcing = gforce.shape[0] > 0
    g = np.zeros(NOUT)
    a_s = np.empty((m, NS))
    ga = np.zeros((m, K))
    pl = np.empty((m, K))
    buf = np.empty((64, 5))
    for n in range(n0, n1):
        for j in range(m):
            for k in range(NS):
                a_s[j, k] = gs_fin[k, n, j]
            for k in range(K):
                ga[j, k] = 0.0
                pl[j, k] = prm[n, j, k]
        for t in range(n_steps - 1, -1, -1):
            for c in range(ng):
                g[gidx[c]] = gout[c, n, t] * inv_m
            P = prc[n, t]
            E = pet[n, t]
            gp = 0.0
            ge = 0.0
            for j in range(m):
                p = pl[j]
                gj = ga[j]
                for d in range(nd):
                    p[dyn_idx[d]] = pdyn[d, n, t, j]
                    gj[dyn_idx[d]] = 0.0
                ut0 = tape[n, t, j, 0]
                uf0 = tape[n, t, j, 1]
                lt0 = tape[n, t, j, 2]
                ls0 = tape[n, t, j, 3]
                lp0 = tape[n, t, j, 4]
                ad0 = tape[n, t, j, 5]
                # ---- the day's increments again, from its start on the tape
                ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, ninc, pinc, duz, dlzp, dlzs = _pre(
                    ut0, uf0, lt0, ls0, lp0, ad0, P, E, p
                )
                if ninc > buf.shape[0]:
                    buf = np.empty((2 * ninc, 5))
                spbf = 0.0
                sbs = 0.0
                sperc = 0.0
                sintf = 0.0
                ssur = 0.0
                sdro = 0.0
                for i in range(ninc):
                    buf[i, 0] = uf
                    buf[i, 1] = lt
                    buf[i, 2] = ls
                    buf[i, 3] = lp
                    buf[i, 4] = ad
                    uf, lt, ls, lp, ad, bp, bs, pc, it, su, dr = _inc(
                        uf, lt, ls, lp, ad, ut, pinc, duz, dlzp, dlzs, p
                    )
                    spbf += bp
                    sbs += bs
                    sperc += pc
                    sintf += it
                    ssur += su
                    sdro += dr
                # ---- reverse of phase F
                (a_ut, a_uf, a_lt, a_ls, a_lp, a_ad, a_eused, a_e5, a_roimp, a_sdro, a_ssur,
                 a_sintf, a_sbf, a_spbf, a_sperc, a_E) = _post_vjp(
                    ut, uf, lt, ls, lp, ad, e1, e2, e3, e5, roimp, spbf, sbs, sperc, sintf, ssur,
                    sdro, E, p, gj, g, a_s[j],
                )  # fmt: skip
                # ---- increments in reverse
                a_pinc = 0.0
                a_duz = 0.0
                a_dlzp = 0.0
                a_dlzs = 0.0
                a_bp = a_sbf + a_spbf
                for i in range(ninc - 1, -1, -1):
                    a_uf, a_lt, a_ls, a_lp, a_ad, d_ut, d_pinc, d_duz, d_dlzp, d_dlzs = _inc_vjp(
                        buf[i, 0], buf[i, 1], buf[i, 2], buf[i, 3], buf[i, 4], ut, pinc, duz,
                        dlzp, dlzs, p, gj, a_uf, a_lt, a_ls, a_lp, a_ad, a_bp, a_sbf, a_sperc,
                        a_sintf, a_ssur, a_sdro,
                    )  # fmt: skip
                    a_ut += d_ut
                    a_pinc += d_pinc
                    a_duz += d_duz
                    a_dlzp += d_dlzp
                    a_dlzs += d_dlzs
                # ---- phases D–A
                a_ut0, a_uf0, a_lt0, a_ls0, a_lp0, a_ad0, a_P, a_E2 = _pre_vjp(
                    ut0, uf0, lt0, ls0, lp0, ad0, P, E, p, gj, a_ut, a_uf, a_lt, a_ls, a_lp,
                    a_ad, a_eused, a_eused, a_eused, a_e5, a_roimp, a_pinc, a_duz, a_dlzp,
                    a_dlzs,
                )  # fmt: skip
                a_s[j, 0] = a_ut0
                a_s[j, 1] = a_uf0
                a_s[j, 2] = a_lt0
                a_s[j, 3] = a_ls0
                a_s[j, 4] = a_lp0
                a_s[j, 5] = a_ad0
                gp += a_P
                ge += a_E + a_E2
                for d in range(nd):
                    gdyn[d, n, t, j] = gj[dyn_idx[d]]
            if want_forcing:
                gforce[0, n, t] = gp
                gforce[1, n, t] = ge
        for j in range(m):
            for k in range(NS):
                gs0[k, n, j] = a_s[j, k]
            for k in range(K):
                gprm[n, j, k] = ga[j, k]
            for d in range(nd):
                gprm[n, j, dyn_idx[d]] = 0.0


# ------------------------------------------------------------------------ torch glue
def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def _from_np(x: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(like.device, like.dtype)


class SACSMAFused(torch.autograd.Function):
    """Fused numba forward + hand-written adjoint (exact reverse mode).

    Inputs: precipitation, PET ``[N, T]``; initial stores ``[6, N, m]``
    (:data:`gnnhydro.runoff.sacsma.SACSMA_STATES`); parameters ``[N, m, 16]``
    (:data:`gnnhydro.runoff.sacsma.PARAM_NAMES`); optionally the dynamic parameters ``pdyn``
    ``[D, N, T, m]`` and their indices ``dyn_idx`` (``D`` ints, among
    :data:`gnnhydro.runoff.sacsma.DYNAMIC_CAPABLE`), whose entries in ``prm`` are not read.
    Outputs: the 19 per-step outputs ``[N, T]`` and the final stores ``[6, N, m]``.  Gradients
    with respect to every tensor input (zero at the dynamic entries of ``prm``); the forward
    keeps a tape of the daily stores (``48·N·T·m`` bytes) when any input needs a gradient.
    """

    @staticmethod
    def forward(ctx, prc, pet, s0, prm, pdyn=None, dyn_idx=()):
        # unused outputs reach the backward as None, not as materialised zero tensors (one
        # [N, T] seed each, read by the adjoint)
        ctx.set_materialize_grads(False)
        n, t = prc.shape
        m = s0.shape[-1]
        ctx.has_dyn = pdyn is not None
        dyn = np.array(dyn_idx, dtype=np.int64).reshape(-1)
        pd = _np(pdyn) if pdyn is not None else np.empty((0, n, t, m))
        if pd.shape != (dyn.shape[0], n, t, m):
            raise ValueError(
                f"SACSMAFused: pdyn has shape {list(pd.shape)}, expected "
                f"{[dyn.shape[0], n, t, m]} (one [N, T, m] per index of dyn_idx)"
            )
        arrays = (_np(prc), _np(pet), _np(prm), pd, dyn)
        out = np.empty((NOUT, n, t))
        s_fin = np.empty((NS, n, m))
        want = any(ctx.needs_input_grad)
        tape = np.empty((n, t, m, NS)) if want else np.empty((0, 0, 0, NS))
        run_chunks(_forward_kernel, n, *arrays, _np(s0), out, s_fin, tape)
        ctx.arrays = arrays
        ctx.tape = tape
        outs = tuple(_from_np(out[i], prc) for i in range(NOUT))
        return (*outs, _from_np(s_fin, prc))

    @staticmethod
    def backward(ctx, *grads):
        if all(g is None for g in grads):  # no output reaches the loss
            return (None,) * len(ctx.needs_input_grad)
        prc, pet, prm, pd, dyn = ctx.arrays
        n, t = prc.shape
        m = prm.shape[1]
        idx = [i for i in range(NOUT) if grads[i] is not None]
        gout = np.empty((len(idx), n, t))
        for c, i in enumerate(idx):
            gout[c] = grads[i].detach().to("cpu", torch.float64).numpy()
        gidx = np.array(idx, dtype=np.int64)
        gs_fin = _np(grads[NOUT]) if grads[NOUT] is not None else np.zeros((NS, n, m))
        gprm = np.zeros((n, m, K))
        gdyn = np.zeros(pd.shape)
        gs0 = np.zeros((NS, n, m))
        want_forcing = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        gforce = np.zeros((2, n, t)) if want_forcing else np.zeros((0, n, t))
        run_chunks(
            _adjoint_kernel, n, prc, pet, prm, pd, dyn, ctx.tape, gout, gidx, gs_fin, gprm, gdyn,
            gs0, gforce,
        )  # fmt: skip
        like = next(g for g in grads if g is not None)
        gf = [_from_np(gforce[i], like) if ctx.needs_input_grad[i] else None for i in range(2)]
        res = (*gf, _from_np(gs0, like), _from_np(gprm, like))
        if ctx.has_dyn:
            res = (*res, _from_np(gdyn, like), None)
        return res


def sacsma_numba_apply(
    prc: Tensor, pet: Tensor, params: Mapping[str, Tensor], states: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Fused SAC-SMA on CPU with the exact adjoint (same outputs as ``sacsma_torch_loop``).

    Shapes:
        prc, pet ``[N, T]``; params ``[N, m]`` each, or ``[N, T, m]`` (dynamic: those of
        :data:`gnnhydro.runoff.sacsma.DYNAMIC_CAPABLE`); states ``{name: [N, m]}``.
    """
    s0 = torch.stack([states[k] for k in SACSMA_STATES])
    dyn = [k for k in PARAM_NAMES if params[k].dim() == 3]
    if not dyn:
        prm = torch.stack([params[k] for k in PARAM_NAMES], dim=-1)
        res = SACSMAFused.apply(prc, pet, s0, prm)
    else:
        bad = sorted(set(dyn) - set(DYNAMIC_CAPABLE))
        if bad:
            raise ValueError(f"SAC-SMA numba: parameter(s) {bad} must be static [N, m]")
        like = params[dyn[0]]
        zero = like.new_zeros(like.shape[0], like.shape[2])  # not read: the kernel takes pdyn
        prm = torch.stack([zero if k in dyn else params[k] for k in PARAM_NAMES], dim=-1)
        pdyn = torch.stack([params[k] for k in dyn])
        res = SACSMAFused.apply(prc, pet, s0, prm, pdyn, tuple(PARAM_NAMES.index(k) for k in dyn))
    out = dict(zip(SACSMA_OUTPUTS, res[:NOUT], strict=True))
    for k, name in enumerate(SACSMA_STATES):
        out[f"final_{name}"] = res[NOUT][k]
    return out

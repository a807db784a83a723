"""Fused CPU time loops for HBV (numba): forward, hand-written adjoint, forward sensitivities.

The step is exactly :func:`gnnhydro.runoff.hbv.hbv_step` written for one cell (node × component)
in float64, once: :func:`_step_lin` computes the step and the local derivatives its reverse
needs; :func:`_step_fwd` (the step) and :func:`_step_vjp` (its vector-Jacobian product) are
built on it, and its snow part is the shared routine of
:mod:`gnnhydro.runoff.kernels.snow_numba`.  Three kernels, each serial over a range of nodes and sequential in time, run in
parallel over chunks of nodes on a thread pool (:func:`gnnhydro._numba.run_chunks`):

* :func:`_forward_kernel`: states and per-step outputs (means over components).
* :func:`_adjoint_kernel`: reverse mode.  The forward records the states before every step
  and the step's recharge power ``(sm/fc)**beta`` and ``log(sm/fc)`` (``[N, m, T, 7]`` in the
  forcing's dtype, see :data:`RECORD_TAPE`); the backward sweeps back
  in time with the vector-Jacobian product of the step (:func:`_step_vjp`).  Without the tape it
  re-runs the forward per cell into a local buffer first (memory O(threads · T), one more
  forward pass).
* :func:`_sensitivity_kernel`: forward sensitivities ``S = ∂state/∂(θ, state₀)`` ``[5, K+5]``
  propagated with the states (Vrugt et al., 2026): ``S ← J_s S + J_θ`` with the Jacobian rows
  from the step's VJP; the loss gradient ``Σ_t ḡ_t·∂y_t/∂θ`` is accumulated on the fly, so no
  tape and memory flat in T.

Parameter order (K = 16): beta, fc, k0, k1, k2, lp, perc, uzl, tt, cfmax, cfr, cwh, betaet, c,
rt, ac.  Output order (F = 16): runoff, surface_flow, interflow, baseflow, evapotranspiration,
recharge, excess, tosoil, percolation, capillary_rise, groundwater_exchange, then the 5 states
after the step.  ``area`` ``[N]`` (upstream area, km²) feeds the δHBV 2.0 groundwater exchange.

Compilation: the primitives and the step (:func:`_step_lin`, :func:`_step_fwd`, :func:`_step_vjp`) are typed and
lowered once (float64) and inlined by LLVM into every kernel and dtype, and the kernels compile
without numba's parallel pipeline; the kernels are compiled lazily for the forcing's dtype only,
and cached on disk (:func:`gnnhydro._numba.cache_dir`).  Numba-IR inlining instead
(``inline="always"``, ``GNNHYDRO_NUMBA_INLINE=numba``) re-types and re-lowers the step inside
every kernel and dtype.  Measured 2026-12-01 on 2 cores (``python -m gnnhydro.bench.compile
--inline both --timeout 900``: fresh processes, an empty cache per mode; tiny HBV float32 and
float64, GR4J and SAC-SMA float32 forward and backward, Muskingum with gradients):

====================  ===========  ====================
inlining              LLVM         numba IR
====================  ===========  ====================
cold, whole workload  39.6 s       92.5 s (2.3×)
cold, HBV f32 + f64   7.3 + 3.1 s  30.1 + 30.3 s (5.8×)
cold, GR4J f32        11.8 s       10.7 s
cold, SAC-SMA f32     7.3 s        11.0 s
warm, whole workload  7.4 s        7.9 s
====================  ===========  ====================

One run of each (GR4J and SAC-SMA compute in float64 whatever the input).  The earlier ~3.5 min
(not re-measured) was numba-IR inlining into the former ``prange`` kernels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from gnnhydro._numba import njit, run_chunks
from gnnhydro.runoff.hbv_layout import (
    HBV_OUTPUTS,
    HBV_STATES,
    KERNEL_PARAMS,
    NF,
    NOUT,
    NS,
    HBVOptions,
)
from gnnhydro.runoff.kernels.primitives import min_d as _min
from gnnhydro.runoff.kernels.primitives import relu_d as _relu
from gnnhydro.runoff.kernels.snow_numba import snow_lin, snow_reverse

__all__ = [
    "hbv_numba_apply",
    "hbv_sensitivity_apply",
    "HBVFused",
    "HBVSensitivity",
    "release_tape_buffers",
]

K = len(KERNEL_PARAMS)
(_BETA, _FC, _K0, _K1, _K2, _LP, _PERC, _UZL, _TT, _CFMAX, _CFR, _CWH, _BETAET, _C, _RT,
 _AC) = range(K)  # fmt: skip

# Primitives and the step: each compiled once (float64) and inlined by LLVM (``forceinline``:
# ``alwaysinline``), not in numba's IR (``inline="always"``, ``GNNHYDRO_NUMBA_INLINE=numba``,
# re-types and re-lowers the whole step inside every kernel and dtype: 5.8× the HBV compile time,
# see the module docstring).  ``error_model="numpy"`` (no division-by-zero checks) is what the
# former ``prange`` bodies were compiled with.
_jit = njit(fastmath=False, error_model="numpy", forceinline=True)
#: positions of the recharge curve's power and of log(sm/fc) in :func:`_step_lin`'s ``lin``
_LPW, _LLX = 35, 36
#: values per step and cell on the adjoint's tape: the states before the step, then those two
#: (so the reverse needs no ``log``/``exp``: 0.08 of its 0.30 s at 1200 × 730 × nmul 4)
NTAPE = NS + 2
#: ``rec`` of :func:`_step_fwd` as typed booleans: a literal ``True`` would compile the step a
#: second time (numba specialises on ``Literal[bool]``)
_EVERY_STEP = np.bool_(True)
_DRY_SHORTCUT = np.bool_(False)


# ------------------------------------------------------------------ primitives (value, derivs)
@_jit
def _clip1(x, eps):
    if eps == 0.0:
        if x < 0.0:
            return 0.0, 0.0
        if x > 1.0:
            return 1.0, 0.0
        return x, 1.0
    r, dr = _relu(x - 1.0, eps)
    return x - r, 1.0 - dr


@_jit
def _floor(x, nz):
    if x >= nz:
        return x, 1.0
    return nz, 0.0


@_jit
def _powd_given(x, b, v, lx):
    """x**b for x ≥ 0 with d/dx and d/db (0 where x ≤ 0), from its value ``v`` and
    ``lx = log(x)`` (computed by :func:`_powd`, or read from the tape)."""
    if x > 0.0:
        return v, b * v / x, v * lx
    return 0.0, 0.0, 0.0


@_jit
def _powd(x, b):
    """:func:`_powd_given` computing ``x**b`` and ``log(x)`` (0 where x ≤ 0), which it returns
    too."""
    lx = np.log(x) if x > 0.0 else 0.0
    v, dv_dx, dv_db = _powd_given(x, b, np.exp(b * lx) if x > 0.0 else 0.0, lx)
    return v, dv_dx, dv_db, lx


@_jit
def _gwphi(area, ac):
    """Exchange factor φ(A) of δHBV 2.0 and dφ/dAC (see :mod:`gnnhydro.runoff.hbv`)."""
    if area < 2500.0:
        x = (area - ac) / 1000.0
        if x < -1.0:
            return -1.0, 0.0
        if x > 1.0:
            return 1.0, 0.0
        return x, -1.0 / 1000.0
    x = (area - 2500.0) / 50.0
    if x > 10.0:
        x = 10.0
    return np.exp(-x), 0.0


# ------------------------------------------------------------------------------ the step
@_jit
def _step_lin(
    sp0, mw0, sm0, suz0, slz0, pr, ta, pe, p, eps, nz, betaet, cap, gx, area, derivs, pw_in, lx_in
):  # fmt: skip
    """One step for one cell and the local derivatives of its reverse: the one definition of
    the HBV step in numba (:func:`_step_fwd` and :func:`_step_vjp` are built on it).

    Returns ``(states, fluxes, lin, snow)``: the 5 states after the step, the NF = 11 fluxes,
    the intermediates and local derivatives the reverse reads (the recharge curve's power
    ``(sm/fc)**beta`` and ``log(sm/fc)`` last), and the snow routine's
    :func:`~gnnhydro.runoff.kernels.snow_numba.snow_lin` tuple.  With ``derivs`` false dry steps
    skip that power (the plain forward); ``pw_in ≥ 0`` gives it, with ``lx_in``, from the tape
    instead of ``log`` and ``exp``.  Derivatives the caller does not read are dead code after
    inlining.
    """
    sn = snow_lin(sp0, mw0, pr, ta, p[_TT], p[_CFMAX], p[_CFR], p[_CWH], eps)
    rain = sn[2]
    tos = sn[3]
    inflow = rain + tos
    x = sm0 / p[_FC]
    w = 0.0
    dw = 0.0
    dpw_x = 0.0
    dpw_b = 0.0
    pw = 0.0
    lx = 0.0
    if pw_in >= 0.0:
        lx = lx_in
        pw, dpw_x, dpw_b = _powd_given(x, p[_BETA], pw_in, lx_in)
        w, dw = _clip1(pw, eps)
    elif inflow != 0.0 or derivs:  # dry steps: recharge is 0 whatever the wetness
        pw, dpw_x, dpw_b, lx = _powd(x, p[_BETA])
        w, dw = _clip1(pw, eps)
    rech = inflow * w
    sm1 = sm0 + inflow - rech
    exc, dexc = _relu(sm1 - p[_FC], eps)
    sm2 = sm1 - exc
    lpfc = p[_LP] * p[_FC]
    y = sm2 / lpfc
    ef0, def0 = _clip1(y, eps)
    ef = ef0
    def_e0 = 1.0
    def_b = 0.0
    if betaet:
        ef, def_e0, def_b, _ = _powd(ef0, p[_BETAET])
    et, det_sm, det_pa = _min(sm2, pe * ef, eps)
    sm3, dsm3 = _floor(sm2 - et, nz)
    sm4 = sm3
    cr = 0.0
    cw = 0.0
    dcw = 0.0
    dc_slz = 0.0
    dc_pc = 0.0
    dsm4 = 1.0
    dslz1 = 1.0
    slz1 = slz0
    if cap:
        cw, dcw = _clip1(sm3 / p[_FC], eps)
        cr, dc_slz, dc_pc = _min(slz0, p[_C] * slz0 * (1.0 - cw), eps)
        sm4, dsm4 = _floor(sm3 + cr, nz)
        slz1, dslz1 = _floor(slz0 - cr, nz)
    suz1 = suz0 + rech + exc
    perc, dp_suz, dp_perc = _min(suz1, p[_PERC], eps)
    suz2 = suz1 - perc
    slz2 = slz1 + perc
    rq, drq = _relu(suz2 - p[_UZL], eps)
    q0 = p[_K0] * rq
    suz3 = suz2 - q0
    q1 = p[_K1] * suz3
    suz4 = suz3 - q1
    ex = 0.0
    slz2b = slz2
    phi = 0.0
    dphi = 0.0
    dgain = 0.0
    ddem = 0.0
    dl_slz = 0.0
    dl_dem = 0.0
    if gx:
        phi, dphi = _gwphi(area, p[_AC])
        lf = p[_RT] * phi
        gain, dgain = _relu(lf, 0.0)
        dem, ddem = _relu(-lf, 0.0)
        loss, dl_slz, dl_dem = _min(slz2, dem, eps)
        ex = gain - loss
        slz2b = slz2 + ex
    q2 = p[_K2] * slz2b
    states = (sn[0], sn[1], sm4, suz4, slz2b - q2)
    fluxes = (q0 + q1 + q2, q0, q1, q2, et, rech, exc, tos, perc, cr, ex)
    lin = (x, w, dw, dpw_x, dpw_b, inflow, dexc, lpfc, y, def0, ef, def_e0, def_b, det_sm,
           det_pa, sm3, dsm3, cw, dcw, dc_slz, dc_pc, dsm4, dslz1, dp_suz, dp_perc, rq, drq,
           suz3, slz2b, phi, dphi, dgain, ddem, dl_slz, dl_dem, pw, lx)  # fmt: skip
    return states, fluxes, lin, sn


@_jit
def _step_fwd(s, pr, ta, pe, p, eps, nz, betaet, cap, gx, area, fl, rec):
    """Advance the 5 states ``s`` in place; write the NF = 11 fluxes into ``fl``.  Returns the
    recharge curve's power and ``log(sm/fc)`` (computed on every step with ``rec``, for the
    tape; dry steps skip them otherwise)."""
    states, fluxes, lin, _ = _step_lin(
        s[0], s[1], s[2], s[3], s[4], pr, ta, pe, p, eps, nz, betaet, cap, gx, area, rec, -1.0,
        0.0,
    )  # fmt: skip
    for i in range(NS):
        s[i] = states[i]
    for i in range(NF):
        fl[i] = fluxes[i]
    return lin[_LPW], lin[_LLX]


@_jit
def _step_vjp(s, pr, ta, pe, p, eps, nz, betaet, cap, gx, area, a_out, g, a_in, a_p, a_f):
    """Vector-Jacobian product of one step.

    ``s``: states before the step (``NS`` values, or ``NS + 2`` with the recharge curve's power
    and ``log(sm/fc)`` of the step from the tape); ``a_out``: adjoint of the states after it;
    ``g``: adjoint of
    the NF = 11 fluxes.  Writes the adjoint of the states before the step into ``a_in`` and of the
    step's forcing (precipitation, temperature, PET) into ``a_f``, and ADDS the parameter
    adjoint into ``a_p``.  The intermediates come from :func:`_step_lin` (no copy of the
    forward here).
    """
    slz0 = s[4]
    pw_in = np.float64(s[NS]) if s.shape[0] > NS else -1.0
    lx_in = np.float64(s[NS + 1]) if s.shape[0] > NS else 0.0
    _, _, lin, sn = _step_lin(
        s[0], s[1], s[2], s[3], s[4], pr, ta, pe, p, eps, nz, betaet, cap, gx, area, True, pw_in,
        lx_in,
    )  # fmt: skip
    (x, w, dw, dpw_x, dpw_b, inflow, dexc, lpfc, y, def0, ef, def_e0, def_b, det_sm, det_pa,
     sm3, dsm3, cw, dcw, dc_slz, dc_pc, dsm4, dslz1, dp_suz, dp_perc, rq, drq, suz3, slz2b,
     phi, dphi, dgain, ddem, dl_slz, dl_dem, _, _) = lin  # fmt: skip
    # ---- reverse
    a_sp3 = a_out[0]
    a_mw3 = a_out[1]
    a_sm4 = a_out[2]
    a_suz4 = a_out[3]
    a_slz3 = a_out[4]
    a_q0 = g[1] + g[0]
    a_q1 = g[2] + g[0]
    a_q2 = g[3] + g[0] - a_slz3
    a_slz2 = a_slz3 + a_q2 * p[_K2]
    a_p[_K2] += a_q2 * slz2b
    if gx:
        a_ex = g[10] + a_slz2
        a_dem = -a_ex * dl_dem
        a_lf = a_ex * dgain - a_dem * ddem
        a_slz2 = a_slz2 - a_ex * dl_slz
        a_p[_RT] += a_lf * phi
        a_p[_AC] += a_lf * p[_RT] * dphi
    a_q1 = a_q1 - a_suz4
    a_suz3 = a_suz4 + a_q1 * p[_K1]
    a_p[_K1] += a_q1 * suz3
    a_q0 = a_q0 - a_suz3
    a_p[_K0] += a_q0 * rq
    a_xq = a_q0 * p[_K0] * drq
    a_suz2 = a_suz3 + a_xq
    a_p[_UZL] -= a_xq
    a_perc = g[8] - a_suz2 + a_slz2
    a_suz1 = a_suz2 + a_perc * dp_suz
    a_p[_PERC] += a_perc * dp_perc
    a_slz1 = a_slz2
    a_rech = g[5] + a_suz1
    a_exc = g[6] + a_suz1
    if cap:
        a_sm3 = a_sm4 * dsm4
        a_cr = g[9] + a_sm4 * dsm4 - a_slz1 * dslz1
        a_slz0 = a_slz1 * dslz1 + a_cr * dc_slz
        a_pc = a_cr * dc_pc
        a_p[_C] += a_pc * slz0 * (1.0 - cw)
        a_slz0 += a_pc * p[_C] * (1.0 - cw)
        a_cw = -a_pc * p[_C] * slz0 * dcw
        a_sm3 += a_cw / p[_FC]
        a_p[_FC] -= a_cw * sm3 / (p[_FC] * p[_FC])
    else:
        a_sm3 = a_sm4
        a_slz0 = a_slz1
    a_r = a_sm3 * dsm3
    a_et = g[4] - a_r
    a_sm2 = a_r + a_et * det_sm
    a_f[2] = a_et * det_pa * ef  # ET demand = PET · ef
    a_ef = a_et * det_pa * pe
    if betaet:
        a_p[_BETAET] += a_ef * def_b
        a_ef = a_ef * def_e0
    a_y = a_ef * def0
    a_sm2 += a_y / lpfc
    a_p[_LP] -= a_y * y / p[_LP]
    a_p[_FC] -= a_y * y / p[_FC]
    a_exc = a_exc - a_sm2
    a_xe = a_exc * dexc
    a_sm1 = a_sm2 + a_xe
    a_p[_FC] -= a_xe
    a_rech = a_rech - a_sm1
    a_sm0 = a_sm1
    a_inflow = a_sm1 + a_rech * w
    a_pw = a_rech * inflow * dw
    a_x = a_pw * dpw_x
    a_p[_BETA] += a_pw * dpw_b
    a_sm0 += a_x / p[_FC]
    a_p[_FC] -= a_x * x / p[_FC]
    a_sp1, a_mw1, a_prc, a_tmp, a_tt, a_cfmax, a_cfr, a_cwh = snow_reverse(
        sn, pr, p[_CFMAX], p[_CFR], p[_CWH], a_sp3, a_mw3, a_inflow, g[7] + a_inflow
    )
    a_f[0] = a_prc
    a_f[1] = a_tmp
    a_p[_TT] += a_tt
    a_p[_CFMAX] += a_cfmax
    a_p[_CFR] += a_cfr
    a_p[_CWH] += a_cwh
    a_in[0] = a_sp1
    a_in[1] = a_mw1
    a_in[2] = a_sm0
    a_in[3] = a_suz1
    a_in[4] = a_slz0


# ---------------------------------------------------------------------------- kernels
# serial over nodes ``n0 <= n < n1`` without the GIL (:func:`run_chunks` runs chunks of nodes in
# parallel): numba's parallel pipeline (``parallel=True``, ``prange``) cost most of the compile time
_kjit = njit(fastmath=False, error_model="numpy", nogil=True, kernel="HBV")


@_kjit
def _forward_kernel(
    n0, n1, prc, tmp, pet, area, pstat, pdyn, dyn_idx, init, eps, nz, betaet, cap, gx, out,
    final, traj,
):  # fmt: skip
    """Forward over the cells of nodes ``n0 … n1−1``; with ``traj`` ``[N, m, T, NTAPE]`` non-empty
    it also records the states before every step and the step's recharge power and log wetness
    (the tape of the adjoint)."""
    n_steps = prc.shape[1]
    m = pstat.shape[1]
    inv_m = 1.0 / m
    nd = dyn_idx.shape[0]
    rec = traj.shape[0] > 0
    for n in range(n0, n1):
        s = np.empty((m, NS))
        fl = np.empty(NF)
        acc = np.empty(NOUT)
        p = np.empty((m, K))
        ar = area[n]
        for j in range(m):
            for k in range(K):
                p[j, k] = pstat[n, j, k]
            for i in range(NS):
                s[j, i] = init[i, n, j]
        for t in range(n_steps):
            for i in range(NOUT):
                acc[i] = 0.0
            pr = np.float64(prc[n, t])
            ta = np.float64(tmp[n, t])
            pe = np.float64(pet[n, t])
            for j in range(m):
                pj = p[j]
                sj = s[j]
                for d in range(nd):
                    pj[dyn_idx[d]] = pdyn[d, n, t, j]
                if rec:
                    for i in range(NS):
                        traj[n, j, t, i] = sj[i]
                pw, lx = _step_fwd(sj, pr, ta, pe, pj, eps, nz, betaet, cap, gx, ar, fl, rec)
                if rec:
                    traj[n, j, t, NS] = pw
                    traj[n, j, t, NS + 1] = lx
                for i in range(NF):
                    acc[i] += fl[i]
                for i in range(NS):
                    acc[NF + i] += sj[i]
            for i in range(NOUT):
                out[i, n, t] = acc[i] * inv_m
        for j in range(m):
            for i in range(NS):
                final[i, n, j] = s[j, i]


@_kjit
def _adjoint_kernel(
    n0, n1, prc, tmp, pet, area, pstat, pdyn, dyn_idx, init, eps, nz, betaet, cap, gx, gout,
    gidx, gfinal, traj, gstat, gdyn, ginit, gforce,
):  # fmt: skip
    """Reverse sweep per node of nodes ``n0 … n1−1``, its ``m`` cells side by side in each step
    (as in the forward: the cells' independent reverse chains overlap in the CPU; one cell after
    the other cost 0.34 s against 0.29 s at 1200 × 730 × nmul 4 on one core, equal gradients).
    With a recorded ``traj`` the states before each step are read from it; otherwise each
    cell's forward is re-run into a local buffer first.  With a non-empty ``gforce``
    ``[3, N, T]`` the forcing adjoint (summed over components) is written there too."""
    n_steps = prc.shape[1]
    m = pstat.shape[1]
    inv_m = 1.0 / m
    nd = dyn_idx.shape[0]
    ng = gidx.shape[0]
    have = traj.shape[0] > 0
    want_forcing = gforce.shape[0] > 0
    for n in range(n0, n1):
        a_f = np.zeros(3)
        buf = np.empty((m, n_steps, NTAPE))
        s = np.empty(NS)
        fl = np.empty(NF)
        p = np.empty((m, K))
        a_p = np.zeros((m, K))
        a_s = np.empty((m, NS))
        a_in = np.empty(NS)
        g = np.zeros(NOUT)
        ar = area[n]
        for j in range(m):
            pj = p[j]
            for k in range(K):
                pj[k] = pstat[n, j, k]
            if have:
                for t in range(n_steps):
                    for i in range(NTAPE):
                        buf[j, t, i] = traj[n, j, t, i]
            else:
                for i in range(NS):
                    s[i] = init[i, n, j]
                for t in range(n_steps):
                    for d in range(nd):
                        pj[dyn_idx[d]] = pdyn[d, n, t, j]
                    for i in range(NS):
                        buf[j, t, i] = s[i]
                    pw, lx = _step_fwd(
                        s, np.float64(prc[n, t]), np.float64(tmp[n, t]), np.float64(pet[n, t]),
                        pj, eps, nz, betaet, cap, gx, ar, fl, _EVERY_STEP,
                    )  # fmt: skip
                    buf[j, t, NS] = pw
                    buf[j, t, NS + 1] = lx
            for i in range(NS):
                a_s[j, i] = gfinal[i, n, j]
        for t in range(n_steps - 1, -1, -1):
            for c in range(ng):
                g[gidx[c]] = gout[c, n, t] * inv_m
            pr = np.float64(prc[n, t])
            ta = np.float64(tmp[n, t])
            pe = np.float64(pet[n, t])
            for j in range(m):
                pj = p[j]
                apj = a_p[j]
                asj = a_s[j]
                for i in range(NS):
                    asj[i] += g[NF + i]
                for d in range(nd):
                    pj[dyn_idx[d]] = pdyn[d, n, t, j]
                    apj[dyn_idx[d]] = 0.0
                _step_vjp(
                    buf[j, t], pr, ta, pe, pj, eps, nz, betaet, cap, gx, ar, asj, g, a_in, apj,
                    a_f,
                )  # fmt: skip
                if want_forcing:
                    for i in range(3):
                        gforce[i, n, t] += a_f[i]
                for d in range(nd):
                    gdyn[d, n, t, j] = apj[dyn_idx[d]]
                for i in range(NS):
                    asj[i] = a_in[i]
        for j in range(m):
            for k in range(K):
                gstat[n, j, k] = a_p[j, k]
            for i in range(NS):
                ginit[i, n, j] = a_s[j, i]


@njit(fastmath=False, error_model="numpy", nogil=True, kernel="HBV sensitivity")
def _sensitivity_kernel(
    n0, n1, prc, tmp, pet, area, pstat, init, eps, nz, betaet, cap, gx, gout, gidx, gfinal,
    gstat, ginit,
):  # fmt: skip
    """Forward sensitivities and the loss gradient per cell of nodes ``n0 … n1−1``."""
    n_steps = prc.shape[1]
    m = pstat.shape[1]
    inv_m = 1.0 / m
    ng = gidx.shape[0]
    nq = K + NS  # parameters, then initial states
    for n in range(n0, n1):
        s = np.empty(NS)
        fl = np.empty(NF)
        p = np.empty(K)
        sens = np.zeros((NS, nq))
        new = np.zeros((NS, nq))
        acc = np.zeros(nq)
        jp = np.zeros(K)
        js = np.empty(NS)
        e = np.zeros(NS)
        g = np.zeros(NOUT)
        g0 = np.zeros(NF)
        a_f = np.zeros(3)  # forcing adjoint: not used here
        ar = area[n]
        for j in range(m):
            for k in range(K):
                p[k] = pstat[n, j, k]
            for i in range(NS):
                s[i] = init[i, n, j]
            sens[:, :] = 0.0
            for i in range(NS):
                sens[i, K + i] = 1.0
            acc[:] = 0.0
            for t in range(n_steps):
                pr = np.float64(prc[n, t])
                ta = np.float64(tmp[n, t])
                pe = np.float64(pet[n, t])
                for c in range(ng):
                    g[gidx[c]] = gout[c, n, t] * inv_m
                # loss contribution of this step's outputs: v_s·S + v_θ
                for i in range(NS):
                    e[i] = g[NF + i]
                for i in range(NF):
                    g0[i] = g[i]
                jp[:] = 0.0
                _step_vjp(s, pr, ta, pe, p, eps, nz, betaet, cap, gx, ar, e, g0,
                          js, jp, a_f)  # fmt: skip
                for q in range(nq):
                    v = 0.0
                    for i in range(NS):
                        v += js[i] * sens[i, q]
                    if q < K:
                        v += jp[q]
                    acc[q] += v
                # S_{t+1} = J_s S_t + J_θ, row by row
                for i in range(NF):
                    g0[i] = 0.0
                for r in range(NS):
                    for i in range(NS):
                        e[i] = 0.0
                    e[r] = 1.0
                    jp[:] = 0.0
                    _step_vjp(s, pr, ta, pe, p, eps, nz, betaet, cap, gx, ar, e,
                              g0, js, jp, a_f)  # fmt: skip
                    for q in range(nq):
                        v = 0.0
                        for i in range(NS):
                            v += js[i] * sens[i, q]
                        if q < K:
                            v += jp[q]
                        new[r, q] = v
                for r in range(NS):
                    for q in range(nq):
                        sens[r, q] = new[r, q]
                _step_fwd(s, pr, ta, pe, p, eps, nz, betaet, cap, gx, ar, fl, _DRY_SHORTCUT)
            for q in range(nq):
                v = acc[q]
                for i in range(NS):
                    v += gfinal[i, n, j] * sens[i, q]
                acc[q] = v
            for k in range(K):
                gstat[n, j, k] = acc[k]
            for i in range(NS):
                ginit[i, n, j] = acc[K + i]


# ------------------------------------------------------------------------ torch glue
def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def _native(x: Tensor) -> np.ndarray:
    """Forcing as float32/float64 numpy without a copy where possible (kernels compute in f64)."""
    x = x.detach().cpu()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float64)
    return np.ascontiguousarray(x.numpy())


def _pack_params(
    params: Mapping[str, Tensor], n: int, m: int, t: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    pstat = np.empty((n, m, K))
    dyn_names = [k for k in KERNEL_PARAMS if k in params and params[k].dim() == 3]
    pdyn = np.empty((len(dyn_names), n, t, m))
    for k, name in enumerate(KERNEL_PARAMS):
        if name not in params:
            pstat[:, :, k] = 1.0 if name == "betaet" else 0.0
        elif params[name].dim() == 3:
            pstat[:, :, k] = 0.0
            pdyn[dyn_names.index(name)] = _np(params[name])
        else:
            pstat[:, :, k] = _np(params[name])
    dyn_idx = np.array([KERNEL_PARAMS.index(k) for k in dyn_names], dtype=np.int64)
    stat_names = [k for k in KERNEL_PARAMS if k in params and params[k].dim() == 2]
    return pstat, pdyn, dyn_idx, stat_names, dyn_names


def _run_forward(prc, tmp, pet, area, pstat, pdyn, dyn_idx, init, options, record=False):
    n, t = prc.shape
    m = pstat.shape[1]
    out = np.empty((NOUT, n, t), dtype=prc.dtype)
    final = np.empty((NS, n, m))
    traj = (
        _take_tape((n, m, t, NTAPE), prc.dtype) if record else np.empty((0, 0, 0, NTAPE), prc.dtype)
    )
    run_chunks(
        _forward_kernel, n, prc, tmp, pet, area, pstat, pdyn, dyn_idx, init, *options.scalars(),
        out, final, traj,
    )  # fmt: skip
    return out, final, traj


#: Whether the forward records, for the adjoint, the states before every step and the step's
#: recharge power ``(sm/fc)**beta`` and ``log(sm/fc)`` (``[N, m, T, NTAPE]`` in the forcing's
#: dtype: float32 inputs give a float32 tape) instead of the backward re-running the forward
#: cell by cell.  Measured on 2 cores, 1200 × 730 × nmul 4, float32: backward 0.45 → 0.39 s
#: (states recorded), equal gradients to 2e-8 relative (exactly equal in float64).  With the
#: power on the tape the reverse computes no ``log``/``exp`` (one core, the kernels alone, best
#: of 7, three alternating runs each: forward 0.13 → 0.15 s, as it then takes the power on dry
#: steps too; adjoint 0.32 → 0.24 s).
RECORD_TAPE = True


_TAPE_POOL: dict[str, np.ndarray] = {}


def _take_tape(shape: tuple, dtype) -> np.ndarray:
    """A tape buffer: a view of the pooled buffer when it is large enough, else a new one.

    Fresh multi-MB buffers cost page faults on first touch (as much as the backward saves), and
    buffers of changing sizes (gauge-basin batches) fragment the heap: the backward hands its
    buffer back, and the next forward takes the leading part of it when it fits.
    """
    size = int(np.prod(shape))
    key = np.dtype(dtype).str
    buf = _TAPE_POOL.pop(key, None)
    if buf is None or buf.size < size:
        buf = None  # the smaller buffer is freed before the larger one is made
        buf = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _give_back_tape(traj: np.ndarray) -> None:
    if traj.size:
        base = traj.base if traj.base is not None else traj.reshape(-1)
        _TAPE_POOL.clear()  # keep at most one buffer alive
        _TAPE_POOL[traj.dtype.str] = base


def release_tape_buffers() -> None:
    """Free the cached tape buffer of the numba adjoint (``N·m·T·5`` floats)."""
    _TAPE_POOL.clear()


def _seeds(grads: tuple, n: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    idx = [i for i, gr in enumerate(grads) if gr is not None]
    gout = np.empty((len(idx), n, t))  # float64: one compiled backward per kernel
    for c, i in enumerate(idx):
        gout[c] = grads[i].detach().cpu().numpy()
    return gout, np.array(idx, dtype=np.int64)


def _prepare(prc, tmp, pet, area, names, init, ptensors):
    n, t = prc.shape
    params = dict(zip(names, ptensors, strict=True))
    m = init.shape[-1]
    pstat, pdyn, dyn_idx, _, _ = _pack_params(params, n, m, t)
    return (_native(prc), _native(tmp), _native(pet), _np(area), pstat, pdyn, dyn_idx, _np(init))


def _wrap_outputs(out: np.ndarray, final: np.ndarray, like: Tensor) -> tuple[Tensor, ...]:
    dt, dev = like.dtype, like.device
    outs = tuple(torch.from_numpy(out[i]).to(dev, dt) for i in range(NOUT))
    return (*outs, torch.from_numpy(final).to(dev, dt))


class HBVFused(torch.autograd.Function):
    """Fused numba forward + hand-written adjoint (exact reverse mode), gradients with respect
    to the parameters, the initial states and the forcing.

    Inputs: forcing ``[N, T]`` ×3, upstream area ``[N]`` (km²), the :class:`HBVOptions`,
    whether the caller runs with autograd enabled, parameter names, initial states ``[5, N, m]``,
    then the parameter tensors.  Outputs: the 16 per-step outputs ``[N, T]`` and the final states
    ``[5, N, m]``.  When gradients are needed and
    :data:`RECORD_TAPE` is set, the forward keeps the states before every step
    (``N·m·T·5`` floats) so that the backward is a single reverse sweep.
    """

    @staticmethod
    def forward(ctx, prc, tmp, pet, area, options, grad_enabled, names, init, *ptensors):
        # unused outputs reach the backward as None, not as materialised zero tensors (one
        # [N, T] seed each, read by the adjoint)
        ctx.set_materialize_grads(False)
        arrays = _prepare(prc, tmp, pet, area, names, init, ptensors)
        # no tape when the caller runs without autograd (inference, a checkpoint's first pass)
        record = (
            RECORD_TAPE
            and grad_enabled
            and (
                init.requires_grad
                or any(p.requires_grad for p in ptensors)
                or any(f.requires_grad for f in (prc, tmp, pet))
            )
        )
        out, final, traj = _run_forward(*arrays, options, record=record)
        ctx.arrays = arrays
        ctx.traj = traj
        ctx.options = options
        ctx.names = names
        return _wrap_outputs(out, final, prc)

    @staticmethod
    def backward(ctx, *grads):
        if all(g is None for g in grads):  # no output reaches the loss
            return (None,) * len(ctx.needs_input_grad)
        prc, tmp, pet, area, pstat, pdyn, dyn_idx, init = ctx.arrays
        prc, tmp, pet = (np.asarray(a, dtype=np.float64) for a in (prc, tmp, pet))
        n, t = prc.shape
        m = pstat.shape[1]
        gout, gidx = _seeds(grads[:NOUT], n, t)
        gfinal = _np(grads[NOUT]) if grads[NOUT] is not None else np.zeros((NS, n, m))
        gstat = np.zeros((n, m, K))
        gdyn = np.zeros_like(pdyn)
        ginit = np.zeros((NS, n, m))
        want_forcing = any(ctx.needs_input_grad[:3])
        gforce = np.zeros((3, n, t)) if want_forcing else np.zeros((0, n, t))
        run_chunks(
            _adjoint_kernel, n, prc, tmp, pet, area, pstat, pdyn, dyn_idx, init,
            *ctx.options.scalars(), gout, gidx, gfinal, ctx.traj, gstat, gdyn, ginit, gforce,
        )  # fmt: skip
        # hand the tape to the next forward; a second backward (retain_graph) re-runs the forward
        _give_back_tape(ctx.traj)
        ctx.traj = np.empty((0, 0, 0, NTAPE), ctx.traj.dtype)
        like = next(g for g in grads if g is not None)
        dt, dev = like.dtype, like.device
        dyn_list = [KERNEL_PARAMS[i] for i in dyn_idx]
        pgrads = []
        for name in ctx.names:
            k = KERNEL_PARAMS.index(name)
            if name in dyn_list:
                arr = gdyn[dyn_list.index(name)]
            else:
                arr = gstat[:, :, k]
            pgrads.append(torch.from_numpy(np.ascontiguousarray(arr)).to(dev, dt))
        ginit_t = torch.from_numpy(ginit).to(dev, dt)
        gf = [
            torch.from_numpy(gforce[i]).to(dev, dt) if ctx.needs_input_grad[i] else None
            for i in range(3)
        ]
        return (*gf, None, None, None, None, ginit_t, *pgrads)


class HBVSensitivity(torch.autograd.Function):
    """Numba forward; backward by forward sensitivities re-propagated with the states.

    Same inputs/outputs as :class:`HBVFused`; static parameters only.  The backward re-runs the
    model with ``S = ∂state/∂(θ, state₀)`` ``[5, K+5]`` per cell and accumulates
    ``Σ_t ḡ_t·dy_t/dθ`` on the fly: no tape, memory independent of T.
    """

    @staticmethod
    def forward(ctx, prc, tmp, pet, area, options, grad_enabled, names, init, *ptensors):
        # unused outputs reach the backward as None, not as materialised zero tensors (one
        # [N, T] seed each, read by the adjoint)
        ctx.set_materialize_grads(False)
        if any(p.dim() == 3 for p in ptensors):
            raise ValueError("sensitivity gradients support static parameters only")
        arrays = _prepare(prc, tmp, pet, area, names, init, ptensors)
        out, final, _ = _run_forward(*arrays, options)
        ctx.arrays = arrays
        ctx.options = options
        ctx.names = names
        return _wrap_outputs(out, final, prc)

    @staticmethod
    def backward(ctx, *grads):
        if all(g is None for g in grads):  # no output reaches the loss
            return (None,) * len(ctx.needs_input_grad)
        prc, tmp, pet, area, pstat, _, _, init = ctx.arrays
        prc, tmp, pet = (np.asarray(a, dtype=np.float64) for a in (prc, tmp, pet))
        n, t = prc.shape
        m = pstat.shape[1]
        gout, gidx = _seeds(grads[:NOUT], n, t)
        gfinal = _np(grads[NOUT]) if grads[NOUT] is not None else np.zeros((NS, n, m))
        gstat = np.zeros((n, m, K))
        ginit = np.zeros((NS, n, m))
        run_chunks(
            _sensitivity_kernel, n, prc, tmp, pet, area, pstat, init, *ctx.options.scalars(),
            gout, gidx, gfinal, gstat, ginit,
        )  # fmt: skip
        like = next(g for g in grads if g is not None)
        dt, dev = like.dtype, like.device
        pgrads = [
            torch.from_numpy(np.ascontiguousarray(gstat[:, :, KERNEL_PARAMS.index(k)])).to(dev, dt)
            for k in ctx.names
        ]
        ginit_t = torch.from_numpy(ginit).to(dev, dt)
        return (None, None, None, None, None, None, None, ginit_t, *pgrads)


def _apply(fn, prc, tmp, pet, params, states, options, area_km2) -> dict[str, Tensor]:
    if not isinstance(options, HBVOptions):
        raise TypeError(f"options must be an HBVOptions, got {type(options).__name__}")
    names = tuple(k for k in KERNEL_PARAMS if k in params)
    init = torch.stack([states[s] for s in HBV_STATES])
    if options.groundwater_exchange and area_km2 is None:
        raise ValueError("groundwater_exchange needs area_km2 (upstream area per node, km²)")
    area = area_km2.detach() if area_km2 is not None else torch.zeros(prc.shape[0])
    grad_enabled = torch.is_grad_enabled()
    res = fn.apply(
        prc, tmp, pet, area, options, grad_enabled, names, init, *(params[k] for k in names)
    )
    out = dict(zip(HBV_OUTPUTS, res[:NOUT], strict=True))
    for i, s in enumerate(HBV_STATES):
        out[f"final_{s}"] = res[NOUT][i]
    return out


def hbv_numba_apply(
    prc: Tensor,
    tmp: Tensor,
    pet: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    *,
    options: HBVOptions,
    area_km2: Tensor | None = None,
) -> dict[str, Tensor]:
    """Fused HBV on CPU with the exact adjoint (same outputs as ``hbv_torch_loop``).

    Shapes:
        prc, tmp, pet ``[N, T]``; params ``[N, m]`` / ``[N, T, m]``; states ``[N, m]``;
        ``area_km2`` ``[N]`` (km², with ``groundwater_exchange``).
    """
    return _apply(HBVFused, prc, tmp, pet, params, states, options, area_km2)


def hbv_sensitivity_apply(
    prc: Tensor,
    tmp: Tensor,
    pet: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    *,
    options: HBVOptions,
    area_km2: Tensor | None = None,
) -> dict[str, Tensor]:
    """Fused HBV on CPU whose backward uses forward sensitivities (memory flat in T); static
    parameters only.  Arguments and shapes as :func:`hbv_numba_apply`."""
    return _apply(HBVSensitivity, prc, tmp, pet, params, states, options, area_km2)

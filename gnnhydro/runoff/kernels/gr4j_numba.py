"""Fused CPU time loop for GR4J (numba): forward and hand-written adjoint (exact reverse mode).

The step is exactly :func:`gnnhydro.runoff.gr4j.gr4j_step` in float64.  Two kernels, each serial
over a range of nodes and sequential in time, run in parallel over chunks of nodes on a thread
pool (:func:`gnnhydro._numba.run_chunks`).  Within a node the ``m`` components advance together:
every operation of the step is a loop over the components on arrays ``[m]`` (unit-hydrograph
contents lag-major ``[L, m]``), free of calls and of branches that depend on the component (the
interception branch depends on the node's forcing only; the ``max(·, 0)`` are selects), so LLVM
vectorises the step across components (SIMD lanes instead of the former latency-bound scalar
chain of divisions, roots and ``tanh``; ``tanh`` is :func:`_tanh`, an ``expm1`` in arithmetic).

* :func:`_forward_kernel`: states and per-step outputs (means over components).
* :func:`_adjoint_kernel`: reverse mode over the tape the forward recorded
  (:data:`RECORD_TAPE`), or, without it, per node it first re-runs the forward into a local
  tape ``[T, NT, m]`` (stores before the step, the UH outputs ``Q9``, ``Q1`` and the step's
  ``tanh`` and outflow factors: memory O(threads · T · m), in cache), then sweeps back in time
  with the vector-Jacobian product of the step.  It returns the gradients with respect to the
  parameters ``x1``–``x3`` (static or per step), the unit-hydrograph ordinates (autograd carries
  them on to ``x4`` through the S-curves of :func:`gnnhydro.runoff.gr4j.gr4j_unit_hydrographs`),
  the initial states and the forcing.

Parameter arrays are ``[N, 1, m]`` (static) or ``[N, T, m]`` (per step).  Output order
(NOUT = 13): the 10 fluxes of :data:`gnnhydro.runoff.gr4j.GR4J_OUTPUTS`, then the production
store, the routing store and the unit-hydrograph contents after the step.  Every array is
float64 (one compiled specialisation; the glue converts), and the kernels are cached on disk
(:func:`gnnhydro._numba.cache_dir`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

import numpy as np
import torch
from torch import Tensor

from gnnhydro._numba import njit, run_chunks
from gnnhydro.runoff.gr4j import (
    DYNAMIC_CAPABLE,
    GR4J_OUTPUTS,
    TANH_CAP,
    UH1_SHARE,
    gr4j_unit_hydrographs,
)

__all__ = ["gr4j_numba_apply", "GR4JFused"]

KERNEL_PARAMS: tuple[str, ...] = DYNAMIC_CAPABLE  # x1, x2, x3 (x4 enters via the ordinates)
K = len(KERNEL_PARAMS)
NF = 10  # fluxes; the 3 storages follow in the output array
NOUT = NF + 3
assert len(GR4J_OUTPUTS) == NOUT
_SHARE1 = UH1_SHARE
_SHARE2 = 1.0 - UH1_SHARE
# local tape of the adjoint, per step and component: S, R before the step, Q9, Q1, tanh of the
# interception branch, the percolation and routing outflow factors w = (1 + z⁴)^(−1/4), P_r
_TS, _TR, _TQ9, _TQ1, _TT, _TWP, _TWR, _TE = range(8)
NT = 8
#: Whether the forward records the adjoint's tape ``[N, T, NT, m]`` (float64) when gradients may
#: be needed, instead of the backward re-running the forward node by node.  Measured with
#: ``gnnhydro bench runoff --model gr4j --repeat 3`` (1000 × 730 × nmul 16, 2 cores): backward
#: 1.26 → 0.44 s, forward+backward 1.81 → 1.07 s (5.5× the best torch loop, was 2.7×), for a
#: 0.75 GB tape (peak RSS 1.46 GB, the loop's 3.3 GB).
RECORD_TAPE = True
#: the grad mode of the caller of :func:`gr4j_numba_apply` (inside ``Function.forward`` it is off)
_GRAD_AT_CALL: ContextVar[bool] = ContextVar("gr4j_grad_at_call", default=True)

_jit = njit(fastmath=False, error_model="numpy", forceinline=True)

# expm1 by Cody–Waite reduction y = k·ln2 + r (|r| ≤ ln2/2) and the Taylor polynomial of
# expm1(r) to r¹³ (truncation < 1e-17 relative): a few ulp, accurate for small y as well
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_C = tuple(1.0 / float(np.prod(np.arange(1, i + 1))) for i in range(2, 14))


@_jit
def _tanh(x):
    """``tanh(x)`` for ``0 ≤ x ≤ 13`` as ``E / (E + 2)``, ``E = expm1(2x)`` (no libm call, so
    it vectorises; within a few ulp of ``np.tanh``)."""
    y = x + x
    k = np.rint(y * _INV_LN2)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = _C[11]
    p = _C[10] + r * p
    p = _C[9] + r * p
    p = _C[8] + r * p
    p = _C[7] + r * p
    p = _C[6] + r * p
    p = _C[5] + r * p
    p = _C[4] + r * p
    p = _C[3] + r * p
    p = _C[2] + r * p
    p = _C[1] + r * p
    p = _C[0] + r * p
    p = r + (r * r) * p  # expm1(r)
    ki = np.int64(k)  # 0 … 38: 2^k exactly, bit by bit
    s = 2.0 if ki & 1 else 1.0
    s *= 4.0 if ki & 2 else 1.0
    s *= 16.0 if ki & 4 else 1.0
    s *= 256.0 if ki & 8 else 1.0
    s *= 65536.0 if ki & 16 else 1.0
    s *= 4294967296.0 if ki & 32 else 1.0
    e = s * p + (s - 1.0)
    return e / (e + 2.0)


@_jit
def _w(z):
    """``(1 + z⁴)^(−1/4)`` (outflow factor of a store at relative filling ``z``)."""
    z2 = z * z
    return 1.0 / np.sqrt(np.sqrt(1.0 + z2 * z2))


@_jit
def _support(o, u0, n, j):
    """Contents of a unit hydrograph that can be non-zero: the last non-zero ordinate's lag,
    or one past the last non-zero initial content, whichever is larger."""
    ne = 0
    for k in range(o.shape[2] - 1, 0, -1):
        if o[n, j, k] != 0.0:
            ne = k
            break
    for k in range(u0.shape[2] - 1, ne - 1, -1):
        if u0[n, j, k] != 0.0:
            ne = k + 1
            break
    return ne


# ---------------------------------------------------------------------------- kernels
_kjit = njit(fastmath=False, error_model="numpy", nogil=True, kernel="GR4J")


@_kjit
def _node_step(wet, pr, pe, S, R, C, u1, u2, o1, o2, ne1, ne2, x1, x2, x3, fl, tape):
    """One step of every component of a node (arrays ``[m]``, UH ``[L, m]``), in place; the
    fluxes go to ``fl`` ``[NOUT, m]``; with ``tape`` ``[NT, m]`` non-empty the adjoint's tape."""
    m = S.shape[0]
    rec = tape.shape[0] > 0
    if wet:
        pn = pr - pe
        for j in range(m):
            a = x1[j]
            inv = 1.0 / a
            s0 = S[j]
            sr = s0 * inv
            tp = _tanh(min(pn * inv, TANH_CAP))
            ps = a * (1.0 - sr * sr) * tp / (1.0 + sr * tp)
            s1 = max(s0 + ps, 0.0)
            w = _w(s1 / (2.25 * a))
            perc = s1 * (1.0 - w)
            S[j] = s1 - perc
            fl[3, j] = pe
            fl[4, j] = pn
            fl[5, j] = ps
            fl[6, j] = perc
            fl[7, j] = perc + pn - ps
            if rec:
                tape[_TS, j] = s0
                tape[_TT, j] = tp
                tape[_TWP, j] = w
                tape[_TE, j] = perc + pn - ps
    else:
        en = pe - pr
        for j in range(m):
            a = x1[j]
            inv = 1.0 / a
            s0 = S[j]
            sr = s0 * inv
            te = _tanh(min(en * inv, TANH_CAP))
            es = s0 * (2.0 - sr) * te / (1.0 + (1.0 - sr) * te)
            s1 = max(s0 - es, 0.0)
            w = _w(s1 / (2.25 * a))
            perc = s1 * (1.0 - w)
            S[j] = s1 - perc
            fl[3, j] = pr + es
            fl[4, j] = 0.0
            fl[5, j] = 0.0
            fl[6, j] = perc
            fl[7, j] = perc
            if rec:
                tape[_TS, j] = s0
                tape[_TT, j] = te
                tape[_TWP, j] = w
                tape[_TE, j] = perc
    # unit hydrographs (lag-major; beyond a component's support contents and ordinates are 0)
    for j in range(m):
        e = fl[7, j]
        fl[0, j] = u1[0, j] + o1[0, j] * (_SHARE1 * e)  # Q9 (held in fl[0] until routing)
        fl[1, j] = u2[0, j] + o2[0, j] * (_SHARE2 * e)  # Q1
    for k in range(ne1 - 1):
        for j in range(m):
            u1[k, j] = u1[k + 1, j] + o1[k + 1, j] * (_SHARE1 * fl[7, j])
    if ne1 > 0:
        for j in range(m):
            u1[ne1 - 1, j] = o1[ne1, j] * (_SHARE1 * fl[7, j])
    for k in range(ne2 - 1):
        for j in range(m):
            u2[k, j] = u2[k + 1, j] + o2[k + 1, j] * (_SHARE2 * fl[7, j])
    if ne2 > 0:
        for j in range(m):
            u2[ne2 - 1, j] = o2[ne2, j] * (_SHARE2 * fl[7, j])
    for j in range(m):
        e = fl[7, j]
        q9 = fl[0, j]
        q1 = fl[1, j]
        C[j] += (_SHARE1 * e - q9) + (_SHARE2 * e - q1)
        r0 = R[j]
        inv = 1.0 / x3[j]
        rr = r0 * inv
        f = x2[j] * (rr * rr * rr * np.sqrt(rr))
        r1 = max(r0 + q9 + f, 0.0)
        w = _w(r1 * inv)
        qr = r1 * (1.0 - w)
        qd = max(q1 + f, 0.0)
        R[j] = r1 - qr
        fl[0, j] = qr + qd
        fl[1, j] = qr
        fl[2, j] = qd
        fl[8, j] = (r1 - r0 - q9) + (qd - q1)
        fl[9, j] = f
        fl[10, j] = S[j]
        fl[11, j] = R[j]
        fl[12, j] = C[j]
        if rec:
            tape[_TR, j] = r0
            tape[_TQ9, j] = q9
            tape[_TQ1, j] = q1
            tape[_TWR, j] = w


@_kjit
def _load_node(n, s0, u10, u20, o1, o2, S, R, C, u1, u2, on1, on2, e1, e2):
    """Initial states, lag-major ordinates and supports of node ``n``; returns the node's
    supports (the largest over its components)."""
    m = S.shape[0]
    ne1 = 0
    ne2 = 0
    for j in range(m):
        S[j] = s0[0, n, j]
        R[j] = s0[1, n, j]
        C[j] = 0.0
        e1[j] = _support(o1, u10, n, j)
        e2[j] = _support(o2, u20, n, j)
        ne1 = max(ne1, e1[j])
        ne2 = max(ne2, e2[j])
        for k in range(u10.shape[2]):
            u1[k, j] = u10[n, j, k]
            C[j] += u1[k, j]
        for k in range(u20.shape[2]):
            u2[k, j] = u20[n, j, k]
            C[j] += u2[k, j]
        for k in range(o1.shape[2]):
            on1[k, j] = o1[n, j, k]
        for k in range(o2.shape[2]):
            on2[k, j] = o2[n, j, k]
    return ne1, ne2


@_kjit
def _forward_kernel(n0, n1, prc, pet, x1, x2, x3, o1, o2, s0, u10, u20, out, s_fin, u1_fin,
                    u2_fin, gtape):  # fmt: skip
    """Forward over the nodes ``n0 … n1−1``; with ``gtape`` ``[N, T, NT, m]`` non-empty it also
    records the adjoint's tape of every step (:data:`RECORD_TAPE`)."""
    n_steps = prc.shape[1]
    m = s0.shape[2]
    inv_m = 1.0 / m
    l1 = u10.shape[2]
    l2 = u20.shape[2]
    d1 = x1.shape[1] > 1
    d2 = x2.shape[1] > 1
    d3 = x3.shape[1] > 1
    S = np.empty(m)
    R = np.empty(m)
    C = np.empty(m)
    e1 = np.empty(m, dtype=np.int64)
    e2 = np.empty(m, dtype=np.int64)
    u1 = np.empty((l1, m))
    u2 = np.empty((l2, m))
    on1 = np.empty((l1 + 1, m))
    on2 = np.empty((l2 + 1, m))
    fl = np.empty((NOUT, m))
    none = np.empty((0, m))
    record = gtape.shape[0] > 0
    for n in range(n0, n1):
        ne1, ne2 = _load_node(n, s0, u10, u20, o1, o2, S, R, C, u1, u2, on1, on2, e1, e2)
        for t in range(n_steps):
            pr = prc[n, t]
            pe = pet[n, t]
            tape = gtape[n, t] if record else none
            _node_step(
                pr > pe, pr, pe, S, R, C, u1, u2, on1, on2, ne1, ne2, x1[n, t if d1 else 0],
                x2[n, t if d2 else 0], x3[n, t if d3 else 0], fl, tape,
            )  # fmt: skip
            for i in range(NOUT):
                acc = 0.0
                for j in range(m):
                    acc += fl[i, j]
                out[i, n, t] = acc * inv_m
        for j in range(m):
            s_fin[0, n, j] = S[j]
            s_fin[1, n, j] = R[j]
            for k in range(l1):
                u1_fin[n, j, k] = u1[k, j]
            for k in range(l2):
                u2_fin[n, j, k] = u2[k, j]


@_kjit
def _adjoint_kernel(n0, n1, prc, pet, x1, x2, x3, o1, o2, s0, u10, u20, gout, gidx, gs_fin,
                    gu1_fin, gu2_fin, g1, g2, g3, gs0, gu10, gu20, go1, go2,
                    gforce, gtape):  # fmt: skip
    """Reverse sweep over the nodes ``n0 … n1−1`` over the forward's recorded tape ``gtape``
    ``[N, T, NT, m]``, or, when it is empty, after re-running the node's forward into a local
    tape ``[T, NT, m]``.  ``g1``–``g3`` have the parameters' shapes (static:
    summed over time).  With a non-empty ``gforce`` ``[2, N, T]`` the forcing adjoint (summed
    over components) is written there too.  The ordinates' adjoint is kept on each component's
    support (beyond it the ordinates are structurally zero: ``SH = 1`` on both sides)."""
    n_steps = prc.shape[1]
    m = s0.shape[2]
    inv_m = 1.0 / m
    ng = gidx.shape[0]
    l1 = u10.shape[2]
    l2 = u20.shape[2]
    d1 = x1.shape[1] > 1
    d2 = x2.shape[1] > 1
    d3 = x3.shape[1] > 1
    want_forcing = gforce.shape[0] > 0
    S = np.empty(m)
    R = np.empty(m)
    C = np.empty(m)
    e1 = np.empty(m, dtype=np.int64)
    e2 = np.empty(m, dtype=np.int64)
    u1 = np.empty((l1, m))
    u2 = np.empty((l2, m))
    on1 = np.empty((l1 + 1, m))
    on2 = np.empty((l2 + 1, m))
    fl = np.empty((NOUT, m))
    local = np.empty((n_steps if gtape.shape[0] == 0 else 0, NT, m))
    a_s = np.empty(m)
    a_r = np.empty(m)
    a_u1 = np.empty((l1, m))
    a_u2 = np.empty((l2, m))
    a_o1 = np.empty((l1 + 1, m))
    a_o2 = np.empty((l2 + 1, m))
    a_x1 = np.empty(m)
    a_x2 = np.empty(m)
    a_x3 = np.empty(m)
    a_q9 = np.empty(m)
    a_q1 = np.empty(m)
    a_fp = np.empty(m)
    a_fe = np.empty(m)
    a_e = np.empty(m)
    g = np.zeros(NOUT)
    recorded = gtape.shape[0] > 0
    for n in range(n0, n1):
        ne1, ne2 = _load_node(n, s0, u10, u20, o1, o2, S, R, C, u1, u2, on1, on2, e1, e2)
        tape = gtape[n] if recorded else local
        if not recorded:  # re-run the node's forward into the local tape
            for t in range(n_steps):
                pr = prc[n, t]
                pe = pet[n, t]
                _node_step(
                    pr > pe, pr, pe, S, R, C, u1, u2, on1, on2, ne1, ne2,
                    x1[n, t if d1 else 0], x2[n, t if d2 else 0], x3[n, t if d3 else 0], fl,
                    tape[t],
                )  # fmt: skip
        for j in range(m):
            a_s[j] = gs_fin[0, n, j]
            a_r[j] = gs_fin[1, n, j]
            a_x1[j] = 0.0
            a_x2[j] = 0.0
            a_x3[j] = 0.0
            for k in range(l1):
                a_u1[k, j] = gu1_fin[n, j, k]
            for k in range(l2):
                a_u2[k, j] = gu2_fin[n, j, k]
            for k in range(l1 + 1):
                a_o1[k, j] = 0.0
            for k in range(l2 + 1):
                a_o2[k, j] = 0.0
        for t in range(n_steps - 1, -1, -1):
            for c in range(ng):
                g[gidx[c]] = gout[c, n, t] * inv_m
            pr = prc[n, t]
            pe = pet[n, t]
            tp = tape[t]
            p1 = x1[n, t if d1 else 0]
            p2 = x2[n, t if d2 else 0]
            p3 = x3[n, t if d3 else 0]
            gu = g[NF + 2]
            if gu != 0.0:
                for k in range(l1):
                    for j in range(m):
                        a_u1[k, j] += gu
                for k in range(l2):
                    for j in range(m):
                        a_u2[k, j] += gu
            # routing: exchange, routing store, direct branch
            for j in range(m):
                r0 = tp[_TR, j]
                q9 = tp[_TQ9, j]
                q1 = tp[_TQ1, j]
                w = tp[_TWR, j]
                b = p2[j]
                inv = 1.0 / p3[j]
                rr = r0 * inv
                rr25 = rr * rr * np.sqrt(rr)
                rr35 = rr25 * rr
                f = b * rr35
                r1 = r0 + q9 + f
                dr1 = 1.0 if r1 >= 0.0 else 0.0
                r1 = max(r1, 0.0)
                z = r1 * inv
                z4 = (z * z) * (z * z)
                dz = z4 * w / (1.0 + z4)
                dqd = 1.0 if q1 + f >= 0.0 else 0.0
                a_ex = g[8]
                a_qr = g[1] + g[0] - (a_r[j] + g[NF + 1])
                a_qd = g[2] + g[0] + a_ex
                a_r1 = a_ex + (a_r[j] + g[NF + 1]) + a_qr * ((1.0 - w) + dz)
                a_c = a_qr * (-r1 * dz * inv)
                a_qi = a_qd * dqd
                a_ri = a_r1 * dr1
                a_f = g[9] + a_qi + a_ri
                a_rr = a_f * 3.5 * b * rr25
                a_r[j] = -a_ex + a_ri + a_rr * inv
                a_q9[j] = -a_ex + a_ri
                a_q1[j] = -a_ex + a_qi
                a_x2[j] += a_f * rr35
                a_x3[j] += a_c - a_rr * rr * inv
            # unit hydrographs: adjoint of P_r, the ordinates' adjoint, the contents' adjoint
            # shifted back one lag (that of the contents before the step)
            for j in range(m):
                e = tp[_TE, j]
                a_o1[0, j] += a_q9[j] * (_SHARE1 * e)
                a_o2[0, j] += a_q1[j] * (_SHARE2 * e)
                a_fe[j] = a_q9[j] * on1[0, j]
                a_fp[j] = a_q1[j] * on2[0, j]
            for k in range(ne1):
                for j in range(m):
                    a_fe[j] += a_u1[k, j] * on1[k + 1, j]
                    a_o1[k + 1, j] += a_u1[k, j] * (_SHARE1 * tp[_TE, j])
            for k in range(ne2):
                for j in range(m):
                    a_fp[j] += a_u2[k, j] * on2[k + 1, j]
                    a_o2[k + 1, j] += a_u2[k, j] * (_SHARE2 * tp[_TE, j])
            for k in range(l1 - 1, 0, -1):
                for j in range(m):
                    a_u1[k, j] = a_u1[k - 1, j]
            for k in range(l2 - 1, 0, -1):
                for j in range(m):
                    a_u2[k, j] = a_u2[k - 1, j]
            for j in range(m):
                if l1 > 0:
                    a_u1[0, j] = a_q9[j]
                if l2 > 0:
                    a_u2[0, j] = a_q1[j]
                a_e[j] = g[7] + _SHARE1 * a_fe[j] + _SHARE2 * a_fp[j]
            # interception and production store
            if pr > pe:
                pn = pr - pe
                for j in range(m):
                    a = p1[j]
                    inv = 1.0 / a
                    s0j = tp[_TS, j]
                    sr = s0j * inv
                    wsp = min(pn * inv, TANH_CAP)
                    tq = tp[_TT, j]
                    dtp = 0.0 if pn * inv > TANH_CAP else 1.0 - tq * tq
                    dp = 1.0 + sr * tq
                    one_sr2 = 1.0 - sr * sr
                    ps = a * one_sr2 * tq / dp
                    s1 = s0j + ps
                    ds1 = 1.0 if s1 >= 0.0 else 0.0
                    s1 = max(s1, 0.0)
                    bb = 2.25 * a
                    z = s1 / bb
                    z4 = (z * z) * (z * z)
                    w = tp[_TWP, j]
                    dz = z4 * w / (1.0 + z4)
                    a_eff = a_e[j]
                    a_s2 = a_s[j] + g[NF]
                    a_perc = g[6] + a_eff - a_s2
                    a_pn = g[4] + a_eff
                    a_ps = g[5] - a_eff
                    a_s1 = a_s2 + a_perc * ((1.0 - w) + dz)
                    ax = a_perc * (-s1 * dz / bb) * 2.25
                    a_si = a_s1 * ds1
                    a_ps += a_si
                    a_sr = a_ps * a * tq * (-2.0 * sr * dp - one_sr2 * tq) / (dp * dp)
                    a_tp = a_ps * a * one_sr2 / (dp * dp)
                    ax += a_ps * one_sr2 * tq / dp
                    a_s[j] = a_si + a_sr * inv
                    ax -= a_sr * sr * inv
                    a_w = a_tp * dtp
                    a_pn += a_w * inv
                    ax -= a_w * wsp * inv
                    a_x1[j] += ax
                    a_fp[j] = a_pn  # adjoint of P
                    a_fe[j] = g[3] - a_pn  # adjoint of E
            else:
                en = pe - pr
                for j in range(m):
                    a = p1[j]
                    inv = 1.0 / a
                    s0j = tp[_TS, j]
                    sr = s0j * inv
                    wse = min(en * inv, TANH_CAP)
                    te = tp[_TT, j]
                    dte = 0.0 if en * inv > TANH_CAP else 1.0 - te * te
                    de = 1.0 + (1.0 - sr) * te
                    es = s0j * (2.0 - sr) * te / de
                    s1 = s0j - es
                    ds1 = 1.0 if s1 >= 0.0 else 0.0
                    s1 = max(s1, 0.0)
                    bb = 2.25 * a
                    z = s1 / bb
                    z4 = (z * z) * (z * z)
                    w = tp[_TWP, j]
                    dz = z4 * w / (1.0 + z4)
                    a_eff = a_e[j]
                    a_s2 = a_s[j] + g[NF]
                    a_perc = g[6] + a_eff - a_s2
                    a_s1 = a_s2 + a_perc * ((1.0 - w) + dz)
                    ax = a_perc * (-s1 * dz / bb) * 2.25
                    a_si = a_s1 * ds1
                    a_es = g[3] - a_si
                    a_s0 = a_si + a_es * (2.0 - sr) * te / de
                    a_sr = a_es * s0j * te * ((2.0 - sr) * te - de) / (de * de)
                    a_te = a_es * s0j * (2.0 - sr) / (de * de)
                    a_s[j] = a_s0 + a_sr * inv
                    ax -= a_sr * sr * inv
                    a_we = a_te * dte
                    a_en = a_we * inv
                    ax -= a_we * wse * inv
                    a_x1[j] += ax
                    a_fp[j] = g[3] - a_en  # adjoint of P (E_i = P)
                    a_fe[j] = a_en  # adjoint of E
            if d1:
                for j in range(m):
                    g1[n, t, j] = a_x1[j]
                    a_x1[j] = 0.0
            if d2:
                for j in range(m):
                    g2[n, t, j] = a_x2[j]
                    a_x2[j] = 0.0
            if d3:
                for j in range(m):
                    g3[n, t, j] = a_x3[j]
                    a_x3[j] = 0.0
            if want_forcing:
                sp = 0.0
                se = 0.0
                for j in range(m):
                    sp += a_fp[j]
                    se += a_fe[j]
                gforce[0, n, t] = sp
                gforce[1, n, t] = se
        for j in range(m):
            if not d1:
                g1[n, 0, j] = a_x1[j]
            if not d2:
                g2[n, 0, j] = a_x2[j]
            if not d3:
                g3[n, 0, j] = a_x3[j]
            gs0[0, n, j] = a_s[j]
            gs0[1, n, j] = a_r[j]
            for k in range(l1):
                gu10[n, j, k] = a_u1[k, j]
            for k in range(l2):
                gu20[n, j, k] = a_u2[k, j]
            for k in range(l1 + 1):
                go1[n, j, k] = a_o1[k, j] if k <= e1[j] else 0.0
            for k in range(l2 + 1):
                go2[n, j, k] = a_o2[k, j] if k <= e2[j] else 0.0


# ------------------------------------------------------------------------ torch glue
def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def _param(x: Tensor) -> np.ndarray:
    """A parameter ``[N, m]`` (static) or ``[N, T, m]`` as a float64 array ``[N, 1 | T, m]``."""
    return _np(x.unsqueeze(1) if x.dim() == 2 else x)


def _from_np(x: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(like.device, like.dtype)


class GR4JFused(torch.autograd.Function):
    """Fused numba forward + hand-written adjoint (exact reverse mode).

    Inputs: precipitation, PET ``[N, T]``; initial stores ``[2, N, m]`` (production, routing);
    UH contents ``[N, m, L1−1]``, ``[N, m, L2−1]``; ordinates ``[N, m, L1]``, ``[N, m, L2]``;
    then ``x1``, ``x2``, ``x3`` (``[N, m]`` or ``[N, T, m]``).  Outputs: the 13 per-step
    outputs ``[N, T]``, the final stores ``[2, N, m]`` and UH contents.  Gradients with respect
    to every tensor input.  With gradients the forward records the adjoint's tape
    (:data:`RECORD_TAPE`: ``N·T·8·m`` float64), so the backward is one reverse sweep; without it
    the backward re-runs the forward node by node.
    """

    @staticmethod
    def forward(ctx, prc, pet, s0, u10, u20, o1, o2, x1, x2, x3):
        # unused outputs reach the backward as None, not as materialised zero tensors (one
        # [N, T] seed each, read by the adjoint)
        ctx.set_materialize_grads(False)
        n, t = prc.shape
        m = s0.shape[-1]
        arrays = (
            _np(prc), _np(pet), _param(x1), _param(x2), _param(x3), _np(o1), _np(o2), _np(s0),
            _np(u10), _np(u20),
        )  # fmt: skip
        out = np.empty((NOUT, n, t))
        s_fin = np.empty((2, n, m))
        u1_fin = np.empty(u10.shape)
        u2_fin = np.empty(u20.shape)
        # not under no_grad (inference, the forward sensitivities' fast pass): autograd marks the
        # inputs as needing gradients whatever the grad mode, so the caller's mode is read here
        record = RECORD_TAPE and any(ctx.needs_input_grad) and _GRAD_AT_CALL.get()
        gtape = np.empty((n, t, NT, m) if record else (0, 0, NT, m))
        run_chunks(_forward_kernel, n, *arrays, out, s_fin, u1_fin, u2_fin, gtape)
        ctx.gtape = gtape
        ctx.arrays = arrays
        ctx.dims = (x1.dim(), x2.dim(), x3.dim())
        outs = tuple(_from_np(out[i], prc) for i in range(NOUT))
        return (*outs, _from_np(s_fin, prc), _from_np(u1_fin, prc), _from_np(u2_fin, prc))

    @staticmethod
    def backward(ctx, *grads):
        if all(g is None for g in grads):  # no output reaches the loss
            return (None,) * len(ctx.needs_input_grad)
        prc, pet, x1, x2, x3, o1, o2, s0, u10, u20 = ctx.arrays
        n, t = prc.shape
        m = s0.shape[-1]
        idx = [i for i in range(NOUT) if grads[i] is not None]
        gout = np.empty((len(idx), n, t))
        for c, i in enumerate(idx):
            gout[c] = grads[i].detach().cpu().numpy()
        gidx = np.array(idx, dtype=np.int64)

        def seed(g: Tensor | None, shape) -> np.ndarray:
            return _np(g) if g is not None else np.zeros(shape)

        gs_fin = seed(grads[NOUT], (2, n, m))
        gu1_fin = seed(grads[NOUT + 1], u10.shape)
        gu2_fin = seed(grads[NOUT + 2], u20.shape)
        gx = [np.empty(x.shape) for x in (x1, x2, x3)]
        gs0 = np.empty((2, n, m))
        gu10 = np.empty(u10.shape)
        gu20 = np.empty(u20.shape)
        go1 = np.empty(o1.shape)
        go2 = np.empty(o2.shape)
        want_forcing = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        gforce = np.empty((2, n, t)) if want_forcing else np.empty((0, n, t))
        run_chunks(
            _adjoint_kernel, n, prc, pet, x1, x2, x3, o1, o2, s0, u10, u20, gout, gidx, gs_fin,
            gu1_fin, gu2_fin, *gx, gs0, gu10, gu20, go1, go2, gforce, ctx.gtape,
        )  # fmt: skip
        ctx.gtape = np.empty((0, 0, NT, m))  # a second backward re-runs the forward
        like = next(g for g in grads if g is not None)
        pgrads = [
            _from_np(g[:, 0] if d == 2 else g, like) for g, d in zip(gx, ctx.dims, strict=True)
        ]
        gf = [_from_np(gforce[i], like) if ctx.needs_input_grad[i] else None for i in range(2)]
        return (
            *gf, _from_np(gs0, like), _from_np(gu10, like), _from_np(gu20, like),
            _from_np(go1, like), _from_np(go2, like), *pgrads,
        )  # fmt: skip


def gr4j_numba_apply(
    prc: Tensor, pet: Tensor, params: Mapping[str, Tensor], states: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Fused GR4J on CPU with the exact adjoint (same outputs as ``gr4j_torch_loop``).

    Shapes:
        prc, pet ``[N, T]``; params ``x1``–``x3`` ``[N, m]`` / ``[N, T, m]``, ``x4`` ``[N, m]``;
        states as :data:`gnnhydro.runoff.gr4j.GR4J_STATES`.
    """
    n = prc.shape[0]
    m = params["x4"].shape[-1]
    o1, o2 = gr4j_unit_hydrographs(params["x4"])
    s0 = torch.stack([states["production_store"], states["routing_store"]])
    u10 = states["uh1"].reshape(n, m, -1)
    u20 = states["uh2"].reshape(n, m, -1)
    token = _GRAD_AT_CALL.set(torch.is_grad_enabled())
    try:
        res = GR4JFused.apply(
            prc, pet, s0, u10, u20, o1, o2, params["x1"], params["x2"], params["x3"]
        )
    finally:
        _GRAD_AT_CALL.reset(token)
    out = dict(zip(GR4J_OUTPUTS, res[:NOUT], strict=True))
    out["final_production_store"] = res[NOUT][0]
    out["final_routing_store"] = res[NOUT][1]
    out["final_uh1"] = res[NOUT + 1].reshape(n, -1)
    out["final_uh2"] = res[NOUT + 2].reshape(n, -1)
    return out

"""Fused CPU time loop for GR4J (numba): forward and hand-written adjoint (exact reverse mode).

The step is exactly :func:`gnnhydro.runoff.gr4j.gr4j_step` written for one cell (node ×
component) in float64.  Two kernels, each serial over a range of nodes and sequential in time,
run in parallel over chunks of nodes on a thread pool (:func:`gnnhydro._numba.run_chunks`):

* :func:`_forward_kernel`: states and per-step outputs (means over components).
* :func:`_adjoint_kernel`: reverse mode.  Per cell it first re-runs the forward into a local
  buffer ``[T, 4]`` (production and routing store before each step, and the two
  unit-hydrograph outputs ``Q9``, ``Q1``: all the backward needs, memory O(threads · T)), then
  sweeps back in time with the vector-Jacobian product of the step (:func:`_step_vjp`).
  It returns the gradients with respect to the parameters ``x1``–``x3`` (static or per step),
  the unit-hydrograph ordinates (autograd carries them on to ``x4`` through the S-curves of
  :func:`gnnhydro.runoff.gr4j.gr4j_unit_hydrographs`), the initial states and the forcing.

Parameter order (K = 3): x1, x2, x3.  Output order (NOUT = 13): the 10 fluxes of
:data:`gnnhydro.runoff.gr4j.GR4J_OUTPUTS`, then the production store, the routing store and the
unit-hydrograph contents after the step.  Every array is float64 (one compiled specialisation;
the glue converts), and the kernels are cached on disk (:func:`gnnhydro._numba.cache_dir`).
"""

from __future__ import annotations

from collections.abc import Mapping

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

# the step is compiled once and inlined by LLVM into the kernels (see hbv_numba)
_jit = njit(fastmath=False, error_model="numpy", forceinline=True)


@_jit
def _outflow(store, scale):
    """``store·(1 − w)`` with ``w = [1 + (store/scale)⁴]^(−1/4)``, and d/dstore, d/dscale."""
    z = store / scale
    z2 = z * z
    z4 = z2 * z2
    zz = 1.0 + z4
    w = 1.0 / np.sqrt(np.sqrt(zz))
    q = store * (1.0 - w)
    dz = z4 * w / zz
    return q, (1.0 - w) + dz, -store * dz / scale


@_jit
def _tanh_capped(x):
    """``tanh(min(x, 13))`` and its derivative in ``x`` (0 above the cap), and the capped x."""
    if x > TANH_CAP:
        return np.tanh(TANH_CAP), 0.0, TANH_CAP
    if x == 0.0:
        return 0.0, 1.0, 0.0
    t = np.tanh(x)
    return t, 1.0 - t * t, x


@_jit
def _production(st, pr, pe, x1):
    """Interception, production store and percolation of one cell and step.

    Returns (S after the step, ET = E_i + E_s, P_n, P_s, Perc, P_r)."""
    if pr > pe:  # P = E takes the dry branch, as airGR
        pn = pr - pe
        en = 0.0
        ei = pe
    else:
        pn = 0.0
        en = pe - pr
        ei = pr
    sr = st / x1
    ps = 0.0
    if pn != 0.0:
        tp, _, _ = _tanh_capped(pn / x1)
        ps = x1 * (1.0 - sr * sr) * tp / (1.0 + sr * tp)
    es = 0.0
    if en != 0.0:
        te, _, _ = _tanh_capped(en / x1)
        es = st * (2.0 - sr) * te / (1.0 + (1.0 - sr) * te)
    st = st + ps - es
    if st < 0.0:
        st = 0.0
    perc, _, _ = _outflow(st, 2.25 * x1)
    return st - perc, ei + es, pn, ps, perc, perc + pn - ps


@_jit
def _routing(r0, q9, q1, x2, x3):
    """Exchange, routing store and direct branch.  Returns (R after, Q_r, Q_d, realised
    exchange, potential exchange F)."""
    rr = r0 / x3
    f = x2 * (rr * rr * rr * np.sqrt(rr))
    r1 = r0 + q9 + f
    if r1 < 0.0:
        r1 = 0.0
    ex1 = r1 - r0 - q9
    qr, _, _ = _outflow(r1, x3)
    qd = q1 + f
    if qd < 0.0:
        qd = 0.0
    return r1 - qr, qr, qd, ex1 + (qd - q1), f


@_jit
def _uh_fwd(u, j, ne, o, inflow):
    """Add ``inflow`` to row ``j`` of the UH contents ``u`` (ordinates ``o[j]``), release lag 0.
    Only the first ``ne`` contents are touched: beyond them contents and ordinates are zero."""
    q = o[j, 0] * inflow
    if ne > 0:
        q += u[j, 0]
        for k in range(ne - 1):
            u[j, k] = u[j, k + 1] + o[j, k + 1] * inflow
        u[j, ne - 1] = o[j, ne] * inflow
    return q


@_jit
def _uh_vjp(a_q, inflow, o, a_u, a_o, j, ne):
    """Reverse of :func:`_uh_fwd` for row ``j``: ``a_u[j]`` (adjoint of the contents after)
    becomes that of the contents before, in place (whole row: the initial contents' gradient);
    ADDS into ``a_o[j]`` up to the support ``ne``; returns the adjoint of ``inflow``."""
    nu = a_u.shape[1]
    a_in = a_q * o[j, 0]
    a_o[j, 0] += a_q * inflow
    for k in range(1, ne + 1):
        av = a_u[j, k - 1]
        a_in += av * o[j, k]
        a_o[j, k] += av * inflow
    for k in range(nu - 1, 0, -1):
        a_u[j, k] = a_u[j, k - 1]
    if nu > 0:
        a_u[j, 0] = a_q
    return a_in


@_jit
def _routing_vjp(r0, q9, q1, x2, x3, g, a_r2):
    """VJP of :func:`_routing` given the flux adjoints ``g`` and that of R after the step.
    Returns the adjoints of (R before, Q9, Q1, x2, x3)."""
    rr = r0 / x3
    rr25 = rr * rr * np.sqrt(rr)
    rr35 = rr25 * rr
    f = x2 * rr35
    r1 = r0 + q9 + f
    dr1 = 1.0
    if r1 < 0.0:
        r1 = 0.0
        dr1 = 0.0
    _, dqr_r, dqr_x3 = _outflow(r1, x3)
    dqd = 1.0 if q1 + f >= 0.0 else 0.0
    a_qr = g[1] + g[0]
    a_qd = g[2] + g[0]
    a_ex = g[8]
    a_f = g[9]
    a_r1 = a_ex + a_r2  # ex = (r1 − r0 − q9) + (qd − q1)
    a_r0 = -a_ex
    a_q9 = -a_ex
    a_q1 = -a_ex
    a_qd += a_ex
    a_qr -= a_r2
    a_r1 += a_qr * dqr_r
    a_x3 = a_qr * dqr_x3
    a_qi = a_qd * dqd
    a_q1 += a_qi
    a_f += a_qi
    a_ri = a_r1 * dr1
    a_r0 += a_ri
    a_q9 += a_ri
    a_f += a_ri
    a_x2 = a_f * rr35
    a_rr = a_f * 3.5 * x2 * rr25
    a_r0 += a_rr / x3
    a_x3 -= a_rr * rr / x3
    return a_r0, a_q9, a_q1, a_x2, a_x3


@_jit
def _production_vjp(s0, pr, pe, x1, g, a_s2, a_eff):
    """VJP of :func:`_production` given the flux adjoints ``g``, that of S after the step and
    that of P_r.  Returns the adjoints of (S before, x1, precipitation, PET)."""
    wet = pr > pe
    if wet:
        pn = pr - pe
        en = 0.0
    else:
        pn = 0.0
        en = pe - pr
    sr = s0 / x1
    tp, dtp, wsp = _tanh_capped(pn / x1)
    dp = 1.0 + sr * tp
    ps = x1 * (1.0 - sr * sr) * tp / dp
    te, dte, wse = _tanh_capped(en / x1)
    de = 1.0 + (1.0 - sr) * te
    es = s0 * (2.0 - sr) * te / de
    s1 = s0 + ps - es
    ds1 = 1.0
    if s1 < 0.0:
        s1 = 0.0
        ds1 = 0.0
    _, dperc_s, dperc_b = _outflow(s1, 2.25 * x1)
    a_perc = g[6] + a_eff - a_s2
    a_pn = g[4] + a_eff
    a_ps = g[5] - a_eff
    a_s1 = a_s2 + a_perc * dperc_s
    a_x1 = a_perc * dperc_b * 2.25
    a_si = a_s1 * ds1
    a_s0 = a_si
    a_ps += a_si
    a_es = g[3] - a_si  # ET = E_i + E_s
    a_ei = g[3]
    one_sr2 = 1.0 - sr * sr
    a_sr = a_ps * x1 * tp * (-2.0 * sr * dp - one_sr2 * tp) / (dp * dp)
    a_tp = a_ps * x1 * one_sr2 / (dp * dp)
    a_x1 += a_ps * one_sr2 * tp / dp
    a_s0 += a_es * (2.0 - sr) * te / de
    a_sr += a_es * s0 * te * ((2.0 - sr) * te - de) / (de * de)
    a_te = a_es * s0 * (2.0 - sr) / (de * de)
    a_s0 += a_sr / x1
    a_x1 -= a_sr * sr / x1
    a_w = a_tp * dtp
    a_pn += a_w / x1
    a_x1 -= a_w * wsp / x1
    a_we = a_te * dte
    a_en = a_we / x1
    a_x1 -= a_we * wse / x1
    if wet:  # pn = P − E, ei = E
        return a_s0, a_x1, a_pn, a_ei - a_pn
    return a_s0, a_x1, a_ei - a_en, a_en  # en = E − P, ei = P


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
# time outer, components inner, scalar states: the components' independent step chains overlap
# in the CPU (the step is a serial chain of divisions, roots and a tanh)
_kjit = njit(fastmath=False, error_model="numpy", nogil=True, kernel="GR4J")


@_kjit
def _forward_kernel(n0, n1, prc, pet, pstat, pdyn, dyn_idx, o1, o2, s0, u10, u20, out, s_fin,
                    u1_fin, u2_fin):  # fmt: skip
    """Forward over the cells of nodes ``n0 … n1−1``."""
    n_steps = prc.shape[1]
    m = pstat.shape[1]
    inv_m = 1.0 / m
    nd = dyn_idx.shape[0]
    l1 = u10.shape[2]
    l2 = u20.shape[2]
    for n in range(n0, n1):
        S = np.empty(m)
        R = np.empty(m)
        C = np.zeros(m)
        e1 = np.empty(m, dtype=np.int64)
        e2 = np.empty(m, dtype=np.int64)
        u1 = np.zeros((m, l1))
        u2 = np.zeros((m, l2))
        p = np.empty((m, K))
        on1 = o1[n]
        on2 = o2[n]
        acc = np.empty(NOUT)
        for j in range(m):
            for k in range(K):
                p[j, k] = pstat[n, j, k]
            S[j] = s0[0, n, j]
            R[j] = s0[1, n, j]
            e1[j] = _support(o1, u10, n, j)
            e2[j] = _support(o2, u20, n, j)
            for k in range(l1):
                u1[j, k] = u10[n, j, k]
                C[j] += u1[j, k]
            for k in range(l2):
                u2[j, k] = u20[n, j, k]
                C[j] += u2[j, k]
        for t in range(n_steps):
            for i in range(NOUT):
                acc[i] = 0.0
            pr = prc[n, t]
            pe = pet[n, t]
            for j in range(m):
                for d in range(nd):
                    p[j, dyn_idx[d]] = pdyn[d, n, t, j]
                st, et, pn, ps, perc, eff = _production(S[j], pr, pe, p[j, 0])
                in1 = _SHARE1 * eff
                in2 = _SHARE2 * eff
                q9 = _uh_fwd(u1, j, e1[j], on1, in1)
                q1 = _uh_fwd(u2, j, e2[j], on2, in2)
                r, qr, qd, ex, f = _routing(R[j], q9, q1, p[j, 1], p[j, 2])
                S[j] = st
                R[j] = r
                C[j] += (in1 - q9) + (in2 - q1)
                acc[0] += qr + qd
                acc[1] += qr
                acc[2] += qd
                acc[3] += et
                acc[4] += pn
                acc[5] += ps
                acc[6] += perc
                acc[7] += eff
                acc[8] += ex
                acc[9] += f
                acc[10] += st
                acc[11] += r
                acc[12] += C[j]
            for i in range(NOUT):
                out[i, n, t] = acc[i] * inv_m
        for j in range(m):
            s_fin[0, n, j] = S[j]
            s_fin[1, n, j] = R[j]
            for k in range(l1):
                u1_fin[n, j, k] = u1[j, k]
            for k in range(l2):
                u2_fin[n, j, k] = u2[j, k]


@_kjit
def _adjoint_kernel(n0, n1, prc, pet, pstat, pdyn, dyn_idx, o1, o2, s0, u10, u20, gout, gidx,
                    gs_fin, gu1_fin, gu2_fin, gstat, gdyn, gs0, gu10, gu20, go1, go2,
                    gforce):  # fmt: skip
    """Reverse sweep over the cells of nodes ``n0 … n1−1``: the node's forward is re-run into a
    local buffer ``[T, m, 5]`` (S, R before the step, Q9, Q1, P_r), then swept back.  With a
    non-empty ``gforce`` ``[2, N, T]`` the forcing adjoint (summed over components) is written
    there too.  The ordinates' adjoint is computed on each cell's support (beyond it the
    ordinates are structurally zero: ``SH = 1`` on both sides)."""
    n_steps = prc.shape[1]
    m = pstat.shape[1]
    inv_m = 1.0 / m
    nd = dyn_idx.shape[0]
    ng = gidx.shape[0]
    l1 = u10.shape[2]
    l2 = u20.shape[2]
    want_forcing = gforce.shape[0] > 0
    for n in range(n0, n1):
        buf = np.empty((n_steps, m, 5))
        S = np.empty(m)
        R = np.empty(m)
        e1 = np.empty(m, dtype=np.int64)
        e2 = np.empty(m, dtype=np.int64)
        u1 = np.zeros((m, l1))
        u2 = np.zeros((m, l2))
        p = np.empty((m, K))
        on1 = o1[n]
        on2 = o2[n]
        a_s = np.empty(m)
        a_r = np.empty(m)
        a_u1 = np.empty((m, l1))
        a_u2 = np.empty((m, l2))
        a_o1 = np.zeros((m, o1.shape[2]))
        a_o2 = np.zeros((m, o2.shape[2]))
        a_p = np.zeros((m, K))
        g = np.zeros(NOUT)
        for j in range(m):
            for k in range(K):
                p[j, k] = pstat[n, j, k]
            S[j] = s0[0, n, j]
            R[j] = s0[1, n, j]
            e1[j] = _support(o1, u10, n, j)
            e2[j] = _support(o2, u20, n, j)
            for k in range(l1):
                u1[j, k] = u10[n, j, k]
            for k in range(l2):
                u2[j, k] = u20[n, j, k]
        for t in range(n_steps):
            pr = prc[n, t]
            pe = pet[n, t]
            for j in range(m):
                for d in range(nd):
                    p[j, dyn_idx[d]] = pdyn[d, n, t, j]
                st, _, _, _, _, eff = _production(S[j], pr, pe, p[j, 0])
                q9 = _uh_fwd(u1, j, e1[j], on1, _SHARE1 * eff)
                q1 = _uh_fwd(u2, j, e2[j], on2, _SHARE2 * eff)
                r, _, _, _, _ = _routing(R[j], q9, q1, p[j, 1], p[j, 2])
                buf[t, j, 0] = S[j]
                buf[t, j, 1] = R[j]
                buf[t, j, 2] = q9
                buf[t, j, 3] = q1
                buf[t, j, 4] = eff
                S[j] = st
                R[j] = r
        for j in range(m):
            a_s[j] = gs_fin[0, n, j]
            a_r[j] = gs_fin[1, n, j]
            for k in range(l1):
                a_u1[j, k] = gu1_fin[n, j, k]
            for k in range(l2):
                a_u2[j, k] = gu2_fin[n, j, k]
        for t in range(n_steps - 1, -1, -1):
            for c in range(ng):
                g[gidx[c]] = gout[c, n, t] * inv_m
            gu = g[NF + 2]
            pr = prc[n, t]
            pe = pet[n, t]
            gp = 0.0
            ge = 0.0
            for j in range(m):
                if gu != 0.0:
                    for k in range(l1):
                        a_u1[j, k] += gu
                    for k in range(l2):
                        a_u2[j, k] += gu
                for d in range(nd):
                    p[j, dyn_idx[d]] = pdyn[d, n, t, j]
                eff = buf[t, j, 4]
                a_r0, a_q9, a_q1, a_x2, a_x3 = _routing_vjp(
                    buf[t, j, 1], buf[t, j, 2], buf[t, j, 3], p[j, 1], p[j, 2], g,
                    a_r[j] + g[NF + 1],
                )  # fmt: skip
                a_eff = g[7]
                a_eff += _SHARE1 * _uh_vjp(a_q9, _SHARE1 * eff, on1, a_u1, a_o1, j, e1[j])
                a_eff += _SHARE2 * _uh_vjp(a_q1, _SHARE2 * eff, on2, a_u2, a_o2, j, e2[j])
                a_s0, a_x1, a_fp, a_fe = _production_vjp(
                    buf[t, j, 0], pr, pe, p[j, 0], g, a_s[j] + g[NF], a_eff
                )
                a_s[j] = a_s0
                a_r[j] = a_r0
                a_p[j, 0] += a_x1
                a_p[j, 1] += a_x2
                a_p[j, 2] += a_x3
                for d in range(nd):
                    k = dyn_idx[d]
                    gdyn[d, n, t, j] = a_p[j, k]
                    a_p[j, k] = 0.0
                gp += a_fp
                ge += a_fe
            if want_forcing:
                gforce[0, n, t] = gp
                gforce[1, n, t] = ge
        for j in range(m):
            for k in range(K):
                gstat[n, j, k] = a_p[j, k]
            gs0[0, n, j] = a_s[j]
            gs0[1, n, j] = a_r[j]
            for k in range(l1):
                gu10[n, j, k] = a_u1[j, k]
            for k in range(l2):
                gu20[n, j, k] = a_u2[j, k]
            for k in range(a_o1.shape[1]):
                go1[n, j, k] = a_o1[j, k]
            for k in range(a_o2.shape[1]):
                go2[n, j, k] = a_o2[j, k]


# ------------------------------------------------------------------------ torch glue
def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def _pack_params(params: Mapping[str, Tensor], n: int, m: int):
    pstat = np.zeros((n, m, K))
    dyn_names = [k for k in KERNEL_PARAMS if params[k].dim() == 3]
    t = params[dyn_names[0]].shape[1] if dyn_names else 0
    pdyn = np.empty((len(dyn_names), n, t, m))
    for k, name in enumerate(KERNEL_PARAMS):
        if name in dyn_names:
            pdyn[dyn_names.index(name)] = _np(params[name])
        else:
            pstat[:, :, k] = _np(params[name])
    dyn_idx = np.array([KERNEL_PARAMS.index(k) for k in dyn_names], dtype=np.int64)
    return pstat, pdyn, dyn_idx


def _from_np(x: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(like.device, like.dtype)


class GR4JFused(torch.autograd.Function):
    """Fused numba forward + hand-written adjoint (exact reverse mode).

    Inputs: precipitation, PET ``[N, T]``; initial stores ``[2, N, m]`` (production, routing);
    UH contents ``[N, m, L1−1]``, ``[N, m, L2−1]``; ordinates ``[N, m, L1]``, ``[N, m, L2]``;
    then ``x1``, ``x2``, ``x3`` (``[N, m]`` or ``[N, T, m]``).  Outputs: the 13 per-step
    outputs ``[N, T]``, the final stores ``[2, N, m]`` and UH contents.  Gradients with respect
    to every tensor input.  The backward re-runs the forward cell by cell (no tape).
    """

    @staticmethod
    def forward(ctx, prc, pet, s0, u10, u20, o1, o2, x1, x2, x3):
        n, t = prc.shape
        m = s0.shape[-1]
        pstat, pdyn, dyn_idx = _pack_params({"x1": x1, "x2": x2, "x3": x3}, n, m)
        arrays = (
            _np(prc), _np(pet), pstat, pdyn, dyn_idx, _np(o1), _np(o2), _np(s0), _np(u10),
            _np(u20),
        )  # fmt: skip
        out = np.empty((NOUT, n, t))
        s_fin = np.empty((2, n, m))
        u1_fin = np.empty(u10.shape)
        u2_fin = np.empty(u20.shape)
        run_chunks(_forward_kernel, n, *arrays, out, s_fin, u1_fin, u2_fin)
        ctx.arrays = arrays
        ctx.shapes = tuple(tuple(v.shape) for v in (x1, x2, x3))
        outs = tuple(_from_np(out[i], prc) for i in range(NOUT))
        return (*outs, _from_np(s_fin, prc), _from_np(u1_fin, prc), _from_np(u2_fin, prc))

    @staticmethod
    def backward(ctx, *grads):
        prc, pet, pstat, pdyn, dyn_idx, o1, o2, s0, u10, u20 = ctx.arrays
        n, t = prc.shape
        m = pstat.shape[1]
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
        gstat = np.zeros((n, m, K))
        gdyn = np.zeros_like(pdyn)
        gs0 = np.zeros((2, n, m))
        gu10 = np.zeros(u10.shape)
        gu20 = np.zeros(u20.shape)
        go1 = np.zeros(o1.shape)
        go2 = np.zeros(o2.shape)
        want_forcing = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        gforce = np.zeros((2, n, t)) if want_forcing else np.zeros((0, n, t))
        run_chunks(
            _adjoint_kernel, n, prc, pet, pstat, pdyn, dyn_idx, o1, o2, s0, u10, u20, gout,
            gidx, gs_fin, gu1_fin, gu2_fin, gstat, gdyn, gs0, gu10, gu20, go1, go2, gforce,
        )  # fmt: skip
        like = next(g for g in grads if g is not None)
        dyn_list = [KERNEL_PARAMS[i] for i in dyn_idx]
        pgrads = []
        for k, name in enumerate(KERNEL_PARAMS):
            arr = gdyn[dyn_list.index(name)] if name in dyn_list else gstat[:, :, k]
            pgrads.append(_from_np(arr, like))
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
    res = GR4JFused.apply(prc, pet, s0, u10, u20, o1, o2, params["x1"], params["x2"], params["x3"])
    out = dict(zip(GR4J_OUTPUTS, res[:NOUT], strict=True))
    out["final_production_store"] = res[NOUT][0]
    out["final_routing_store"] = res[NOUT][1]
    out["final_uh1"] = res[NOUT + 1].reshape(n, -1)
    out["final_uh2"] = res[NOUT + 2].reshape(n, -1)
    return out

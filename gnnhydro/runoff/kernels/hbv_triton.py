"""Fused triton kernels for the HBV time loop (GPU; they also run under ``TRITON_INTERPRET=1``).

Two kernels, each a single launch that walks through time with the stores in registers:

* :func:`_hbv_kernel` (forward): one program handles ``BLOCK`` cells (node × component,
  flattened) and writes every per-step output.
* :func:`_hbv_sens_kernel` (forward sensitivities, Vrugt et al., 2026): one program handles
  ``BLOCK`` cells × ``QP`` sensitivity directions.  Next to each store ``s`` it carries
  ``S = ∂s/∂(θ, s₀)`` (a ``[BLOCK, QP]`` tile: the 16 kernel parameters, then the 5 initial
  states, padded to a power of two), differentiates every step in forward mode (dual numbers)
  and accumulates the vector-Jacobian product ``Σ_t ḡ_t·∂y_t/∂(θ, s₀)`` on the fly from the
  upstream gradients ``ḡ_t`` of the outputs: no tape, memory flat in T.

The equations and threshold smoothing are those of :func:`gnnhydro.runoff.hbv.hbv_step` and the
derivative conventions those of the numba kernels (:mod:`gnnhydro.runoff.kernels.hbv_numba`:
``relu'(0) = 1`` and ``min`` splits ties ½/½ when ε = 0, the soil floor passes the gradient at
``x ≥ nearzero``), computed in the dtype of the forcing (float32 or float64); ε and the floor are
passed as tensors of that dtype so that float64 runs are not rounded to float32 constants.
Parameter order (K = 16) is :data:`gnnhydro.runoff.hbv.KERNEL_PARAMS`; output order (16) is
:data:`gnnhydro.runoff.hbv.HBV_OUTPUTS`.  Static parameters only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl
from torch import Tensor

from gnnhydro.runoff.hbv_layout import HBV_OUTPUTS, HBV_STATES, KERNEL_PARAMS, NOUT, NS, HBVOptions

__all__ = [
    "hbv_triton_forward",
    "hbv_triton_sensitivity_apply",
    "hbv_triton_sensitivity_grads",
    "HBVTritonSensitivity",
]

K = len(KERNEL_PARAMS)
#: Sensitivity directions (K parameters + NS initial states) padded to a power of two.
QP = triton.next_power_of_2(K + NS)


# ---------------------------------------------------------------- forward-only primitives
@triton.jit
def _relu(x, eps):
    if eps == 0.0:
        r = tl.maximum(x, 0.0)
    else:
        r = tl.where(x <= 0.0, 0.0, tl.where(x < eps, x * x / (2.0 * eps), x - 0.5 * eps))
    return r


@triton.jit
def _stepf(x, eps):
    if eps == 0.0:
        r = tl.where(x >= 0.0, 1.0, 0.0)
    else:
        u = tl.minimum(tl.maximum(x / eps + 0.5, 0.0), 1.0)
        r = u * u * (3.0 - 2.0 * u)
    return r


@triton.jit
def _smin(a, b, eps):
    if eps == 0.0:
        r = tl.minimum(a, b)
    else:
        # ½(a + b − √g) written without cancellation: (1 − ε²/4)·ab / (½(a + b + √g))
        g = (a - b) * (a - b) + eps * eps * a * b
        den = a + b + tl.sqrt(tl.maximum(g, 0.0))
        r = tl.where(g > 0.0, (2.0 - 0.5 * eps * eps) * a * b / tl.where(g > 0.0, den, 1.0), a)
    return r


@triton.jit
def _clip1(x, eps):
    if eps == 0.0:
        r = tl.minimum(tl.maximum(x, 0.0), 1.0)
    else:
        r = x - _relu(x - 1.0, eps)
    return r


@triton.jit
def _gwphi(area, ac):
    small = tl.minimum(tl.maximum((area - ac) / 1000.0, -1.0), 1.0)
    large = tl.exp(-tl.minimum(tl.maximum((area - 2500.0) / 50.0, 0.0), 10.0))
    return tl.where(area < 2500.0, small, large)


@triton.jit
def _hbv_kernel(
    prc_ptr, tmp_ptr, pet_ptr, area_ptr, par_ptr, init_ptr, cst_ptr, out_ptr, final_ptr,
    n_cells, n_steps, m,
    K: tl.constexpr, BETAET: tl.constexpr, CAP: tl.constexpr, GX: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cell = pid * BLOCK + tl.arange(0, BLOCK)
    mask = cell < n_cells
    node = cell // m
    eps = tl.load(cst_ptr + 0)
    nz = tl.load(cst_ptr + 1)
    beta = tl.load(par_ptr + cell * K + 0, mask=mask, other=1.0)
    fc = tl.load(par_ptr + cell * K + 1, mask=mask, other=100.0)
    k0 = tl.load(par_ptr + cell * K + 2, mask=mask, other=0.0)
    k1 = tl.load(par_ptr + cell * K + 3, mask=mask, other=0.0)
    k2 = tl.load(par_ptr + cell * K + 4, mask=mask, other=0.0)
    lp = tl.load(par_ptr + cell * K + 5, mask=mask, other=1.0)
    percmax = tl.load(par_ptr + cell * K + 6, mask=mask, other=0.0)
    uzl = tl.load(par_ptr + cell * K + 7, mask=mask, other=0.0)
    tt = tl.load(par_ptr + cell * K + 8, mask=mask, other=0.0)
    cfmax = tl.load(par_ptr + cell * K + 9, mask=mask, other=0.0)
    cfr = tl.load(par_ptr + cell * K + 10, mask=mask, other=0.0)
    cwh = tl.load(par_ptr + cell * K + 11, mask=mask, other=0.0)
    betaet = tl.load(par_ptr + cell * K + 12, mask=mask, other=1.0)
    cc = tl.load(par_ptr + cell * K + 13, mask=mask, other=0.0)
    rt = tl.load(par_ptr + cell * K + 14, mask=mask, other=0.0)
    ac = tl.load(par_ptr + cell * K + 15, mask=mask, other=0.0)
    area = tl.load(area_ptr + node, mask=mask, other=0.0)
    lf = rt * _gwphi(area, ac)
    gain = tl.maximum(lf, 0.0)
    dem = tl.maximum(-lf, 0.0)
    sp = tl.load(init_ptr + 0 * n_cells + cell, mask=mask, other=0.0)
    mw = tl.load(init_ptr + 1 * n_cells + cell, mask=mask, other=0.0)
    sm = tl.load(init_ptr + 2 * n_cells + cell, mask=mask, other=1.0)
    suz = tl.load(init_ptr + 3 * n_cells + cell, mask=mask, other=0.0)
    slz = tl.load(init_ptr + 4 * n_cells + cell, mask=mask, other=0.0)
    stride = n_cells * n_steps
    for t in range(n_steps):
        pr = tl.load(prc_ptr + node * n_steps + t, mask=mask, other=0.0)
        ta = tl.load(tmp_ptr + node * n_steps + t, mask=mask, other=0.0)
        pe = tl.load(pet_ptr + node * n_steps + t, mask=mask, other=0.0)
        dtemp = ta - tt
        rain = pr * _stepf(dtemp, eps)
        sp = sp + (pr - rain)
        melt = _smin(cfmax * _relu(dtemp, eps), sp, eps)
        sp = sp - melt
        mw = mw + melt
        refr = _smin(cfr * cfmax * _relu(-dtemp, eps), mw, eps)
        sp = sp + refr
        mw = mw - refr
        tos = _relu(mw - cwh * sp, eps)
        mw = mw - tos
        x = sm / fc
        pw = tl.where(x > 0.0, tl.exp(beta * tl.log(tl.maximum(x, 1e-30))), 0.0)
        inflow = rain + tos
        rech = inflow * _clip1(pw, eps)
        sm = sm + inflow - rech
        exc = _relu(sm - fc, eps)
        sm = sm - exc
        ef = _clip1(sm / (lp * fc), eps)
        if BETAET:
            ef = tl.where(ef > 0.0, tl.exp(betaet * tl.log(tl.maximum(ef, 1e-30))), 0.0)
        et = _smin(sm, pe * ef, eps)
        sm = tl.maximum(sm - et, nz)
        cr = sm * 0.0
        if CAP:
            cr = _smin(slz, cc * slz * (1.0 - _clip1(sm / fc, eps)), eps)
            sm = tl.maximum(sm + cr, nz)
            slz = tl.maximum(slz - cr, nz)
        suz = suz + rech + exc
        perc = _smin(suz, percmax, eps)
        suz = suz - perc
        slz = slz + perc
        q0 = k0 * _relu(suz - uzl, eps)
        suz = suz - q0
        q1 = k1 * suz
        suz = suz - q1
        ex = sm * 0.0
        if GX:
            ex = gain - _smin(slz, dem, eps)
            slz = slz + ex
        q2 = k2 * slz
        slz = slz - q2
        o = out_ptr + cell * n_steps + t
        tl.store(o + 0 * stride, q0 + q1 + q2, mask=mask)
        tl.store(o + 1 * stride, q0, mask=mask)
        tl.store(o + 2 * stride, q1, mask=mask)
        tl.store(o + 3 * stride, q2, mask=mask)
        tl.store(o + 4 * stride, et, mask=mask)
        tl.store(o + 5 * stride, rech, mask=mask)
        tl.store(o + 6 * stride, exc, mask=mask)
        tl.store(o + 7 * stride, tos, mask=mask)
        tl.store(o + 8 * stride, perc, mask=mask)
        tl.store(o + 9 * stride, cr, mask=mask)
        tl.store(o + 10 * stride, ex, mask=mask)
        tl.store(o + 11 * stride, sp, mask=mask)
        tl.store(o + 12 * stride, mw, mask=mask)
        tl.store(o + 13 * stride, sm, mask=mask)
        tl.store(o + 14 * stride, suz, mask=mask)
        tl.store(o + 15 * stride, slz, mask=mask)
    tl.store(final_ptr + 0 * n_cells + cell, sp, mask=mask)
    tl.store(final_ptr + 1 * n_cells + cell, mw, mask=mask)
    tl.store(final_ptr + 2 * n_cells + cell, sm, mask=mask)
    tl.store(final_ptr + 3 * n_cells + cell, suz, mask=mask)
    tl.store(final_ptr + 4 * n_cells + cell, slz, mask=mask)


# ------------------------------------------------- primitives with their derivatives (dual)
@triton.jit
def _d_relu(x, eps, SMOOTH: tl.constexpr):
    """``relu_s`` and its derivative (``relu'(0) = 1`` when exact, as the numba kernels)."""
    if SMOOTH:
        v = tl.where(x <= 0.0, 0.0, tl.where(x < eps, x * x / (2.0 * eps), x - 0.5 * eps))
        d = tl.where(x <= 0.0, 0.0, tl.where(x < eps, x / eps, 1.0))
    else:
        v = tl.where(x >= 0.0, x, 0.0)
        d = tl.where(x >= 0.0, 1.0, 0.0)
    return v, d


@triton.jit
def _d_step(x, eps, SMOOTH: tl.constexpr):
    """``step_s`` (smoothstep) and its derivative (0 when exact)."""
    if SMOOTH:
        u = x / eps + 0.5
        uc = tl.minimum(tl.maximum(u, 0.0), 1.0)
        v = uc * uc * (3.0 - 2.0 * uc)
        d = tl.where((u <= 0.0) | (u >= 1.0), 0.0, 6.0 * uc * (1.0 - uc) / eps)
    else:
        v = tl.where(x >= 0.0, 1.0, 0.0)
        d = v * 0.0
    return v, d


@triton.jit
def _d_min(a, b, eps, SMOOTH: tl.constexpr):
    """``min_s(a, b)`` and ``(∂/∂a, ∂/∂b)`` (ties split ½/½ when exact)."""
    if SMOOTH:
        e2 = eps * eps
        g = (a - b) * (a - b) + e2 * a * b
        pos = g > 0.0
        r = tl.sqrt(tl.where(pos, g, 1.0))
        v = tl.where(pos, (2.0 - 0.5 * e2) * a * b / (a + b + r), 0.5 * (a + b))
        da = tl.where(pos, 0.5 - (2.0 * (a - b) + e2 * b) / (4.0 * r), 0.5)
        db = tl.where(pos, 0.5 - (-2.0 * (a - b) + e2 * a) / (4.0 * r), 0.5)
    else:
        v = tl.minimum(a, b)
        da = tl.where(a < b, 1.0, tl.where(a > b, 0.0, 0.5))
        db = 1.0 - da
    return v, da, db


@triton.jit
def _d_clip1(x, eps, SMOOTH: tl.constexpr):
    """``clip1_s`` and its derivative."""
    if SMOOTH:
        r, dr = _d_relu(x - 1.0, eps, SMOOTH)
        v = x - r
        d = 1.0 - dr
    else:
        v = tl.minimum(tl.maximum(x, 0.0), 1.0)
        d = tl.where((x < 0.0) | (x > 1.0), 0.0, 1.0)
    return v, d


@triton.jit
def _d_floor(x, nz):
    """``max(x, nz)`` passing the gradient where ``x ≥ nz``."""
    keep = x >= nz
    return tl.where(keep, x, nz), tl.where(keep, 1.0, 0.0)


@triton.jit
def _d_pow(x, b):
    """``x**b`` for ``x ≥ 0`` with ``∂/∂x`` and ``∂/∂b`` (all 0 where ``x ≤ 0``)."""
    pos = x > 0.0
    xs = tl.where(pos, x, 1.0)
    lx = tl.log(xs)
    v = tl.exp(b * lx)
    return tl.where(pos, v, 0.0), tl.where(pos, b * v / xs, 0.0), tl.where(pos, v * lx, 0.0)


@triton.jit
def _seed(acc, dv, gout_ptr, goff_ptr, gidx, mask, O: tl.constexpr, GMASK: tl.constexpr):
    """``acc += ḡ_O · dv`` when output ``O`` has an upstream gradient (bit O of GMASK)."""
    if (GMASK >> O) & 1:
        off = tl.load(goff_ptr + O)
        g = tl.load(gout_ptr + off + gidx, mask=mask, other=0.0)
        acc = acc + g * dv
    return acc


@triton.jit
def _hbv_sens_kernel(
    prc_ptr, tmp_ptr, pet_ptr, area_ptr, par_ptr, init_ptr, cst_ptr, gout_ptr, goff_ptr,
    gfin_ptr, grad_ptr, n_cells, n_steps, m,
    K: tl.constexpr, QP: tl.constexpr, SMOOTH: tl.constexpr, BETAET: tl.constexpr,
    CAP: tl.constexpr, GX: tl.constexpr, GMASK: tl.constexpr, HAS_GFIN: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cell = pid * BLOCK + tl.arange(0, BLOCK)[:, None]  # [BLOCK, 1]
    mask = cell < n_cells
    node = cell // m
    q = tl.arange(0, QP)[None, :]  # [1, QP] sensitivity direction
    eps = tl.load(cst_ptr + 0)
    nz = tl.load(cst_ptr + 1)
    beta = tl.load(par_ptr + cell * K + 0, mask=mask, other=1.0)
    fc = tl.load(par_ptr + cell * K + 1, mask=mask, other=100.0)
    k0 = tl.load(par_ptr + cell * K + 2, mask=mask, other=0.0)
    k1 = tl.load(par_ptr + cell * K + 3, mask=mask, other=0.0)
    k2 = tl.load(par_ptr + cell * K + 4, mask=mask, other=0.0)
    lp = tl.load(par_ptr + cell * K + 5, mask=mask, other=1.0)
    percmax = tl.load(par_ptr + cell * K + 6, mask=mask, other=0.0)
    uzl = tl.load(par_ptr + cell * K + 7, mask=mask, other=0.0)
    tt = tl.load(par_ptr + cell * K + 8, mask=mask, other=0.0)
    cfmax = tl.load(par_ptr + cell * K + 9, mask=mask, other=0.0)
    cfr = tl.load(par_ptr + cell * K + 10, mask=mask, other=0.0)
    cwh = tl.load(par_ptr + cell * K + 11, mask=mask, other=0.0)
    betaet = tl.load(par_ptr + cell * K + 12, mask=mask, other=1.0)
    cc = tl.load(par_ptr + cell * K + 13, mask=mask, other=0.0)
    rt = tl.load(par_ptr + cell * K + 14, mask=mask, other=0.0)
    ac = tl.load(par_ptr + cell * K + 15, mask=mask, other=0.0)
    # tangents of the parameters: one-hot rows [1, QP]
    d_beta = tl.where(q == 0, 1.0, 0.0)
    d_fc = tl.where(q == 1, 1.0, 0.0)
    d_k0 = tl.where(q == 2, 1.0, 0.0)
    d_k1 = tl.where(q == 3, 1.0, 0.0)
    d_k2 = tl.where(q == 4, 1.0, 0.0)
    d_lp = tl.where(q == 5, 1.0, 0.0)
    d_perc = tl.where(q == 6, 1.0, 0.0)
    d_uzl = tl.where(q == 7, 1.0, 0.0)
    d_tt = tl.where(q == 8, 1.0, 0.0)
    d_cfmax = tl.where(q == 9, 1.0, 0.0)
    d_cfr = tl.where(q == 10, 1.0, 0.0)
    d_cwh = tl.where(q == 11, 1.0, 0.0)
    d_betaet = tl.where(q == 12, 1.0, 0.0)
    d_cc = tl.where(q == 13, 1.0, 0.0)
    d_rt = tl.where(q == 14, 1.0, 0.0)
    d_ac = tl.where(q == 15, 1.0, 0.0)
    # δHBV 2.0 exchange demand/gain: parameter-only, computed once (exact sign split)
    area = tl.load(area_ptr + node, mask=mask, other=0.0)
    in_small = area < 2500.0
    xa = (area - ac) / 1000.0
    phi = tl.where(
        in_small,
        tl.minimum(tl.maximum(xa, -1.0), 1.0),
        tl.exp(-tl.minimum(tl.maximum((area - 2500.0) / 50.0, 0.0), 10.0)),
    )
    # ∂φ/∂AC = −1/1000 inside the clamp (divided in the data dtype: −0.001 is not exact in f32)
    inside = tl.where(in_small & (xa >= -1.0) & (xa <= 1.0), -1.0, 0.0)
    lf = rt * phi
    d_lf = d_rt * phi + (rt * inside / 1000.0) * d_ac
    gain = tl.where(lf >= 0.0, lf, 0.0)
    d_gain = tl.where(lf >= 0.0, 1.0, 0.0) * d_lf
    dem = tl.where(-lf >= 0.0, -lf, 0.0)
    d_dem = -tl.where(-lf >= 0.0, 1.0, 0.0) * d_lf
    # states and their sensitivities S = ∂s/∂(θ, s₀): one-hot on the initial-state columns
    sp = tl.load(init_ptr + 0 * n_cells + cell, mask=mask, other=0.0)
    mw = tl.load(init_ptr + 1 * n_cells + cell, mask=mask, other=0.0)
    sm = tl.load(init_ptr + 2 * n_cells + cell, mask=mask, other=1.0)
    suz = tl.load(init_ptr + 3 * n_cells + cell, mask=mask, other=0.0)
    slz = tl.load(init_ptr + 4 * n_cells + cell, mask=mask, other=0.0)
    zero = sp * 0.0  # [BLOCK, 1] in the data dtype
    s_sp = zero + tl.where(q == K + 0, 1.0, 0.0)
    s_mw = zero + tl.where(q == K + 1, 1.0, 0.0)
    s_sm = zero + tl.where(q == K + 2, 1.0, 0.0)
    s_suz = zero + tl.where(q == K + 3, 1.0, 0.0)
    s_slz = zero + tl.where(q == K + 4, 1.0, 0.0)
    acc = zero + tl.where(q < 0, 1.0, 0.0)
    for t in range(n_steps):
        gidx = node * n_steps + t
        pr = tl.load(prc_ptr + gidx, mask=mask, other=0.0)
        ta = tl.load(tmp_ptr + gidx, mask=mask, other=0.0)
        pe = tl.load(pet_ptr + gidx, mask=mask, other=0.0)
        # ---- snow
        dtemp = ta - tt
        d_dtemp = -d_tt
        fr, dfr = _d_step(dtemp, eps, SMOOTH)
        rain = pr * fr
        d_rain = (pr * dfr) * d_dtemp
        sp = sp + (pr - rain)
        s_sp = s_sp - d_rain
        rm, drm = _d_relu(dtemp, eps, SMOOTH)
        pm = cfmax * rm
        d_pm = d_cfmax * rm + (cfmax * drm) * d_dtemp
        melt, ma, mb = _d_min(pm, sp, eps, SMOOTH)
        d_melt = ma * d_pm + mb * s_sp
        sp = sp - melt
        s_sp = s_sp - d_melt
        mw = mw + melt
        s_mw = s_mw + d_melt
        rf, drf = _d_relu(-dtemp, eps, SMOOTH)
        pf = cfr * cfmax * rf
        d_pf = d_cfr * (cfmax * rf) + d_cfmax * (cfr * rf) - (cfr * cfmax * drf) * d_dtemp
        refr, ra, rb = _d_min(pf, mw, eps, SMOOTH)
        d_refr = ra * d_pf + rb * s_mw
        sp = sp + refr
        s_sp = s_sp + d_refr
        mw = mw - refr
        s_mw = s_mw - d_refr
        tos, dts = _d_relu(mw - cwh * sp, eps, SMOOTH)
        d_tos = dts * (s_mw - cwh * s_sp - sp * d_cwh)
        mw = mw - tos
        s_mw = s_mw - d_tos
        # ---- soil
        x = sm / fc
        d_x = s_sm / fc - (x / fc) * d_fc
        pw, dpw_x, dpw_b = _d_pow(x, beta)
        w, dw = _d_clip1(pw, eps, SMOOTH)
        d_w = dw * (dpw_x * d_x + dpw_b * d_beta)
        inflow = rain + tos
        d_inflow = d_rain + d_tos
        rech = inflow * w
        d_rech = w * d_inflow + inflow * d_w
        sm = sm + inflow - rech
        s_sm = s_sm + d_inflow - d_rech
        exc, de = _d_relu(sm - fc, eps, SMOOTH)
        d_exc = de * (s_sm - d_fc)
        sm = sm - exc
        s_sm = s_sm - d_exc
        lpfc = lp * fc
        y = sm / lpfc
        d_y = s_sm / lpfc - (y / lp) * d_lp - (y / fc) * d_fc
        ef, def0 = _d_clip1(y, eps, SMOOTH)
        d_ef = def0 * d_y
        if BETAET:
            ef, dee, deb = _d_pow(ef, betaet)
            d_ef = dee * d_ef + deb * d_betaet
        et, ea, eb = _d_min(sm, pe * ef, eps, SMOOTH)
        d_et = ea * s_sm + (eb * pe) * d_ef
        sm, fl = _d_floor(sm - et, nz)
        s_sm = fl * (s_sm - d_et)
        cr = zero
        d_cr = s_sm * 0.0
        if CAP:
            xc = sm / fc
            cw, dcw = _d_clip1(xc, eps, SMOOTH)
            d_cw = dcw * (s_sm / fc - (xc / fc) * d_fc)
            pc = cc * slz * (1.0 - cw)
            d_pc = d_cc * (slz * (1.0 - cw)) + (cc * (1.0 - cw)) * s_slz - (cc * slz) * d_cw
            cr, ca, cb = _d_min(slz, pc, eps, SMOOTH)
            d_cr = ca * s_slz + cb * d_pc
            sm, f1 = _d_floor(sm + cr, nz)
            s_sm = f1 * (s_sm + d_cr)
            slz, f2 = _d_floor(slz - cr, nz)
            s_slz = f2 * (s_slz - d_cr)
        # ---- response
        suz = suz + rech + exc
        s_suz = s_suz + d_rech + d_exc
        perc, pa, pb = _d_min(suz, percmax, eps, SMOOTH)
        d_prc = pa * s_suz + pb * d_perc
        suz = suz - perc
        s_suz = s_suz - d_prc
        slz = slz + perc
        s_slz = s_slz + d_prc
        rq, drq = _d_relu(suz - uzl, eps, SMOOTH)
        q0 = k0 * rq
        d_q0 = d_k0 * rq + (k0 * drq) * (s_suz - d_uzl)
        suz = suz - q0
        s_suz = s_suz - d_q0
        q1 = k1 * suz
        d_q1 = d_k1 * suz + k1 * s_suz
        suz = suz - q1
        s_suz = s_suz - d_q1
        ex = zero
        d_ex = s_slz * 0.0
        if GX:
            loss, la, lb = _d_min(slz, dem, eps, SMOOTH)
            ex = gain - loss
            d_ex = d_gain - (la * s_slz + lb * d_dem)
            slz = slz + ex
            s_slz = s_slz + d_ex
        q2 = k2 * slz
        d_q2 = d_k2 * slz + k2 * s_slz
        slz = slz - q2
        s_slz = s_slz - d_q2
        # ---- ḡ_t · ∂y_t/∂(θ, s₀) for the outputs that carry an upstream gradient
        acc = _seed(acc, d_q0 + d_q1 + d_q2, gout_ptr, goff_ptr, gidx, mask, 0, GMASK)
        acc = _seed(acc, d_q0, gout_ptr, goff_ptr, gidx, mask, 1, GMASK)
        acc = _seed(acc, d_q1, gout_ptr, goff_ptr, gidx, mask, 2, GMASK)
        acc = _seed(acc, d_q2, gout_ptr, goff_ptr, gidx, mask, 3, GMASK)
        acc = _seed(acc, d_et, gout_ptr, goff_ptr, gidx, mask, 4, GMASK)
        acc = _seed(acc, d_rech, gout_ptr, goff_ptr, gidx, mask, 5, GMASK)
        acc = _seed(acc, d_exc, gout_ptr, goff_ptr, gidx, mask, 6, GMASK)
        acc = _seed(acc, d_tos, gout_ptr, goff_ptr, gidx, mask, 7, GMASK)
        acc = _seed(acc, d_prc, gout_ptr, goff_ptr, gidx, mask, 8, GMASK)
        acc = _seed(acc, d_cr, gout_ptr, goff_ptr, gidx, mask, 9, GMASK)
        acc = _seed(acc, d_ex, gout_ptr, goff_ptr, gidx, mask, 10, GMASK)
        acc = _seed(acc, s_sp, gout_ptr, goff_ptr, gidx, mask, 11, GMASK)
        acc = _seed(acc, s_mw, gout_ptr, goff_ptr, gidx, mask, 12, GMASK)
        acc = _seed(acc, s_sm, gout_ptr, goff_ptr, gidx, mask, 13, GMASK)
        acc = _seed(acc, s_suz, gout_ptr, goff_ptr, gidx, mask, 14, GMASK)
        acc = _seed(acc, s_slz, gout_ptr, goff_ptr, gidx, mask, 15, GMASK)
    if HAS_GFIN:
        acc += tl.load(gfin_ptr + 0 * n_cells + cell, mask=mask, other=0.0) * s_sp
        acc += tl.load(gfin_ptr + 1 * n_cells + cell, mask=mask, other=0.0) * s_mw
        acc += tl.load(gfin_ptr + 2 * n_cells + cell, mask=mask, other=0.0) * s_sm
        acc += tl.load(gfin_ptr + 3 * n_cells + cell, mask=mask, other=0.0) * s_suz
        acc += tl.load(gfin_ptr + 4 * n_cells + cell, mask=mask, other=0.0) * s_slz
    tl.store(grad_ptr + cell * QP + q, acc, mask=mask & (q < QP))


# ------------------------------------------------------------------------ torch glue
def _pack(
    params: Mapping[str, Tensor], n: int, m: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Parameters ``{name: [N, m]}`` → ``[N, m, K]`` in kernel order (absent: neutral values)."""
    par = torch.empty(n, m, K, dtype=dtype, device=device)
    for k, name in enumerate(KERNEL_PARAMS):
        if name in params:
            par[:, :, k] = params[name].detach()
        else:
            par[:, :, k] = 1.0 if name == "betaet" else 0.0
    return par


def _check_static(params: Mapping[str, Tensor], who: str) -> None:
    dyn = sorted(k for k, v in params.items() if v.dim() == 3)
    if dyn:
        raise ValueError(
            f"{who}: dynamic (time-varying) parameters {dyn} are not supported by the triton "
            "kernels; use backend='torch' or 'numba'"
        )


def _check_options(options: HBVOptions, who: str) -> None:
    if not isinstance(options, HBVOptions):
        raise TypeError(f"{who}: options must be an HBVOptions, got {type(options).__name__}")


def _area(area_km2: Tensor | None, gx: bool, n: int, like: Tensor, who: str) -> Tensor:
    if gx and area_km2 is None:
        raise ValueError(f"{who}: groundwater_exchange needs area_km2 (upstream area, km²)")
    if area_km2 is None:
        return torch.zeros(n, dtype=like.dtype, device=like.device)
    return area_km2.detach().to(like.device, like.dtype).contiguous()


def _consts(options: HBVOptions, like: Tensor) -> Tensor:
    """ε and the soil floor as a tensor in the data dtype (no float32 rounding in float64 runs)."""
    return torch.tensor([options.eps, options.nearzero], dtype=like.dtype, device=like.device)


def _launch_forward(prc, tmp, pet, area, par, init, options: HBVOptions, block):
    n, t = prc.shape
    m = par.shape[1]
    cells = n * m
    out = torch.empty(NOUT, cells, t, dtype=prc.dtype, device=prc.device)
    final = torch.empty(NS, cells, dtype=prc.dtype, device=prc.device)
    grid = (triton.cdiv(cells, block),)
    _hbv_kernel[grid](
        prc, tmp, pet, area, par, init, _consts(options, prc), out, final, cells, t, m, K=K,
        BETAET=options.betaet, CAP=options.capillary, GX=options.groundwater_exchange,
        BLOCK=block,
    )  # fmt: skip
    return out.view(NOUT, n, m, t).mean(2), final.view(NS, n, m)


def hbv_triton_forward(
    prc: Tensor,
    tmp: Tensor,
    pet: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    *,
    options: HBVOptions,
    area_km2: Tensor | None = None,
    block: int = 128,
) -> dict[str, Tensor]:
    """HBV forward with the fused triton kernel (no autograd graph); ``options`` as
    :func:`gnnhydro.runoff.hbv.hbv_step`.

    Shapes:
        prc, tmp, pet ``[N, T]``; params ``[N, m]`` (static); states ``[N, m]``; area_km2 ``[N]``
        (upstream area, km², with ``groundwater_exchange``); result as
        :func:`gnnhydro.runoff.hbv.hbv_torch_loop`.
    """
    _check_options(options, "hbv_triton_forward")
    _check_static(params, "hbv_triton_forward")
    n, _ = prc.shape
    m = next(iter(states.values())).shape[1]
    dt, dev = prc.dtype, prc.device
    par = _pack(params, n, m, dt, dev).contiguous()
    area = _area(area_km2, options.groundwater_exchange, n, prc, "hbv_triton_forward")
    init = torch.stack([states[s].detach().to(dev, dt) for s in HBV_STATES]).contiguous()
    means, final = _launch_forward(
        prc.detach().contiguous(), tmp.detach().contiguous(), pet.detach().contiguous(), area,
        par, init, options, block,
    )  # fmt: skip
    res = {k: means[i] for i, k in enumerate(HBV_OUTPUTS)}
    for i, s in enumerate(HBV_STATES):
        res[f"final_{s}"] = final[i]
    return res


def hbv_triton_sensitivity_grads(
    prc: Tensor,
    tmp: Tensor,
    pet: Tensor,
    area: Tensor,
    par: Tensor,
    init: Tensor,
    grads: tuple[Tensor | None, ...],
    grad_final: Tensor | None,
    *,
    options: HBVOptions,
    block: int = 16,
) -> tuple[Tensor, Tensor]:
    """Vector-Jacobian product by forward sensitivities (the backward of the triton path).

    Re-runs the model with ``S = ∂state/∂(θ, s₀)`` and returns ``Σ_t ḡ_t·∂y_t/∂θ`` and
    ``Σ_t ḡ_t·∂y_t/∂s₀`` (plus the final-state terms), where ``y_t`` are the per-step outputs of
    :data:`HBV_OUTPUTS` (means over components) and ``ḡ_t`` their upstream gradients.

    Shapes:
        prc, tmp, pet ``[N, T]`` (contiguous, data dtype); area ``[N]`` km²; par ``[N, m, K]``;
        init ``[5, N, m]``; grads: 16 entries ``[N, T]`` or None; grad_final ``[5, N, m]`` or
        None; result ``([N, m, K], [5, N, m])``.
    """
    n, t = prc.shape
    m = par.shape[1]
    cells = n * m
    dt, dev = prc.dtype, prc.device
    present = [i for i, g in enumerate(grads) if g is not None]
    gmask = sum(1 << i for i in present)
    if present:  # upstream gradients of the means: ḡ/m per component
        gout = torch.stack([grads[i].detach().to(dev, dt) for i in present]) / m
    else:
        gout = torch.zeros(1, dtype=dt, device=dev)
    offs = [0] * NOUT
    for slot, i in enumerate(present):
        offs[i] = slot * n * t
    goff = torch.tensor(offs, dtype=torch.int64, device=dev)
    if grad_final is not None:
        gfin = grad_final.detach().to(dev, dt).reshape(NS, cells).contiguous()
    else:
        gfin = torch.zeros(1, dtype=dt, device=dev)
    out = torch.empty(cells, QP, dtype=dt, device=dev)
    grid = (triton.cdiv(cells, block),)
    _hbv_sens_kernel[grid](
        prc, tmp, pet, area, par, init, _consts(options, prc), gout.contiguous(), goff,
        gfin, out, cells, t, m, K=K, QP=QP, SMOOTH=options.eps > 0, BETAET=options.betaet,
        CAP=options.capillary, GX=options.groundwater_exchange, GMASK=gmask,
        HAS_GFIN=grad_final is not None, BLOCK=block,
    )  # fmt: skip
    gpar = out[:, :K].reshape(n, m, K)
    ginit = out[:, K : K + NS].t().reshape(NS, n, m)
    return gpar, ginit


class HBVTritonSensitivity(torch.autograd.Function):
    """Triton forward; backward by forward sensitivities in one fused triton kernel.

    Inputs: forcing ``[N, T]`` ×3, upstream area ``[N]`` (km²), the :class:`HBVOptions`, the
    launch settings (``block``, ``sens_block``, ``compute_dtype``), parameter names, initial
    states ``[5, N, m]``, then the static parameter tensors ``[N, m]``.  Outputs: the 16
    per-step outputs ``[N, T]`` and the final states ``[5, N, m]``.  The backward re-runs the
    model propagating ``S = ∂state/∂(θ, s₀)`` and accumulates the vector-Jacobian product
    forward in time: no tape, memory flat in T.  No gradient w.r.t. the forcing or the area.
    """

    @staticmethod
    def forward(ctx, prc, tmp, pet, area, options, launch, names, init, *ptensors):
        n, _ = prc.shape
        m = init.shape[-1]
        dev = prc.device
        dt = launch["compute_dtype"] or prc.dtype
        par = _pack(dict(zip(names, ptensors, strict=True)), n, m, dt, dev).contiguous()
        arrays = tuple(
            x.detach().to(dev, dt).contiguous() for x in (prc, tmp, pet, area, par, init)
        )
        means, final = _launch_forward(*arrays, options, launch["block"])
        means, final = means.to(prc.dtype), final.to(prc.dtype)
        ctx.arrays = arrays
        ctx.options = options
        ctx.launch = launch
        ctx.names = names
        ctx.pdtypes = [p.dtype for p in ptensors]
        ctx.idtype = init.dtype
        return (*means.unbind(0), final)

    @staticmethod
    def backward(ctx, *grads):
        gpar, ginit = hbv_triton_sensitivity_grads(
            *ctx.arrays, grads[:NOUT], grads[NOUT], options=ctx.options,
            block=ctx.launch["sens_block"],
        )  # fmt: skip
        pgrads = [
            gpar[:, :, KERNEL_PARAMS.index(k)].to(d).contiguous()
            for k, d in zip(ctx.names, ctx.pdtypes, strict=True)
        ]
        nones = (None,) * 7  # forcing ×3, area, options, launch settings, names
        return (*nones, ginit.to(ctx.idtype).contiguous(), *pgrads)


def hbv_triton_sensitivity_apply(
    prc: Tensor,
    tmp: Tensor,
    pet: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    *,
    options: HBVOptions,
    area_km2: Tensor | None = None,
    block: int = 128,
    sens_block: int = 16,
    compute_dtype: torch.dtype | None = torch.float64,
) -> dict[str, Tensor]:
    """Fused triton HBV whose backward uses forward sensitivities (memory flat in T).

    Same equations, options and outputs as
    :func:`gnnhydro.runoff.kernels.hbv_numba.hbv_sensitivity_apply`; gradients flow to the
    static parameters and the initial states (not to the forcing).

    Args:
        options: as :func:`gnnhydro.runoff.hbv.hbv_step` (the sensitivities are those of the
            smoothed model: ``HBV(gradient="sensitivity")`` uses ``eps`` = 0.01 by default).
        compute_dtype: dtype the kernels compute in; float64 (default) as the numba kernels,
            outputs and gradients rounded to the inputs' dtypes.  ``None`` computes in the
            forcing's dtype: float32 is faster on GPUs with slow float64 but loses accuracy
            where a store is drained by a smoothed minimum of nearly its whole content
            (``s − min_s(s, d)`` with ``s ≪ d`` keeps only ~ε²s/4, e.g. a 1e-3 relative error
            on a near-empty upper zone with ε = 0.01).
        block: cells per program of the forward kernel.
        sens_block: cells per program of the sensitivity kernel (each cell carries a
            ``[5, QP]`` sensitivity tile, ``QP`` = 32).

    Shapes:
        prc, tmp, pet ``[N, T]``; params ``[N, m]``; states ``[N, m]``; area_km2 ``[N]``
        (km², with ``groundwater_exchange``); result as
        :func:`gnnhydro.runoff.hbv.hbv_torch_loop`.
    """
    who = "hbv_triton_sensitivity_apply"
    _check_options(options, who)
    _check_static(params, who)
    if prc.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{who}: forcing must be float32 or float64, got {prc.dtype}")
    names = tuple(k for k in KERNEL_PARAMS if k in params)
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ValueError(f"{who}: unknown HBV parameter(s) {unknown}")
    init = torch.stack([states[s] for s in HBV_STATES])
    area = _area(area_km2, options.groundwater_exchange, prc.shape[0], prc, who)
    launch = {"block": int(block), "sens_block": int(sens_block), "compute_dtype": compute_dtype}
    res = HBVTritonSensitivity.apply(
        prc, tmp, pet, area, options, launch, names, init, *(params[k] for k in names)
    )
    out = dict(zip(HBV_OUTPUTS, res[:NOUT], strict=True))
    for i, s in enumerate(HBV_STATES):
        out[f"final_{s}"] = res[NOUT][i]
    return out

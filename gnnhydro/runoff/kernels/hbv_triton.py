"""Fused triton kernel for the HBV time loop (GPU forward; runs under ``TRITON_INTERPRET=1``).

One program handles ``BLOCK`` cells (node × component, flattened); each keeps its five stores in
registers and walks through time, so the whole run is a single launch (no per-step kernels).
The equations and threshold smoothing are those of :func:`gnnhydro.runoff.hbv.hbv_step`
(computed in float32 or float64 as the inputs), including the δHBV 2.0 groundwater exchange.
Static parameters only; no gradient (the autograd loop or the CPU kernels provide gradients).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl
from torch import Tensor

from gnnhydro.runoff.hbv import HBV_OUTPUTS, HBV_STATES, KERNEL_PARAMS

__all__ = ["hbv_triton_forward"]

NS = 5
NF = 11


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
        g = (a - b) * (a - b) + eps * eps * a * b
        root = tl.sqrt(tl.maximum(g, 0.0))
        r = 0.5 * (a + b - root)
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
    prc_ptr, tmp_ptr, pet_ptr, area_ptr, par_ptr, init_ptr, out_ptr, final_ptr,
    n_cells, n_steps, m, eps, nz,
    K: tl.constexpr, BETAET: tl.constexpr, CAP: tl.constexpr, GX: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cell = pid * BLOCK + tl.arange(0, BLOCK)
    mask = cell < n_cells
    node = cell // m
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


def hbv_triton_forward(
    prc: Tensor,
    tmp: Tensor,
    pet: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    *,
    eps: float = 0.0,
    nearzero: float = 1e-5,
    betaet: bool = False,
    capillary: bool = False,
    groundwater_exchange: bool = False,
    area_km2: Tensor | None = None,
    block: int = 128,
) -> dict[str, Tensor]:
    """HBV forward with the fused triton kernel (no autograd graph).

    Shapes:
        prc, tmp, pet ``[N, T]``; params ``[N, m]`` (static); states ``[N, m]``; area_km2 ``[N]``
        (upstream area, km², with ``groundwater_exchange``); result as :func:`gnnhydro.runoff.hbv.hbv_torch_loop`.
    """
    if any(v.dim() == 3 for v in params.values()):
        raise ValueError("hbv_triton_forward: dynamic (time-varying) parameters not supported")
    n, t = prc.shape
    m = next(iter(states.values())).shape[1]
    dt, dev = prc.dtype, prc.device
    par = torch.empty(n, m, len(KERNEL_PARAMS), dtype=dt, device=dev)
    for k, name in enumerate(KERNEL_PARAMS):
        if name in params:
            par[:, :, k] = params[name].detach()
        else:
            par[:, :, k] = 1.0 if name == "betaet" else 0.0
    if groundwater_exchange and area_km2 is None:
        raise ValueError("hbv_triton_forward: groundwater_exchange needs area_km2 (km²)")
    area = (area_km2 if area_km2 is not None else torch.zeros(n)).detach().to(dev, dt)
    init = torch.stack([states[s].detach().to(dt) for s in HBV_STATES]).contiguous()
    cells = n * m
    out = torch.empty(NS + NF, cells, t, dtype=dt, device=dev)
    final = torch.empty(NS, cells, dtype=dt, device=dev)
    grid = (triton.cdiv(cells, block),)
    _hbv_kernel[grid](
        prc.detach().contiguous(), tmp.detach().contiguous(), pet.detach().contiguous(),
        area.contiguous(), par.contiguous(), init, out, final, cells, t, m, float(eps),
        float(nearzero), K=len(KERNEL_PARAMS), BETAET=bool(betaet), CAP=bool(capillary),
        GX=bool(groundwater_exchange), BLOCK=block,
    )  # fmt: skip
    means = out.view(NS + NF, n, m, t).mean(2)
    res = {k: means[i] for i, k in enumerate(HBV_OUTPUTS)}
    for i, s in enumerate(HBV_STATES):
        res[f"final_{s}"] = final[i].view(n, m)
    return res

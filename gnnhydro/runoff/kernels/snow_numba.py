"""The degree-day snow step in numba (:mod:`gnnhydro.runoff.snow`), and a fused snow pass.

* :func:`snow_lin`: one step for one cell (float64 scalars) with the local derivatives its
  reverse needs, the one definition of the step; :func:`snow_fwd` (the step) and
  :func:`snow_reverse` / :func:`snow_vjp` (its vector-Jacobian product) are built on it.
  HBV's fused kernels (:mod:`gnnhydro.runoff.kernels.hbv_numba`) call them inside their step;
  like HBV's other primitives they are compiled once and inlined by LLVM.
* :class:`SnowFused`: the snow routine over time for every node (one snowpack per node), as a
  pass in front of a model that reads liquid water as its precipitation (GR4J and SAC-SMA with
  ``snow=True``): a numba forward and a hand-written adjoint over the daily stores, which the
  forward returns anyway (no extra tape).  Gradients flow to the four parameters, the initial
  stores and both forcing series, so the downstream kernel's precipitation adjoint reaches the
  snow parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from gnnhydro._numba import njit, run_chunks
from gnnhydro.runoff.kernels.primitives import min_d, relu_d, step_d
from gnnhydro.runoff.snow import SNOW_PARAMS, SNOW_STATES

__all__ = ["snow_lin", "snow_fwd", "snow_reverse", "snow_vjp", "SnowFused", "snow_numba_apply"]

_jit = njit(fastmath=False, error_model="numpy", forceinline=True)
_kjit = njit(fastmath=False, error_model="numpy", nogil=True, kernel="snow")


@_jit
def snow_lin(sp, mw, pr, ta, tt, cfmax, cfr, cwh, eps):
    """One step and the local derivatives of its reverse (the one definition of the step).

    Returns ``(sp, mw, rain, tos, fr, dfr, rm, drm, dm_pm, dm_sp, rf, drf, dr_pr, dr_mw, sp3,
    dtos)``: the stores after the step (mm), rain and tosoil (mm/step), then the rain fraction,
    the melt and refreezing drivers and the derivatives of the three thresholds (unused ones are
    dead code after inlining, so :func:`snow_fwd` costs the forward only).
    """
    dtemp = ta - tt
    fr, dfr = step_d(dtemp, eps)
    rain = pr * fr
    sp1 = sp + (pr - rain)
    rm, drm = relu_d(dtemp, eps)
    melt, dm_pm, dm_sp = min_d(cfmax * rm, sp1, eps)
    sp2 = sp1 - melt
    mw1 = mw + melt
    rf, drf = relu_d(-dtemp, eps)
    refr, dr_pr, dr_mw = min_d(cfr * cfmax * rf, mw1, eps)
    sp3 = sp2 + refr
    mw2 = mw1 - refr
    tos, dtos = relu_d(mw2 - cwh * sp3, eps)
    return (sp3, mw2 - tos, rain, tos, fr, dfr, rm, drm, dm_pm, dm_sp, rf, drf, dr_pr, dr_mw,
            sp3, dtos)  # fmt: skip


@_jit
def snow_fwd(sp, mw, pr, ta, tt, cfmax, cfr, cwh, eps):
    """One step: returns snowpack, meltwater after it (mm), rain and tosoil (mm/step)."""
    lin = snow_lin(sp, mw, pr, ta, tt, cfmax, cfr, cwh, eps)
    return lin[0], lin[1], lin[2], lin[3]


@_jit
def snow_reverse(lin, pr, cfmax, cfr, cwh, a_sp, a_mw, a_rain, a_tos):
    """Reverse of the step from its :func:`snow_lin` tuple ``lin``.

    ``a_sp``, ``a_mw``: adjoints of the stores after the step; ``a_rain``, ``a_tos``: of the two
    outputs.  Returns the adjoints of the stores before it, of precipitation, temperature and
    of ``tt``, ``cfmax``, ``cfr``, ``cwh``.
    """
    fr, dfr, rm, drm, dm_pm, dm_sp = lin[4], lin[5], lin[6], lin[7], lin[8], lin[9]
    rf, drf, dr_pr, dr_mw, sp3, dtos = lin[10], lin[11], lin[12], lin[13], lin[14], lin[15]
    a_xs = (a_tos - a_mw) * dtos
    a_mw2 = a_mw + a_xs
    a_sp3 = a_sp - a_xs * cwh
    a_cwh = -a_xs * sp3
    a_refr = a_sp3 - a_mw2
    a_pr = a_refr * dr_pr
    a_mw1 = a_mw2 + a_refr * dr_mw
    a_cfr = a_pr * cfmax * rf
    a_cfmax = a_pr * cfr * rf
    a_dt = -a_pr * cfr * cfmax * drf
    a_melt = a_mw1 - a_sp3
    a_pm = a_melt * dm_pm
    a_sp1 = a_sp3 + a_melt * dm_sp
    a_cfmax += a_pm * rm
    a_dt += a_pm * cfmax * drm
    a_dt += (a_rain - a_sp1) * pr * dfr
    a_prc = a_sp1 + (a_rain - a_sp1) * fr  # rain = P·fr, snow = P − rain
    return a_sp1, a_mw1, a_prc, a_dt, -a_dt, a_cfmax, a_cfr, a_cwh


@_jit
def snow_vjp(sp0, mw0, pr, ta, tt, cfmax, cfr, cwh, eps, a_sp, a_mw, a_rain, a_tos):
    """Adjoint of :func:`snow_fwd` at the stores ``sp0``, ``mw0`` before the step (arguments
    and results as :func:`snow_reverse`)."""
    lin = snow_lin(sp0, mw0, pr, ta, tt, cfmax, cfr, cwh, eps)
    return snow_reverse(lin, pr, cfmax, cfr, cwh, a_sp, a_mw, a_rain, a_tos)


@_kjit
def _forward_kernel(n0, n1, prc, tmp, prm, s0, eps, out, s_fin):
    """Per node: ``out`` ``[3, N, T]`` = liquid water (rain + tosoil), snowpack, meltwater after
    each step; ``s_fin`` ``[2, N]``."""
    n_steps = prc.shape[1]
    for n in range(n0, n1):
        sp = s0[0, n]
        mw = s0[1, n]
        tt, cfmax, cfr, cwh = prm[n, 0], prm[n, 1], prm[n, 2], prm[n, 3]
        for t in range(n_steps):
            sp, mw, rain, tos = snow_fwd(sp, mw, prc[n, t], tmp[n, t], tt, cfmax, cfr, cwh, eps)
            out[0, n, t] = rain + tos
            out[1, n, t] = sp
            out[2, n, t] = mw
        s_fin[0, n] = sp
        s_fin[1, n] = mw


@_kjit
def _adjoint_kernel(n0, n1, prc, tmp, prm, s0, eps, traj, gout, gfin, gprm, gs0, gforce):
    """Reverse sweep per node over the stores of the forward (``traj`` = its ``out``)."""
    n_steps = prc.shape[1]
    for n in range(n0, n1):
        tt, cfmax, cfr, cwh = prm[n, 0], prm[n, 1], prm[n, 2], prm[n, 3]
        a_sp = gfin[0, n]
        a_mw = gfin[1, n]
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        g3 = 0.0
        for t in range(n_steps - 1, -1, -1):
            if t > 0:
                sp0 = traj[1, n, t - 1]
                mw0 = traj[2, n, t - 1]
            else:
                sp0 = s0[0, n]
                mw0 = s0[1, n]
            a_sp += gout[1, n, t]
            a_mw += gout[2, n, t]
            g_liq = gout[0, n, t]
            a_sp, a_mw, a_p, a_t, d0, d1, d2, d3 = snow_vjp(
                sp0, mw0, prc[n, t], tmp[n, t], tt, cfmax, cfr, cwh, eps, a_sp, a_mw, g_liq, g_liq
            )
            gforce[0, n, t] = a_p
            gforce[1, n, t] = a_t
            g0 += d0
            g1 += d1
            g2 += d2
            g3 += d3
        gprm[n, 0] = g0
        gprm[n, 1] = g1
        gprm[n, 2] = g2
        gprm[n, 3] = g3
        gs0[0, n] = a_sp
        gs0[1, n] = a_mw


def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def _from_np(x: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(like.device, like.dtype)


class SnowFused(torch.autograd.Function):
    """Fused snow pass: numba forward, exact hand-written adjoint.

    Inputs: precipitation, temperature ``[N, T]``; ``eps``; parameters ``[N, 4]`` (``tt``,
    ``cfmax``, ``cfr``, ``cwh``); initial stores ``[2, N]``.  Outputs: liquid water, snowpack,
    meltwater ``[N, T]`` each, final stores ``[2, N]``.
    """

    @staticmethod
    def forward(ctx, prc, tmp, eps, prm, s0):
        # unused outputs reach the backward as None, not as materialised zero tensors (one
        # [N, T] seed each, read by the adjoint)
        ctx.set_materialize_grads(False)
        n, t = prc.shape
        arrays = (_np(prc), _np(tmp), _np(prm), _np(s0))
        out = np.empty((3, n, t))
        s_fin = np.empty((2, n))
        run_chunks(_forward_kernel, n, *arrays, float(eps), out, s_fin)
        ctx.arrays = arrays
        ctx.traj = out
        ctx.eps = float(eps)
        return (*(_from_np(out[i], prc) for i in range(3)), _from_np(s_fin, prc))

    @staticmethod
    def backward(ctx, g_liq, g_sp, g_mw, g_fin):
        if all(g is None for g in (g_liq, g_sp, g_mw, g_fin)):  # no output reaches the loss
            return (None,) * len(ctx.needs_input_grad)
        prc, tmp, prm, s0 = ctx.arrays
        n, t = prc.shape

        def arr(g, shape):
            return _np(g) if g is not None else np.zeros(shape)

        gout = np.stack([arr(g, (n, t)) for g in (g_liq, g_sp, g_mw)])
        gfin = arr(g_fin, (2, n))
        gprm = np.zeros((n, 4))
        gs0 = np.zeros((2, n))
        gforce = np.zeros((2, n, t))
        run_chunks(
            _adjoint_kernel, n, prc, tmp, prm, s0, ctx.eps, ctx.traj, gout, gfin, gprm, gs0,
            gforce,
        )  # fmt: skip
        like = next(g for g in (g_liq, g_sp, g_mw, g_fin) if g is not None)
        gf = [_from_np(gforce[i], like) if ctx.needs_input_grad[i] else None for i in range(2)]
        return (*gf, None, _from_np(gprm, like), _from_np(gs0, like))


def snow_numba_apply(
    precip: Tensor,
    temp: Tensor,
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    eps: float = 0.0,
) -> dict[str, Tensor]:
    """The snow routine over time with the fused kernel.

    Shapes:
        precip (mm/step), temp (°C) ``[N, T]``; params ``tt``, ``cfmax``, ``cfr``, ``cwh``
        ``[N]``; states ``snowpack``, ``meltwater`` ``[N, 1]`` (mm); result ``liquid_water``,
        ``snowpack``, ``meltwater`` ``[N, T]`` and ``final_snowpack``, ``final_meltwater``
        ``[N, 1]``.
    """
    prm = torch.stack([params[k].reshape(-1) for k in SNOW_PARAMS], dim=-1)
    s0 = torch.stack([states[k].reshape(-1) for k in SNOW_STATES])
    liquid, sp, mw, fin = SnowFused.apply(precip, temp, eps, prm, s0)
    return {
        "liquid_water": liquid,
        "snowpack": sp,
        "meltwater": mw,
        "final_snowpack": fin[0].unsqueeze(-1),
        "final_meltwater": fin[1].unsqueeze(-1),
    }

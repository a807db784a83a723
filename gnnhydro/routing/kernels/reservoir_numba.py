"""Reservoir storage integration (numba, CPU): the sub-stepped scheme of
:mod:`gnnhydro.routing.reservoirs` and its exact adjoint, float64, one row per (batch member,
reservoir), rows in parallel on the shared thread pool (:func:`gnnhydro._numba.run_chunks`).

The adjoint runs backwards in time over every sub-step; each data step's sub-step states are
recomputed from the storage at its start (kept by the forward), so memory is ``O(B·R·T)``
whatever the number of sub-steps. The ``min()``-capped release volumes, the capacity spill and
the ``relu``/power thresholds of the rates are differentiated as the forward's branches (the
gradient of the branch taken); a ``min`` of two equal values passes half the gradient to each,
as ``torch.minimum`` does, so the results equal autograd through the torch loop.

Conventions (numpy, C-contiguous, float64): ``inflow``/``out``/``spill``/``store`` ``[B, R, T]``;
``s0`` ``[B, R]``; ``props`` ``[B, R, P]`` (the operator's properties in the order of
``reservoirs._FUSED``); ``release`` ``[B, R, T]`` (``observed``) or ``[1, 1, 1]``.
"""

from __future__ import annotations

import math

import numpy as np

from gnnhydro._numba import njit, run_chunks

__all__ = ["LEARNED", "LEVEL_POOL", "OBSERVED", "integrate_forward", "integrate_backward"]

LEARNED, LEVEL_POOL, OBSERVED = 0, 1, 2
_G2 = 2.0 * 9.81  # 2·g, g as reservoirs.GRAVITY


@njit(nogil=True)
def _rates(kind, s, p):  # pragma: no cover - numba
    """``(O(S), P(S))`` [m³/s], the same operations as the torch operators."""
    if kind == LEARNED:  # p: capacity, dead fraction, release days, exponent
        dead = p[1] * p[0]
        active = p[0] - dead
        u = max(s - dead, 0.0) / active
        return (active / (p[2] * 86400.0) * u ** p[3] if u > 0.0 else 0.0), 0.0
    # p: area km², LkMxE, WeirE, WeirC, WeirL, Dam_Length, OrificeE, OrificeC, OrificeA
    h = p[6] + s / (p[0] * 1e6)
    e_o = _G2 * max(h - p[6], 0.0)
    d_w = min(max(h - p[2], 0.0), max(p[1] - p[2], 0.0))
    e_t = max(h - p[1], 0.0)
    orifice = p[7] * p[8] * math.sqrt(e_o) if e_o > 0.0 else 0.0
    weir = p[3] * p[4] * d_w**1.5 if d_w > 0.0 else 0.0
    top = p[3] * p[4] * p[5] * e_t**1.5 if e_t > 0.0 else 0.0
    return orifice + weir, top


@njit(nogil=True)
def _wmin(a, b):  # pragma: no cover - numba
    """Share of ``∂min(a, b)`` that goes to ``a`` (1, 0, or 1/2 at a tie, as torch)."""
    return 1.0 if a < b else (0.0 if a > b else 0.5)


@njit(nogil=True)
def _rates_vjp(kind, s, p, go, gp, gprop):  # pragma: no cover - numba
    """``go·∂O/∂S + gp·∂P/∂S``; adds ``go·∂O/∂p + gp·∂P/∂p`` to ``gprop``."""
    if kind == LEARNED:
        dead = p[1] * p[0]
        active = p[0] - dead
        x = s - dead
        if not x > 0.0:
            return 0.0
        tau = p[2] * 86400.0
        u = x / active
        ub = u ** p[3]
        o = active / tau * ub
        gu = go * active / tau * p[3] * ub / u
        g_active = go * ub / tau - gu * u / active
        g_dead = -gu / active - g_active
        gprop[0] += g_active + g_dead * p[1]
        gprop[1] += g_dead * p[0]
        gprop[2] -= go * o / tau * 86400.0
        gprop[3] += go * o * math.log(u)
        return gu / active
    area = p[0] * 1e6
    h = p[6] + s / area
    gh = 0.0
    e_o = _G2 * max(h - p[6], 0.0)
    if e_o > 0.0:
        sq = math.sqrt(e_o)
        gprop[7] += go * p[8] * sq
        gprop[8] += go * p[7] * sq
        g_e = go * p[7] * p[8] * 0.5 / sq * _G2
        gh += g_e
        gprop[6] -= g_e
    r1, r2 = max(h - p[2], 0.0), max(p[1] - p[2], 0.0)
    d_w = min(r1, r2)
    if d_w > 0.0:
        w15 = d_w**1.5
        gprop[3] += go * p[4] * w15
        gprop[4] += go * p[3] * w15
        g_d = go * p[3] * p[4] * 1.5 * math.sqrt(d_w)
        share = _wmin(r1, r2)
        if r1 > 0.0:
            gh += share * g_d
            gprop[2] -= share * g_d
        if r2 > 0.0:
            gprop[1] += (1.0 - share) * g_d
            gprop[2] -= (1.0 - share) * g_d
    e_t = max(h - p[1], 0.0)
    if e_t > 0.0:
        t15 = e_t**1.5
        gprop[3] += gp * p[4] * p[5] * t15
        gprop[4] += gp * p[3] * p[5] * t15
        gprop[5] += gp * p[3] * p[4] * t15
        g_t = gp * p[3] * p[4] * p[5] * 1.5 * math.sqrt(e_t)
        gh += g_t
        gprop[1] -= g_t
    gprop[6] += gh
    gprop[0] -= gh * s / (area * area) * 1e6
    return gh / area


@njit(nogil=True)
def _substep(kind, s, q, h, p):  # pragma: no cover - numba
    """One explicit sub-step: ``(S', V_O, V_P)``."""
    o, top = _rates(kind, s, p)
    avail = s + q * h
    vo = min(o * h, avail)
    vp = min(top * h, avail - vo)
    s1 = avail - vo - vp
    if kind == LEARNED and s1 > p[0]:  # spill above the capacity
        vp += s1 - p[0]
        s1 = p[0]
    return s1, vo, vp


@njit(nogil=True)
def _substep_vjp(kind, s, q, h, p, g_s1, g_vo, g_vp, gprop):  # pragma: no cover - numba
    """Adjoint of :func:`_substep` at ``s``: ``(∂L/∂S, ∂L/∂q)`` from the gradients of its three
    results; adds the property gradients to ``gprop``."""
    o, top = _rates(kind, s, p)
    avail = s + q * h
    a = o * h
    vo = min(a, avail)
    rem = avail - vo
    b = top * h
    vp = min(b, rem)
    if kind == LEARNED and rem - vp > p[0]:  # S' = C, V_P' = rem − C
        gprop[0] += g_s1 - g_vp
        g_s1 = g_vp
    g_rem = g_s1
    g_vp = g_vp - g_s1
    w = _wmin(b, rem)
    g_b = w * g_vp
    g_rem += (1.0 - w) * g_vp
    g_avail = g_rem
    g_vo = g_vo - g_rem
    w = _wmin(a, avail)
    g_avail += (1.0 - w) * g_vo
    g_s = g_avail + _rates_vjp(kind, s, p, w * g_vo * h, g_b * h, gprop)
    return g_s, g_avail * h


@njit(nogil=True, kernel="reservoir")
def _forward_rows(
    start, stop, kind, n, dt, inflow, s0, props, release, out, spill, store
):  # pragma: no cover - numba
    B, R, T = inflow.shape
    h = dt / n
    for row in range(start, stop):
        b, r = row // R, row % R
        p = props[b, r]
        s = s0[b, r]
        for t in range(T):
            q = inflow[b, r, t]
            if kind == OBSERVED:
                s = s + (q - release[b, r, t]) * dt
                out[b, r, t] = release[b, r, t]
                spill[b, r, t] = 0.0
                store[b, r, t] = s
                continue
            v_out = 0.0
            v_spill = 0.0
            for _ in range(n):
                s, vo, vp = _substep(kind, s, q, h, p)
                v_out += vo
                v_spill += vp
            out[b, r, t] = v_out / dt
            spill[b, r, t] = v_spill / dt
            store[b, r, t] = s


@njit(nogil=True, kernel="reservoir")
def _backward_rows(
    start, stop, kind, n, dt, inflow, s0, props, release, store, g_out, g_spill, g_store,
    g_inflow, g_s0, g_props, g_release,
):  # pragma: no cover - numba  # fmt: skip
    B, R, T = inflow.shape
    h = dt / n
    states = np.empty(n)
    for row in range(start, stop):
        b, r = row // R, row % R
        p = props[b, r]
        gp = g_props[b, r]
        lam = 0.0  # ∂L/∂S at the end of step t
        for t in range(T - 1, -1, -1):
            lam += g_store[b, r, t]
            if kind == OBSERVED:
                g_inflow[b, r, t] = lam * dt
                g_release[b, r, t] = g_out[b, r, t] - lam * dt
                continue
            q = inflow[b, r, t]
            s = store[b, r, t - 1] if t > 0 else s0[b, r]
            for k in range(n):  # the step's sub-step states, recomputed
                states[k] = s
                if k < n - 1:
                    s = _substep(kind, s, q, h, p)[0]
            go, gsp = g_out[b, r, t] / dt, g_spill[b, r, t] / dt
            gq = 0.0
            for k in range(n - 1, -1, -1):
                lam, dq = _substep_vjp(kind, states[k], q, h, p, lam, go, gsp, gp)
                gq += dq
            g_inflow[b, r, t] = gq
        g_s0[b, r] = lam


def integrate_forward(kind, n, dt, inflow, s0, props, release, out, spill, store) -> None:
    """Integrate every reservoir's storage: ``out``/``spill`` step means [m³/s], ``store`` [m³]
    at the end of each step (``kind``: :data:`LEARNED`, :data:`LEVEL_POOL`, :data:`OBSERVED`;
    ``n`` sub-steps of a step of ``dt`` seconds)."""
    B, R, _ = inflow.shape
    run_chunks(_forward_rows, B * R, kind, n, dt, inflow, s0, props, release, out, spill, store)


def integrate_backward(
    kind, n, dt, inflow, s0, props, release, store, g_out, g_spill, g_store, g_inflow, g_s0,
    g_props, g_release,
) -> None:  # fmt: skip
    """Exact adjoint of :func:`integrate_forward` (``store`` as it wrote it): fills ``g_inflow``
    ``[B, R, T]``, ``g_s0`` ``[B, R]``, ``g_props`` ``[B, R, P]`` and (``observed``)
    ``g_release`` ``[B, R, T]``, all float64, from the gradients of its three results."""
    B, R, _ = inflow.shape
    run_chunks(
        _backward_rows, B * R, kind, n, dt, inflow, s0, props, release, store, g_out, g_spill,
        g_store, g_inflow, g_s0, g_props, g_release,
    )  # fmt: skip

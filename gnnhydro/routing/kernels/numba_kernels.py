"""Fused CPU kernels (numba): walk reaches in topological order, gather the weighted outflows of
upstream reaches, and run each reach's recursion or convolution; the exact adjoints walk the
reaches in reverse order. Batch members run in parallel on a thread pool (the kernels release the GIL).
The kernels compile lazily for the lateral inflow's dtype and are cached on disk
(:func:`gnnhydro._numba.cache_dir`).

Conventions (all arrays numpy, C-contiguous):

* ``order`` ``[N]`` int64: a topological order of the nodes.
* ``up_ptr [N+1]``, ``up_src [E]``, ``up_w [E]``: incoming edges grouped by destination.
* ``down_ptr [N+1]``, ``down_dst [E]``, ``down_w [E]``: outgoing edges grouped by source.
* ``lat [B, N, T]``: lateral inflow (float32 or float64); ``out`` has the same dtype.
* Per-reach arithmetic is carried out in float64 whatever the storage dtype.
* Coefficient / kernel arrays have a leading axis of 1 (shared by the batch) or ``B``.
"""

from __future__ import annotations

import numpy as np

from gnnhydro._numba import njit, thread_pool

# fused multiply-add contraction only (no reassociation): the recursions' critical path is one
# FMA per step instead of a multiply then an add; results differ from unfused arithmetic only
# in the last bit of each operation
_FM = {"contract"}

__all__ = [
    "run_iir_forward",
    "run_iir_backward",
    "run_fir_forward",
    "run_fir_backward",
]


@njit(nogil=True, fastmath=_FM)
def _gather_inflow(buf, lat, out, i, up_ptr, up_src, up_w):  # pragma: no cover
    li = lat[i]
    T = buf.size
    for t in range(T):
        buf[t] = li[t]
    for e in range(up_ptr[i], up_ptr[i + 1]):
        oj = out[up_src[e]]
        w = up_w[e]
        for t in range(T):
            buf[t] += w * oj[t]


@njit(nogil=True, fastmath=_FM)
def _gather_adjoint(g, gout, glat, out, i, down_ptr, down_dst, down_w, gw):  # pragma: no cover
    """``g = ∂L/∂O_i`` (own output gradient plus the weighted inflow adjoints of the downstream
    reaches); with ``gw`` of size E also the edge-weight gradients ``Σ_t glat[dst]·O_i`` of the
    outgoing edges (down-CSR positions), fused into the same pass."""
    gi = gout[i]
    T = g.size
    for t in range(T):
        g[t] = gi[t]
    want_w = gw.size > 0
    oi = out[i]
    for e in range(down_ptr[i], down_ptr[i + 1]):
        gk = glat[down_dst[e]]
        w = down_w[e]
        if want_w:
            acc = 0.0
            for t in range(T):
                gt = np.float64(gk[t])
                g[t] += w * gt
                acc += gt * oi[t]
            gw[e] = acc
        else:
            for t in range(T):
                g[t] += w * gk[t]


@njit(nogil=True, fastmath=_FM, kernel="routing")
def _iir_member(
    lat, coef, init_in, init_out, order, up_ptr, up_src, up_w, out, inflow
):  # pragma: no cover
    N, T = lat.shape
    buf = np.empty(T, dtype=np.float64)
    keep = inflow.shape[0] == N
    for ii in range(order.size):
        i = order[ii]
        _gather_inflow(buf, lat, out, i, up_ptr, up_src, up_w)
        c0 = coef[i, 0]
        c1 = coef[i, 1]
        c2 = coef[i, 2]
        ip = init_in[i]
        op = init_out[i]
        oi = out[i]
        if keep and up_ptr[i + 1] > up_ptr[i]:  # the total inflow is stored in the same pass
            # (headwaters are skipped: their inflow is the lateral inflow, their rows never touched)
            ki = inflow[i]
            for t in range(T):
                it = buf[t]
                o = c0 * it + c1 * ip + c2 * op
                oi[t] = o
                ki[t] = it
                ip = it
                op = o
        else:
            for t in range(T):
                it = buf[t]
                o = c0 * it + c1 * ip + c2 * op
                oi[t] = o
                ip = it
                op = o


@njit(nogil=True, fastmath=_FM)
def _iir_adjoint_reach(ga, gb, wd, inflow, oi, gi, c0, c1, c2, in0, out0):  # pragma: no cover
    """Adjoint of one reach's recursion, backwards in time, with ``∂L/∂O_t = ga_t + wd·gb_t``;
    writes ``gi = ∂L/∂I`` and returns ``(λ_0, ∂L/∂c0, ∂L/∂c1, ∂L/∂c2)``."""
    T = gi.size
    lam_next = 0.0
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    if T == 0:
        return 0.0, s0, s1, s2
    i_t = np.float64(inflow[T - 1])
    for t in range(T - 1, 0, -1):
        i_prev = np.float64(inflow[t - 1])
        lam = (ga[t] + wd * gb[t]) + c2 * lam_next
        gi[t] = c0 * lam + c1 * lam_next
        s0 += lam * i_t
        s1 += lam * i_prev
        s2 += lam * oi[t - 1]
        lam_next = lam
        i_t = i_prev
    lam = (ga[0] + wd * gb[0]) + c2 * lam_next
    gi[0] = c0 * lam + c1 * lam_next
    s0 += lam * i_t
    s1 += lam * in0
    s2 += lam * out0
    return lam, s0, s1, s2


@njit(nogil=True, fastmath=_FM, kernel="routing")
def _iir_member_backward(
    gout,
    inflow_all,
    out,
    coef,
    init_in,
    init_out,
    order,
    up_ptr,
    up_src,
    up_w,
    down_ptr,
    down_dst,
    down_w,
    glat,
    gcoef,
    ginit_in,
    ginit_out,
    gw,
    lat,
):  # pragma: no cover
    N, T = inflow_all.shape
    g = np.empty(T, dtype=np.float64)
    zero = np.zeros(T, dtype=glat.dtype)
    want_w = gw.size > 0
    for ii in range(order.size - 1, -1, -1):
        i = order[ii]
        # ∂L/∂O_i = gout_i + w·glat_k: read straight from the arrays for at most one downstream
        # edge without edge-weight gradient (trees); else gathered into g first
        nd = down_ptr[i + 1] - down_ptr[i]
        c0 = coef[i, 0]
        c1 = coef[i, 1]
        c2 = coef[i, 2]
        inflow = inflow_all[i] if up_ptr[i + 1] > up_ptr[i] else lat[i]
        if nd == 0 and not want_w:
            lam0, s0, s1, s2 = _iir_adjoint_reach(
                gout[i], zero, 0.0, inflow, out[i], glat[i], c0, c1, c2,
                init_in[i], init_out[i],
            )  # fmt: skip
        elif nd == 1 and not want_w:
            e = down_ptr[i]
            lam0, s0, s1, s2 = _iir_adjoint_reach(
                gout[i], glat[down_dst[e]], down_w[e], inflow, out[i], glat[i], c0, c1,
                c2, init_in[i], init_out[i],
            )  # fmt: skip
        else:
            _gather_adjoint(g, gout, glat, out, i, down_ptr, down_dst, down_w, gw)
            lam0, s0, s1, s2 = _iir_adjoint_reach(
                g, zero, 0.0, inflow, out[i], glat[i], c0, c1, c2, init_in[i],
                init_out[i],
            )  # fmt: skip
        ginit_in[i] = coef[i, 1] * lam0
        ginit_out[i] = coef[i, 2] * lam0
        gcoef[i, 0] = s0
        gcoef[i, 1] = s1
        gcoef[i, 2] = s2


@njit(nogil=True, fastmath=_FM, kernel="routing")
def _fir_member(lat, h, sup, hist, order, up_ptr, up_src, up_w, out):  # pragma: no cover
    N, T = lat.shape
    H = hist.shape[1]
    buf = np.empty(T, dtype=np.float64)
    full = np.empty(H + T, dtype=np.float64)
    for ii in range(order.size):
        i = order[ii]
        _gather_inflow(buf, lat, out, i, up_ptr, up_src, up_w)
        for t in range(H):
            full[t] = hist[i, t]
        for t in range(T):
            full[H + t] = buf[t]
        j0 = sup[i, 0]
        j1 = sup[i, 1]
        hi = h[i]
        oi = out[i]
        for t in range(T):
            acc = 0.0
            jmax = min(j1, t + H + 1)
            for j in range(j0, jmax):
                acc += hi[j] * full[H + t - j]
            oi[t] = acc


@njit(nogil=True, fastmath=_FM, kernel="routing")
def _fir_member_backward(
    gout,
    lat,
    out,
    h,
    sup,
    hist,
    order,
    up_ptr,
    up_src,
    up_w,
    down_ptr,
    down_dst,
    down_w,
    glat,
    gh,
    ghist,
    gw,
):  # pragma: no cover
    N, T = lat.shape
    H = hist.shape[1]
    g = np.empty(T, dtype=np.float64)
    buf = np.empty(T, dtype=np.float64)
    full = np.empty(H + T, dtype=np.float64)
    for ii in range(order.size - 1, -1, -1):
        i = order[ii]
        _gather_adjoint(g, gout, glat, out, i, down_ptr, down_dst, down_w, gw)
        _gather_inflow(buf, lat, out, i, up_ptr, up_src, up_w)
        for t in range(H):
            full[t] = hist[i, t]
        for t in range(T):
            full[H + t] = buf[t]
        j0 = sup[i, 0]
        j1 = sup[i, 1]
        hi = h[i]
        # inflow adjoint at input index s (s = −H .. T−1): time-reversed correlation
        for s in range(-H, T):
            acc = 0.0
            lo = max(j0, -s)
            up = min(j1, T - s)
            for j in range(lo, up):
                acc += hi[j] * g[s + j]
            if s >= 0:
                glat[i, s] = acc
            else:
                ghist[i, H + s] = acc
        for j in range(j0, j1):
            acc = 0.0
            for t in range(max(j - H, 0), T):
                acc += g[t] * full[H + t - j]
            gh[i, j] = acc


# Python-level dispatch. Batch members run the serial (nogil) member kernels on the shared thread
# pool (:func:`gnnhydro._numba.thread_pool`): unlike a prange region, idle pool threads sleep
# instead of spinning, so they never compete with torch's threads (or the caller) for the cores
# between calls. One member runs on the caller.


def _per_member(fn, args, batched, shared) -> None:
    B = args[0].shape[0]

    def member(b):
        fn(
            *[
                (a[0 if i in shared and a.shape[0] == 1 else b] if i in batched else a)
                for i, a in enumerate(args)
            ]
        )

    if B == 1:
        member(0)
    else:
        list(thread_pool().map(member, range(B)))


# argument positions with a leading batch axis, and those that may be shared (axis of size 1)
_IIR_FWD = ({0, 1, 2, 3, 8, 9}, {1})
_IIR_BWD = ({0, 1, 2, 3, 4, 5, 13, 14, 15, 16, 17, 18}, {3})
_FIR_FWD = ({0, 1, 2, 3, 8}, {1, 2})
_FIR_BWD = ({0, 1, 2, 3, 4, 5, 13, 14, 15, 16}, {3, 4})


def run_iir_forward(*args) -> None:
    """``O_t = c0·I_t + c1·I_{t−1} + c2·O_{t−1}`` for every reach, upstream first.

    Shapes: lat/out ``[B, N, T]``; coef ``[1|B, N, 3]`` float64; init_in/init_out ``[B, N]``;
    inflow ``[B, N, T]`` receives the total inflow of every reach with upstream reaches (or
    ``[B, 0, 0]``: not kept); the rows of headwaters are left unwritten (their inflow is ``lat``).
    Only the reaches listed in ``order`` are routed (in that order)."""
    _per_member(_iir_member, args, *_IIR_FWD)


def run_iir_backward(*args) -> None:
    """Exact adjoint of :func:`run_iir_forward`, downstream first (``inflow`` as kept by the
    forward: reading it back is cheaper than regathering it from the upstream outflows; ``lat``,
    the last argument, stands in for the headwaters' rows).

    With ``λ_t = ∂L/∂O_t`` (total) ``= g_t + c2·λ_{t+1}``: ``∂L/∂I_t = c0·λ_t + c1·λ_{t+1}``,
    ``∂L/∂c0 = Σ λ_t I_t``, ``∂L/∂c1 = Σ λ_t I_{t−1}``, ``∂L/∂c2 = Σ λ_t O_{t−1}``; ``g`` of a
    reach is its own output gradient plus the weighted inflow adjoints of its downstream reaches.

    Shapes: gout/glat like lat; gcoef ``[B, N, 3]`` float64; ginit_* ``[B, N]`` float64;
    gw ``[B, E]`` float64 edge-weight gradients ``Σ_t ∂L/∂I_dst · O_src`` in down-CSR edge
    order, or ``[B, 0]`` (not wanted)."""
    _per_member(_iir_member_backward, args, *_IIR_BWD)


def run_fir_forward(*args) -> None:
    """``O_t = Σ_j h_j·I_{t−j}`` for every reach, upstream first; ``I`` before step 0 is read
    from ``hist`` (``hist[..., H−1]`` is step −1) and is zero before that.

    Shapes: lat/out ``[B, N, T]``; h ``[1|B, N, K]`` float64; sup ``[1|B, N, 2]`` int64 lag
    ranges ``[start, end)`` outside of which ``h`` is zero; hist ``[B, N, H]`` float64."""
    _per_member(_fir_member, args, *_FIR_FWD)


def run_fir_backward(*args) -> None:
    """Exact adjoint of :func:`run_fir_forward`: the inflow adjoint is the time-reversed correlation
    ``∂L/∂I_s = Σ_j h_j·g_{s+j}``; ``∂L/∂h_j = Σ_t g_t·I_{t−j}``.

    Shapes: glat like lat; gh ``[B, N, K]`` float64; ghist ``[B, N, H]`` float64; gw as in
    :func:`run_iir_backward`."""
    _per_member(_fir_member_backward, args, *_FIR_BWD)

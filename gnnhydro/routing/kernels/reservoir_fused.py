"""Fused forward of routing with reservoirs (no gradient): one numba pass walks the reaches in
topological order (each reach's first-order recursion) and integrates each reservoir where its
reach is done, with the formulas and the sub-stepped scheme of
:mod:`gnnhydro.routing.reservoirs`; batch members run in parallel on the kernels' thread pool.
Runs that need gradients or a state go stage by stage instead (same results, tested).

Shapes:
    lat ``[B, N, T]``; coefficients ``[1|B, N, 3]``; reservoir outputs ``[B, R, T]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.routing.reservoirs import _FUSED, RESERVOIR_REGISTRY, ReservoirRun

__all__ = ["route_fused"]

_FUSED_KERNEL: list = []


def _fused_kernel() -> Callable:
    """The numba kernel: reaches in topological order (first-order recursion), each reservoir
    integrated where its reach is done, with the same formulas and scheme as the torch path."""
    if _FUSED_KERNEL:
        return _FUSED_KERNEL[0]
    import numba

    @numba.njit(cache=True)
    def rates(kind, s, p):  # pragma: no cover - numba
        if kind == 0:
            cap, dead = p[0], p[1] * p[0]
            tau = p[2] * 86400.0
            u = max(s - dead, 0.0) / (cap - dead)
            rel = (cap - dead) / tau * u ** p[3] if u > 0.0 else 0.0
            return rel, 0.0
        h = p[6] + s / (p[0] * 1e6)
        d_o = max(h - p[6], 0.0)
        orifice = p[7] * p[8] * np.sqrt(2.0 * 9.81 * d_o) if d_o > 0.0 else 0.0
        d_w = min(max(h - p[2], 0.0), max(p[1] - p[2], 0.0))
        weir = p[3] * p[4] * d_w**1.5 if d_w > 0.0 else 0.0
        d_t = max(h - p[1], 0.0)
        top = p[3] * p[4] * p[5] * d_t**1.5 if d_t > 0.0 else 0.0
        return orifice + weir, top

    @numba.njit(cache=True, nogil=True)
    def kernel(  # pragma: no cover - numba
        b_start, b_stop, lat, coef, init_in, init_out, order, up_ptr, up_src, up_w, res_of,
        kind, props, s0, release, n_sub, dt, out, r_in, r_out, r_spill, r_store,
    ):  # fmt: skip
        B, N, T = lat.shape
        h = dt / n_sub
        inflow = np.empty(T)
        for b in range(b_start, b_stop):  # batch members [b_start, b_stop): one thread each
            bc = b if coef.shape[0] > 1 else 0
            bp = b if props.shape[0] > 1 else 0
            bs = b if s0.shape[0] > 1 else 0
            br = b if release.shape[0] > 1 else 0
            for i in order:
                for t in range(T):
                    inflow[t] = lat[b, i, t]
                for e in range(up_ptr[i], up_ptr[i + 1]):
                    j, w = up_src[e], up_w[e]
                    for t in range(T):
                        inflow[t] += w * out[b, j, t]
                c0, c1, c2 = coef[bc, i, 0], coef[bc, i, 1], coef[bc, i, 2]
                prev_i, prev_o = init_in[b, i], init_out[b, i]
                r = res_of[i]
                if r < 0:
                    for t in range(T):
                        y = c0 * inflow[t] + c1 * prev_i + c2 * prev_o
                        out[b, i, t] = y
                        prev_i, prev_o = inflow[t], y
                    continue
                s = s0[bs, r]
                p = props[bp, r]
                for t in range(T):
                    q_in = c0 * inflow[t] + c1 * prev_i + c2 * prev_o
                    prev_i, prev_o = inflow[t], q_in
                    r_in[b, r, t] = q_in
                    if kind == 2:
                        rel = release[br, r, t]
                        s = s + (q_in - rel) * dt
                        r_out[b, r, t] = rel
                        r_spill[b, r, t] = 0.0
                        r_store[b, r, t] = s
                        out[b, i, t] = rel
                        continue
                    v_out = 0.0
                    v_spill = 0.0
                    for _ in range(n_sub):
                        o_rate, p_rate = rates(kind, s, p)
                        avail = s + q_in * h
                        vo = min(o_rate * h, avail)
                        vp = min(p_rate * h, avail - vo)
                        s = avail - vo - vp
                        if kind == 0 and s > p[0]:
                            vp += s - p[0]
                            s = p[0]
                        v_out += vo
                        v_spill += vp
                    r_out[b, r, t] = v_out / dt
                    r_spill[b, r, t] = v_spill / dt
                    r_store[b, r, t] = s
                    out[b, i, t] = (v_out + v_spill) / dt

    _FUSED_KERNEL.append(kernel)
    return kernel


def route_fused(
    run: ReservoirRun,
    lat: Tensor,
    net: Any,
    edge_weight: Tensor,
    irf: Any,
    params: Mapping[str, Tensor],
    ctx: Any,
    state: Any,
    backend: Any,
    want_state: bool,
) -> Tensor | None:
    """Route ``lat [B, N, T]`` (internal steps) with the reservoirs in one numba pass, reaches
    in topological order and each reservoir integrated where its reach is done (float64 inside),
    recording the window in ``run``; or None where it does not apply: it serves forward runs
    without gradients of a recursive IRF on the numba backend with a built-in operator and no
    state to return (otherwise the stages run one by one with autograd, same results)."""
    from gnnhydro._numba import run_chunks
    from gnnhydro.routing.irf import RecursiveIRF

    op = run.operator
    tensors = [lat, edge_weight, *params.values(), *run.params.values(), run.storage]
    if (
        getattr(backend, "name", backend) != "numba"
        or want_state
        or not isinstance(irf, RecursiveIRF)
        or type(op) is not RESERVOIR_REGISTRY._items.get(op.name)
        or op.name not in _FUSED
        or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    ):
        return None
    coef = irf.step_coefficients(params, ctx)
    coef = coef.unsqueeze(0) if coef.dim() == 2 else coef
    B, N, T = lat.shape
    if state is None:
        init_in = init_out = lat.new_zeros(B, N)
    else:
        init_in, init_out = state.inflow[..., -1].expand(B, N), state.outflow.expand(B, N)
    code, names = _FUSED[op.name]
    R = run.nodes.numel()

    def np64(t: Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)

    if names:
        shape = torch.broadcast_shapes(*(run.params[n].shape for n in names))
        props = np.ascontiguousarray(
            np.stack([np.broadcast_to(np64(run.params[n]), shape) for n in names], -1)
        )
    else:
        props = np.zeros((1, R, 1))
    release = (
        np64(run.params["reservoir_release"][..., run.t : run.t + T])
        if code == 2
        else np.zeros((1, R, 1))
    )
    if code == 2 and release.shape[-1] != T:
        raise ValueError(
            f"reservoir operator 'observed': reservoir_release has too few steps for {run.t + T}"
        )
    up_ptr, up_src, up_w, *_ = net.csr_arrays(np64(edge_weight))
    lat_np = np.ascontiguousarray(lat.detach().cpu().numpy())  # its own dtype: no copy
    out = np.zeros_like(lat_np)
    r_in, r_out, r_spill, r_store = (np.zeros((B, R, T)) for _ in range(4))
    run_chunks(  # batch members in parallel, as the routing kernels run them
        _fused_kernel(), B,
        lat_np, np64(coef), np64(init_in), np64(init_out), net.order, up_ptr, up_src, up_w,
        run.res_of.numpy(), code, props, np64(run.storage), release,
        int(run.reservoir_substeps), float(run.step_seconds), out, r_in, r_out, r_spill, r_store,
    )  # fmt: skip

    def back(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a).to(device=lat.device, dtype=lat.dtype)

    window = tuple(back(a) for a in (r_in, r_out, r_spill, r_store))
    run._windows.append(window)
    run.storage = window[3][..., -1]
    run.t += T
    return back(out)

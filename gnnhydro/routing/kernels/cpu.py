"""autograd Functions around the fused numba kernels (CPU). Exact adjoints; the backward keeps
only the lateral inflow and the outflow of every reach, ``O(B·N·T)`` memory."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gnnhydro.routing.network import RoutingNetwork

__all__ = ["iir_route_numba", "fir_route_numba", "edge_weight_grad"]


def _np(t: Tensor, dtype=None) -> np.ndarray:
    # numpy copies (single-threaded) instead of torch's threaded .contiguous(), which stalls on
    # busy cores; numpy also accepts the stride-0 (expanded) gradients autograd often passes
    a = t.detach().numpy()
    if dtype is not None and a.dtype != dtype:
        return np.ascontiguousarray(a, dtype=dtype)
    return np.ascontiguousarray(a)


def edge_weight_grad(glat: Tensor, out: Tensor, edge_index: Tensor, chunk: int = 4096) -> Tensor:
    """``∂L/∂w_e = Σ_{b,t} (∂L/∂I_dst)·O_src`` for every edge.

    Shapes: glat/out ``[B, N, T]``; edge_index ``[2, E]``; result ``[E]``.
    """
    src, dst = edge_index
    parts = []
    for s in range(0, src.numel(), chunk):
        sl = slice(s, s + chunk)
        parts.append((glat[:, dst[sl]] * out[:, src[sl]]).sum(dim=(0, 2)))
    return torch.cat(parts) if parts else glat.new_zeros(0)


class _IIRNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lat, coef, init_in, init_out, edge_weight, net):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_iir_forward

        lat_np = _np(lat)
        csr = net.csr_arrays(_np(edge_weight, np.float64))
        out_np = np.empty_like(lat_np)
        grad = any(ctx.needs_input_grad[:5])
        # the total inflow of every reach is kept for the backward (O(B·N·T), like the output)
        inflow_np = (
            np.empty_like(lat_np) if grad else np.empty((lat_np.shape[0], 0, 0), lat_np.dtype)
        )
        run_iir_forward(
            lat_np,
            _np(coef, np.float64),
            _np(init_in, np.float64),
            _np(init_out, np.float64),
            net.order,
            csr[0],
            csr[1],
            csr[2],
            out_np,
            inflow_np,
        )
        out = torch.from_numpy(out_np)
        ctx.net = net
        ctx.csr = csr
        ctx.save_for_backward(torch.from_numpy(inflow_np), out, coef, init_in, init_out)
        return out

    @staticmethod
    def backward(ctx, gout):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_iir_backward

        inflow, out, coef, init_in, init_out = ctx.saved_tensors
        net, csr = ctx.net, ctx.csr
        B, N, T = out.shape
        lat_np = inflow.numpy()
        glat_np = np.empty_like(lat_np)
        gcoef = np.zeros((B, N, 3))
        gin = np.zeros((B, N))
        gout_state = np.zeros((B, N))
        run_iir_backward(
            _np(gout, lat_np.dtype),
            lat_np,
            _np(out),
            _np(coef, np.float64),
            _np(init_in, np.float64),
            _np(init_out, np.float64),
            net.order,
            *csr,
            glat_np,
            gcoef,
            gin,
            gout_state,
        )
        glat = torch.from_numpy(glat_np)
        g_coef = torch.from_numpy(gcoef).to(coef.dtype)
        if coef.shape[0] == 1:
            g_coef = g_coef.sum(0, keepdim=True)
        g_ew = edge_weight_grad(glat, out, net.edge_index) if ctx.needs_input_grad[4] else None
        return (
            glat,
            g_coef,
            torch.from_numpy(gin).to(init_in.dtype),
            torch.from_numpy(gout_state).to(init_out.dtype),
            g_ew,
            None,
        )


class _FIRNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lat, h, hist, edge_weight, sup, net):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_fir_forward

        lat_np = _np(lat)
        csr = net.csr_arrays(_np(edge_weight, np.float64))
        out_np = np.empty_like(lat_np)
        sup_np = _np(sup, np.int64)
        run_fir_forward(
            lat_np, _np(h, np.float64), sup_np, _np(hist, np.float64), net.order, *csr[:3], out_np
        )
        out = torch.from_numpy(out_np)
        ctx.net, ctx.csr, ctx.sup = net, csr, sup_np
        ctx.save_for_backward(lat, out, h, hist)
        return out

    @staticmethod
    def backward(ctx, gout):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_fir_backward

        lat, out, h, hist = ctx.saved_tensors
        net, csr = ctx.net, ctx.csr
        B, N, T = lat.shape
        lat_np = _np(lat)
        glat_np = np.empty_like(lat_np)
        gh = np.zeros((B, N, h.shape[-1]))
        ghist = np.zeros((B, N, hist.shape[-1]))
        run_fir_backward(
            _np(gout, lat_np.dtype),
            lat_np,
            _np(out),
            _np(h, np.float64),
            ctx.sup,
            _np(hist, np.float64),
            net.order,
            *csr,
            glat_np,
            gh,
            ghist,
        )
        glat = torch.from_numpy(glat_np)
        g_h = torch.from_numpy(gh).to(h.dtype)
        if h.shape[0] == 1:
            g_h = g_h.sum(0, keepdim=True)
        g_ew = edge_weight_grad(glat, out, net.edge_index) if ctx.needs_input_grad[3] else None
        return glat, g_h, torch.from_numpy(ghist).to(hist.dtype), g_ew, None, None


def iir_route_numba(
    lat: Tensor,
    coef: Tensor,
    init_in: Tensor,
    init_out: Tensor,
    edge_weight: Tensor,
    net: RoutingNetwork,
) -> Tensor:
    """Route ``lat [B, N, T]`` through first-order recursions ``coef [1|B, N, 3]``."""
    return _IIRNumba.apply(lat, coef, init_in, init_out, edge_weight, net)


def fir_route_numba(
    lat: Tensor, h: Tensor, hist: Tensor, edge_weight: Tensor, sup: Tensor, net: RoutingNetwork
) -> Tensor:
    """Route ``lat [B, N, T]`` through kernels ``h [1|B, N, K]`` with inflow history
    ``hist [B, N, H]`` and lag supports ``sup [1|B, N, 2]``."""
    return _FIRNumba.apply(lat, h, hist, edge_weight, sup, net)

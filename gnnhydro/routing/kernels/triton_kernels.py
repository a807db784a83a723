"""Triton kernels (CUDA; on CPU under ``TRITON_INTERPRET=1``): the per-reach time recursion of
first-order IRFs, forward and exact adjoint, launched once per topological level; gathering the
upstream outflows (and scattering the downstream adjoints) is done by torch between launches.
Kernel IRFs on CUDA use the pure-torch level path (grouped ``conv1d``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch import Tensor

from gnnhydro.routing.kernels.cpu import edge_weight_grad
from gnnhydro.routing.kernels.torch_path import fir_filter, index_add_aggregate, route_levels
from gnnhydro.routing.network import RoutingNetwork

__all__ = ["iir_route_triton", "fir_route_triton", "iir_level_forward", "iir_level_backward"]

BLOCK = 32


@triton.jit
def _iir_fwd_kernel(inflow, coef, init_in, init_out, out, n, T, coef_bstride, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    cbase = coef + b * coef_bstride + offs * 3
    c0 = tl.load(cbase, mask=mask, other=0.0).to(tl.float64)
    c1 = tl.load(cbase + 1, mask=mask, other=0.0).to(tl.float64)
    c2 = tl.load(cbase + 2, mask=mask, other=0.0).to(tl.float64)
    ip = tl.load(init_in + b * n + offs, mask=mask, other=0.0).to(tl.float64)
    op = tl.load(init_out + b * n + offs, mask=mask, other=0.0).to(tl.float64)
    row = (b * n + offs) * T
    for t in range(0, T):
        it = tl.load(inflow + row + t, mask=mask, other=0.0).to(tl.float64)
        o = c0 * it + c1 * ip + c2 * op
        tl.store(out + row + t, o.to(out.dtype.element_ty), mask=mask)
        ip = it
        op = o


@triton.jit
def _iir_bwd_kernel(
    g,
    inflow,
    out,
    coef,
    init_in,
    init_out,
    glat,
    gcoef,
    ginit_in,
    ginit_out,
    n,
    T,
    coef_bstride,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    cbase = coef + b * coef_bstride + offs * 3
    c0 = tl.load(cbase, mask=mask, other=0.0).to(tl.float64)
    c1 = tl.load(cbase + 1, mask=mask, other=0.0).to(tl.float64)
    c2 = tl.load(cbase + 2, mask=mask, other=0.0).to(tl.float64)
    row = (b * n + offs) * T
    lam_next = tl.zeros([BLOCK], dtype=tl.float64)
    s0 = tl.zeros([BLOCK], dtype=tl.float64)
    s1 = tl.zeros([BLOCK], dtype=tl.float64)
    s2 = tl.zeros([BLOCK], dtype=tl.float64)
    for tt in range(0, T):
        t = T - 1 - tt
        lam = tl.load(g + row + t, mask=mask, other=0.0).to(tl.float64) + c2 * lam_next
        tl.store(glat + row + t, (c0 * lam + c1 * lam_next).to(glat.dtype.element_ty), mask=mask)
        tp = tl.maximum(t - 1, 0)
        i_prev = tl.load(inflow + row + tp, mask=mask, other=0.0).to(tl.float64)
        o_prev = tl.load(out + row + tp, mask=mask, other=0.0).to(tl.float64)
        first = t == 0
        i_prev = tl.where(
            first, tl.load(init_in + b * n + offs, mask=mask, other=0.0).to(tl.float64), i_prev
        )
        o_prev = tl.where(
            first, tl.load(init_out + b * n + offs, mask=mask, other=0.0).to(tl.float64), o_prev
        )
        s0 += lam * tl.load(inflow + row + t, mask=mask, other=0.0).to(tl.float64)
        s1 += lam * i_prev
        s2 += lam * o_prev
        lam_next = lam
    tl.store(ginit_in + b * n + offs, c1 * lam_next, mask=mask)
    tl.store(ginit_out + b * n + offs, c2 * lam_next, mask=mask)
    gbase = gcoef + (b * n + offs) * 3
    tl.store(gbase, s0, mask=mask)
    tl.store(gbase + 1, s1, mask=mask)
    tl.store(gbase + 2, s2, mask=mask)


def iir_level_forward(inflow: Tensor, coef: Tensor, init_in: Tensor, init_out: Tensor) -> Tensor:
    """Recursion for one level. Shapes: inflow ``[B, n, T]``; coef ``[1|B, n, 3]``; init ``[B, n]``."""
    B, n, T = inflow.shape
    inflow = inflow.contiguous()
    out = torch.empty_like(inflow)
    coef = coef.contiguous()
    grid = (B, triton.cdiv(n, BLOCK))
    _iir_fwd_kernel[grid](
        inflow,
        coef,
        init_in.contiguous(),
        init_out.contiguous(),
        out,
        n,
        T,
        0 if coef.shape[0] == 1 else n * 3,
        BLOCK=BLOCK,
    )
    return out


def iir_level_backward(g, inflow, out, coef, init_in, init_out):
    """Adjoint of :func:`iir_level_forward`: ``(glat [B,n,T], gcoef [B,n,3] f64, ginit_in, ginit_out)``."""
    B, n, T = inflow.shape
    glat = torch.empty_like(inflow)
    gcoef = torch.empty(B, n, 3, dtype=torch.float64, device=inflow.device)
    gin = torch.empty(B, n, dtype=torch.float64, device=inflow.device)
    gout0 = torch.empty(B, n, dtype=torch.float64, device=inflow.device)
    grid = (B, triton.cdiv(n, BLOCK))
    coef = coef.contiguous()
    _iir_bwd_kernel[grid](
        g.contiguous(),
        inflow.contiguous(),
        out.contiguous(),
        coef,
        init_in.contiguous(),
        init_out.contiguous(),
        glat,
        gcoef,
        gin,
        gout0,
        n,
        T,
        0 if coef.shape[0] == 1 else n * 3,
        BLOCK=BLOCK,
    )
    return glat, gcoef, gin, gout0


def _source_levels(net: RoutingNetwork, device) -> list[Tensor]:
    key = ("src_levels", str(device))
    if key not in net._device_cache:
        lv = net.levels[net.edge_index[0]]
        order = torch.argsort(lv, stable=True)
        counts = torch.bincount(
            lv, minlength=int(net.levels.max()) + 1 if net.levels.numel() else 0
        )
        net._device_cache[key] = [e.to(device) for e in torch.split(order, counts.tolist())]
    return net._device_cache[key]


class _IIRTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lat, coef, init_in, init_out, edge_weight, net):  # type: ignore[override]
        nodes_l, edges_l, pos = net.level_groups(lat.device)
        ei = net.edge_index_on(lat.device)
        out = torch.empty_like(lat)
        inflow_all = torch.empty_like(lat)
        for nodes, edges in zip(nodes_l, edges_l):
            if nodes.numel() == 0:
                continue
            inflow = lat[:, nodes]
            if edges.numel():
                inflow = inflow + index_add_aggregate(
                    out, ei[0, edges], pos[ei[1, edges]], edge_weight[edges], nodes.numel()
                )
            inflow_all[:, nodes] = inflow
            out[:, nodes] = iir_level_forward(
                inflow, coef[:, nodes], init_in[:, nodes], init_out[:, nodes]
            )
        ctx.net = net
        ctx.save_for_backward(inflow_all, out, coef, init_in, init_out, edge_weight)
        return out

    @staticmethod
    def backward(ctx, gout):  # type: ignore[override]
        inflow, out, coef, init_in, init_out, edge_weight = ctx.saved_tensors
        net = ctx.net
        nodes_l, _, pos = net.level_groups(out.device)
        src_edges = _source_levels(net, out.device)
        ei = net.edge_index_on(out.device)
        B, N, T = out.shape
        glat = torch.zeros_like(out)
        gcoef = torch.zeros(B, N, 3, dtype=torch.float64, device=out.device)
        gin = torch.zeros(B, N, dtype=torch.float64, device=out.device)
        gio = torch.zeros(B, N, dtype=torch.float64, device=out.device)
        for level in range(len(nodes_l) - 1, -1, -1):
            nodes = nodes_l[level]
            if nodes.numel() == 0:
                continue
            g = gout[:, nodes]
            edges = src_edges[level] if level < len(src_edges) else src_edges[0][:0]
            if edges.numel():
                msg = glat[:, ei[1, edges]] * edge_weight[edges].view(1, -1, 1)
                g = g.index_add(1, pos[ei[0, edges]], msg)
            gl, gc, gi, go = iir_level_backward(
                g,
                inflow[:, nodes],
                out[:, nodes],
                coef[:, nodes],
                init_in[:, nodes],
                init_out[:, nodes],
            )
            glat[:, nodes] = gl
            gcoef[:, nodes] = gc
            gin[:, nodes] = gi
            gio[:, nodes] = go
        g_coef = gcoef.to(coef.dtype)
        if coef.shape[0] == 1:
            g_coef = g_coef.sum(0, keepdim=True)
        g_ew = edge_weight_grad(glat, out, ei) if ctx.needs_input_grad[4] else None
        return glat, g_coef, gin.to(init_in.dtype), gio.to(init_out.dtype), g_ew, None


def iir_route_triton(
    lat: Tensor,
    coef: Tensor,
    init_in: Tensor,
    init_out: Tensor,
    edge_weight: Tensor,
    net: RoutingNetwork,
    aggregate: Callable | None = None,
) -> Tensor:
    """Route ``lat [B, N, T]`` through first-order recursions with the triton level kernels."""
    return _IIRTriton.apply(lat, coef, init_in, init_out, edge_weight, net)


def fir_route_triton(
    lat: Tensor,
    h: Tensor,
    hist: Tensor,
    edge_weight: Tensor,
    net: RoutingNetwork,
    aggregate: Callable | None = None,
) -> Tensor:
    """Kernel IRFs on CUDA: the pure-torch level path (direct grouped convolution)."""

    def filt(inflow: Tensor, nodes: Tensor) -> Tensor:
        return fir_filter(inflow, h[:, nodes], hist[:, nodes])

    return route_levels(lat, net, edge_weight, filt, aggregate)

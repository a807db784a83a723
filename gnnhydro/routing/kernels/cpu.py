"""autograd Functions around the fused numba kernels (CPU). Exact adjoints; the backward keeps
the outflow and (recursive IRFs: the total inflow; kernel IRFs: the lateral inflow, the input
itself) of every reach, ``O(B·N·T)`` memory. Parameter and
edge-weight gradients are reduced inside the numba adjoint (no ``[B, N, T]`` torch temporaries)."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch
from torch import Tensor

from gnnhydro.routing.network import RoutingNetwork

__all__ = ["iir_route_numba", "fir_route_numba", "edge_weight_grad", "clear_buffer_pool"]


def _np(t: Tensor, dtype=None) -> np.ndarray:
    # numpy copies (single-threaded) instead of torch's threaded .contiguous(), which stalls on
    # busy cores; numpy also accepts the stride-0 (expanded) gradients autograd often passes
    a = t.detach().numpy()
    if dtype is not None and a.dtype != dtype:
        return np.ascontiguousarray(a, dtype=dtype)
    return np.ascontiguousarray(a)


class _BufferPool:
    """Recycles the large work/output arrays of the kernels across calls.

    Fresh multi-GB arrays cost page faults and (with transparent huge pages) memory compaction
    in the kernel, often more than the routing itself. Every array handed out is a view of a
    pooled base; when the last reference to the view dies (the output or gradient dropped by
    the caller, the saved inflow released by autograd) the base returns to the pool, so memory
    is never reused while anything can still see it. At most ``max_buffers`` bases and
    ``max_bytes`` are kept; :func:`clear_buffer_pool` releases them.
    """

    def __init__(self, max_buffers: int = 3, max_bytes: int = 3 << 30) -> None:
        self.max_buffers = max_buffers
        self.max_bytes = max_bytes
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        base = None
        with self._lock:
            for j, b in enumerate(self._free):
                if b.shape == tuple(shape) and b.dtype == dtype:
                    base = self._free.pop(j)
                    break
        if base is None:
            base = np.empty(shape, dtype)
        view = base.view()
        if base.nbytes >= (1 << 20):  # small arrays: the allocator is cheap enough
            weakref.finalize(view, self._release, base)
        return view

    def _release(self, base: np.ndarray) -> None:
        with self._lock:
            self._free.append(base)
            while len(self._free) > self.max_buffers or (
                sum(b.nbytes for b in self._free) > self.max_bytes
            ):
                self._free.pop(0)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


_POOL = _BufferPool()


def clear_buffer_pool() -> None:
    """Release the arrays kept for reuse by the CPU routing kernels."""
    _POOL.clear()


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


def _saved_input(t: Tensor, arr: np.ndarray) -> Tensor:
    """The tensor to keep for the backward: ``t`` itself when ``arr`` is a view of it (autograd's
    version counter then guards against in-place changes), else the converted copy."""
    if arr.size and np.may_share_memory(arr, t.detach().numpy()):
        return t
    return torch.from_numpy(arr)


def _edge_weight_grad_np(gw: np.ndarray, net: RoutingNetwork, like: Tensor) -> Tensor:
    """Scatter the per-member edge-weight gradients ``gw [B, E]`` (down-CSR order) to edge order."""
    g = np.empty(gw.shape[1])
    g[net.down_eid] = gw.sum(0)
    return torch.from_numpy(g).to(like.dtype)


def _param_grad(g: np.ndarray, lead: int, dtype: torch.dtype) -> Tensor:
    """Reduce a float64 per-member gradient ``[B, ...]`` to a leading axis of ``lead``
    (``1``: the parameter is shared by the batch, so sum over it) and ``dtype``."""
    if lead == 1 and g.shape[0] != 1:
        g = g.sum(0, keepdims=True)
    return torch.from_numpy(g).to(dtype)


class _IIRNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lat, coef, init_in, init_out, edge_weight, net):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_iir_forward

        lat_np = _np(lat)
        csr = net.csr_arrays(_np(edge_weight, np.float64))
        coef_np = _np(coef, np.float64)
        in_np, out0_np = _np(init_in, np.float64), _np(init_out, np.float64)
        out_np = _POOL.empty(lat_np.shape, lat_np.dtype)
        # the total inflow of every reach is kept for the coefficient gradients (O(B·N·T), like
        # the output); ∂L/∂I, ∂L/∂w and the state gradients need the adjoint alone
        grad = ctx.needs_input_grad[1]
        inflow_np = (
            _POOL.empty(lat_np.shape, lat_np.dtype)
            if grad
            else np.empty((lat_np.shape[0], 0, 0), lat_np.dtype)
        )
        run_iir_forward(lat_np, coef_np, in_np, out0_np, net.order, *csr[:3], out_np, inflow_np)
        out = torch.from_numpy(out_np)
        ctx.net, ctx.csr, ctx.arrays = net, csr, (coef_np, in_np, out0_np)
        ctx.save_for_backward(torch.from_numpy(inflow_np), out, _saved_input(lat, lat_np))
        return out

    @staticmethod
    def backward(ctx, gout):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_iir_backward

        inflow, out, lat = ctx.saved_tensors
        _, coef, init_in, init_out, edge_weight, _ = ctx.needs_input_grad
        net, csr = ctx.net, ctx.csr
        coef_np, in_np, out0_np = ctx.arrays
        B, N, T = out.shape
        lat_np = lat.numpy()
        # without coefficient gradients no inflow was kept: the lateral inflow stands in (its
        # coefficient sums are computed and discarded)
        inflow_np = inflow.numpy() if coef else lat_np
        glat_np = _POOL.empty(lat_np.shape, lat_np.dtype)
        gcoef = np.zeros((B, N, 3))
        gin = np.zeros((B, N))
        gout_state = np.zeros((B, N))
        gw = np.zeros((B, net.down_eid.size if edge_weight else 0))
        run_iir_backward(
            _np(gout, lat_np.dtype),
            inflow_np,
            out.numpy(),
            coef_np,
            in_np,
            out0_np,
            net.order,
            *csr,
            glat_np,
            gcoef,
            gin,
            gout_state,
            gw,
            lat_np,
        )
        return (
            torch.from_numpy(glat_np),
            _param_grad(gcoef, coef_np.shape[0], out.dtype) if coef else None,
            torch.from_numpy(gin).to(out.dtype) if init_in else None,
            torch.from_numpy(gout_state).to(out.dtype) if init_out else None,
            _edge_weight_grad_np(gw, net, out) if edge_weight else None,
            None,
        )


class _FIRNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lat, h, hist, edge_weight, sup, net):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_fir_forward

        lat_np = _np(lat)
        csr = net.csr_arrays(_np(edge_weight, np.float64))
        out_np = _POOL.empty(lat_np.shape, lat_np.dtype)
        sup_np = _np(sup, np.int64)
        h_np, hist_np = _np(h, np.float64), _np(hist, np.float64)
        run_fir_forward(lat_np, h_np, sup_np, hist_np, net.order, *csr[:3], out_np)
        out = torch.from_numpy(out_np)
        ctx.net, ctx.csr, ctx.arrays = net, csr, (h_np, sup_np, hist_np)
        ctx.save_for_backward(_saved_input(lat, lat_np), out)
        return out

    @staticmethod
    def backward(ctx, gout):  # type: ignore[override]
        from gnnhydro.routing.kernels.numba_kernels import run_fir_backward

        lat, out = ctx.saved_tensors
        _, h, hist, edge_weight, _, _ = ctx.needs_input_grad
        net, csr = ctx.net, ctx.csr
        h_np, sup_np, hist_np = ctx.arrays
        B, N, T = lat.shape
        lat_np = lat.numpy()
        glat_np = _POOL.empty(lat_np.shape, lat_np.dtype)
        gh = np.zeros((B, N, h_np.shape[-1]))
        ghist = np.zeros((B, N, hist_np.shape[-1]))
        gw = np.zeros((B, net.down_eid.size if edge_weight else 0))
        run_fir_backward(
            _np(gout, lat_np.dtype),
            lat_np,
            out.numpy(),
            h_np,
            sup_np,
            hist_np,
            net.order,
            *csr,
            glat_np,
            gh,
            ghist,
            gw,
        )
        return (
            torch.from_numpy(glat_np),
            _param_grad(gh, h_np.shape[0], lat.dtype) if h else None,
            torch.from_numpy(ghist).to(lat.dtype) if hist else None,
            _edge_weight_grad_np(gw, net, lat) if edge_weight else None,
            None,
            None,
        )


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

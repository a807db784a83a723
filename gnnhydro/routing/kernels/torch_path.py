"""Pure-torch routing, level by level (any device; gradients by torch autograd).

Each topological level gathers the weighted outflows of its upstream reaches (``aggregate``; the
:class:`~gnnhydro.routing.LTIRouter` passes PyG ``propagate``) and then filters all of its reaches
at once: first-order recursions by a blocked linear scan (exact), kernels by a direct grouped
convolution (``conv1d``, no FFT, no wrap-around).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gnnhydro.routing.network import RoutingNetwork

__all__ = ["route_levels", "iir_filter", "fir_filter", "index_add_aggregate"]

Aggregate = Callable[[Tensor, Tensor, Tensor, Tensor, int], Tensor]


def index_add_aggregate(
    out: Tensor, src: Tensor, local_dst: Tensor, weight: Tensor, n_dst: int
) -> Tensor:
    """``agg[:, d] = Σ_{e: dst=d} w_e·out[:, src_e]``.

    Shapes: out ``[B, N, T]``; src/local_dst/weight ``[E']``; result ``[B, n_dst, T]``.
    """
    msg = out[:, src] * weight.view(1, -1, 1)
    return out.new_zeros(out.shape[0], n_dst, out.shape[2]).index_add(1, local_dst, msg)


def iir_filter(
    inflow: Tensor, coef: Tensor, init_in: Tensor, init_out: Tensor, block: int = 32
) -> Tensor:
    """``O_t = c0·I_t + c1·I_{t−1} + c2·O_{t−1}`` by a blocked scan (exact up to rounding).

    Shapes: inflow ``[B, n, T]``; coef ``[1|B, n, 3]``; init_in/init_out ``[B, n]``; result like
    inflow.
    """
    B, n, T = inflow.shape
    c0, c1, c2 = coef[..., 0:1], coef[..., 1:2], coef[..., 2:3]
    prev = torch.cat([init_in.unsqueeze(-1), inflow[..., :-1]], dim=-1)
    u = c0 * inflow + c1 * prev
    L = min(block, T)
    nb = -(-T // L)
    if nb * L != T:
        u = F.pad(u, (0, nb * L - T))
    ones = torch.ones_like(c2)
    powers = torch.cumprod(
        torch.cat([ones, c2.expand(*c2.shape[:-1], L)], dim=-1), dim=-1
    )  # [.., L+1]
    i = torch.arange(L, device=inflow.device)
    lag = i.view(-1, 1) - i.view(1, -1)
    mask = lag >= 0
    toeplitz = powers[..., lag.clamp(min=0)] * mask  # [1|B, n, L, L]
    local = torch.matmul(u.view(B, n, nb, L), toeplitz.transpose(-1, -2))  # [B, n, nb, L]
    carry = init_out
    steps = powers[..., 1:]  # c2^(i+1)
    blocks = []
    for k in range(nb):
        o = local[:, :, k] + steps * carry.unsqueeze(-1)
        blocks.append(o)
        carry = o[..., -1]
    return torch.cat(blocks, dim=-1)[..., :T]


def fir_filter(inflow: Tensor, h: Tensor, hist: Tensor) -> Tensor:
    """``O_t = Σ_j h_j·I_{t−j}`` with ``I`` before step 0 read from ``hist`` (then zero).

    Shapes: inflow ``[B, n, T]``; h ``[1|B, n, K]``; hist ``[B, n, H]``; result like inflow.
    """
    B, n, T = inflow.shape
    K = h.shape[-1]
    H = hist.shape[-1]
    if H >= K - 1:
        x = torch.cat([hist[..., H - (K - 1) :] if K > 1 else hist[..., :0], inflow], dim=-1)
    else:
        x = torch.cat([hist, inflow], dim=-1)
        x = F.pad(x, (K - 1 - H, 0))
    weight = h.flip(-1)
    if h.shape[0] == 1:
        return F.conv1d(x, weight.reshape(n, 1, K), groups=n)
    y = F.conv1d(x.reshape(1, B * n, -1), weight.reshape(B * n, 1, K), groups=B * n)
    return y.view(B, n, T)


def route_levels(
    lat: Tensor,
    net: RoutingNetwork,
    edge_weight: Tensor,
    filt: Callable[[Tensor, Tensor], Tensor],
    aggregate: Aggregate | None = None,
) -> Tensor:
    """Route level by level: ``inflow = lat + aggregate(upstream outflows)``, ``O = filt(inflow,
    nodes)`` where ``filt`` applies the reaches' responses to a level's inflow.

    Shapes: lat ``[B, N, T]``; edge_weight ``[E]``; result ``[B, N, T]``.
    """
    aggregate = aggregate or index_add_aggregate
    nodes_l, edges_l, pos = net.level_groups(lat.device)
    ei = net.edge_index_on(lat.device)
    src, dst = ei[0], ei[1]
    out = lat.new_zeros(lat.shape)
    for nodes, edges in zip(nodes_l, edges_l):
        if nodes.numel() == 0:
            continue
        inflow = lat[:, nodes]
        if edges.numel():
            inflow = inflow + aggregate(
                out, src[edges], pos[dst[edges]], edge_weight[edges], nodes.numel()
            )
        # in place: earlier reads of ``out`` (gathers) keep only their indices for backward
        out.index_copy_(1, nodes, filt(inflow, nodes))
    return out

"""Independent sequential reference for routing tests: scipy ``lfilter`` / ``np.convolve`` reach
by reach in a topological order computed here (Kahn's algorithm), in float64 numpy. It shares
no code with gnnhydro.routing."""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.signal import lfilter


def kahn_order(edge_index: np.ndarray, num_nodes: int) -> list[int]:
    src, dst = edge_index
    indeg = np.bincount(dst, minlength=num_nodes)
    down: list[list[int]] = [[] for _ in range(num_nodes)]
    for s, d in zip(src.tolist(), dst.tolist()):
        down[s].append(d)
    queue = deque(i for i in range(num_nodes) if indeg[i] == 0)
    order = []
    while queue:
        u = queue.popleft()
        order.append(u)
        for v in down[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                queue.append(v)
    assert len(order) == num_nodes, "cycle"
    return order


def muskingum_coefs(k: np.ndarray, x: np.ndarray, dt: float = 1.0) -> np.ndarray:
    d = 2 * k * (1 - x) + dt
    return np.stack([(dt - 2 * k * x) / d, (dt + 2 * k * x) / d, (2 * k * (1 - x) - dt) / d], -1)


def route_sequential(
    lateral: np.ndarray,
    edge_index: np.ndarray,
    edge_weight: np.ndarray | None,
    *,
    coefs: np.ndarray | None = None,
    kernels: np.ndarray | None = None,
    init_in: np.ndarray | None = None,
    init_out: np.ndarray | None = None,
    history: np.ndarray | None = None,
) -> np.ndarray:
    """Route ``lateral [N, T]`` reach by reach; ``coefs [N, 3]`` (recursion) or ``kernels [N, K]``.

    ``init_in``/``init_out`` ``[N]``: previous inflow/outflow for recursions; ``history [N, H]``:
    previous inflows (oldest first) for kernels.
    """
    lateral = np.asarray(lateral, dtype=np.float64)
    N, T = lateral.shape
    edge_index = np.asarray(edge_index)
    w = np.ones(edge_index.shape[1]) if edge_weight is None else np.asarray(edge_weight, np.float64)
    out = np.zeros((N, T))
    for i in kahn_order(edge_index, N):
        inflow = lateral[i].copy()
        for e in np.flatnonzero(edge_index[1] == i):
            inflow += w[e] * out[edge_index[0, e]]
        if coefs is not None:
            c0, c1, c2 = coefs[i]
            b, a = [c0, c1], [1.0, -c2]
            if init_in is None:
                out[i] = lfilter(b, a, inflow)
            else:
                # zi for direct-form II transposed: y0 = b0 x0 + z0, z0 = b1 x_{-1} - a1 y_{-1}
                zi = np.array([c1 * init_in[i] + c2 * init_out[i]])
                out[i] = lfilter(b, a, inflow, zi=zi)[0]
        else:
            h = np.asarray(kernels[i], dtype=np.float64)
            if history is not None and history.shape[1]:
                full = np.concatenate([history[i], inflow])
                out[i] = np.convolve(full, h)[history.shape[1] : history.shape[1] + T]
            else:
                out[i] = np.convolve(inflow, h)[:T]
    return out

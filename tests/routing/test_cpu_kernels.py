"""CPU (numba) kernel plumbing: recycled work arrays are never reused while still referenced."""

from __future__ import annotations

import gc

import torch

from gnnhydro.graph.synthetic import random_river_network
from gnnhydro.routing import route
from gnnhydro.routing.kernels.cpu import clear_buffer_pool

D = torch.float64


def test_recycled_buffers_are_not_reused_while_referenced():
    # arrays of ≥ 1 MiB go through the buffer pool
    g = random_river_network(600, depth="deep", seed=2)
    gen = torch.Generator().manual_seed(0)
    N, T = g.num_nodes, 300
    lat1, lat2 = torch.rand(2, 1, N, T, generator=gen, dtype=D)
    p = {"k": 1.5, "x": 0.2}
    q1 = route(lat1, g, "muskingum", p, backend="numba")
    kept = q1.clone()
    for _ in range(3):  # later calls must not write into the live q1
        q2 = route(lat2, g, "muskingum", p, backend="numba")
        assert torch.equal(q1, kept)
    del q1, q2
    gc.collect()
    torch.testing.assert_close(route(lat1, g, "muskingum", p, backend="numba"), kept)
    clear_buffer_pool()


def test_backward_twice_with_retained_graph():
    g = random_river_network(600, depth="shallow", seed=4)
    gen = torch.Generator().manual_seed(1)
    N, T = g.num_nodes, 300
    lat = torch.rand(1, N, T, generator=gen, dtype=D).requires_grad_(True)
    k = (0.5 + 2 * torch.rand(N, generator=gen, dtype=D)).requires_grad_(True)
    w = torch.rand(1, N, T, generator=gen, dtype=D)
    q = route(lat, g, "muskingum", {"k": k, "x": 0.1}, backend="numba")
    q.backward(w, retain_graph=True)
    first = (lat.grad.clone(), k.grad.clone())
    lat.grad = k.grad = None
    for _ in range(2):  # other calls in between must not disturb the retained graph
        route(lat.detach() * 2, g, "muskingum", {"k": k.detach(), "x": 0.1}, backend="numba")
    q.backward(w)
    torch.testing.assert_close(lat.grad, first[0], rtol=0, atol=0)
    torch.testing.assert_close(k.grad, first[1], rtol=0, atol=0)


def test_inflow_gradient_without_parameter_gradients():
    # with constant routing parameters no inflow is kept; ∂L/∂q must not change
    g = random_river_network(80, depth="deep", seed=6, bifurcations=3)
    gen = torch.Generator().manual_seed(2)
    N, T = g.num_nodes, 25
    lat = torch.rand(2, N, T, generator=gen, dtype=D)
    k = 0.5 + 2 * torch.rand(N, generator=gen, dtype=D)
    w = torch.rand(2, N, T, generator=gen, dtype=D)
    grads = []
    for k_grad in (False, True):
        lat_g = lat.clone().requires_grad_(True)
        ew = g.edge_weight.to(D).clone().requires_grad_(True)
        kk = k.clone().requires_grad_(k_grad)
        q = route(lat_g, g, "muskingum", {"k": kk, "x": 0.2}, edge_weight=ew, backend="numba")
        q.backward(w)
        grads.append((lat_g.grad, ew.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_kernels_cached_in_the_shared_cache_dir():
    """The routing kernels are cached where :func:`gnnhydro._numba.cache_dir` says (the package's
    ``__pycache__`` when writable, else ``NUMBA_CACHE_DIR`` or the user's cache directory)."""
    from pathlib import Path

    from gnnhydro import _numba
    from gnnhydro.routing.kernels import numba_kernels

    expected = _numba.cache_dir(numba_kernels.__file__)
    for k in (numba_kernels._iir_member, numba_kernels._fir_member_backward):
        assert Path(_numba.cache_path(k)) == expected

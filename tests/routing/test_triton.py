"""Triton kernels (CPU under TRITON_INTERPRET=1, tiny shapes) against the numba path."""

from __future__ import annotations

import os

if not os.environ.get("TRITON_INTERPRET"):
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from gnnhydro.graph.synthetic import random_river_network  # noqa: E402
from gnnhydro.routing import RoutingState, route  # noqa: E402

D = torch.float64


def test_triton_iir_matches_numba_with_gradients():
    g = random_river_network(12, depth="deep", seed=1, bifurcations=2)
    gen = torch.Generator().manual_seed(0)
    N, T = g.num_nodes, 6
    lat = torch.rand(2, N, T, generator=gen, dtype=D)
    base = {
        "k": 0.3 + 4 * torch.rand(N, generator=gen, dtype=D),
        "x": 0.5 * torch.rand(N, generator=gen, dtype=D),
    }
    init = RoutingState(
        torch.rand(2, N, 1, generator=gen, dtype=D), torch.rand(2, N, generator=gen, dtype=D)
    )
    w = torch.rand(2, N, T, generator=gen, dtype=D)
    res = []
    for backend in ("numba", "triton"):
        lat_b = lat.clone().requires_grad_(True)
        ew = g.edge_weight.to(D).clone().requires_grad_(True)
        p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        st = RoutingState(
            init.inflow.clone().requires_grad_(True), init.outflow.clone().requires_grad_(True)
        )
        q = route(lat_b, g, "muskingum", p, edge_weight=ew, initial_state=st, backend=backend)
        (q * w).sum().backward()
        res.append(
            [
                q.detach(),
                lat_b.grad,
                ew.grad,
                p["k"].grad,
                p["x"].grad,
                st.inflow.grad,
                st.outflow.grad,
            ]
        )
    for a, b in zip(*res):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_triton_kernel_irf_path():
    g = random_river_network(10, seed=2)
    gen = torch.Generator().manual_seed(1)
    lat = torch.rand(g.num_nodes, 8, generator=gen)
    p = {
        "n": 1 + 2 * torch.rand(g.num_nodes, generator=gen),
        "k": 0.5 + torch.rand(g.num_nodes, generator=gen),
    }
    a = route(lat, g, "nash_cascade", p, backend="triton")
    b = route(lat, g, "nash_cascade", p, backend="numba")
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)

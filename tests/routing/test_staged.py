"""Staged execution equals unstaged routing, with gradients flowing across stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnhydro.graph.synthetic import random_river_network
from gnnhydro.routing import route

D = torch.float64


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("name", ["muskingum", "nash_cascade"])
def test_staged_equals_unstaged_with_gradients(backend, name):
    g = random_river_network(150, depth="deep", seed=21, bifurcations=6)
    plan = g.stage_plan(max_nodes=20)
    assert len(plan.stages) > 3 and plan.cut_edges.numel() > 0
    gen = torch.Generator().manual_seed(0)
    N = g.num_nodes
    lat = torch.rand(2, N, 40, generator=gen, dtype=D)
    base = (
        {
            "k": 0.3 + 4 * torch.rand(N, generator=gen, dtype=D),
            "x": 0.5 * torch.rand(N, generator=gen, dtype=D),
        }
        if name == "muskingum"
        else {
            "n": 1 + 3 * torch.rand(N, generator=gen, dtype=D),
            "k": 0.3 + 2 * torch.rand(N, generator=gen, dtype=D),
        }
    )
    weight = torch.rand(2, N, 40, generator=gen, dtype=D)
    results = []
    for staged in (None, plan):
        lat_b = lat.clone().requires_grad_(True)
        ew = g.edge_weight.to(D).clone().requires_grad_(True)
        p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        q = route(lat_b, g, name, p, stage_plan=staged, edge_weight=ew, backend=backend)
        (q * weight).sum().backward()
        results.append([q.detach(), lat_b.grad, ew.grad] + [p[k].grad for k in sorted(p)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    # the most upstream stage's lateral inflow reaches the outlet only through cut edges:
    # its gradient is non-zero for a loss on the outlet alone
    lat_b = lat.clone().requires_grad_(True)
    q = route(lat_b, g, name, base, stage_plan=plan, backend=backend)
    q[:, g.outlets].sum().backward()
    first = plan.stages[0]
    assert plan.stage_of_node[g.outlets].ne(0).all()
    assert lat_b.grad[:, first].abs().sum() > 0


def test_auto_stage_plan_and_state_with_stages():
    g = random_river_network(120, depth="deep", seed=3)
    gen = torch.Generator().manual_seed(1)
    N = g.num_nodes
    lat = torch.rand(N, 30, generator=gen, dtype=D)
    p = {"lag": 3 * torch.rand(N, generator=gen, dtype=D)}
    full = route(lat, g, "pure_lag", p)
    staged = route(lat, g, "pure_lag", p, stage_plan="auto", max_nodes=25, time_chunk=8)
    np.testing.assert_allclose(staged.numpy(), full.numpy(), rtol=1e-12, atol=1e-14)
    q1, st = route(
        lat[:, :11], g, "pure_lag", p, stage_plan="auto", max_nodes=25, return_state=True
    )
    q2 = route(lat[:, 11:], g, "pure_lag", p, stage_plan="auto", max_nodes=25, initial_state=st)
    np.testing.assert_allclose(
        torch.cat([q1, q2], -1).numpy(), full.numpy(), rtol=1e-12, atol=1e-14
    )


def test_numba_staged_order_is_checked():
    # stages listed downstream-first are not a valid execution order: a clear error, not garbage
    g = random_river_network(60, depth="deep", seed=5)
    plan = g.stage_plan(max_nodes=15)
    assert len(plan.stages) > 1
    bad = type(plan)(
        stages=list(reversed(plan.stages)),
        stage_of_node=plan.stage_of_node,
        cut_edges=plan.cut_edges,
    )
    lat = torch.rand(g.num_nodes, 10, dtype=D)
    with pytest.raises(ValueError, match="not a valid execution order"):
        route(lat, g, "muskingum", {"k": 1.0, "x": 0.2}, stage_plan=bad, backend="numba")

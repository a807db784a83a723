"""Per-reach time steps (``substeps="auto"`` or a per-reach tensor) against an independent
sequential reference that runs every reach's finer recursion literally, step by step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gnnhydro.graph.synthetic import random_river_network
from gnnhydro.routing import RoutingState, lti, route
from gnnhydro.routing.irf import muskingum_substeps
from tests.routing.reference import kahn_order, muskingum_coefs

D = torch.float64
BACKENDS = ["numba", "torch"]


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """The negative-coefficient warning is given once per count reached in a process."""
    lti._WARNED_NEGATIVE.clear()


def route_substepped(
    lateral: np.ndarray,
    edge_index: np.ndarray,
    edge_weight: np.ndarray,
    k: np.ndarray,
    x: np.ndarray,
    steps: np.ndarray,
) -> np.ndarray:
    """Reach by reach in topological order: within each input step the inflow is held and the
    Muskingum recursion runs ``steps[i]`` times at ``Δt/steps[i]``; the reach's outflow for the
    step is the mean of its internal outflows (``steps[i] = 0``: outflow = inflow)."""
    N, T = lateral.shape
    out = np.zeros((N, T))
    for i in kahn_order(edge_index, N):
        inflow = lateral[i].copy()
        for e in np.flatnonzero(edge_index[1] == i):
            inflow += edge_weight[e] * out[edge_index[0, e]]
        s = int(steps[i])
        if s == 0:
            out[i] = inflow
            continue
        c0, c1, c2 = muskingum_coefs(np.array(k[i]), np.array(x[i]), 1.0 / s)
        i_prev = o_prev = 0.0
        for t in range(T):
            total = 0.0
            for _ in range(s):
                o_prev = c0 * inflow[t] + c1 * i_prev + c2 * o_prev
                i_prev = inflow[t]
                total += o_prev
            out[i, t] = total / s
    return out


def _case(N: int = 40, T: int = 60, seed: int = 0):
    g = random_river_network(N, depth="deep", seed=seed, bifurcations=2)
    gen = torch.Generator().manual_seed(seed)
    lat = torch.rand(N, T, generator=gen, dtype=D) ** 3 * 5.0  # spiky, non-negative
    k = 10 ** (torch.rand(N, generator=gen, dtype=D) * 3 - 2)  # 0.01 … 10 steps
    x = torch.rand(N, generator=gen, dtype=D) * 0.5
    return g, lat, k, x


def _np(g):
    return g.edge_index.numpy(), g.edge_weight.double().numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_given_per_reach_steps_match_the_finer_recursion(backend):
    g, lat, k, x = _case()
    steps = torch.randint(0, 7, (g.num_nodes,), generator=torch.Generator().manual_seed(3))
    q = route(lat, g, params={"k": k, "x": x}, substeps=steps, backend=backend)
    ref = route_substepped(lat.numpy(), *_np(g), k.numpy(), x.numpy(), steps.numpy())
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-10)


def _brute_force_auto(k: np.ndarray, x: np.ndarray, max_substeps: int) -> np.ndarray:
    """Searched, not computed: the fewest steps in 1..max+1 whose coefficients are all
    non-negative, else the steps whose most negative coefficient is least negative; more than
    ``max_substeps`` → 0 (pass through)."""
    out = np.zeros(k.size, dtype=np.int64)
    candidates = np.arange(1, max_substeps + 2)
    for i in range(k.size):
        worst = np.array(
            [muskingum_coefs(np.array(k[i]), np.array(x[i]), 1.0 / s).min() for s in candidates]
        )
        ok = np.flatnonzero(worst >= 0)
        s = candidates[ok[0]] if ok.size else candidates[int(np.argmax(worst))]
        out[i] = s if s <= max_substeps else 0
    return out


def test_auto_steps_are_the_fewest_with_non_negative_storage_coefficient():
    _, _, k, x = _case(N=400)
    got = muskingum_substeps(k, x, 24).numpy()
    np.testing.assert_array_equal(got, _brute_force_auto(k.numpy(), x.numpy(), 24))
    assert (got == 0).any() and (got > 1).any() and (got == 1).any()  # all three regimes occur


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_equals_the_reference_at_the_chosen_steps_and_stays_non_negative(backend):
    g, lat, k, x = _case()
    x = x.clamp(max=0.45) * (k < 1)  # C0 >= 0 needs k·x <= Δt/2: keep x small on slow reaches
    q = route(lat, g, params={"k": k, "x": x}, substeps="auto", backend=backend)
    steps = _brute_force_auto(k.numpy(), x.numpy(), 24)
    ref = route_substepped(lat.numpy(), *_np(g), k.numpy(), x.numpy(), steps)
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-10)
    assert q.min() >= -1e-12
    # the same reaches at the input step route with C2 < 0 and the outflow turns negative
    lti._WARNED_NEGATIVE.clear()
    with pytest.warns(RuntimeWarning, match=r"reaches route with a negative muskingum"):
        q1 = route(lat, g, params={"k": k, "x": x * 0 + 0.1}, substeps=1, backend=backend)
    assert q1.min() < -1e-3


def test_warning_states_how_many_reaches():
    g, lat, k, x = _case(N=30)
    k = k.clone()
    k[:7] = 0.05  # C2 < 0 at the input step
    k[7:] = 5.0
    x = torch.full_like(k, 0.05)
    with pytest.warns(RuntimeWarning, match=r"^routing: 7 of 30 reaches"):
        route(lat, g, params={"k": k, "x": x})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        route(lat, g, params={"k": k, "x": x}, substeps="auto")


def test_one_step_everywhere_is_plain_routing():
    g, lat, k, x = _case()
    k = k + 0.6  # positive coefficients at the input step
    a = route(lat, g, params={"k": k, "x": x})
    b = route(lat, g, params={"k": k, "x": x}, substeps=torch.ones(g.num_nodes, dtype=torch.long))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_volume_is_conserved():
    g, lat, k, x = _case(T=40)
    lat = torch.nn.functional.pad(lat, (0, 3000))  # let the network drain
    q = route(lat, g, params={"k": k, "x": x}, substeps="auto")
    outlets = torch.tensor([i for i in range(g.num_nodes) if not (g.edge_index[0] == i).any()])
    np.testing.assert_allclose(q[outlets].sum().item(), lat.sum().item(), rtol=1e-9)


def test_staged_chunked_and_batched_runs_are_exact():
    g, lat, k, x = _case(N=60, T=50)
    steps = muskingum_substeps(k, x, 24)
    ref = route_substepped(lat.numpy(), *_np(g), k.numpy(), x.numpy(), steps.numpy())
    plan = g.stage_plan(max_nodes=15)
    assert len(plan.stages) > 1
    for backend in BACKENDS:
        q = route(
            lat, g, params={"k": k, "x": x}, substeps="auto", stage_plan=plan, backend=backend
        )
        np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-10)
    q = route(lat, g, params={"k": k, "x": x}, substeps="auto", time_chunk=7)
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-10)
    # continuing from a returned state equals one run
    first, state = route(
        lat[:, :20], g, params={"k": k, "x": x}, substeps="auto", return_state=True
    )
    assert isinstance(state, RoutingState)
    rest = route(lat[:, 20:], g, params={"k": k, "x": x}, substeps="auto", initial_state=state)
    np.testing.assert_allclose(torch.cat([first, rest], -1).numpy(), ref, rtol=1e-10, atol=1e-10)
    # a batch of parameter sets: every member at its own steps
    kb = torch.stack([k, k * 3])
    qb = route(lat.expand(2, -1, -1), g, params={"k": kb, "x": x.expand(2, -1)}, substeps="auto")
    steps2 = muskingum_substeps(k * 3, x, 24).numpy()
    ref2 = route_substepped(lat.numpy(), *_np(g), (k * 3).numpy(), x.numpy(), steps2)
    np.testing.assert_allclose(qb[1].numpy(), ref2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(qb[0].numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_through_per_reach_steps(backend):
    g = random_river_network(8, depth="deep", seed=1)
    gen = torch.Generator().manual_seed(0)
    lat = torch.rand(8, 12, generator=gen, dtype=D, requires_grad=True)
    k = (torch.rand(8, generator=gen, dtype=D) * 2 + 0.05).requires_grad_()
    x = (torch.rand(8, generator=gen, dtype=D) * 0.4).requires_grad_()
    steps = torch.tensor([1, 2, 3, 0, 5, 1, 2, 4])

    def f(lat, k, x):
        return route(lat, g, params={"k": k, "x": x}, substeps=steps, backend=backend)

    assert torch.autograd.gradcheck(f, (lat, k, x), eps=1e-6, atol=1e-7)


def test_per_reach_step_errors():
    g, lat, k, x = _case(N=10, T=5)
    with pytest.raises(ValueError, match="recursive IRFs"):
        route(
            lat, g, irf="nash_cascade", params={"n": k * 0 + 2, "k": k + 1}, substeps=torch.ones(10)
        )
    with pytest.raises(ValueError, match=r"negative at node indices \[4\]"):
        route(
            lat, g, params={"k": k, "x": x}, substeps=torch.tensor([1, 1, 1, 1, -1, 1, 1, 1, 1, 1])
        )
    with pytest.raises(ValueError, match="N = 10"):
        route(lat, g, params={"k": k, "x": x}, substeps=torch.ones(9, dtype=torch.long))
    with pytest.raises(ValueError, match="'auto'"):
        route(lat, g, params={"k": k, "x": x}, substeps="fine")
    # kernel IRFs are exact step integrals: "auto" keeps them at the input step
    p = {"n": k * 0 + 2, "k": k + 1}
    torch.testing.assert_close(
        route(lat, g, irf="nash_cascade", params=p, substeps="auto"),
        route(lat, g, irf="nash_cascade", params=p),
    )

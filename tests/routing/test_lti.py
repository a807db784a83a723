"""Routing exactness, gradients, state and errors against an independent sequential reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnhydro.graph import RiverGraph
from gnnhydro.graph.synthetic import random_river_network
from gnnhydro.routing import LTIRouter, RoutingState, get_irf, route
from gnnhydro.routing.irf import RoutingContext
from tests.routing.reference import muskingum_coefs, route_sequential

D = torch.float64
BACKENDS = ["numba", "torch"]


def tiny_graph() -> RiverGraph:
    # 1 → 3, 2 → 3, 3 → 4 (confluence then outlet)
    return RiverGraph.from_edges([1, 2, 3, 4], [3, 3, 4, 0])


def dag_graph() -> RiverGraph:
    # node 1 bifurcates: 60 % to 2, 40 % to 3; 2 and 3 join at 4
    return RiverGraph.from_edges(
        [1, 2, 3, 4], edges=[(1, 2), (1, 3), (2, 4), (3, 4)], weights=[0.6, 0.4, 1.0, 1.0]
    )


def _np(g):
    return g.edge_index.numpy(), g.edge_weight.double().numpy()


def _params(name: str, N: int, gen: torch.Generator, dtype=D) -> dict[str, torch.Tensor]:
    def u(lo, hi):
        return (lo + (hi - lo) * torch.rand(N, generator=gen, dtype=D)).to(dtype)

    return {
        "muskingum": lambda: {"k": u(0.2, 6.0), "x": u(0.0, 0.5)},
        "linear_storage": lambda: {"k": u(0.3, 5.0)},
        "pure_lag": lambda: {"lag": u(0.0, 4.0)},
        "nash_cascade": lambda: {"n": u(1.0, 4.0), "k": u(0.3, 2.0)},
        "diffusive_wave": lambda: {"celerity": u(0.5, 2.0), "diffusivity": u(1e3, 2e4)},
    }[name]()


def _reference(name, lat, g, params, T, step_seconds=3600.0):
    ei, w = _np(g)
    if name in ("muskingum", "linear_storage"):
        ctx = RoutingContext()
        coefs = get_irf(name).coefficients({k: v.double() for k, v in params.items()}, ctx).numpy()
        if name == "muskingum":  # check the coefficients themselves against the closed form
            np.testing.assert_allclose(
                coefs, muskingum_coefs(params["k"].double().numpy(), params["x"].double().numpy())
            )
        return route_sequential(lat, ei, w, coefs=coefs)
    ctx = RoutingContext(
        num_steps=T, step_seconds=step_seconds, length_m=getattr(g, "length_m", None)
    )
    h = get_irf(name).impulse_response({k: v.double() for k, v in params.items()}, T, ctx).numpy()
    return route_sequential(lat, ei, w, kernels=h)


def test_tiny_graph_exact_values():
    g = tiny_graph()
    lat = torch.zeros(4, 6, dtype=D)
    lat[0, 0] = 1.0  # unit pulse into reach 1
    lat[1, 1] = 2.0
    q = route(lat, g, "pure_lag", {"lag": torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=D)})
    # reach 1: pulse at t=1; reach 2: 2 at t=1; reach 3 inflow 3 at t=1 → out at t=3;
    # reach 4 (lag 0.5): 1.5 at t=3, 1.5 at t=4
    expected = torch.zeros(4, 6, dtype=D)
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 3] = 3
    expected[3, 3] = 1.5
    expected[3, 4] = 1.5
    assert torch.equal(q, expected)
    # Muskingum by hand on the single reach 1 (k=1, x=0.25): C = (0, 1, 0)/... computed by hand
    k, x = 1.0, 0.25
    d = 2 * k * (1 - x) + 1
    c0, c1, c2 = (1 - 2 * k * x) / d, (1 + 2 * k * x) / d, (2 * k * (1 - x) - 1) / d
    q = route(
        lat, g, "muskingum", {"k": torch.full((4,), k, dtype=D), "x": torch.full((4,), x, dtype=D)}
    )
    assert torch.allclose(q[0, :3], torch.tensor([c0, c0 * c2 + c1, (c0 * c2 + c1) * c2], dtype=D))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["muskingum", "linear_storage", "pure_lag", "nash_cascade", "diffusive_wave"]
)
@pytest.mark.parametrize("dag", [False, True])
def test_random_network_matches_sequential_reference(backend, name, dag):
    g = random_river_network(
        60, depth="deep" if dag else "shallow", seed=3, bifurcations=8 if dag else 0
    )
    gen = torch.Generator().manual_seed(1)
    T = 40
    lat = torch.rand(g.num_nodes, T, generator=gen, dtype=D)
    params = _params(name, g.num_nodes, gen)
    q = route(lat, g, name, params, backend=backend, step_seconds=3600.0)
    ref = _reference(name, lat.numpy(), g, params, T)
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_batch_and_per_member_params(backend):
    g = random_river_network(80, depth="deep", seed=5, bifurcations=5)
    gen = torch.Generator().manual_seed(2)
    B, T = 3, 50
    lat = torch.rand(B, g.num_nodes, T, generator=gen)
    k = 0.2 + 5 * torch.rand(B, g.num_nodes, generator=gen)
    x = 0.5 * torch.rand(B, g.num_nodes, generator=gen)
    q = route(lat, g, "muskingum", {"k": k, "x": x}, backend=backend)
    assert q.shape == lat.shape and q.dtype == torch.float32
    for b in range(B):
        ref = route_sequential(
            lat[b].numpy(),
            *_np(g),
            coefs=muskingum_coefs(k[b].double().numpy(), x[b].double().numpy()),
        )
        np.testing.assert_allclose(q[b].numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_kernels_and_negative_c0(backend):
    g = random_river_network(30, seed=7)
    gen = torch.Generator().manual_seed(3)
    lat = torch.rand(2, 30, 25, generator=gen, dtype=D)
    h = torch.randn(30, 6, generator=gen, dtype=D)  # arbitrary signs, incl. negative lag-0
    q = route(lat, g, kernels=h, backend=backend)
    for b in range(2):
        np.testing.assert_allclose(
            q[b].numpy(),
            route_sequential(lat[b].numpy(), *_np(g), kernels=h.numpy()),
            rtol=1e-10,
            atol=1e-12,
        )
    # Muskingum with k·x > Δt/2 everywhere: C0 < 0, never clipped
    k, x = torch.full((30,), 8.0, dtype=D), torch.full((30,), 0.45, dtype=D)
    coefs = muskingum_coefs(k.numpy(), x.numpy())
    assert (coefs[:, 0] < 0).all()
    q = route(lat[0], g, "muskingum", {"k": k, "x": x}, backend=backend)
    np.testing.assert_allclose(
        q.numpy(), route_sequential(lat[0].numpy(), *_np(g), coefs=coefs), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_travel_time_far_beyond_kernel_window(backend):
    # a chain of 40 reaches, each a 9.5-step lag (kernel window 11): a pulse needs 380 steps
    N, T = 40, 420
    g = RiverGraph.from_edges(list(range(1, N + 1)), list(range(2, N + 1)) + [0])
    lat = torch.zeros(N, T, dtype=D)
    lat[0, 0] = 1.0
    q = route(lat, g, "pure_lag", {"lag": torch.full((N,), 9.5, dtype=D)}, backend=backend)
    h = get_irf("pure_lag").impulse_response({"lag": torch.full((N,), 9.5, dtype=D)}, 12).numpy()
    ref = route_sequential(lat.numpy(), *_np(g), kernels=h)
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-14)
    assert q[-1].sum().item() == pytest.approx(1.0, abs=1e-12)  # all mass arrives, none wrapped
    assert q[-1, :360].abs().max() == 0  # nothing before the shortest travel time 40·9 (no wrap)
    # a lag longer than the whole series: nothing leaves, no NaN
    q2 = route(
        lat[:1, :50],
        torch.zeros(2, 0, dtype=torch.long),
        "pure_lag",
        {"lag": torch.tensor([500.0], dtype=D)},
        backend=backend,
    )
    assert torch.equal(q2, torch.zeros_like(q2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["muskingum", "linear_storage", "nash_cascade"])
def test_mass_conservation(backend, name):
    g = random_river_network(200, depth="deep", seed=11, bifurcations=10)
    gen = torch.Generator().manual_seed(4)
    T = 3000
    lat = torch.zeros(g.num_nodes, T, dtype=D)
    lat[:, :50] = torch.rand(g.num_nodes, 50, generator=gen, dtype=D)
    q = route(lat, g, name, _params(name, g.num_nodes, gen), backend=backend)
    outlets = g.outlets
    assert q[outlets].sum().item() == pytest.approx(lat.sum().item(), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["muskingum", "nash_cascade"])
def test_substeps_equal_fine_step_reference(backend, name):
    g = random_river_network(25, seed=2, bifurcations=3)
    gen = torch.Generator().manual_seed(5)
    s, T = 4, 30
    lat = torch.rand(g.num_nodes, T, generator=gen, dtype=D)
    params = _params(name, g.num_nodes, gen)
    q = route(lat, g, name, params, substeps=s, backend=backend)
    fine = lat.repeat_interleave(s, -1).numpy()  # input held constant within a step
    ei, w = _np(g)
    ctx = RoutingContext(dt=1.0 / s, num_steps=T * s)
    irf = get_irf(name)
    if name == "muskingum":
        ref = route_sequential(
            fine, ei, w, coefs=muskingum_coefs(params["k"].numpy(), params["x"].numpy(), 1.0 / s)
        )
    else:
        ref = route_sequential(
            fine, ei, w, kernels=irf.impulse_response(params, T * s, ctx).numpy()
        )
    ref = ref.reshape(g.num_nodes, T, s).mean(-1)
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["muskingum", "pure_lag", "nash_cascade"])
def test_time_chunking_and_state_are_exact(backend, name):
    g = random_river_network(40, depth="deep", seed=9, bifurcations=4)
    gen = torch.Generator().manual_seed(6)
    lat = torch.rand(2, g.num_nodes, 60, generator=gen, dtype=D)
    params = _params(name, g.num_nodes, gen)
    full = route(lat, g, name, params, backend=backend)
    chunked = route(lat, g, name, params, time_chunk=7, backend=backend)
    np.testing.assert_allclose(chunked.numpy(), full.numpy(), rtol=1e-10, atol=1e-12)
    q1, st = route(lat[..., :25], g, name, params, return_state=True, backend=backend)
    q2 = route(lat[..., 25:], g, name, params, initial_state=st, backend=backend)
    np.testing.assert_allclose(
        torch.cat([q1, q2], -1).numpy(), full.numpy(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_discharge_is_steady_state(backend):
    # steady flow: lateral q everywhere, initial discharge = accumulated lateral → stays steady
    g = random_river_network(50, seed=4, bifurcations=4)
    q_lat = torch.rand(g.num_nodes, dtype=D)
    steady = g.accumulate(q_lat).to(D)
    lat = q_lat.unsqueeze(-1).expand(-1, 30).contiguous()
    gen = torch.Generator().manual_seed(7)
    for name in ["muskingum", "nash_cascade", "pure_lag"]:
        q = route(
            lat, g, name, _params(name, g.num_nodes, gen), initial_state=steady, backend=backend
        )
        np.testing.assert_allclose(
            q.numpy(), steady.unsqueeze(-1).expand(-1, 30).numpy(), rtol=1e-9
        )


IRF_CASES = ["muskingum", "linear_storage", "pure_lag", "nash_cascade", "diffusive_wave"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", IRF_CASES + ["explicit"])
def test_gradcheck_float64(backend, name):
    g = dag_graph()
    g.length_m = torch.tensor([3000.0, 5000.0, 4000.0, 6000.0])
    gen = torch.Generator().manual_seed(8)
    T = 8
    lat = torch.rand(2, 4, T, generator=gen, dtype=D, requires_grad=True)
    ew = g.edge_weight.to(D).clone().requires_grad_(True)
    if name == "explicit":
        params = {"h": torch.randn(4, 3, generator=gen, dtype=D)}
    else:
        params = _params(name, 4, gen)
    if name == "pure_lag":  # keep away from integer lags (the kernel has kinks there)
        params["lag"] = torch.tensor([0.3, 1.6, 2.2, 0.7], dtype=D)
    names = list(params)
    leaves = [p.clone().requires_grad_(True) for p in params.values()]

    def f(lat, ew, *vals):
        p = dict(zip(names, vals))
        if name == "explicit":
            return route(lat, g, kernels=p["h"], edge_weight=ew, backend=backend)
        return route(lat, g, name, p, edge_weight=ew, step_seconds=1800.0, backend=backend)

    assert torch.autograd.gradcheck(f, (lat, ew, *leaves))


@pytest.mark.parametrize("name", ["muskingum", "pure_lag"])
def test_gradcheck_through_initial_state(name):
    g = tiny_graph()
    gen = torch.Generator().manual_seed(9)
    lat = torch.rand(4, 8, generator=gen, dtype=D)
    params = _params(name, 4, gen)
    _, st = route(lat, g, name, params, return_state=True)
    inflow = st.inflow.clone().requires_grad_(True)
    outflow = st.outflow.clone().requires_grad_(True)

    def f(inflow, outflow, lat2):
        return route(lat2, g, name, params, initial_state=RoutingState(inflow, outflow))

    assert torch.autograd.gradcheck(f, (inflow, outflow, lat.clone().requires_grad_(True)))


def test_numba_and_torch_gradients_agree_on_dag():
    g = random_river_network(120, depth="deep", seed=12, bifurcations=12)
    gen = torch.Generator().manual_seed(10)
    lat = torch.rand(2, g.num_nodes, 30, generator=gen, dtype=D)
    w_out = torch.rand(2, g.num_nodes, 30, generator=gen, dtype=D)
    for name in ["muskingum", "nash_cascade"]:
        base = _params(name, g.num_nodes, gen)
        grads = []
        for backend in BACKENDS:
            lat_b = lat.clone().requires_grad_(True)
            p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
            (route(lat_b, g, name, p, backend=backend) * w_out).sum().backward()
            grads.append([lat_b.grad] + [p[k].grad for k in sorted(p)])
        for a, b in zip(*grads):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_lti_router_module(backend):
    from torch_geometric.nn import MessagePassing

    g = random_river_network(40, seed=13, bifurcations=3)
    router = LTIRouter("muskingum", backend=backend)
    assert isinstance(router, MessagePassing) and router.aggr == "add"
    gen = torch.Generator().manual_seed(11)
    lat = torch.rand(g.num_nodes, 20, generator=gen, dtype=D)
    params = _params("muskingum", g.num_nodes, gen)
    q = router(lat, g, params)
    np.testing.assert_allclose(q.numpy(), route(lat, g, "muskingum", params).numpy(), rtol=1e-12)
    # on a bare edge_index with explicit edge weights
    q2 = router(lat, g.edge_index, params, g.edge_weight.to(D))
    np.testing.assert_allclose(q2.numpy(), q.numpy(), rtol=1e-12)
    # message = weighted upstream outflow
    x_j = torch.ones(1, 3, 2)
    assert torch.equal(
        router.message(x_j, torch.tensor([0.5, 1.0, 2.0])),
        x_j * torch.tensor([0.5, 1.0, 2.0]).view(-1, 1),
    )


def test_route_options_one_definition():
    """The routing options are one dataclass: keywords of route() and LTIRouter set its fields,
    a RouteOptions given whole routes the same, an unknown option is named."""
    from gnnhydro.routing import RouteOptions

    g = random_river_network(30, seed=2)
    gen = torch.Generator().manual_seed(1)
    lat = torch.rand(g.num_nodes, 15, generator=gen, dtype=D)
    params = {"k": torch.full((30,), 0.1, dtype=D), "x": torch.full((30,), 0.2, dtype=D)}
    opts = RouteOptions(substeps="auto", time_chunk=4)
    a = route(lat, g, "muskingum", params, options=opts)
    b = route(lat, g, "muskingum", params, substeps="auto", time_chunk=4)
    c = LTIRouter("muskingum", substeps="auto", time_chunk=4)(lat, g, params)
    d = LTIRouter("muskingum")(lat, g, params, substeps="auto", time_chunk=4)
    for q in (b, c, d):
        torch.testing.assert_close(q, a, rtol=0, atol=0)
    assert not torch.allclose(a, route(lat, g, "muskingum", params))  # the options took effect
    with pytest.raises(TypeError, match=r"unknown routing option\(s\) \['substep'\]"):
        route(lat, g, "muskingum", params, substep=2)


def test_hydro_model_routes_with_its_router_module():
    from gnnhydro.models import HydroModel

    class Fixed(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return {}

    model = HydroModel(Fixed(), None, "muskingum", mode="routing", substeps="auto")
    assert isinstance(model.router, LTIRouter) and model.router.substeps == "auto"
    assert dict(model.named_modules())["router"] is model.router
    g = random_river_network(25, seed=4)
    lat = torch.rand(25, 12, dtype=torch.float32)
    params = {"k": torch.full((25,), 0.05), "x": torch.full((25,), 0.1)}
    q = model.route_lateral(lat, g, params)
    torch.testing.assert_close(
        q, route(lat, g, "muskingum", params, substeps="auto", step_seconds=86400.0)
    )
    assert q.min() >= 0  # k = 0.05 steps: C2 < 0 at the input step, not with auto


def test_errors_name_the_problem():
    g = tiny_graph()
    lat = torch.rand(4, 5)
    p = {"k": torch.ones(4), "x": torch.full((4,), 0.2)}
    with pytest.raises(ValueError, match="N = 4"):
        route(torch.rand(3, 5), g, "muskingum", p)
    with pytest.raises(ValueError, match="'x'"):
        route(lat, g, "muskingum", {"k": torch.ones(4), "x": torch.full((4,), 0.7)})
    with pytest.raises(ValueError, match="'k'"):
        route(lat, g, "muskingum", {"x": torch.full((4,), 0.2)})
    bad = lat.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*\[3\]"):
        route(bad, g, "muskingum", p)
    with pytest.raises(ValueError, match="available.*muskingum"):
        route(lat, g, "nope", p)
    with pytest.raises(ValueError, match="parameter 'k'"):
        route(lat, g, "muskingum", {"k": torch.ones(5), "x": torch.full((5,), 0.2)})


def test_lower_colorado_routelink(shared_data):
    path = shared_data / "lower_colorado_tx" / "domain" / "RouteLink.nc"
    if not path.exists():
        pytest.skip(f"{path} not found")
    g = RiverGraph.from_routelink(path)
    N, T = g.num_nodes, 48
    gen = torch.Generator().manual_seed(12)
    lat = torch.rand(N, T, generator=gen)
    k = 0.2 + 3 * torch.rand(N, generator=gen)
    x = 0.45 * torch.rand(N, generator=gen)
    q = route(lat, g, "muskingum", {"k": k, "x": x})
    ref = route_sequential(
        lat.numpy(), *_np(g), coefs=muskingum_coefs(k.double().numpy(), x.double().numpy())
    )
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    rel = np.abs(q.numpy() - ref).max() / np.abs(ref).max()
    assert rel < 1e-5

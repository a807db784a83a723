"""Muskingum–Cunge (``irf="muskingum_cunge"``): ``k`` and ``x`` against an independent
re-implementation of the published formulas (depth by root finding on Manning's equation,
celerity by a numerical ``dQ/dA``), hand-computed numbers for one reach, gradients, routing equal
to plain Muskingum with those ``k``, ``x``, the errors, the reference discharge of HydroModel and
the ``model=hbv_mc`` preset end to end."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from gnnhydro.graph.synthetic import random_river_network
from gnnhydro.routing import MuskingumCunge, get_irf, lti, route
from gnnhydro.routing.irf import RoutingContext
from tests.routing.reference import kahn_order, muskingum_coefs, route_sequential

D = torch.float64
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _fresh_warnings():
    lti._WARNED_NEGATIVE.clear()


def reference_kx(length, slope, n, p, q, discharge, step_seconds):
    """Cunge (1969) for one reach, written from the formulas: a power-law channel (top width
    ``w = p d^q``), wide (``R = A/w``), uniform flow by Manning; depth by root finding, the
    kinematic celerity ``dQ/dA`` by complex-step differentiation (exact to rounding: ``f'(d) =
    Im f(d + ih) / h``); ``k`` in steps, ``x`` clipped at 0."""

    def area(d):
        return p * d ** (q + 1) / (q + 1)

    def manning(d):
        a = area(d)
        return a * (a / (p * d**q)) ** (2.0 / 3.0) * math.sqrt(slope) / n

    d = brentq(lambda dd: manning(dd) - discharge, 1e-9, 1e3, xtol=1e-15, rtol=1e-15)
    h = 1e-30
    c = manning(complex(d, h)).imag / area(complex(d, h)).imag
    width = p * d**q
    k = length / c / step_seconds
    x = 0.5 - discharge / (2 * width * slope * c * length)
    return k, min(max(x, 0.0), 0.5)


# length [m], slope [m/m], n, p, q, reference discharge [m³/s]
REACHES = [
    (1.0e4, 1.0e-3, 0.035, 20.0, 0.0, 20.0),  # rectangle, computed by hand below
    (5.0e3, 2.0e-3, 0.05, 10.0, 1.0, 5.0),  # triangle
    (2.5e3, 8.0e-3, 0.02, 4.0, 0.65, 0.4),  # small steep stream, Leopold–Maddock q
    (1.5e4, 1.5e-4, 0.04, 150.0, 0.3, 300.0),  # large lowland river
    (5.0e4, 1.0e-5, 0.035, 50.0, 0.5, 100.0),  # long and flat: x < 0 before the clip
]


def context(reaches, step_seconds=HOUR):
    arr = torch.tensor(reaches, dtype=D)
    ctx = RoutingContext(
        step_seconds=step_seconds,
        length_m=arr[:, 0],
        slope=arr[:, 1],
        reference_discharge=arr[:, 5],
    )
    return ctx, {"n": arr[:, 2], "p": arr[:, 3], "q": arr[:, 4]}


def test_k_and_x_match_the_published_formulas():
    ctx, params = context(REACHES)
    k, x = MuskingumCunge().storage_kx(params, ctx)
    ref = np.array([reference_kx(*r, HOUR) for r in REACHES])
    np.testing.assert_allclose(k.numpy(), ref[:, 0], rtol=1e-12)
    np.testing.assert_allclose(x.numpy(), ref[:, 1], rtol=1e-12, atol=1e-15)
    assert x[-1].item() == 0.0 and ref[-1, 1] == 0.0  # the long flat reach is clipped
    assert ((x[:-1] > 0) & (x[:-1] < 0.5)).all()


def test_hand_computed_rectangular_reach():
    """B = 20 m, n = 0.035, S0 = 1e-3, Q = 20 m³/s, L = 10 km: d = (nQ/(B√S0))^(3/5) =
    1.0628 m, v = Q/(Bd) = 0.94093 m/s, c = 5/3 v = 1.5682 m/s, k = L/c = 6376.6 s,
    x = ½ − Q/(2 B S0 c L) = 0.46812."""
    ctx, params = context(REACHES[:1])
    k, x = MuskingumCunge().storage_kx(params, ctx)
    assert k.item() * HOUR == pytest.approx(6376.6, abs=0.1)
    assert x.item() == pytest.approx(0.46812, abs=1e-5)
    ctx.step_seconds = 86400.0  # k is in input steps
    k_day, _ = MuskingumCunge().storage_kx(params, ctx)
    assert k_day.item() == pytest.approx(6376.6 / 86400.0, rel=1e-5)


def test_more_roughness_slows_the_wave():
    ctx, params = context(REACHES[:4])
    k1, _ = MuskingumCunge().storage_kx(params, ctx)
    k2, _ = MuskingumCunge().storage_kx({**params, "n": params["n"] * 2}, ctx)
    assert (k2 > k1).all()


def chain_graph():
    """Five reaches: 0 → 2, 1 → 2, 2 → 3 → 4, with a split fraction on 1 → 2."""
    edge_index = torch.tensor([[0, 1, 2, 3], [2, 2, 3, 4]])
    return edge_index, torch.tensor([1.0, 0.7, 1.0, 1.0], dtype=D)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("substeps", [1, "auto"])
def test_gradcheck_in_n_p_q(backend, substeps):
    ei, w = chain_graph()
    N, T = 5, 14
    lat = torch.rand(N, T, dtype=D)
    data = {
        "length_m": torch.tensor([4e3, 6e3, 3e3, 8e3, 5e3], dtype=D),
        "slope": torch.tensor([2e-3, 1e-3, 3e-3, 5e-4, 8e-4], dtype=D),
        "reference_discharge": torch.tensor([2.0, 3.0, 5.5, 6.0, 6.5], dtype=D),
    }
    n = torch.tensor([0.03, 0.05, 0.04, 0.08, 0.06], dtype=D, requires_grad=True)
    p = torch.tensor([8.0, 12.0, 20.0, 25.0, 30.0], dtype=D, requires_grad=True)
    q = torch.tensor([0.2, 0.5, 0.65, 0.4, 0.8], dtype=D, requires_grad=True)

    def f(n, p, q):
        return route(
            lat,
            ei,
            irf="muskingum_cunge",
            params={"n": n, "p": p, "q": q, **data},
            edge_weight=w,
            step_seconds=HOUR,
            substeps=substeps,
            backend=backend,
        )

    _, x = MuskingumCunge().storage_kx(
        {"n": n, "p": p, "q": q},
        RoutingContext(
            step_seconds=HOUR,
            length_m=data["length_m"],
            slope=data["slope"],
            reference_discharge=data["reference_discharge"],
        ),
    )
    assert ((x > 0) & (x < 0.5)).all()  # away from the clip: the derivative exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # negative coefficients: not the point
        assert torch.autograd.gradcheck(f, (n, p, q), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("substeps", [1, "auto"])
@pytest.mark.parametrize("staged", [False, True])
def test_routing_equals_muskingum_with_the_computed_k_x(substeps, staged):
    g = random_river_network(60, depth="deep", seed=3)
    N, T = g.num_nodes, 48
    torch.manual_seed(1)
    lat = torch.rand(2, N, T, dtype=D)
    gen = np.random.default_rng(0)
    n = torch.from_numpy(gen.uniform(0.02, 0.15, N))
    p = torch.from_numpy(gen.uniform(3.0, 60.0, N))
    q = torch.from_numpy(gen.uniform(0.0, 1.0, N))
    qref = torch.from_numpy(gen.uniform(0.2, 50.0, (2, N)))  # per batch member
    length, slope = g.length_m.double(), g.slope.double()
    ref = np.array(
        [
            [
                reference_kx(
                    length[i].item(),
                    slope[i].item(),
                    n[i].item(),
                    p[i].item(),
                    q[i].item(),
                    qref[b, i].item(),
                    HOUR,
                )
                for i in range(N)
            ]
            for b in range(2)
        ]
    )
    k, x = torch.from_numpy(ref[..., 0]), torch.from_numpy(ref[..., 1])
    assert (k > 0.01).all() and (k < 100).all()  # inside Muskingum's bounds
    opts = {"substeps": substeps, "step_seconds": HOUR}
    if staged:
        opts.update(stage_plan="auto", max_nodes=20, backend="torch")
    with pytest.warns(RuntimeWarning):
        mc = route(
            lat,
            g,
            irf="muskingum_cunge",
            params={"n": n, "p": p, "q": q, "reference_discharge": qref},
            **opts,
        )
    lti._WARNED_NEGATIVE.clear()
    with pytest.warns(RuntimeWarning):
        plain = route(lat, g, irf="muskingum", params={"k": k, "x": x}, **opts)
    torch.testing.assert_close(mc, plain, atol=1e-10, rtol=0)
    if substeps == 1:  # and the sequential scipy reference, reach by reach
        ei, ew = g.edge_index.numpy(), g.edge_weight.double().numpy()
        assert kahn_order(ei, N)
        for b in range(2):
            seq = route_sequential(
                lat[b].numpy(), ei, ew, coefs=muskingum_coefs(ref[b, :, 0], ref[b, :, 1])
            )
            np.testing.assert_allclose(mc[b].numpy(), seq, atol=1e-10, rtol=0)


def test_graph_slope_and_length_are_used_and_params_override_them():
    g = random_river_network(12, seed=0)
    lat = torch.rand(g.num_nodes, 10, dtype=D)
    base = {"n": 0.04, "p": 20.0, "q": 0.5, "reference_discharge": 5.0}
    out = route(lat, g, irf="muskingum_cunge", params=base, step_seconds=HOUR, substeps="auto")
    same = route(
        lat,
        g.edge_index,
        irf="muskingum_cunge",
        num_nodes=g.num_nodes,
        edge_weight=g.edge_weight,
        params={**base, "slope": g.slope, "length_m": g.length_m},
        step_seconds=HOUR,
        substeps="auto",
    )
    torch.testing.assert_close(out, same, atol=1e-12, rtol=0)
    steeper = route(
        lat,
        g,
        irf="muskingum_cunge",
        params={**base, "slope": g.slope * 4},
        step_seconds=HOUR,
        substeps="auto",
    )
    assert not torch.allclose(out, steeper)


def edge_index_only():
    return torch.tensor([[0, 1, 2], [1, 2, 3]])


def test_clear_errors():
    ei = edge_index_only()
    lat = torch.rand(4, 6, dtype=D)
    params = {
        "n": 0.04,
        "p": 20.0,
        "q": 0.5,
        "reference_discharge": 5.0,
        "length_m": torch.full((4,), 3e3, dtype=D),
    }
    slope = torch.full((4,), 1e-3, dtype=D)
    with pytest.raises(ValueError, match=r"needs channel slopes: graph\.slope"):
        route(lat, ei, irf="muskingum_cunge", params=params, step_seconds=HOUR)
    bad = slope.clone()
    bad[1], bad[3] = -1e-3, 0.0
    with pytest.raises(ValueError, match=r"slope must be > 0; bad node indices \[1, 3\]"):
        route(lat, ei, irf="muskingum_cunge", params={**params, "slope": bad}, step_seconds=HOUR)
    with pytest.raises(ValueError, match="needs step_seconds"):
        route(lat, ei, irf="muskingum_cunge", params={**params, "slope": slope})
    no_length = {k: v for k, v in params.items() if k != "length_m"}
    with pytest.raises(ValueError, match=r"needs reach lengths: graph\.length_m"):
        route(
            lat, ei, irf="muskingum_cunge", params={**no_length, "slope": slope}, step_seconds=HOUR
        )
    no_q = {k: v for k, v in params.items() if k != "reference_discharge"}
    with pytest.raises(ValueError, match="needs a reference discharge"):
        route(lat, ei, irf="muskingum_cunge", params={**no_q, "slope": slope}, step_seconds=HOUR)
    with pytest.raises(ValueError, match=r"parameter 'n' .* outside its bounds \[0.015, 0.25\]"):
        route(
            lat,
            ei,
            irf="muskingum_cunge",
            params={**params, "slope": slope, "n": 0.5},
            step_seconds=HOUR,
        )


def test_hydro_model_reference_discharge_is_the_accumulated_mean_flow():
    """``reference_fraction`` × the time-mean lateral inflow summed down the network with the
    split fractions, by hand on 0 → 2, 1 → 2 (w 0.7), 2 → 3 → 4; detached."""
    from torch_geometric.data import Data

    from gnnhydro.models import HydroModel

    ei, w = chain_graph()
    graph = Data(edge_index=ei, edge_weight=w, num_nodes=5)
    lat = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 1.0], [4.0, 0.0], [0.5, 0.5]], dtype=D)
    lat.requires_grad_(True)
    model = HydroModel(
        torch.nn.Identity(), None, "muskingum_cunge", mode="routing", reference_fraction=0.5
    )
    mean = [2.0, 2.0, 0.5, 2.0, 0.5]
    acc2 = mean[2] + mean[0] + 0.7 * mean[1]
    expected = [mean[0], mean[1], acc2, acc2 + mean[3], acc2 + mean[3] + mean[4]]
    got = model.reference_discharge(lat, graph)
    torch.testing.assert_close(got, 0.5 * torch.tensor(expected, dtype=D))
    assert not got.requires_grad
    assert set(HydroModel.routing_specs("muskingum_cunge")) == {"n", "p", "q"}
    assert get_irf("muskingum_cunge").needs_reference_discharge
    with pytest.raises(ValueError, match="reference_fraction"):
        HydroModel(
            torch.nn.Identity(), None, "muskingum_cunge", mode="routing", reference_fraction=0.0
        )


@pytest.mark.slow
def test_train_hbv_mc_on_the_synthetic_default(tmp_path):
    """``gnnhydro train model=hbv_mc`` for one epoch on a tiny synthetic basin writes the
    parameter maps of Manning's n and the channel geometry (and no Muskingum k, x)."""
    import geopandas as gpd
    import pandas as pd

    from tests.test_cli import TINY, gnnhydro

    run_dir = tmp_path / "mc"
    result = gnnhydro(
        "train",
        f"run_dir={run_dir}",
        f"dataset.root={tmp_path}/data/synthetic",
        "model=hbv_mc",
        "trainer.epochs=1",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    params = gpd.read_file(run_dir / "parameters.gpkg")
    assert len(params) == 30
    assert {"n", "p", "q", "fc", "beta"} <= set(params.columns)
    assert not {"k", "x"} & set(params.columns)
    spec = MuskingumCunge.param_spec
    for name in ("n", "p", "q"):
        assert params[name].between(spec[name].low, spec[name].high).all(), name
    log = pd.read_csv(run_dir / "train_log.csv")
    assert np.isfinite(log["train_loss"]).all()

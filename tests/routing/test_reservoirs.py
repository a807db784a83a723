"""Reservoir operators at the cuts between LTI stages, against an independent sequential
reference (numpy, reach by reach in a topological order of its own, reservoirs integrated in
numpy with the published formulas and the documented sub-stepped scheme)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnhydro.graph import RiverGraph
from gnnhydro.graph.synthetic import random_river_network
from gnnhydro.routing import route
from gnnhydro.routing.reservoirs import available_reservoirs, get_reservoir
from tests.routing.reference import kahn_order

D = torch.float64
DT = 3600.0  # s

# 0 → 1 → 2 (reservoir A) → 3 → 4 (reservoir B) → 5; tributaries 6 → 7 → 3, 9 → 4, 8 → 5
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 3), (9, 4), (8, 5)]
N = 10
RES = [2, 4]


# --------------------------------------------------------------------------- reference
def _kahn(edges: list[tuple[int, int]], n: int) -> list[int]:
    return kahn_order(np.array(edges, dtype=np.int64).T.reshape(2, -1), n)


def _muskingum(inflow: np.ndarray, k: float, x: float) -> np.ndarray:
    d = 2 * k * (1 - x) + 1.0
    c0, c1, c2 = (1 - 2 * k * x) / d, (1 + 2 * k * x) / d, (2 * k * (1 - x) - 1) / d
    out = np.zeros_like(inflow)
    prev_i = prev_o = 0.0
    for t, i in enumerate(inflow):
        out[t] = c0 * i + c1 * prev_i + c2 * prev_o
        prev_i, prev_o = i, out[t]
    return out


def _learned_rates(s, p):
    cap = p["reservoir_capacity_m3"]
    dead = p["reservoir_dead_fraction"] * cap
    tau = p["reservoir_release_days"] * 86400.0
    u = max(s - dead, 0.0) / (cap - dead)
    return (cap - dead) / tau * u ** p["reservoir_exponent"], 0.0


def _level_pool_rates(s, p):
    g = 9.81
    h = p["reservoir_orifice_elevation_m"] + s / (p["reservoir_area_km2"] * 1e6)
    ho, hw = p["reservoir_orifice_elevation_m"], p["reservoir_weir_elevation_m"]
    hmax, cw, lw = (
        p["reservoir_max_elevation_m"],
        p["reservoir_weir_coefficient"],
        p["reservoir_weir_length_m"],
    )
    q = 0.0
    if h > ho:
        q += (
            p["reservoir_orifice_coefficient"]
            * p["reservoir_orifice_area_m2"]
            * math.sqrt(2 * g * (h - ho))
        )
    if h > hw:
        q += cw * lw * min(h - hw, hmax - hw) ** 1.5
    top = cw * lw * p["reservoir_dam_length_m"] * (h - hmax) ** 1.5 if h > hmax else 0.0
    return q, top


def _reservoir(inflow, p, rates, s0, n, cap=None):
    h = DT / n
    s, outs, spills, stores = s0, [], [], []
    for q_in in inflow:
        vo_sum = vp_sum = 0.0
        for _ in range(n):
            o, top = rates(s, p)
            avail = s + q_in * h
            vo = min(o * h, avail)
            vp = min(top * h, avail - vo)
            s = avail - vo - vp
            if cap is not None and s > cap:
                vp += s - cap
                s = cap
            vo_sum += vo
            vp_sum += vp
        outs.append(vo_sum / DT)
        spills.append(vp_sum / DT)
        stores.append(s)
    return np.array(outs), np.array(spills), np.array(stores)


def sequential(lateral, k, x, res, kind, rp, n_sub, edges=EDGES, weights=None):
    """Outflow ``[N, T]`` and per reservoir (inflow, outflow, spill, storage)."""
    n = lateral.shape[0]
    out = np.zeros_like(lateral)
    series = {}
    weights = np.ones(len(edges)) if weights is None else weights
    for i in _kahn(edges, n):
        inflow = lateral[i].copy()
        for (s, d), w in zip(edges, weights, strict=True):
            if d == i:
                inflow += w * out[s]
        out[i] = _muskingum(inflow, k[i], x[i])
        if i in res:
            p = {name: float(v[i]) for name, v in rp.items()}
            if kind == "learned":
                s0 = p["reservoir_dead_fraction"] * p["reservoir_capacity_m3"]
                o, sp, st = _reservoir(
                    out[i], p, _learned_rates, s0, n_sub, p["reservoir_capacity_m3"]
                )
            else:
                s0 = (
                    p["reservoir_area_km2"]
                    * 1e6
                    * p["reservoir_initial_fraction"]
                    * (p["reservoir_max_elevation_m"] - p["reservoir_orifice_elevation_m"])
                )
                o, sp, st = _reservoir(out[i], p, _level_pool_rates, s0, n_sub)
            series[i] = (out[i].copy(), o, sp, st, s0)
            out[i] = o + sp
    return out, series


# --------------------------------------------------------------------------- fixtures
def _graph(mask_nodes=RES) -> RiverGraph:
    ei = torch.tensor(EDGES, dtype=torch.long).t()
    g = RiverGraph(edge_index=ei, num_nodes=N)
    g.reservoir_mask = torch.zeros(N, dtype=torch.bool)
    g.reservoir_mask[list(mask_nodes)] = True
    g.step_seconds = DT
    return g


def _inputs(T=60, seed=0, dtype=D):
    gen = torch.Generator().manual_seed(seed)
    lat = 20.0 * torch.rand(N, T, generator=gen, dtype=dtype)
    lat[:, T // 3 : T // 2] *= 8.0  # a flood wave
    k = 0.3 + 2.0 * torch.rand(N, generator=gen, dtype=dtype)
    x = 0.3 * torch.rand(N, generator=gen, dtype=dtype)
    return lat, k, x


def _learned_params(dtype=D):
    nan = float("nan")
    cap = torch.full((N,), nan, dtype=dtype)
    cap[2], cap[4] = 2.0e6, 5.0e6
    return {
        "reservoir_release_days": torch.full((N,), 0.1, dtype=dtype),
        "reservoir_exponent": torch.linspace(1.0, 2.5, N, dtype=dtype),
        "reservoir_dead_fraction": torch.full((N,), 0.2, dtype=dtype),
        "reservoir_capacity_m3": cap,
    }


def _level_pool_params(dtype=D):
    def full(v):
        return torch.full((N,), float(v), dtype=dtype)

    return {
        "reservoir_area_km2": torch.tensor([1.0] * 4 + [0.3] + [1.0] * 5, dtype=dtype),
        "reservoir_max_elevation_m": full(103.0),
        "reservoir_weir_elevation_m": full(101.5),
        "reservoir_weir_coefficient": full(0.4),
        "reservoir_weir_length_m": full(10.0),
        "reservoir_dam_length_m": full(10.0),
        "reservoir_orifice_elevation_m": full(100.0),
        "reservoir_orifice_coefficient": full(0.1),
        "reservoir_orifice_area_m2": full(1.0),
        "reservoir_initial_fraction": full(0.9),
    }


def _auto_n(kind, rp):
    if kind == "learned":
        bound = max(
            rp["reservoir_exponent"][i] / (rp["reservoir_release_days"][i] * 86400.0) for i in RES
        )
    else:
        bound = 0.0
        for i in RES:
            p = {k: float(v[i]) for k, v in rp.items()}
            dq = (
                p["reservoir_orifice_coefficient"]
                * p["reservoir_orifice_area_m2"]
                * 9.81
                / math.sqrt(2 * 9.81 * 0.01)
                + 1.5
                * p["reservoir_weir_coefficient"]
                * p["reservoir_weir_length_m"]
                * math.sqrt(
                    max(p["reservoir_max_elevation_m"] - p["reservoir_weir_elevation_m"], 0)
                )
                + 1.5
                * p["reservoir_weir_coefficient"]
                * p["reservoir_weir_length_m"]
                * p["reservoir_dam_length_m"]
            )
            bound = max(bound, dq / (p["reservoir_area_km2"] * 1e6))
    return max(1, math.ceil(2 * DT * float(bound) - 1e-9))


PARAMS = {"learned": _learned_params, "level_pool": _level_pool_params}


# --------------------------------------------------------------------------- tests
def test_registry():
    assert {"learned", "level_pool", "observed"} <= set(available_reservoirs())
    assert get_reservoir("none") is None and get_reservoir(None) is None
    with pytest.raises(ValueError, match="available"):
        get_reservoir("dam_of_doom")


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("kind", ["learned", "level_pool"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_sequential_reference(kind, backend, dtype, tol):
    g = _graph()
    lat, k, x = _inputs(dtype=dtype)
    rp = PARAMS[kind](dtype)
    q, res = route(
        lat, g, "muskingum", {"k": k, "x": x}, reservoir=kind, reservoir_params=rp,
        return_reservoirs=True, backend=backend,
    )  # fmt: skip
    n_sub = _auto_n(kind, {kk: v.double().numpy() for kk, v in rp.items()})
    if kind == "learned":
        assert n_sub > 1  # the sub-stepping is exercised
    ref, series = sequential(
        lat.double().numpy(), k.double().numpy(), x.double().numpy(), RES, kind,
        {kk: v.double().numpy() for kk, v in rp.items()}, n_sub,
    )  # fmt: skip
    scale = np.abs(ref).max()
    np.testing.assert_allclose(q.double().numpy(), ref, rtol=tol, atol=tol * scale)
    assert res.nodes.tolist() == RES
    for r, node in enumerate(RES):
        inflow, o, sp, st, s0 = series[node]
        for got, want in zip((res.inflow, res.outflow, res.spill), (inflow, o, sp), strict=True):
            np.testing.assert_allclose(got[r].double().numpy(), want, rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(
            res.storage[r].double().numpy(), st, rtol=tol, atol=tol * st.max()
        )
        assert float(res.initial_storage[r]) == pytest.approx(s0, rel=1e-6)
    # the reservoirs change the flow (the test is not vacuous), storage stays in range
    plain = route(lat, g, "muskingum", {"k": k, "x": x})
    assert (plain[5] - q[5]).abs().max() > 0.05 * plain[5].abs().max()
    assert (res.storage >= 0).all() and (res.outflow >= 0).all() and (res.spill >= 0).all()
    if kind == "learned":
        cap = rp["reservoir_capacity_m3"][RES].view(-1, 1)
        assert (res.storage <= cap * (1 + 1e-6)).all()
        assert res.spill.max() > 0  # the flood wave fills reservoir A
    else:
        assert res.spill.max() > 0  # the small lake overtops


@pytest.mark.parametrize("kind", ["learned", "level_pool"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_mass_balance(kind, dtype, tol):
    g = _graph()
    lat, k, x = _inputs(T=200, seed=3, dtype=dtype)
    _, res = route(
        lat, g, "muskingum", {"k": k, "x": x}, reservoir=kind, reservoir_params=PARAMS[kind](dtype),
        return_reservoirs=True,
    )  # fmt: skip
    err = res.mass_balance_error(DT).double()
    # relative to the volume that passed through (and the storage), per reservoir
    volume = res.inflow.double().abs().sum(-1) * DT + res.storage.double().abs().max(-1).values
    assert (err.abs().sum(-1) / volume).max() < tol


def test_gradcheck_float64():
    g = _graph()
    T = 12
    lat, k, x = _inputs(T=T, seed=5)
    lat = lat * 30  # reach the spill of reservoir A within the short series
    rp = _learned_params()
    free = ["reservoir_release_days", "reservoir_exponent", "reservoir_dead_fraction"]

    def f(lat_, *vals):
        p = dict(rp, **dict(zip(free, vals, strict=True)))
        return route(
            lat_, g, "muskingum", {"k": k, "x": x}, reservoir="learned", reservoir_params=p
        )

    inputs = [lat.clone().requires_grad_(True)] + [rp[n].clone().requires_grad_(True) for n in free]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)

    lp = _level_pool_params()
    lp_free = ["reservoir_weir_coefficient", "reservoir_orifice_area_m2", "reservoir_area_km2"]

    def f_lp(lat_, *vals):
        p = dict(lp, **dict(zip(lp_free, vals, strict=True)))
        return route(
            lat_, g, "muskingum", {"k": k, "x": x}, reservoir="level_pool", reservoir_params=p
        )

    inputs = [lat.clone().requires_grad_(True)] + [
        lp[n].clone().requires_grad_(True) for n in lp_free
    ]
    assert torch.autograd.gradcheck(f_lp, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_observed_equals_injected_release():
    g = _graph()
    T = 40
    lat, k, x = _inputs(T=T, seed=7)
    gen = torch.Generator().manual_seed(8)
    release = torch.full((N, T), float("nan"), dtype=D)
    release[RES] = 5.0 + 10.0 * torch.rand(2, T, generator=gen, dtype=D)
    q, res = route(
        lat, g, "muskingum", {"k": k, "x": x}, reservoir="observed",
        reservoir_params={"reservoir_release": release}, return_reservoirs=True,
    )  # fmt: skip
    # the same network cut below the reservoirs, their release injected as lateral inflow
    keep = [e for e in EDGES if e[0] not in RES]
    cut = RiverGraph(edge_index=torch.tensor(keep).t(), num_nodes=N)
    lat_cut = lat.clone()
    for s, d in EDGES:
        if s in RES:
            lat_cut[d] += release[s]
    ref = route(lat_cut, cut, "muskingum", {"k": k, "x": x})
    torch.testing.assert_close(
        q[[0, 1, 3, 5, 6, 7, 8, 9]], ref[[0, 1, 3, 5, 6, 7, 8, 9]], rtol=1e-12, atol=1e-10
    )
    torch.testing.assert_close(q[RES], release[RES])
    torch.testing.assert_close(res.inflow, ref[RES], rtol=1e-12, atol=1e-10)
    assert res.mass_balance_error(DT).abs().max() < 1e-6
    # release taken from the graph attribute of the same name
    g.reservoir_release = release
    q2 = route(lat, g, "muskingum", {"k": k, "x": x}, reservoir="observed")
    torch.testing.assert_close(q2, q)


def _random_regulated(n=150, seed=21, num_res=6):
    g = random_river_network(n, depth="deep", seed=seed, bifurcations=4)
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(g.num_nodes, dtype=torch.bool)
    mask[torch.randperm(g.num_nodes, generator=gen)[:num_res]] = True
    g.reservoir_mask = mask
    g.step_seconds = DT
    N_ = g.num_nodes
    cap = torch.full((N_,), 3e6, dtype=D)
    rp = {
        "reservoir_release_days": 0.3 + torch.rand(N_, generator=gen, dtype=D),
        "reservoir_exponent": 1 + torch.rand(N_, generator=gen, dtype=D),
        "reservoir_dead_fraction": 0.3 * torch.rand(N_, generator=gen, dtype=D),
        "reservoir_capacity_m3": cap,
    }
    lat = 10 * torch.rand(2, N_, 48, generator=gen, dtype=D)
    p = {
        "k": 0.3 + 3 * torch.rand(N_, generator=gen, dtype=D),
        "x": 0.4 * torch.rand(N_, generator=gen, dtype=D),
    }
    return g, lat, p, rp


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_staged_with_reservoirs_equals_reference(backend):
    g, lat, p, rp = _random_regulated()
    plan = g.stage_plan(max_nodes=20)
    assert len(plan.stages) > 3
    weight = torch.rand_like(lat)
    results = []
    for staged in (None, plan):
        lat_b = lat.clone().requires_grad_(True)
        r = {
            kk: v.clone().requires_grad_(True)
            for kk, v in rp.items()
            if kk != "reservoir_capacity_m3"
        }
        q = route(
            lat_b, g, "muskingum", p, reservoir="learned", stage_plan=staged, backend=backend,
            reservoir_params={**r, "reservoir_capacity_m3": rp["reservoir_capacity_m3"]},
        )  # fmt: skip
        (q * weight).sum().backward()
        results.append([q.detach(), lat_b.grad] + [r[kk].grad for kk in sorted(r)])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)
    # against the sequential reference (batch member 1)
    ei = [tuple(e) for e in g.edge_index.t().tolist()]
    res_nodes = torch.nonzero(g.reservoir_mask).flatten().tolist()
    rnp = {kk: v.numpy() for kk, v in rp.items()}
    n_sub = max(
        1,
        math.ceil(
            2
            * DT
            * max(
                rnp["reservoir_exponent"][i] / (rnp["reservoir_release_days"][i] * 86400)
                for i in res_nodes
            )
            - 1e-9
        ),
    )
    ref, _ = sequential(lat[1].numpy(), p["k"].numpy(), p["x"].numpy(), res_nodes, "learned", rnp, n_sub, edges=ei,
        weights=g.edge_weight.double().numpy(),
    )  # fmt: skip
    np.testing.assert_allclose(
        results[1][0][1].numpy(), ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max()
    )


def test_time_chunks_and_state_continue_exactly():
    g, lat, p, rp = _random_regulated(n=80, seed=4, num_res=4)
    full = route(lat, g, "muskingum", p, reservoir="learned", reservoir_params=rp)
    chunked = route(lat, g, "muskingum", p, reservoir="learned", reservoir_params=rp, time_chunk=7)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-10)
    q1, st = route(
        lat[..., :20],
        g,
        "muskingum",
        p,
        reservoir="learned",
        reservoir_params=rp,
        return_state=True,
    )
    assert st.reservoir_storage.shape == (2, 4)
    q2 = route(
        lat[..., 20:], g, "muskingum", p, reservoir="learned", reservoir_params=rp, initial_state=st
    )
    torch.testing.assert_close(torch.cat([q1, q2], -1), full, rtol=1e-12, atol=1e-10)


def test_none_routes_plain_reaches_and_contracts_hold():
    g = _graph()
    lat, k, x = _inputs()
    plain = route(lat, g, irf="muskingum", params={"k": k, "x": x})
    for choice in (None, "none"):
        torch.testing.assert_close(
            route(lat, g, "muskingum", {"k": k, "x": x}, reservoir=choice), plain
        )
    # an operator on a graph without reservoir nodes routes plainly; an empty result comes back
    g.reservoir_mask = torch.zeros(N, dtype=torch.bool)
    q, res = route(
        lat, g, "muskingum", {"k": k, "x": x}, reservoir="learned", return_reservoirs=True
    )
    torch.testing.assert_close(q, plain)
    assert res.storage.shape == (0, lat.shape[-1])
    h = torch.rand(N, 3, dtype=D)
    assert route(lat, g, kernels=h).shape == lat.shape


def test_clear_errors():
    g = _graph()
    lat, k, x = _inputs()
    g.node_id = [f"r{i}" for i in range(N)]
    rp = _learned_params()
    bad = dict(rp, reservoir_capacity_m3=torch.full((N,), float("nan"), dtype=D))
    bad["reservoir_capacity_m3"][2] = 1e6
    with pytest.raises(
        ValueError, match=r"'reservoir_capacity_m3' is missing \(NaN\) at reservoir ids \['r4'\]"
    ):
        route(lat, g, "muskingum", {"k": k, "x": x}, reservoir="learned", reservoir_params=bad)
    missing = {kk: v for kk, v in rp.items() if kk != "reservoir_exponent"}
    with pytest.raises(ValueError, match="missing input.*reservoir_exponent"):
        route(lat, g, "muskingum", {"k": k, "x": x}, reservoir="learned", reservoir_params=missing)
    out_of_bounds = dict(rp, reservoir_exponent=torch.full((N,), 9.0, dtype=D))
    with pytest.raises(ValueError, match="reservoir_exponent.*outside its bounds"):
        route(
            lat,
            g,
            "muskingum",
            {"k": k, "x": x},
            reservoir="learned",
            reservoir_params=out_of_bounds,
        )
    release = torch.full((N, lat.shape[-1]), float("nan"), dtype=D)
    release[2] = 1.0
    with pytest.raises(
        ValueError, match=r"'reservoir_release' is missing \(NaN\) at reservoir ids \['r4'\]"
    ):
        route(
            lat,
            g,
            "muskingum",
            {"k": k, "x": x},
            reservoir="observed",
            reservoir_params={"reservoir_release": release},
        )
    del g.step_seconds
    with pytest.raises(ValueError, match="step_seconds"):
        route(lat, g, "muskingum", {"k": k, "x": x}, reservoir="learned", reservoir_params=rp)
    with pytest.raises(ValueError, match="unknown reservoir operator"):
        route(lat, g, "muskingum", {"k": k, "x": x}, reservoir="dam", step_seconds=DT)


@pytest.mark.parametrize("kind", ["learned", "level_pool", "observed"])
def test_fused_forward_equals_staged_autograd_path(kind):
    g = _graph()
    lat, k, x = _inputs(T=50, seed=11)
    rp = (
        PARAMS[kind]()
        if kind != "observed"
        else {"reservoir_release": 3.0 + torch.rand(N, 50, dtype=D)}
    )
    with torch.no_grad():  # one numba pass with the reservoirs inline
        q0, r0 = route(
            lat,
            g,
            "muskingum",
            {"k": k, "x": x},
            reservoir=kind,
            reservoir_params=rp,
            return_reservoirs=True,
        )
    lat_g = lat.clone().requires_grad_(True)  # stage by stage with autograd
    q1, r1 = route(
        lat_g,
        g,
        "muskingum",
        {"k": k, "x": x},
        reservoir=kind,
        reservoir_params=rp,
        return_reservoirs=True,
    )
    torch.testing.assert_close(q0, q1.detach(), rtol=1e-12, atol=1e-9)
    for a, b in zip(
        (r0.storage, r0.outflow, r0.spill, r0.inflow),
        (r1.storage, r1.outflow, r1.spill, r1.inflow),
        strict=True,
    ):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-8)


LC = "../shared/data/lower_colorado_tx/"


@pytest.mark.skipif(
    not __import__("pathlib").Path(LC + "domain/LAKEPARM.nc").exists(), reason="no shared data"
)
def test_lower_colorado_lakes_from_lakeparm():
    import xarray as xr

    from gnnhydro.datasets.nwm import read_lake_reservoirs
    from gnnhydro.routing.io import read_nwm

    inp = read_nwm(LC + "domain/RouteLink.nc", LC + "channel_forcing", dtype=D)
    with xr.open_dataset(LC + "domain/RouteLink.nc") as rl:
        comid = rl["NHDWaterbodyComID"].values.astype(np.int64)
        link, to = rl["link"].values.astype(np.int64), rl["to"].values.astype(np.int64)
    lakes = read_lake_reservoirs(LC + "domain/LAKEPARM.nc", comid, link, to)
    mask = lakes.pop("reservoir_mask")
    lakes.pop("reservoir_lake_id")
    assert mask.sum() == np.unique(comid[comid > 0]).size == 30
    # the outlet reach drains out of its lake
    for i in np.flatnonzero(mask):
        assert to[i] == 0 or comid[np.flatnonzero(link == to[i])[0]] != comid[i]
    assert np.isfinite(lakes.pop("reservoir_capacity_m3")[mask]).all()
    g = inp.graph
    g.reservoir_mask = torch.as_tensor(mask)
    q, res = route(
        inp.lateral, g, "muskingum", inp.params, reservoir="level_pool",
        reservoir_params={k: torch.as_tensor(v) for k, v in lakes.items()},
        step_seconds=inp.step_seconds, return_reservoirs=True,
    )  # fmt: skip
    assert torch.isfinite(q).all() and res.storage.shape == (30, inp.lateral.shape[-1])
    volume = res.inflow.abs().sum(-1) * inp.step_seconds + res.storage.abs().max(-1).values
    assert (res.mass_balance_error(inp.step_seconds).abs().sum(-1) / volume).max() < 1e-10


def test_hydro_model_learned_reservoirs():
    from gnnhydro.models import HydroModel
    from gnnhydro.nn import build_parameterizer

    g = _graph()
    T = 30
    lat, _, _ = _inputs(T=T, seed=2, dtype=torch.float32)
    g.x = torch.rand(N, 3)
    g.lateral_inflow = lat
    g.reservoir_capacity_m3 = torch.full((N,), 2e6)
    specs = {**HydroModel.routing_specs("muskingum"), **HydroModel.reservoir_specs("learned")}
    par = build_parameterizer("mlp", in_channels=3, specs={"routing": (specs, None)})
    model = HydroModel(par, None, "muskingum", mode="routing", substeps=1, reservoir="learned")
    assert {"reservoir_release_days", "reservoir_exponent"} <= set(model.param_specs)
    out = model(g)
    assert out["reservoir_storage"].shape == (2, T)
    assert out["reservoir_index"].tolist() == RES
    torch.testing.assert_close(out["discharge"][RES], out["reservoir_outflow"])
    out["discharge"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in par.parameters())


# ------------------------------------------- numba integration (+ exact adjoint) vs torch loop
def _integrate_case(kind, B=2, T=48, seed=0):
    """Operator inputs (``[1, R]`` and ``[B, R]`` parameters, each requiring gradients) whose
    storages hit the caps: an empty reservoir (inflow pauses, releases capped by the water
    available), spill above the capacity (learned), the orifice / weir / crest thresholds
    (level pool); daily steps make the release rates large against the storage."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "learned":
        p = {
            "reservoir_capacity_m3": torch.tensor([[1e6, 2e6, 5e5, 3e6]], dtype=D),
            "reservoir_dead_fraction": torch.tensor([[0.0, 0.2, 0.5, 0.1]], dtype=D),
            "reservoir_release_days": torch.tensor([[0.05, 0.5, 2.0, 10.0]], dtype=D),
            "reservoir_exponent": 1.0 + 2.0 * torch.rand(B, 4, generator=gen, dtype=D),
        }
        s0 = torch.tensor([[0.0, 4e5, 5e5, 3e6]], dtype=D).expand(B, 4).clone()
        scale = 40.0
    elif kind == "level_pool":

        def row(*v):
            return torch.tensor([v], dtype=D)

        p = {
            "reservoir_area_km2": row(0.1, 1.0, 0.05),
            "reservoir_max_elevation_m": row(103.0, 102.0, 102.0),
            "reservoir_weir_elevation_m": row(101.5, 100.0, 102.0),  # weir at the orifice; none
            "reservoir_weir_coefficient": row(0.4, 0.3, 0.5),
            "reservoir_weir_length_m": row(10.0, 50.0, 5.0),
            "reservoir_dam_length_m": row(10.0, 100.0, 0.0),
            "reservoir_orifice_elevation_m": row(100.0, 100.0, 99.0),
            "reservoir_orifice_coefficient": row(0.1, 0.6, 0.3),
            "reservoir_orifice_area_m2": 0.5 + torch.rand(B, 3, generator=gen, dtype=D),
            "reservoir_initial_fraction": row(0.9, 0.0, 1.0),
        }
        s0 = None  # from the parameters (differentiable)
        scale = 60.0
    else:
        T_all = T + 5
        p = {"reservoir_release": 5.0 + 20.0 * torch.rand(B, 3, T_all, generator=gen, dtype=D)}
        s0 = 1e5 * torch.rand(1, 3, generator=gen, dtype=D)
        scale = 20.0
    R = next(iter(p.values())).shape[1]
    inflow = scale * torch.rand(B, R, T, generator=gen, dtype=D)
    inflow[..., T // 4 : T // 2] = 0.0  # empties the reservoirs
    inflow[..., 3 * T // 4 :] *= 30.0  # a flood: spill, overtopping
    return inflow, p, s0


def _integrate(kind, inflow, p, s0, method, substeps, step=86400.0, t0=0):
    op = get_reservoir(kind)
    return op.integrate(inflow, p, step, s0, substeps, t0=t0, method=method)


@pytest.mark.parametrize(
    "kind,substeps",
    [("learned", 1), ("learned", 3), ("learned", "auto"), ("level_pool", 1), ("level_pool", 4),
     ("level_pool", "auto"), ("observed", 1)],
)  # fmt: skip
def test_numba_integration_equals_torch_loop(kind, substeps):
    inflow, p, s0 = _integrate_case(kind)
    B, R, T = inflow.shape
    gen = torch.Generator().manual_seed(1)
    weights = [torch.rand(B, R, T, generator=gen, dtype=D) for _ in range(3)]
    results = []
    for method in ("numba", "torch"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        q = inflow.clone().requires_grad_(True)
        s = s0.clone().requires_grad_(True) if s0 is not None else None
        out = _integrate(kind, q, leaves, s, method, substeps, t0=2 if kind == "observed" else 0)
        series = (out.outflow, out.spill, out.storage)
        loss = sum(
            (w * x / x.detach().abs().max().clamp_min(1.0)).sum()
            for w, x in zip(weights, series, strict=True)
        )
        loss.backward()
        grads = (
            [q.grad]
            + [leaves[k].grad for k in sorted(leaves)]
            + ([s.grad] if s is not None else [])
        )
        results.append(([x.detach() for x in series], grads))
    (vals, grads), (ref_vals, ref_grads) = results
    for a, b in zip(vals, ref_vals, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    for a, b in zip(grads, ref_grads, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()) + 1e-300)
    # the caps are reached (the test is not vacuous)
    outflow, spill, storage = ref_vals
    if kind == "learned":
        assert substeps != 1 or (storage == 0).any()  # emptied: release capped by the water
        cap = p["reservoir_capacity_m3"].unsqueeze(-1)
        assert torch.isclose(storage, cap.expand_as(storage)).any() and spill.max() > 0
    elif kind == "level_pool":
        h = get_reservoir(kind).elevation(storage, {k: v.unsqueeze(-1) for k, v in p.items()})
        assert substeps != 1 or (storage == 0).any()  # the volume limiter emptied it
        assert (h > p["reservoir_max_elevation_m"].unsqueeze(-1)).any() and spill.max() > 0
        assert (h < p["reservoir_weir_elevation_m"].unsqueeze(-1)).any()
        hw, hmax = (
            p[k].unsqueeze(-1) for k in ("reservoir_weir_elevation_m", "reservoir_max_elevation_m")
        )
        assert ((h > hw) & (h < hmax)).any()  # weir flow below the crest


@pytest.mark.parametrize("kind", ["learned", "level_pool", "observed"])
def test_numba_integration_gradcheck(kind):
    """``gradcheck`` through the numba Function in float64 (away from the kinks: no pauses)."""
    from gnnhydro.routing.reservoirs import _integrate_numba

    inflow, p, s0 = _integrate_case(kind, B=2, T=10, seed=4)
    inflow = inflow.clamp_min(1.0)  # no empty reservoir (its gradient is one-sided)
    op = get_reservoir(kind)
    s0 = op.initial_storage(p).expand(2, -1) if s0 is None else s0.expand(2, -1)
    s0 = (s0 + 1e4) / 1e4  # no empty reservoir; in units of 1e4 m³
    if kind == "level_pool":  # a weir of some depth (none: the kink of relu(LkMxE − WeirE) at 0)
        p["reservoir_max_elevation_m"] = p["reservoir_max_elevation_m"] + torch.tensor([0, 0, 0.5])
    names = sorted(k for k in p if k != "reservoir_initial_fraction")
    step = 3600.0 if kind != "learned" else 21600.0

    def f(q, s, *vals):
        params = dict(zip(names, vals, strict=True))
        if kind == "observed":
            params["reservoir_release"] = params["reservoir_release"][..., : q.shape[-1]]
        out = _integrate_numba(op, q, params, step, s * 1e4, 2 if kind != "observed" else 1)
        return out.outflow, out.spill, out.storage / 1e4

    leaves = [inflow, s0] + [p[k] for k in names]
    leaves = [x.clone().requires_grad_(True) for x in leaves]
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_user_operator_integrates_by_the_torch_loop():
    from gnnhydro.routing.reservoirs import LearnedRelease

    class Linear(LearnedRelease):
        def rates(self, storage, params):
            return storage / 86400.0, torch.zeros_like(storage)

    inflow, p, s0 = _integrate_case("learned", T=12)
    a = Linear().integrate(inflow, p, 3600.0, s0, 2)  # auto: the torch loop
    b = Linear().integrate(inflow, p, 3600.0, s0, 2, method="torch")
    torch.testing.assert_close(a.storage, b.storage, rtol=0, atol=0)
    with pytest.raises(ValueError, match="built-in operators on CPU"):
        Linear().integrate(inflow, p, 3600.0, s0, 2, method="numba")

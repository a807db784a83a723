"""Tests of the synthetic default dataset (gnnhydro/datasets/synthetic.py).

A small configuration (60 reaches, 4 years) is built once per module into a temporary root;
the default configuration (300 reaches, 12 years) once more for its shapes and its long-term
water balance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnhydro.datasets.synthetic import (
    ATTRIBUTE_NAMES,
    ROUTING_PARAMS,
    RUNOFF_PARAMS,
    SyntheticRiverBasin,
    true_parameter_function,
)
from gnnhydro.routing import get_irf, muskingum_coefficients
from gnnhydro.runoff import HBV
from gnnhydro.spec import check_in_bounds

SMALL = dict(seed=3, num_nodes=60, years=4)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return SyntheticRiverBasin(root=tmp_path_factory.mktemp("small"), **SMALL)[0]


@pytest.fixture(scope="module")
def default_item(tmp_path_factory):
    return SyntheticRiverBasin(root=tmp_path_factory.mktemp("default"))[0]


def _as_comparable(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.numpy().tobytes())
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return {k: _as_comparable(v) for k, v in value.items()}
    return value


def _snapshot(graph) -> dict:
    return {key: _as_comparable(value) for key, value in graph._store.items()}


def _hbv_rerun(item, states=None, spinup_steps: int = 0):
    """Re-simulate HBV from the item's forcing and true parameters (float64)."""
    hbv = HBV(nmul=1)
    f = item.forcing.double()
    forcing = {name: f[..., item.forcing_names.index(name)] for name in hbv.forcing_names}
    if spinup_steps:
        forcing = {k: torch.cat([v[:, :spinup_steps], v], dim=1) for k, v in forcing.items()}
    params = {k: item.true_params[k].double().unsqueeze(-1) for k in hbv.param_spec}
    out = hbv(forcing=forcing, params=params, states=states, warmup_steps=spinup_steps)
    return hbv, forcing, out


# ------------------------------------------------------------------------------ determinism
def test_same_seed_is_bit_identical_and_cached(tmp_path, small):
    a = SyntheticRiverBasin(root=tmp_path / "a", **SMALL)[0]
    b = SyntheticRiverBasin(root=tmp_path / "b", **SMALL)[0]
    snap_a, snap_b = _snapshot(a), _snapshot(b)
    assert snap_a.keys() == snap_b.keys()
    for key in snap_a:
        assert snap_a[key] == snap_b[key], f"attribute {key!r} differs between two builds"
    # the module fixture (another root, built earlier) is identical too
    assert _snapshot(small)["q_obs"] == snap_a["q_obs"]
    # processed data are cached in root/processed and reloaded without regenerating
    processed = list((tmp_path / "a" / "processed").glob("synthetic_*.pt"))
    assert len(processed) == 1
    import gnnhydro.datasets.synthetic as mod

    original = mod.generate_synthetic_basin
    mod.generate_synthetic_basin = None  # any regeneration would fail
    try:
        c = SyntheticRiverBasin(root=tmp_path / "a", **SMALL)[0]
    finally:
        mod.generate_synthetic_basin = original
    assert _snapshot(c)["q_true"] == snap_a["q_true"]


def test_other_seed_or_config_differs(tmp_path, small):
    other = SyntheticRiverBasin(root=tmp_path, **{**SMALL, "seed": 4})[0]
    assert not torch.equal(other.forcing, small.forcing)
    assert not torch.equal(other.x, small.x)
    # another configuration in the same root gets its own processed file
    SyntheticRiverBasin(root=tmp_path, **{**SMALL, "seed": 4, "years": 3})
    assert len(list((tmp_path / "processed").glob("synthetic_*.pt"))) == 2


# ------------------------------------------------------------------------------ conventions
def test_item_conventions(small):
    n, years = SMALL["num_nodes"], SMALL["years"]
    t = sum(366 if y % 4 == 0 else 365 for y in range(2000, 2000 + years))
    g = small
    assert g.num_nodes == n
    assert g.x.shape == (n, len(ATTRIBUTE_NAMES)) and g.x.dtype == torch.float32
    assert list(g.x_names) == list(ATTRIBUTE_NAMES) and len(g.x_units) == len(g.x_names)
    assert torch.isfinite(g.x).all()
    assert g.forcing.shape == (n, t, 3) and g.forcing.dtype == torch.float32
    assert g.forcing_names == ["precipitation", "temperature", "pet"]
    assert g.forcing_units == ["mm/day", "°C", "mm/day"]
    for key in ("q_obs", "q_true", "lateral_inflow"):
        assert getattr(g, key).shape == (n, t) and getattr(g, key).dtype == torch.float32
    assert g.time.dtype == np.dtype("datetime64[ns]") and g.time.shape == (t,)
    assert g.time[0] == np.datetime64("2000-01-01")
    assert g.time[-1] == np.datetime64(f"{2000 + years - 1}-12-31")
    assert (np.diff(g.time) == np.timedelta64(1, "D")).all()
    assert g.step_seconds == 86400.0
    # network: a forest (≤ 1 downstream per reach), validated, 1–3 outlets
    g.validate()
    assert torch.bincount(g.edge_index[0], minlength=n).max() <= 1
    assert 1 <= g.outlets.numel() <= 3
    assert g.num_levels >= 5
    assert torch.equal(g.area_km2, g.x[:, ATTRIBUTE_NAMES.index("area_km2")])
    assert torch.equal(g.length_m, g.x[:, ATTRIBUTE_NAMES.index("length_m")])
    assert torch.equal(g.slope, g.x[:, ATTRIBUTE_NAMES.index("slope")])
    assert g.pos.shape == (n, 2)
    lon, lat = g.pos[:, 0], g.pos[:, 1]
    assert (lat > 40).all() and (lat < 45).all() and (lon > -105).all() and (lon < -95).all()
    assert g.area_km2.min() >= 15 and g.area_km2.max() <= 250
    assert 50 <= g.area_km2.mean() <= 110
    # gauges
    gi = g.gauge_index
    assert gi.dtype == torch.long and gi.unique().numel() == gi.numel()
    assert g.gauge_mask.dtype == torch.bool and g.gauge_mask.sum() == gi.numel()
    assert g.gauge_mask[gi].all()
    assert g.gauge_id == [f"G{i:03d}" for i in range(1, gi.numel() + 1)]
    assert int(g.outlets[g.upstream_area_km2[g.outlets].argmax()]) == int(gi[0])
    hold = g.holdout_gauge_ids
    assert set(hold) < set(g.gauge_id)
    assert 1 <= len(hold) <= math.ceil(0.3 * gi.numel())
    assert set(g.true_params) == set(RUNOFF_PARAMS) | set(ROUTING_PARAMS)
    assert all(v.shape == (n,) for v in g.true_params.values())
    assert set(g.true_initial_states) == set(HBV(nmul=1).state_names)


def test_q_obs_nan_exactly_off_gauges(small):
    q = small.q_obs
    observed = torch.isfinite(q)
    off = ~small.gauge_mask
    assert not observed[off].any(), "q_obs must be NaN at every node without a gauge"
    at = observed[small.gauge_mask]
    assert at.float().mean(1).min() > 0.8  # every gauge mostly observed
    assert (~at).any(), "some days should be missing at gauges"
    assert (q[observed] >= 0).all()
    # noise: relative error a few per cent, unbiased on average
    qt = small.q_true[observed]
    rel = (q[observed] - qt) / qt.clamp_min(1e-3)
    assert 0.02 < rel.std() < 0.2
    assert abs(float(q[observed].double().sum() / qt.double().sum()) - 1) < 0.05


def test_default_configuration(default_item):
    g = default_item
    assert g.num_nodes == 300 and len(g.time) == 4383 and g.gauge_index.numel() == 40
    assert g.time[-1] == np.datetime64("2011-12-31")
    up = g.upstream_area_km2
    gi = g.gauge_index
    # gauges are mixed (headwater, mid-size, mainstem) and nested
    assert (up[gi] < 300).sum() >= 5 and (up[gi] > 2000).sum() >= 5
    nested = sum(int(g.gauge_mask[g.upstream_nodes(int(i))].sum()) > 1 for i in gi)
    assert nested >= 5
    assert 8 <= len(g.holdout_gauge_ids) <= 12
    assert g.num_levels >= 10


# -------------------------------------------------------------------------- plausibility
def test_weather_is_plausible(small):
    p = small.forcing[..., 0].double()
    temp = small.forcing[..., 1].double()
    pet = small.forcing[..., 2].double()
    assert (p >= 0).all() and (pet >= 0).all()
    annual_p = p.mean(1) * 365.25
    assert 500 < annual_p.mean() < 2500 and annual_p.min() > 300 and annual_p.max() < 4000
    annual_pet = pet.mean(1) * 365.25
    assert 300 < annual_pet.mean() < 1500
    wet = (p > 0).double().mean()
    assert 0.2 < wet < 0.7
    snow = ((temp < 0) & (p > 0)).double().mean()
    assert snow > 0.03, "cold wet days (snow) must occur"
    snowfall_share = float((p * (temp < 0)).sum() / p.sum())
    assert 0.05 < snowfall_share < 0.6
    assert -40 < temp.min() and temp.max() < 45
    # seasons: July warmer than January everywhere
    month = small.time.astype("datetime64[M]").astype(int) % 12
    jan, jul = torch.from_numpy(month == 0), torch.from_numpy(month == 6)
    assert (temp[:, jul].mean(1) > temp[:, jan].mean(1) + 10).all()
    # spatial correlation: neighbouring catchments get similar rain
    src, dst = small.edge_index
    c_neigh = torch.corrcoef(torch.stack([p[src].flatten(), p[dst].flatten()]))[0, 1]
    assert c_neigh > 0.5
    # attribute ranges
    x = dict(zip(small.x_names, small.x.double().T))
    assert (x["slope"] > 0).all() and (x["forest_frac"] <= 1).all()
    assert 0.2 < x["aridity"].mean() < 2.0
    assert torch.allclose(x["p_mean"], p.mean(1), rtol=1e-5)
    assert torch.allclose(x["aridity"], pet.mean(1) / p.mean(1), rtol=1e-4)
    # elevations accumulate upstream: channels rise toward the headwaters
    assert x["elevation_m"].max() > 3 * x["elevation_m"][small.outlets].min()


def test_runoff_ratio_and_water_balance_small(small):
    """Re-simulating HBV from the stored spun-up states reproduces ``lateral_inflow`` (units by
    hand), and the outlet's observed volume closes the water balance P − ET − ΔS."""
    hbv, forcing, out = _hbv_rerun(
        small, states={k: v.double().unsqueeze(-1) for k, v in small.true_initial_states.items()}
    )
    area = small.area_km2.double()
    lateral = out["runoff"] * area[:, None] * 1e6 * 1e-3 / 86400.0  # mm/day·km² → m³/s
    torch.testing.assert_close(lateral, small.lateral_inflow.double(), rtol=1e-5, atol=1e-6)
    assert hbv.mass_balance(out, forcing).abs().max() < 1e-6
    outlet = int(small.gauge_index[0])
    up = small.upstream_nodes(outlet)
    a = area[up]
    steps = forcing["precipitation"].shape[1]
    supply = (
        forcing["precipitation"][up].sum(1)
        - out["evapotranspiration"][up].sum(1)
        - (out["storage"][up, -1] - out["storage_initial"][up])
    )
    supply_mm_day = float((supply * a).sum() / a.sum() / steps)
    to_mm_day = 86400.0 / (float(a.sum()) * 1e3)  # m³/s over upstream area → mm/day
    q_true = float(small.q_true[outlet].double().mean()) * to_mm_day
    q_obs = float(np.nanmean(small.q_obs[outlet].double().numpy())) * to_mm_day
    assert q_true == pytest.approx(supply_mm_day, rel=0.01)  # only channel storage at the ends
    assert q_obs == pytest.approx(supply_mm_day, rel=0.08)  # observation noise and gaps
    p_mm_day = float((forcing["precipitation"][up].mean(1) * a).sum() / a.sum())
    assert 0.1 < q_obs / p_mm_day < 0.9
    # every gauge: runoff ratio between 0.1 and 0.9
    for i in small.gauge_index.tolist():
        nodes = small.upstream_nodes(i)
        aa = area[nodes]
        p_basin = float((forcing["precipitation"][nodes].mean(1) * aa).sum() / aa.sum())
        q_basin = (
            float(np.nanmean(small.q_obs[i].double().numpy())) * 86400.0 / (float(aa.sum()) * 1e3)
        )
        assert 0.1 < q_basin / p_basin < 0.9, f"gauge at node {i}: runoff ratio {q_basin / p_basin}"


def test_long_term_water_balance_default(default_item):
    """12 years at the main outlet: mean observed discharge ≈ (P − ET) × upstream area, with ET
    from an independent HBV re-run (spun up on the first two years, storage change ignored)."""
    g = default_item
    _, forcing, out = _hbv_rerun(g, spinup_steps=730)
    outlet = int(g.gauge_index[0])
    up = g.upstream_nodes(outlet)
    a = g.area_km2.double()[up]
    p_minus_et = forcing["precipitation"][up, 730:].mean(1) - out["evapotranspiration"][up].mean(1)
    expected_m3s = float((p_minus_et * a).sum()) * 1e3 / 86400.0  # mm/day × km² → m³/s
    observed_m3s = float(np.nanmean(g.q_obs[outlet].double().numpy()))
    assert observed_m3s == pytest.approx(expected_m3s, rel=0.05)


def test_routing_reproduces_q_true(small):
    """``q_true`` is the Muskingum routing of ``lateral_inflow``: a sequential reference (reach by
    reach in topological order, ``O_t = C0·I_t + C1·I_{t−1} + C2·O_{t−1}`` with ``I`` = lateral
    + upstream outflow) started from the stored discharge of day 0 (the channels were spun up
    during the warm-up) reproduces it."""
    c = muskingum_coefficients(small.true_params["k"].double(), small.true_params["x"].double())
    assert (c >= 0).all(), "true Muskingum coefficients are non-negative by construction"
    lat = small.lateral_inflow.double()
    n, t = lat.shape
    q = torch.zeros(n, t, dtype=torch.float64)
    src, dst = small.edge_index
    for node in small.topo_order.tolist():
        ups = src[dst == node]
        inflow = (lat[node] + q[ups].sum(0)).tolist()
        c0, c1, c2 = c[node].tolist()
        out = [float(small.q_true[node, 0])]
        for s in range(1, t):
            out.append(c0 * inflow[s] + c1 * inflow[s - 1] + c2 * out[-1])
        q[node] = torch.tensor(out, dtype=torch.float64)
    torch.testing.assert_close(q, small.q_true.double(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------ true parameters
def test_true_params_in_bounds_and_functional(small, default_item):
    specs = {**HBV(nmul=1).param_spec, **get_irf("muskingum").param_spec}
    for item in (small, default_item):
        check_in_bounds(item.true_params, specs, owner="synthetic true_params")
        expected = SyntheticRiverBasin.true_parameter_function(item.x.double(), item.x_names)
        for name, value in item.true_params.items():
            assert torch.equal(expected[name].float(), value), name
    # the documented relations (spot checks on the formulas)
    x = dict(zip(small.x_names, small.x.double().T))
    tp = {k: v.double() for k, v in small.true_params.items()}
    torch.testing.assert_close(tp["fc"], 60 + 380 * x["soil_depth_m"], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(tp["beta"], 1.2 + 7 * x["clay_frac"], rtol=1e-6, atol=1e-5)
    assert torch.corrcoef(torch.stack([tp["k0"], x["slope"]]))[0, 1] > 0.5
    assert torch.corrcoef(torch.stack([tp["tt"], x["elevation_m"]]))[0, 1] < -0.5
    assert torch.corrcoef(torch.stack([tp["k2"], x["aridity"]]))[0, 1] < -0.5
    # parameters vary in space (learnable), constants are documented constants
    for name in ("fc", "beta", "k0", "k1", "k2", "lp", "perc", "uzl", "tt", "cfmax", "k", "x"):
        assert tp[name].std() > 0, name
    assert (tp["cfr"] == tp["cfr"][0]).all() and (tp["cwh"] == tp["cwh"][0]).all()


def test_true_parameter_function_is_pure_and_checks_names():
    names = list(ATTRIBUTE_NAMES)
    x = torch.tensor(
        [[50.0, 8000.0, 1200.0, 0.01, 0.8, 3.0, 5.0, 1.0, 0.2, 0.4, 0.5]], dtype=torch.float64
    )
    out1 = true_parameter_function(x, names)
    out2 = true_parameter_function(x.clone(), names)
    assert all(torch.equal(out1[k], out2[k]) for k in out1)
    assert float(out1["fc"]) == pytest.approx(60 + 380 * 1.0)
    assert float(out1["tt"]) == pytest.approx(0.6 - 0.5 * 1.2)
    xm = 0.30 - 0.15 * math.exp(-0.01 / 0.004)
    assert float(out1["x"]) == pytest.approx(xm)
    assert float(out1["k"]) == pytest.approx(0.5 / (1 - xm) + 8.0 / (86.4 * 0.6 * 10**0.3))
    # columns are looked up by name, not position
    perm = list(reversed(range(len(names))))
    out3 = true_parameter_function(x[:, perm], [names[i] for i in perm])
    assert all(torch.equal(out1[k], out3[k]) for k in out1)
    with pytest.raises(ValueError, match="soil_depth_m"):
        true_parameter_function(x[:, :7], names[:7])


def test_windows_slice_truth_alongside_forcing(small):
    from gnnhydro.datasets.windows import slice_time

    w = slice_time(small, 100, 200)
    for key in ("forcing", "q_obs", "q_true", "lateral_inflow"):
        assert getattr(w, key).shape[1] == 100, key
    assert w.true_params["k"].shape == (small.num_nodes,)

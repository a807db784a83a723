"""Tests of the two options of the synthetic generator: ``hidden_field`` and ``isolated``
(gnnhydro/datasets/synthetic.py).

Small configurations (2 years; 60 reaches, 150 for the hidden field, whose smoothness needs a few
more nodes than attributes, see :func:`hidden_parameter_field`) are generated once per module.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor

import gnnhydro.datasets.synthetic as synthetic
from gnnhydro.datasets.synthetic import (
    ATTRIBUTE_NAMES,
    HIDDEN_FIELD_PARAMS,
    SYNTHETIC_VERSION,
    SyntheticRiverBasin,
    blend_hidden_field,
    generate_synthetic_basin,
    hidden_parameter_field,
    simulate_discharge,
    true_parameter_function,
)
from gnnhydro.graph import RiverGraph
from gnnhydro.runoff import HBV
from gnnhydro.spec import check_in_bounds, from_bounds
from tests.datasets.test_synthetic import _snapshot

SMALL = dict(seed=3, num_nodes=60, years=2)
HIDDEN = dict(seed=3, num_nodes=150, years=2)
SHARE = 0.6


def _unbounded(graph, name: str) -> Tensor:
    """The parameter's value in the unbounded (logit-within-bounds) space, float64 ``[N]``."""
    return from_bounds(graph.true_params[name].double(), HBV(nmul=1).param_spec[name])


def _design(x: Tensor, with_logs: bool = False) -> Tensor:
    """Regression design ``[N, 1 + F (+ F+)]``: intercept, standardised attributes (and the
    logs of the strictly positive ones)."""
    columns = [x]
    if with_logs:
        columns.append(torch.log(x[:, (x > 0).all(dim=0)]))
    features = torch.cat(columns, dim=1)
    features = (features - features.mean(0)) / features.std(0)
    return torch.cat([torch.ones(x.shape[0], 1, dtype=x.dtype), features], dim=1)


def _regress(design: Tensor, target: Tensor) -> tuple[float, Tensor]:
    """Least-squares fit: ``(R², residual [N])``."""
    coef = torch.linalg.lstsq(design, target.unsqueeze(1)).solution
    residual = target - (design @ coef).squeeze(1)
    return float(1.0 - residual.var() / target.var()), residual


def _corr(a: Tensor, b: Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


@pytest.fixture(scope="module")
def plain():
    return generate_synthetic_basin(**HIDDEN)


@pytest.fixture(scope="module")
def hidden():
    return generate_synthetic_basin(**HIDDEN, hidden_field=SHARE)


# ----------------------------------------------------------------------------- defaults
def test_defaults_give_todays_graph():
    """``hidden_field=0``, ``isolated=False`` and ``reservoirs=0`` passed explicitly change
    nothing, bit for bit."""
    today = _snapshot(generate_synthetic_basin(**SMALL))
    explicit = _snapshot(
        generate_synthetic_basin(**SMALL, hidden_field=0.0, isolated=False, reservoirs=0)
    )
    assert explicit.keys() == today.keys()
    assert "hidden_field" not in today and "hidden_field_params" not in today
    assert "reservoir_mask" not in today
    for key in today:
        assert explicit[key] == today[key], f"attribute {key!r} differs"


def test_cache_names_separate_options_and_keep_the_default(tmp_path):
    names = {}
    for label, options in {
        "default": {},
        "explicit_default": dict(hidden_field=0.0, isolated=False, reservoirs=0),
        "hidden_0.6": dict(hidden_field=0.6),
        "hidden_0.3": dict(hidden_field=0.3),
        "isolated": dict(isolated=True),
        "reservoirs_2": dict(reservoirs=2),
    }.items():
        dataset = SyntheticRiverBasin(root=tmp_path / label, **SMALL, **options)
        names[label] = dataset.processed_file_names[0]
    assert names["explicit_default"] == names["default"]
    options = ("default", "hidden_0.6", "hidden_0.3", "isolated", "reservoirs_2")
    assert len({names[k] for k in options}) == 5
    # the default name is the one of the generator without the options (existing caches stay)
    legacy = {"class": "SyntheticRiverBasin", **SMALL, "num_gauges": None}
    legacy["version"] = SYNTHETIC_VERSION
    digest = hashlib.sha1(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()
    assert names["default"] == f"synthetic_{digest[:10]}.pt"
    # the options survive the processed file
    reloaded = SyntheticRiverBasin(root=tmp_path / "hidden_0.6", **SMALL, hidden_field=0.6)[0]
    assert reloaded.hidden_field.shape == (SMALL["num_nodes"],)
    assert reloaded.hidden_field_params == list(HIDDEN_FIELD_PARAMS)
    assert SyntheticRiverBasin(root=tmp_path / "isolated", **SMALL, isolated=True)[0].num_edges == 0
    regulated = SyntheticRiverBasin(root=tmp_path / "reservoirs_2", **SMALL, reservoirs=2)[0]
    assert int(regulated.reservoir_mask.sum()) == 2
    assert regulated.reservoir_capacity_m3.shape == (SMALL["num_nodes"],)


def test_hidden_field_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="hidden_field"):
        SyntheticRiverBasin(root=tmp_path, **SMALL, hidden_field=1.5)
    with pytest.raises(ValueError, match="hidden_field"):
        generate_synthetic_basin(**SMALL, hidden_field=-0.1)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="too few"):
        hidden_parameter_field(rng.normal(size=(30, 2)), rng.normal(size=(30, 11)), rng)


# -------------------------------------------------------------------------- hidden field
def test_hidden_field_keeps_attributes_weather_gauges_and_other_params(plain, hidden):
    n = HIDDEN["num_nodes"]
    assert torch.equal(hidden.x, plain.x)
    assert torch.equal(hidden.forcing, plain.forcing)
    assert torch.equal(hidden.edge_index, plain.edge_index)
    assert torch.equal(hidden.gauge_index, plain.gauge_index)
    assert hidden.holdout_gauge_ids == plain.holdout_gauge_ids
    assert torch.equal(torch.isnan(hidden.q_obs), torch.isnan(plain.q_obs))  # same gaps
    assert hidden.hidden_field.shape == (n,) and hidden.hidden_field.dtype == torch.float32
    assert hidden.hidden_field_params == list(HIDDEN_FIELD_PARAMS)
    assert set(hidden.hidden_field_params) == {"fc", "beta", "perc", "k1", "k2"}
    for name, value in hidden.true_params.items():
        if name in HIDDEN_FIELD_PARAMS:
            assert not torch.equal(value, plain.true_params[name]), name
        else:
            assert torch.equal(value, plain.true_params[name]), name
    check_in_bounds(
        {k: hidden.true_params[k] for k in HBV(nmul=1).param_spec},
        HBV(nmul=1).param_spec,
        owner="hidden-field true_params",
    )
    # true_params are the blend of the attribute function and the stored field, bit for bit
    expected = blend_hidden_field(
        true_parameter_function(hidden.x.double(), ATTRIBUTE_NAMES),
        hidden.hidden_field.double(),
        SHARE,
    )
    for name, value in hidden.true_params.items():
        assert torch.equal(expected[name].float(), value), name
    # and the truth was simulated with them: runoff and discharge moved
    assert not torch.equal(hidden.lateral_inflow, plain.lateral_inflow)
    assert not torch.equal(hidden.q_true, plain.q_true)


def test_hidden_field_is_standardised_smooth_and_orthogonal_to_the_attributes(hidden):
    field = hidden.hidden_field.double()
    assert abs(float(field.mean())) < 1e-5
    assert float(field.std(correction=0)) == pytest.approx(1.0, abs=1e-5)
    # orthogonal to every attribute column (up to the float32 storage)
    for column in range(hidden.x.shape[1]):
        assert abs(_corr(field, hidden.x[:, column])) < 1e-4, ATTRIBUTE_NAMES[column]
    # smooth: correlated between nearest-neighbour centroids
    lon, lat = hidden.pos.double().T
    xy = torch.stack([lon * math.cos(math.radians(42.0)) * 111.2, lat * 111.2], dim=1)
    distance = torch.cdist(xy, xy)
    distance.fill_diagonal_(math.inf)
    nearest = distance.argmin(dim=1)
    assert _corr(field, field[nearest]) > 0.7


def test_hidden_field_is_what_the_attributes_cannot_explain(plain, hidden):
    """At h = 0 each affected unbounded parameter is (nearly) linear in the attributes; at
    h = 0.6 a linear regression on ALL attributes explains only ≈ 1 − h of it and leaves a
    residual that is the field; a regression on the attributes and their logs (a nonlinear
    function of x) leaves a residual still strongly correlated with the field."""
    x = plain.x.double()
    linear, with_logs = _design(x), _design(x, with_logs=True)
    field = hidden.hidden_field.double()
    for name, sign in HIDDEN_FIELD_PARAMS.items():
        r2_plain, _ = _regress(linear, _unbounded(plain, name))
        assert r2_plain > 0.95, f"{name}: attributes explain only R² = {r2_plain:.3f} at h = 0"
        z = _unbounded(hidden, name)
        r2_hidden, residual = _regress(linear, z)
        assert r2_hidden == pytest.approx(1.0 - SHARE, abs=0.1), name
        assert sign * _corr(residual, field) > 0.9, name
        _, residual_nonlinear = _regress(with_logs, z)
        assert sign * _corr(residual_nonlinear, field) > 0.5, name
        # the field's share of the unbounded variance is about h; mean and spread are kept
        assert _corr(z, field) ** 2 == pytest.approx(SHARE, abs=0.1), name
        z_plain = _unbounded(plain, name)
        assert float(z.mean()) == pytest.approx(float(z_plain.mean()), abs=1e-4)
        assert float(z.std()) == pytest.approx(float(z_plain.std()), rel=0.05)


# ------------------------------------------------------------------------------ isolated
def test_isolated_catchments_are_their_own_outlets(monkeypatch):
    calls = []

    def recording_simulation(graph, forcing, params, **kwargs):
        calls.append((forcing, params, kwargs))
        return simulate_discharge(graph, forcing, params, **kwargs)

    monkeypatch.setattr(synthetic, "simulate_discharge", recording_simulation)
    isolated = generate_synthetic_basin(**SMALL, isolated=True)
    monkeypatch.undo()
    connected = generate_synthetic_basin(**SMALL)
    n = SMALL["num_nodes"]

    assert isolated.edge_index.shape == (2, 0)
    isolated.validate()
    assert torch.equal(isolated.outlets.sort().values, torch.arange(n))
    assert torch.equal(isolated.upstream_area_km2, isolated.area_km2)
    for key in ("x", "forcing", "pos", "area_km2", "length_m", "slope", "lateral_inflow"):
        assert torch.equal(getattr(isolated, key), getattr(connected, key)), key
    # gauges: a node subset as usual, hold-out about a quarter of them
    gauges = isolated.gauge_index
    assert gauges.unique().numel() == gauges.numel() == len(isolated.gauge_id)
    assert 0 < gauges.numel() < n
    assert 1 <= len(isolated.holdout_gauge_ids) <= math.ceil(0.3 * gauges.numel())
    assert set(isolated.holdout_gauge_ids) < set(isolated.gauge_id)

    # q_true at a gauge is the simulation of that catchment alone
    ((forcing, params, kwargs),) = calls
    for node in gauges.tolist():
        alone = RiverGraph(
            edge_index=torch.empty((2, 0), dtype=torch.long),
            node_id=[isolated.node_id[node]],
            area_km2=isolated.area_km2[node : node + 1],
            length_m=isolated.length_m[node : node + 1],
            slope=isolated.slope[node : node + 1],
        )
        single = simulate_discharge(
            alone,
            {k: v[node : node + 1] for k, v in forcing.items()},
            {k: v[node : node + 1] for k, v in params.items()},
            **kwargs,
        )
        torch.testing.assert_close(
            single["discharge"][0], isolated.q_true[node].double(), rtol=1e-5, atol=1e-7
        )
    # ... while in the connected basin a node with upstream reaches gets their water too
    inner = int(connected.gauge_index[0])
    assert connected.q_true[inner].mean() > 2 * isolated.q_true[inner].mean()

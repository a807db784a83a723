"""Pieces of the training runner: gauge splits, windows, attribute alignment, recovery."""

import numpy as np
import pytest
import torch

from gnnhydro.config import compose
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.datasets.windows import slice_time
from gnnhydro.training import run, trainer
from tests.training.reference import disjoint_union


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_basin(seed=1, num_nodes=40, years=2)


def _cfg(*extra):
    return compose(
        [
            "dataset.periods.train=[2000-01-01,2000-12-31]",
            "dataset.periods.validation=[2001-01-01,2001-03-31]",
            "dataset.periods.test=[2001-04-01,2001-12-31]",
            "dataset.warmup_days=60",
            "trainer.window_days=100",
            *extra,
        ]
    )


def test_gauge_split_from_dataset_fraction_and_folds(graph):
    split = run.make_gauge_split(graph, {"gauge_ids": "from_dataset"})
    held = {
        graph.gauge_id[k]
        for k, g in enumerate(graph.gauge_index.tolist())
        if g in set(split.holdout_index.tolist())
    }
    assert held == set(graph.holdout_gauge_ids)
    split = run.make_gauge_split(graph, {"fraction": 0.5, "seed": 3})
    assert split.holdout_index.numel() == round(0.5 * graph.gauge_index.numel())
    folds = [run.make_gauge_split(graph, {"k": 3, "fold": f}) for f in range(3)]
    held = torch.cat([f.holdout_index for f in folds]).sort().values
    assert torch.equal(held, graph.gauge_index.sort().values)
    with pytest.raises(ValueError, match="G999"):
        run.make_gauge_split(graph, {"gauge_ids": ["G999"]})
    with pytest.raises(ValueError, match="fold"):
        run.make_gauge_split(graph, {"k": 3, "fold": 5})


def test_windows_stay_in_training_period_with_equal_warmup(graph):
    exp = run.Experiment(_cfg(), "/tmp/unused", graph=graph)
    rng = np.random.default_rng(0)
    t0, t1 = exp.periods["train"]
    for start, stop, warm in trainer._windows(exp, rng, 50):
        assert warm == exp.warmup == 60
        assert start >= 0 and stop <= t1 and start + warm >= t0
    batch, warm = disjoint_union(exp, trainer._windows(exp, rng, 3))
    assert batch.q_obs.shape == (3 * graph.num_nodes, 160)
    assert warm == 60


def test_experiment_rejects_bad_inputs(graph):
    g = graph.clone()
    g.forcing = g.forcing.clone()
    g.forcing[3, 10, 0] = float("nan")
    with pytest.raises(ValueError, match="precipitation"):
        run.Experiment(_cfg(), "/tmp/unused", graph=g)
    with pytest.raises(ValueError, match="outside the data"):
        run.Experiment(
            _cfg("dataset.periods.test=[1990-01-01,1990-12-31]"), "/tmp/unused", graph=graph
        )


def test_attributes_by_name(graph):
    names = list(reversed(graph.x_names))
    x = run.attributes_by_name(graph, names)
    torch.testing.assert_close(x[:, 0], graph.x[:, graph.x_names.index(names[0])])
    with pytest.raises(ValueError, match="soil_ph"):
        run.attributes_by_name(graph, ["soil_ph"])


def test_parameter_recovery_of_the_truth_is_perfect(graph):
    exp = run.Experiment(_cfg(), "/tmp/unused", graph=graph)
    table = run.parameter_recovery(
        exp, {"params": {k: v.clone() for k, v in graph.true_params.items()}}
    )
    finite = table["r_all"].dropna()
    assert len(finite) >= 10
    assert np.allclose(finite, 1.0)


def test_dynamic_runoff_parameters_from_config(graph):
    """``model.runoff.dynamic`` reaches the runoff model: the named parameters vary in time."""
    exp = run.Experiment(_cfg("model.runoff.dynamic=[beta]"), "/tmp/unused", graph=graph)
    model = exp.build_model()
    assert model.runoff.param_spec["beta"].dynamic and not model.runoff.param_spec["fc"].dynamic
    g = slice_time(graph, 0, 30)
    with torch.no_grad():
        out = model(g)
    assert out["params"]["beta"].shape == (graph.num_nodes, 30, model.runoff.nmul)
    assert out["params"]["fc"].shape == (graph.num_nodes, model.runoff.nmul)
    assert torch.isfinite(out["discharge"]).all()
    with pytest.raises(ValueError, match="soil_depth"):
        run.Experiment(
            _cfg("model.runoff.dynamic=[soil_depth]"), "/tmp/unused", graph=graph
        ).build_model()


def test_summary_keeps_gauges_with_enough_observations():
    import pandas as pd

    metrics = pd.DataFrame(
        {
            "gauge_id": ["a", "b", "c", "a", "b"],
            "split": ["test", "test", "test", "test_ungauged", "test_ungauged"],
            "n_obs": [366, 120, 310, 0, 300],
            "nse": [0.9, -5.0, 0.5, float("nan"), 0.4],
            "kge": [0.8, -1.0, 0.6, float("nan"), 0.3],
        }
    )
    summary = run.summarize_metrics(metrics, min_obs=300)
    assert summary.loc["test", "nse"] == pytest.approx(0.7)
    assert summary.loc["test", "n_gauges"] == 2
    assert summary.loc["test_ungauged", "n_gauges"] == 1
    assert run.summarize_metrics(metrics).loc["test", "n_gauges"] == 3


def test_unit_hydrograph_parameters_are_one_per_node_and_shape_the_inflow(graph):
    """HBV's gamma unit hydrograph from the config: ``route_a``/``route_b`` come out ``[N]``
    (not per component) and the lateral inflow is the runoff after the unit hydrograph."""
    from gnnhydro.runoff.hbv import gamma_unit_hydrograph, uh_convolve

    exp = run.Experiment(
        _cfg("+model.runoff.options.unit_hydrograph=true"), "/tmp/unused", graph=graph
    )
    model = exp.build_model()
    g = slice_time(graph, 0, 60)
    with torch.no_grad():
        out = model(g)
    assert out["params"]["route_a"].shape == (graph.num_nodes,)
    assert out["params"]["fc"].shape == (graph.num_nodes, model.runoff.nmul)
    raw = out["fluxes"]["runoff"]
    weights = gamma_unit_hydrograph(
        torch.relu(out["params"]["route_a"]) + 0.1,
        torch.relu(out["params"]["route_b"]) + 0.5,
        model.runoff.uh_length,
    )
    torch.testing.assert_close(out["runoff"], uh_convolve(raw, weights))
    assert not torch.allclose(out["runoff"], raw)


def test_forcing_correction_from_config_in_batched_windows(graph):
    """``model.forcing_correction`` adds per-node parameters in their own group; windows of a
    batch that cover different dates get their own seasonal multipliers."""
    from gnnhydro.models.forcing_correction import day_of_year

    exp = run.Experiment(
        _cfg("model.forcing_correction={precipitation:constant,pet:seasonal}"),
        "/tmp/unused",
        graph=graph,
    )
    model = exp.build_model()
    assert model.parameterizer.param_groups["forcing"] == (
        "precipitation_factor",
        "pet_factor",
        "pet_cos",
        "pet_sin",
    )
    batch, _ = disjoint_union(exp, [(0, 60, 0), (150, 210, 0)])  # January-February and June-July
    with torch.no_grad():
        out = model(batch)
    n = graph.num_nodes
    params, pet = out["params"], graph.forcing[..., graph.forcing_names.index("pet")]
    for item, start in enumerate((0, 150)):
        nodes = slice(item * n, (item + 1) * n)
        angle = 2 * np.pi * day_of_year(graph.time[start : start + 60]).float() / 365.25
        mult = params["pet_factor"][nodes, None] * (
            1
            + params["pet_cos"][nodes, None] * torch.cos(angle)
            + params["pet_sin"][nodes, None] * torch.sin(angle)
        )
        torch.testing.assert_close(out["forcing"]["pet"][nodes], pet[:, start : start + 60] * mult)
    assert torch.isfinite(out["discharge"]).all()


def test_forcing_correction_of_a_variable_the_runoff_model_does_not_read(graph):
    cfg = _cfg(
        "model.runoff.name=linear_reservoir",
        "model.runoff.options={}",
        "model.forcing_correction={pet:constant}",
    )
    with pytest.raises(ValueError, match=r"\['pet'\] is not a forcing of runoff model"):
        run.Experiment(cfg, "/tmp/unused", graph=graph).build_model()

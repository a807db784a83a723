"""``model.routing.reservoir`` (gnnhydro/training/model.py): ``auto`` from the data's reservoir
nodes, one-line errors naming what the data lack, the operator's parameters in the
parameterizer's spec, ``model_inputs.json`` rebuilding the same model; the synthetic option
``dataset.reservoirs`` trained through the CLI."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import xarray as xr

from gnnhydro.config import compose
from gnnhydro.datasets.synthetic import RESERVOIR_PARAMS, generate_synthetic_basin
from gnnhydro.training import run
from gnnhydro.training.model import ModelInputs, build_model, resolve_reservoir
from tests.tiny import gnnhydro, tiny_run

LEARNED = ("reservoir_release_days", "reservoir_exponent", "reservoir_dead_fraction")


@pytest.fixture(scope="module")
def plain():
    return generate_synthetic_basin(seed=1, num_nodes=40, years=2)


@pytest.fixture(scope="module")
def regulated():
    return generate_synthetic_basin(seed=1, num_nodes=40, years=2, reservoirs=2)


def _model_cfg(*extra: str):
    return compose(list(extra)).model


def _copy(graph):
    return graph.clone()


def test_auto_is_learned_where_the_data_mark_reservoirs(plain, regulated):
    assert resolve_reservoir(_model_cfg(), plain) is None
    assert resolve_reservoir(_model_cfg(), regulated) == "learned"
    assert resolve_reservoir(_model_cfg("model.routing.reservoir=none"), regulated) is None
    inputs = ModelInputs.from_graph(regulated)
    assert inputs.num_reservoirs == 2
    assert resolve_reservoir(_model_cfg(), inputs) == "learned"
    assert resolve_reservoir(_model_cfg(), ModelInputs.from_graph(plain)) is None
    assert resolve_reservoir(_model_cfg("model=hbv_lumped"), regulated) is None  # no routing


def test_learned_without_reservoirs_is_one_line_error(plain):
    with pytest.raises(ValueError, match="mark no reservoir") as err:
        resolve_reservoir(_model_cfg("model.routing.reservoir=learned"), plain)
    assert "\n" not in str(err.value)


def test_learned_without_capacity_names_it(regulated):
    g = _copy(regulated)
    del g.reservoir_capacity_m3
    with pytest.raises(ValueError, match="reservoir_capacity_m3"):
        resolve_reservoir(_model_cfg("model.routing.reservoir=learned"), g)
    g = _copy(regulated)
    res = g.reservoir_mask.nonzero().flatten()
    g.reservoir_capacity_m3 = g.reservoir_capacity_m3.clone()
    g.reservoir_capacity_m3[res[0]] = math.nan
    with pytest.raises(ValueError, match=rf"NaN.*{g.node_id[int(res[0])]}"):
        resolve_reservoir(_model_cfg(), g)  # auto: learned, checked the same way


def test_observed_without_release_and_unknown_choice(regulated):
    with pytest.raises(ValueError, match="reservoir_release"):
        resolve_reservoir(_model_cfg("model.routing.reservoir=observed"), regulated)
    with pytest.raises(ValueError, match="level_pool"):
        resolve_reservoir(_model_cfg("model.routing.reservoir=dam"), regulated)
    with pytest.raises(ValueError, match="reservoir_max_elevation_m"):
        resolve_reservoir(_model_cfg("model.routing.reservoir=level_pool"), regulated)


def test_reservoir_parameters_are_predicted_and_rebuilt_from_model_inputs(regulated, tmp_path):
    cfg = compose(["parameterizer.hidden_channels=8", "parameterizer.num_layers=1"])
    split = run.make_gauge_split(regulated, {"fraction": 0.25, "seed": 0})
    model = build_model(cfg, regulated, split)
    assert model.reservoir == "learned"
    assert set(LEARNED) <= set(model.param_specs)
    with torch.no_grad():
        out = model(regulated)
    for name in LEARNED:
        assert out["params"][name].shape == (regulated.num_nodes,)
    nodes = regulated.reservoir_mask.nonzero().flatten()
    assert torch.equal(out["reservoir_index"], nodes)
    assert out["reservoir_storage"].shape == (2, regulated.q_obs.shape[1])
    path = tmp_path / "model_inputs.json"
    ModelInputs.from_graph(regulated, split).save(path)
    rebuilt = build_model(cfg, ModelInputs.load(path))
    assert rebuilt.reservoir == "learned" and list(rebuilt.param_specs) == list(model.param_specs)
    none = build_model(compose(["model.routing.reservoir=none"]), regulated, split)
    assert none.reservoir is None and not set(LEARNED) & set(none.param_specs)


def test_old_model_inputs_without_reservoirs_load(tmp_path, plain):
    path = tmp_path / "model_inputs.json"
    ModelInputs.from_graph(plain).save(path)
    text = path.read_text().replace(',\n  "num_reservoirs": 0', "")
    assert "num_reservoirs" not in text
    path.write_text(text)
    assert ModelInputs.load(path).num_reservoirs == 0


def test_synthetic_reservoir_truth(regulated, plain):
    res = regulated.reservoir_mask.nonzero().flatten()
    assert res.numel() == 2 and not torch.isin(res, regulated.outlets).any()
    assert torch.isin(res, regulated.gauge_index).all()  # the release below each dam is gauged
    for name, (lo, hi) in RESERVOIR_PARAMS.items():
        value = regulated.true_params[name]
        assert ((value[res] >= lo) & (value[res] <= hi)).all()
        assert torch.isnan(value[~regulated.reservoir_mask]).all()
    assert (regulated.reservoir_capacity_m3[res] > 0).all()
    assert regulated.true_reservoir_storage.shape == (2, regulated.q_true.shape[1])
    # the weather and attributes are those of the default generator; the discharge differs
    assert torch.equal(regulated.forcing, plain.forcing) and torch.equal(regulated.x, plain.x)
    assert not torch.equal(regulated.q_true[res], plain.q_true[res])
    # the volume is conserved up to the storage change over the record
    assert regulated.q_true[res].mean() == pytest.approx(float(plain.q_true[res].mean()), rel=0.05)


# ------------------------------------------------------------------ CLI (slow)
TINY = tiny_run(40, "dataset.reservoirs=2", "trainer.epochs=1")


@pytest.mark.slow
def test_cli_trains_learned_reservoirs_and_maps_their_parameters(tmp_path):
    import geopandas as gpd

    run_dir = tmp_path / "run"
    result = gnnhydro(
        "train",
        f"run_dir={run_dir}",
        f"dataset.root={tmp_path}/synthetic",
        "model.routing.reservoir=learned",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    params = gpd.read_file(run_dir / "parameters.gpkg")
    for name in LEARNED:  # mapped at the 2 reservoirs, empty elsewhere
        assert name in params.columns and int(params[name].notna().sum()) == 2
    recovery = pd.read_csv(run_dir / "parameter_recovery.csv")
    assert set(LEARNED) <= set(recovery["parameter"])
    with xr.open_dataset(run_dir / "discharge.nc") as ds:
        assert ds["reservoir_storage"].dims == ("time", "reservoir")
        assert ds["reservoir_storage"].attrs["units"] == "m3"
        assert ds.sizes["reservoir"] == 2
        assert (ds["reservoir_storage"].values >= 0).all()
        assert ds["reservoir_outflow"].attrs["units"] == "m3 s-1"
    # the model is rebuilt from the run directory (model_inputs.json) with its reservoirs
    result = gnnhydro("evaluate", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    # a run asking for reservoirs on data without any: exit 2, one line naming the cause
    result = gnnhydro(
        "train",
        f"run_dir={tmp_path}/bad",
        f"dataset.root={tmp_path}/synthetic",
        "model.routing.reservoir=learned",
        *[a for a in TINY if not a.startswith("dataset.reservoirs")],
    )
    assert result.returncode == 2 and "mark no reservoir" in result.stderr

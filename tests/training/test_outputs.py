"""Outputs of a run: labelled parameter maps (static and time-varying), discharge with the
warm-up flagged, the summary with dates, the multirun summary."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyogrio
import pytest
import torch
import xarray as xr

from gnnhydro.config import compose
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.training.experiment import Experiment
from gnnhydro.training.multirun import write_summary
from gnnhydro.training.outputs import evaluate_model, summarize_metrics, write_parameter_maps


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_basin(seed=2, num_nodes=25, years=2)


def _cfg(*extra):
    return compose(
        [
            "dataset.periods.train=[2000-01-01,2000-12-31]",
            "dataset.periods.validation=null",
            "dataset.periods.test=[2001-01-01,2001-12-31]",
            "dataset.warmup_days=60",
            "model.runoff.nmul=2",
            "parameterizer.hidden_channels=8",
            "export.formats=[gpkg,netcdf,csv,parquet]",
            "export.plots=false",
            *extra,
        ]
    )


def test_a_run_with_dynamic_parameters_writes_labelled_maps(graph, tmp_path):
    """Time-varying ``beta`` ([N, T, m]) is mapped as its time mean, the series in netCDF; every
    column carries its spec's units in all four formats (it used to end with no gpkg)."""
    exp = Experiment(_cfg("model.runoff.dynamic=[beta]"), tmp_path, graph=graph)
    model = exp.build_model()
    evaluate_model(exp, model)
    with torch.no_grad():
        out = model(graph)
    beta = out["params"]["beta"]  # [N, T, m]
    assert beta.dim() == 3
    specs = model.param_specs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one layer: no "multiple layers" warning
        import geopandas as gpd

        gdf = gpd.read_file(tmp_path / "parameters.gpkg")
    np.testing.assert_allclose(gdf["beta"], beta.mean(dim=(1, 2)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(gdf["beta_1"], beta[:, :, 1].mean(1).numpy(), rtol=1e-5)
    units = json.loads(
        pyogrio.read_info(tmp_path / "parameters.gpkg")["layer_metadata"]["gnnhydro_units"]
    )
    for name in ("beta", "fc", "k", "x"):
        assert units[name] == specs[name].units != ""
    ds = xr.open_dataset(tmp_path / "parameters.nc")
    assert ds["fc"].attrs["units"] == specs["fc"].units
    assert ds["beta_series"].dims == ("node", "time")
    np.testing.assert_allclose(ds["beta_series"].values, beta.mean(2).numpy(), rtol=1e-5)
    csv_units = json.loads((tmp_path / "parameters.units.json").read_text())
    assert csv_units["k"] == specs["k"].units
    assert ds.attrs["gnnhydro_dataset"] == "synthetic"
    # discharge.nc flags the warm-up
    q = xr.open_dataset(tmp_path / "discharge.nc")
    assert int(q["warmup"].sum()) == exp.warmup == 60
    assert q["warmup"].values[:60].all() and not q["warmup"].values[60:].any()
    # the summary carries the dates each split covers (training after the warm-up)
    summary = pd.read_csv(tmp_path / "metrics_summary.csv", index_col="split")
    assert summary.loc["train", "period_start"] == "2000-03-01"
    assert summary.loc["test", "period_end"] == "2001-12-31"


def test_parameter_maps_need_units(graph, tmp_path):
    params = {"fc": torch.ones(graph.num_nodes, 2)}
    with pytest.raises(ValueError, match=r"\['fc'\] have no spec"):
        write_parameter_maps(graph, params, {}, tmp_path, ["gpkg"])
    with pytest.raises(ValueError, match="format 'shp' is not known"):
        from gnnhydro.runoff import HBV

        write_parameter_maps(graph, params, HBV().param_spec, tmp_path, ["shp"])


def test_summary_with_dates_and_counts():
    metrics = pd.DataFrame(
        {
            "gauge_id": ["a", "b", "a", "b"],
            "split": ["train", "train", "test", "test"],
            "n_obs": [10, 0, 5, 5],
            "nse": [0.5, -9.0, 0.1, 0.3],
            "kge": [0.4, -9.0, 0.2, 0.6],
        }
    )
    summary = summarize_metrics(
        metrics, min_obs=1, period_dates={"train": ("2000-03-01", "2000-12-31")}
    )
    assert summary.loc["train", "nse"] == 0.5 and summary.loc["train", "n_gauges"] == 1
    assert summary.loc["test", "nse"] == pytest.approx(0.2)
    assert summary.loc["train", "period_start"] == "2000-03-01"
    assert summary.loc["test", "period_start"] == ""


def test_multirun_summary_has_each_jobs_overrides_and_medians(tmp_path):
    for job, (override, nse) in enumerate(
        [("parameterizer=sage", 0.7), ("parameterizer=mlp", 0.5)]
    ):
        d = tmp_path / str(job)
        d.mkdir()
        (d / "provenance.json").write_text(json.dumps({"overrides": [override, "seed=1"]}))
        pd.DataFrame(
            {
                "split": ["train", "test"],
                "nse": [nse, nse - 0.1],
                "kge": [0.1, 0.2],
                "n_gauges": [3, 3],
            }
        ).to_csv(d / "metrics_summary.csv", index=False)
    (tmp_path / "2").mkdir()  # a job still running: no summary yet
    summary = pd.read_csv(write_summary(tmp_path))
    assert summary["job"].tolist() == [0, 1]
    assert summary["overrides"].tolist() == [
        "parameterizer=sage seed=1",
        "parameterizer=mlp seed=1",
    ]
    assert summary["test_median_nse"].tolist() == pytest.approx([0.6, 0.4])


def test_a_trained_model_is_rebuilt_without_its_training_dataset(graph, tmp_path):
    """``load_model`` (predict) needs the run's config, model_inputs.json and checkpoint only:
    the config's dataset root does not even exist."""
    from omegaconf import OmegaConf

    from gnnhydro.training.checkpoint import atomic_save
    from gnnhydro.training.experiment import ModelInputs
    from gnnhydro.training.run import load_model

    cfg = _cfg("dataset.root=/nonexistent/synthetic", "model.ensemble=2")
    exp = Experiment(cfg, tmp_path, graph=graph)
    model = exp.build_model()
    OmegaConf.save(cfg, tmp_path / "config.yaml", resolve=True)
    ModelInputs.from_graph(graph).save(tmp_path / "model_inputs.json")
    (tmp_path / "checkpoints").mkdir()
    atomic_save({"model": model.state_dict(), "epoch": 1}, tmp_path / "checkpoints" / "best.pt")
    _, rebuilt, ckpt = load_model(tmp_path)
    assert ckpt.name == "best.pt"
    torch.testing.assert_close(rebuilt.members[0].x_mean, model.members[0].x_mean)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(graph)["discharge"], model(graph)["discharge"])
    inputs = ModelInputs.load(tmp_path / "model_inputs.json")
    assert inputs == ModelInputs.from_graph(graph)
    other = graph.clone()
    other.step_seconds = 3600.0
    with pytest.raises(ValueError, match="time step 3600 s"):
        inputs.check(other, "predict")


def test_lazy_evaluation_is_streamed_and_equals_in_memory(graph, tmp_path):
    """With lazy data the final evaluation streams the record (gauges' series kept, nothing of
    the network's ``[N, T]``): the same metrics as in memory, discharge.nc at the gauges."""
    from tests.layout import write_generic

    root = write_generic(graph, tmp_path / "basin", observed=True)
    common = [
        "dataset=generic",
        f"dataset.root={root}",
        "dataset.periods.train=[2000-01-01,2000-12-31]",
        "dataset.periods.validation=null",
        "dataset.periods.test=[2001-01-01,2001-12-31]",
        "dataset.warmup_days=60",
        "model.runoff.nmul=2",
        "parameterizer.hidden_channels=8",
        "export.plots=true",
    ]
    eager = Experiment(compose(common), tmp_path / "eager")
    lazy = Experiment(compose([*common, "dataset.lazy=true"]), tmp_path / "lazy")
    assert eager.reader is None and lazy.reader is not None
    torch.manual_seed(0)
    model = eager.build_model()
    (tmp_path / "eager").mkdir()
    (tmp_path / "lazy").mkdir()
    a = evaluate_model(eager, model)
    b = evaluate_model(lazy, model)
    assert len(a) == len(b) > 0 and (a["gauge_id"] == b["gauge_id"]).all()
    np.testing.assert_allclose(b["nse"], a["nse"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["kge"], a["kge"], rtol=1e-4, atol=1e-5)
    with (
        xr.open_dataset(tmp_path / "eager" / "discharge.nc") as full,
        xr.open_dataset(tmp_path / "lazy" / "discharge.nc") as gauges,
    ):
        gauge_index = lazy.graph.gauge_index.numpy()
        assert torch.equal(eager.graph.gauge_index, lazy.graph.gauge_index)
        assert full.sizes["station"] == graph.num_nodes
        np.testing.assert_array_equal(
            gauges["station_id"].values, full["station_id"].values[gauge_index]
        )
        np.testing.assert_allclose(
            gauges["discharge"].values,
            full["discharge"].values[:, gauge_index],
            rtol=1e-5,
            atol=1e-4,
        )
        np.testing.assert_array_equal(
            gauges["observed_discharge"].values, full["observed_discharge"].values[:, gauge_index]
        )
    assert (tmp_path / "lazy" / "plots" / "hydrographs_test.png").exists()

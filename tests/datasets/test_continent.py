"""The synthetic continent: deterministic, written in the generic layout, basins contiguous in id
order, deep, and its observed discharge is the true model's discharge (re-simulated here in
memory on one gauge's basin) with the documented 5 % noise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gnnhydro.datasets.continent import SyntheticContinent, _FixedParameters, generate_continent
from gnnhydro.datasets.synthetic import (
    ATTRIBUTE_NAMES,
    ROUTING_PARAMS,
    RUNOFF_PARAMS,
    true_parameter_function,
)
from gnnhydro.graph.topology import upstream_nodes


@pytest.fixture(scope="module")
def continent(tmp_path_factory):
    root = tmp_path_factory.mktemp("continent")
    return SyntheticContinent(root, num_nodes=2500, years=2, num_gauges=25, seed=3)


def test_generation_is_deterministic_and_in_the_generic_layout(continent, tmp_path):
    raw = continent.raw_dir
    manifest = json.loads(open(f"{raw}/continent.json").read())
    assert manifest["num_nodes"] == 2500 and manifest["steps"] == 731
    assert manifest["levels"] >= 50  # deep: chains of reaches, not a shallow binary tree
    again = generate_continent(tmp_path, num_nodes=2500, years=2, num_gauges=25, seed=3, log=None)
    for name in ("precipitation", "temperature", "pet", "discharge"):
        with (
            xr.open_zarr(f"{raw}/timeseries.zarr") as a,
            xr.open_zarr(again / "raw" / "timeseries.zarr") as b,
        ):
            np.testing.assert_array_equal(a[name].values, b[name].values)
    pd.testing.assert_frame_equal(
        pd.read_parquet(f"{raw}/nodes.parquet"), pd.read_parquet(again / "raw" / "nodes.parquet")
    )
    other = generate_continent(
        tmp_path / "other", num_nodes=2500, years=2, num_gauges=25, seed=4, log=None
    )
    with (
        xr.open_zarr(other / "raw" / "timeseries.zarr") as c,
        xr.open_zarr(f"{raw}/timeseries.zarr") as a,
    ):
        assert not np.array_equal(c["precipitation"].values, a["precipitation"].values)


def test_every_basin_is_one_contiguous_id_range(continent):
    graph = continent[0]
    assert graph.gauge_index.numel() == 25
    for gauge in graph.gauge_index.tolist():
        basin = upstream_nodes(graph.edge_index, graph.num_nodes, gauge)
        assert basin[0] == gauge and torch.equal(basin, torch.arange(gauge, gauge + basin.numel()))
        assert 10 <= basin.numel() <= 5000


def test_observations_are_the_true_model_with_five_percent_noise(continent):
    from gnnhydro.models import HydroModel
    from gnnhydro.runoff import HBV

    graph = continent[0]
    reader = continent.reader
    sizes = [
        upstream_nodes(graph.edge_index, graph.num_nodes, g).numel()
        for g in graph.gauge_index.tolist()
    ]
    gauge = int(graph.gauge_index[int(np.argmax(sizes))])
    nodes = upstream_nodes(graph.edge_index, graph.num_nodes, gauge)
    basin = graph.subgraph_nodes(nodes)
    basin.forcing = reader.read(nodes=nodes)
    basin.forcing_names = list(reader.forcing_names)
    basin.step_seconds = 86_400.0
    # the true parameters from the attributes as stored (area, length and slope are node columns)
    columns = {name: basin.x[:, basin.x_names.index(name)] for name in basin.x_names}
    columns.update(area_km2=basin.area_km2, length_m=basin.length_m, slope=basin.slope)
    x = torch.stack([columns[name].float() for name in ATTRIBUTE_NAMES], dim=1)
    truth = true_parameter_function(x, ATTRIBUTE_NAMES)
    params = {k: truth[k].unsqueeze(-1) for k in RUNOFF_PARAMS}
    params.update({k: truth[k] for k in ROUTING_PARAMS})
    model = HydroModel(
        _FixedParameters(params), HBV(nmul=1), "muskingum", spinup_steps=365, spinup_cycles=3
    )
    with torch.no_grad():
        simulated = model(basin)["discharge"][0].double()
    observed = reader.read_discharge(nodes=torch.tensor([gauge]))[0].double()
    log_ratio = torch.log(observed / simulated)
    assert abs(float(log_ratio.mean())) < 0.02
    assert 0.035 < float(log_ratio.std()) < 0.065
    assert float(simulated.mean()) > 0.1  # a river, not a trickle


def test_the_item_carries_the_true_parameters(continent):
    graph = continent[0]
    columns = {name: graph.x[:, graph.x_names.index(name)] for name in graph.x_names}
    columns.update(area_km2=graph.area_km2, length_m=graph.length_m, slope=graph.slope)
    x = torch.stack([columns[name].float() for name in ATTRIBUTE_NAMES], dim=1)
    truth = true_parameter_function(x, ATTRIBUTE_NAMES)
    assert set(graph.true_params) == set(RUNOFF_PARAMS) | set(ROUTING_PARAMS)
    for name, value in truth.items():
        torch.testing.assert_close(graph.true_params[name], value)

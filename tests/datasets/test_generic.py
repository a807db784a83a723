"""GenericRiverDataset: round trip of a small layout written with pandas/xarray, lazy reading,
and every bad-input error."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gnnhydro.datasets import GenericRiverDataset
from gnnhydro.datasets.forcing import ForcingReader

IDS = [101, 102, 103, 104, 105]
DOWN = [103, 103, 105, 105, None]
T = 20


def nodes_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": IDS,
            "downstream_id": DOWN,
            "area_km2": [10.0, 20.0, 5.0, 15.0, 2.5],
            "length_m": [1000.0, 1500.0, 800.0, 1200.0, 500.0],
            "slope": [0.01, 0.02, 0.005, 0.01, 0.001],
            "lat": [45.0, 45.1, 45.2, 45.3, 45.4],
            "lon": [7.0, 7.1, 7.2, 7.3, 7.4],
            "elevation": [800.0, 900.0, 500.0, 700.0, 300.0],
            "forest_frac": [0.5, 0.6, 0.2, 0.3, 0.1],
        }
    )


def series(order=IDS, temperature=True, start="2000-01-01", freq="1D") -> xr.Dataset:
    rng = np.random.default_rng(0)
    time = pd.date_range(start, periods=T, freq=freq)
    shape = (T, len(order))
    data = {
        "precipitation": (("time", "id"), rng.gamma(1.0, 3.0, shape), {"units": "mm/day"}),
        "pet": (("time", "id"), rng.uniform(0.5, 3.0, shape), {"units": "mm/day"}),
        "discharge": (("time", "id"), np.full(shape, np.nan), {"units": "m3 s-1"}),
    }
    if temperature:
        data["temperature"] = (("time", "id"), rng.normal(5, 5, shape), {"units": "degC"})
    ds = xr.Dataset(data, coords={"time": time, "id": list(order)})
    q = ds["discharge"].values
    q[:, list(order).index(105)] = rng.uniform(1, 5, T)
    q[3:7, list(order).index(103)] = 2.0
    return ds


def write(root, df=None, ds=None, fmt="csv", ts="nc"):
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    df = nodes_table() if df is None else df
    if fmt == "csv":
        df.to_csv(raw / "nodes.csv", index=False)
    else:
        df.to_parquet(raw / "nodes.parquet", index=False)
    ds = series() if ds is None else ds
    if ts == "nc":
        ds.to_netcdf(raw / "timeseries.nc")
    else:
        ds.to_zarr(raw / "timeseries.zarr", mode="w")
    return root


@pytest.mark.parametrize("fmt,ts", [("csv", "nc"), ("parquet", "zarr")])
def test_round_trip(tmp_path, fmt, ts):
    ds = series(order=[105, 103, 101, 104, 102])  # file order differs from the node table
    data = GenericRiverDataset(write(tmp_path, ds=ds, fmt=fmt, ts=ts))
    g = data[0]
    assert g.node_id == [str(i) for i in IDS]
    assert g.num_nodes == 5 and g.edge_index.size(1) == 4 and g.outlets.tolist() == [4]
    assert g.x_names == ["elevation", "forest_frac"] and g.x.shape == (5, 2)
    assert g.forcing_names == ["precipitation", "temperature", "pet"] and g.forcing.shape == (
        5,
        T,
        3,
    )
    assert g.step_seconds == 86400.0 and len(g.time) == T
    for k, nid in enumerate(IDS):
        col = ds.sel(id=nid)
        np.testing.assert_allclose(
            g.forcing[k, :, 0].numpy(), col["precipitation"].values, rtol=1e-6
        )
        np.testing.assert_allclose(g.forcing[k, :, 1].numpy(), col["temperature"].values, rtol=1e-6)
        np.testing.assert_allclose(g.forcing[k, :, 2].numpy(), col["pet"].values, rtol=1e-6)
    assert g.gauge_id == ["103", "105"] and g.gauge_index.tolist() == [2, 4]
    assert torch.isnan(g.q_obs[0]).all() and int((~torch.isnan(g.q_obs[2])).sum()) == 4
    np.testing.assert_allclose(g.area_km2.numpy(), nodes_table()["area_km2"].to_numpy())
    assert float(g.upstream_area_km2[4]) == pytest.approx(52.5)


def test_units_converted(tmp_path):
    ds = series()
    ds["precipitation"].attrs["units"] = "in"
    ds["temperature"] = ds["temperature"] * 9 / 5 + 32
    ds["temperature"].attrs["units"] = "degree_fahrenheit"
    ds["discharge"].attrs["units"] = "ft3 s-1"
    ds["pet"].attrs["units"] = "kg m-2 s-1"
    g = GenericRiverDataset(write(tmp_path, ds=ds))[0]
    ref = series()
    np.testing.assert_allclose(
        g.forcing[0, :, 0].numpy(), ref["precipitation"].values[:, 0] * 25.4, rtol=1e-6
    )
    np.testing.assert_allclose(
        g.forcing[0, :, 1].numpy(), ref["temperature"].values[:, 0], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        g.forcing[0, :, 2].numpy(), ref["pet"].values[:, 0] * 86400.0, rtol=1e-6
    )
    np.testing.assert_allclose(
        g.q_obs[4].numpy(), ref["discharge"].values[:, 4] * 0.3048**3, rtol=1e-6
    )


def test_hourly_rates(tmp_path):
    ds = series(freq="1h")
    g = GenericRiverDataset(write(tmp_path, ds=ds))[0]
    assert g.step_seconds == 3600.0
    np.testing.assert_allclose(
        g.forcing[0, :, 0].numpy(), ds["precipitation"].values[:, 0] / 24.0, rtol=1e-6
    )


def isolated_table() -> pd.DataFrame:
    """The same nodes as isolated (lumped) catchments: no downstream anywhere."""
    df = nodes_table()
    df["downstream_id"] = None
    return df


@pytest.mark.parametrize("layout", ["network", "isolated"])
@pytest.mark.parametrize("lazy", [False, True])
def test_missing_temperature_builds(tmp_path, layout, lazy):
    """Without temperature both layouts build, with forcing_names lacking 'temperature' and one
    warning saying that models with a snow routine run without snow."""
    df = nodes_table() if layout == "network" else isolated_table()
    with pytest.warns(UserWarning, match="snow routine") as record:
        data = GenericRiverDataset(write(tmp_path, df=df, ds=series(temperature=False)), lazy=lazy)
    assert any("all precipitation is liquid" in str(w.message) for w in record)
    g = data[0]
    assert g.forcing_names == ["precipitation", "pet"] and g.forcing_units == ["mm/step"] * 2
    assert g.node_id == [str(i) for i in IDS] and g.gauge_id == ["103", "105"]
    if layout == "network":
        assert g.edge_index.size(1) == 4 and g.outlets.tolist() == [4]
    else:  # each catchment its own outlet
        assert g.edge_index.size(1) == 0 and g.outlets.tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_allclose(g.upstream_area_km2.numpy(), df["area_km2"].to_numpy())
    ref = series(temperature=False)
    if lazy:
        forcing = data.reader.read()
    else:
        forcing = g.forcing
    assert forcing.shape == (5, T, 2)
    np.testing.assert_allclose(
        forcing[:, :, 1].numpy(), ref["pet"].values.T, rtol=1e-6
    )  # pet is the second variable, found by name


def test_kelvin_without_units_warns(tmp_path):
    ds = series()
    ds["temperature"] = ds["temperature"] + 273.15
    del ds["temperature"].attrs["units"]  # 282 K taken as 282 °C
    with pytest.warns(UserWarning, match=r"temperature looks like kelvin \(mean 27\d") as record:
        GenericRiverDataset(write(tmp_path, ds=ds))
    msg = " ".join(str(w.message) for w in record)
    assert "101" in msg and "105" in msg and "no units attribute" in msg and "'K'" in msg


def test_kelvin_with_units_is_converted_quietly(tmp_path):
    ds = series()
    ds["temperature"] = ds["temperature"] + 273.15
    ds["temperature"].attrs["units"] = "K"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = GenericRiverDataset(write(tmp_path, ds=ds))[0]
    np.testing.assert_allclose(
        g.forcing[0, :, 1].numpy(), series()["temperature"].values[:, 0], atol=1e-4
    )


def test_kelvin_labelled_degc_warns_in_lazy_mode(tmp_path):
    ds = series()
    ds["temperature"].values[:, 1] += 273.15  # one node only, labelled degC
    with pytest.warns(UserWarning, match="looks like kelvin") as record:
        GenericRiverDataset(write(tmp_path, ds=ds), lazy=True)
    msg = str(record[0].message)
    assert "'102'" in msg and "'101'" not in msg and "'degC'" in msg


def test_fahrenheit_without_units_warns(tmp_path):
    ds = series()
    ds["temperature"] = ds["temperature"] * 0 + 75.0
    del ds["temperature"].attrs["units"]
    with pytest.warns(UserWarning, match="looks like degrees Fahrenheit"):
        GenericRiverDataset(write(tmp_path, ds=ds))


@pytest.mark.parametrize("variable", ["precipitation", "pet"])
def test_negative_depths_raise(tmp_path, variable):
    ds = series()
    ds[variable].values[4, 2] = -0.2
    msg = _error(tmp_path, ds=ds)
    assert f"{variable!r} is negative" in msg and "103" in msg and "101" not in msg


def _error(tmp_path, df=None, ds=None) -> str:
    with pytest.raises(ValueError) as err:
        GenericRiverDataset(write(tmp_path, df=df, ds=ds))
    return str(err.value)


def test_series_id_not_in_network(tmp_path):
    ds = series(order=[101, 102, 103, 104, 105, 999])[
        ["precipitation", "pet", "temperature", "discharge"]
    ]
    assert "999" in _error(tmp_path, ds=ds)


def test_network_id_not_in_series(tmp_path):
    msg = _error(tmp_path, ds=series(order=[101, 102, 103, 105]))
    assert "missing from the time series" in msg and "104" in msg


def test_unknown_downstream(tmp_path):
    df = nodes_table()
    df.loc[0, "downstream_id"] = 777
    msg = _error(tmp_path, df=df)
    assert "777" in msg and "not in the network" in msg


def test_cycle(tmp_path):
    df = nodes_table()
    df.loc[4, "downstream_id"] = 101  # 101 -> 103 -> 105 -> 101
    msg = _error(tmp_path, df=df)
    assert "cycle" in msg and "101" in msg and "105" in msg


@pytest.mark.parametrize("value,word", [(-1.0, "negative"), (np.nan, "NaN")])
def test_bad_area(tmp_path, value, word):
    df = nodes_table()
    df.loc[1, "area_km2"] = value
    msg = _error(tmp_path, df=df)
    assert word in msg and "102" in msg and "area" in msg


def test_nan_forcing(tmp_path):
    ds = series()
    ds["pet"].values[7, 3] = np.nan
    msg = _error(tmp_path, ds=ds)
    assert "'pet'" in msg and "104" in msg and "2000-01-08" in msg


def test_missing_variable(tmp_path):
    msg = _error(tmp_path, ds=series().drop_vars("pet"))
    assert "pet" in msg and "missing" in msg


def test_unknown_units(tmp_path):
    ds = series()
    ds["precipitation"].attrs["units"] = "flurbs"  # no unit at all (a furlong would convert)
    msg = _error(tmp_path, ds=ds)
    assert "precipitation" in msg and "flurbs" in msg


def test_wrong_quantity_units(tmp_path):
    ds = series()
    ds["temperature"].attrs["units"] = "mm"
    msg = _error(tmp_path, ds=ds)
    assert "temperature" in msg and "mm" in msg


def test_time_gap(tmp_path):
    ds = series()
    ds = ds.isel(time=[i for i in range(T) if i != 5])
    msg = _error(tmp_path, ds=ds)
    assert "gap" in msg and "2000-01-05" in msg and "2000-01-07" in msg


def test_lazy_reads_one_window(tmp_path, monkeypatch):
    """The lazy dataset keeps forcing on disk; a window reads only its own time steps."""
    from torch_geometric.loader import DataLoader
    from xarray.backends import netCDF4_

    from gnnhydro.datasets import TimeWindows

    root = write(tmp_path, ds=series(order=[105, 103, 101, 104, 102]))
    eager = GenericRiverDataset(root)[0]
    lazy = GenericRiverDataset(root, lazy=True)
    g = lazy[0]
    assert getattr(g, "forcing", None) is None and g.num_time_steps == T
    assert g.gauge_id == ["103", "105"]
    reader = lazy.reader
    assert reader.ds["precipitation"].chunks is not None  # dask-backed, nothing loaded

    requested = []
    original = netCDF4_.NetCDF4ArrayWrapper.__getitem__

    def spy(self, key):
        requested.append(key)
        return original(self, key)

    monkeypatch.setattr(netCDF4_.NetCDF4ArrayWrapper, "__getitem__", spy)
    windows = TimeWindows(5, 2, stride=6, source=g, reader=reader)
    win = windows[1]  # steps 6..12
    monkeypatch.undo()
    assert win.forcing.shape == (5, 7, 3) and win.q_obs.shape == (5, 7)
    assert torch.equal(win.forcing, eager.forcing[:, 6:13]) and torch.equal(
        win.q_obs.isnan(), eager.q_obs[:, 6:13].isnan()
    )
    time_slices = [k.tuple[0] if hasattr(k, "tuple") else k[0] for k in requested]
    assert time_slices, "the window was not read through the netCDF backend"
    for s in time_slices:  # a slice, or the window's steps as an array (outer indexing)
        steps = range(s.start, s.stop) if isinstance(s, slice) else np.asarray(s).ravel()
        assert len(steps) <= 7 and min(steps) >= 6, f"read {s} for a 7-step window"
    batch = next(iter(DataLoader(windows, batch_size=2)))
    assert batch.forcing.shape == (10, 7, 3)


def test_forcing_reader_nan_check_is_lazy(tmp_path):
    ds = series()
    ds["precipitation"].values[11, 0] = np.nan
    path = tmp_path / "ts.nc"
    ds.to_netcdf(path)
    with pytest.raises(ValueError, match=r"'precipitation'.*101.*2000-01-12"):
        ForcingReader(path, IDS, ("precipitation", "pet"))
    reader = ForcingReader(path, IDS, ("precipitation", "pet"), check_nan=False)
    assert reader.read(0, 3).shape == (5, 3, 2)


# ------------------------------------------------------------------ reservoir columns
def reservoir_table() -> pd.DataFrame:
    df = nodes_table()
    df["reservoir"] = [0, 1, None, 0, 0]  # empty = 0
    df["reservoir_capacity_m3"] = [np.nan, 2.5e7, np.nan, np.nan, np.nan]
    df["reservoir_area_km2"] = [np.nan, 1.5, np.nan, np.nan, np.nan]
    return df


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reservoir_columns_become_graph_attributes(tmp_path, fmt):
    g = GenericRiverDataset(write(tmp_path, df=reservoir_table(), fmt=fmt))[0]
    assert g.x_names == ["elevation", "forest_frac"]  # not static attributes
    assert g.reservoir_mask.dtype == torch.bool
    assert g.reservoir_mask.tolist() == [False, True, False, False, False]
    assert g.reservoir_capacity_m3[1].item() == 2.5e7
    assert g.reservoir_area_km2[1].item() == 1.5
    assert torch.isnan(g.reservoir_capacity_m3[[0, 2, 3, 4]]).all()


def test_without_reservoir_columns_no_reservoir_attributes(tmp_path):
    g = GenericRiverDataset(write(tmp_path))[0]
    assert getattr(g, "reservoir_mask", None) is None


def test_reservoir_rows_route_with_the_learned_operator(tmp_path):
    from gnnhydro.routing import route

    g = GenericRiverDataset(write(tmp_path, df=reservoir_table()))[0]
    lat = torch.ones(g.num_nodes, T, dtype=torch.float64)
    params = {"k": torch.full((5,), 1.5), "x": torch.full((5,), 0.2)}
    learned = {
        "reservoir_release_days": torch.full((5,), 10.0),
        "reservoir_exponent": torch.full((5,), 1.0),
        "reservoir_dead_fraction": torch.full((5,), 0.0),
    }
    plain = route(lat, g, "muskingum", params=params, step_seconds=86400.0)
    q, res = route(
        lat, g, "muskingum", params=params, step_seconds=86400.0, reservoir="learned",
        reservoir_params=learned, return_reservoirs=True,
    )  # fmt: skip
    assert res.nodes.tolist() == [1]  # id 102, capacity from the graph attribute
    assert (q[1] < plain[1]).all()  # the reservoir fills: less flows out than in
    torch.testing.assert_close(q[0], plain[0])  # upstream of the reservoir: unchanged


@pytest.mark.parametrize(
    "column,value,words",
    [
        ("reservoir", 2, ["'reservoir'", "0 or 1", "102"]),
        ("reservoir", "yes", ["'reservoir'", "0 or 1", "102"]),
        ("reservoir_capacity_m3", np.nan, ["'reservoir_capacity_m3'", "102"]),
        ("reservoir_capacity_m3", -5.0, ["'reservoir_capacity_m3'", "positive", "102"]),
        ("reservoir_area_km2", -1.0, ["'reservoir_area_km2'", "negative", "102"]),
    ],
)
def test_bad_reservoir_values(tmp_path, column, value, words):
    df = reservoir_table()
    df[column] = df[column].astype(object)
    df.loc[1, column] = value
    msg = _error(tmp_path, df=df)
    assert all(w in msg for w in words), msg
    assert "\n" not in msg and "101" not in msg


def test_reservoir_rows_need_a_capacity_column(tmp_path):
    df = reservoir_table().drop(columns=["reservoir_capacity_m3"])
    msg = _error(tmp_path, df=df)
    assert "'reservoir_capacity_m3'" in msg and "missing" in msg and "102" in msg


def test_capacity_without_reservoir_column(tmp_path):
    df = reservoir_table().drop(columns=["reservoir"])
    msg = _error(tmp_path, df=df)
    assert "'reservoir'" in msg and "reservoir_capacity_m3" in msg


def test_observed_variables_read_by_id_in_canonical_units(tmp_path):
    """``obs_<name>`` variables of the time series become graph attributes ``[N, T]`` in mm per
    step (rates converted with the step), matched by id, NaN kept as missing."""
    ds = series(order=IDS[::-1])  # file order unlike the node table's
    et = np.arange(len(IDS) * T, dtype=np.float64).reshape(T, len(IDS)) / 100.0
    et[3, 1] = np.nan
    ds["obs_evapotranspiration"] = (("time", "id"), et, {"units": "mm/day"})
    ds["obs_swe"] = (("time", "id"), et * 10, {"units": "kg m-2"})
    g = GenericRiverDataset(write(tmp_path, ds=ds))[0]
    file_ids = list(ds["id"].values)
    col = [file_ids.index(i) for i in IDS]
    np.testing.assert_allclose(g.obs_evapotranspiration.numpy(), et[:, col].T, rtol=1e-6)
    np.testing.assert_allclose(g.obs_swe.numpy(), et[:, col].T * 10, rtol=1e-6)
    ds["obs_evapotranspiration"].attrs["units"] = "degC"
    msg = _error(tmp_path / "bad", ds=ds)
    assert "obs_evapotranspiration" in msg and "degC" in msg

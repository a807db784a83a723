"""Tests for gnnhydro.export: parameter maps (GeoPackage, GeoParquet, netCDF, CSV), CF
discharge netCDF and metric CSVs, read back with independent readers (geopandas, pyogrio,
pyarrow, xarray, pandas)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import torch
import xarray as xr
from shapely.geometry import LineString, Point

from gnnhydro.export import (
    DISCHARGE_STANDARD_NAME,
    export_discharge,
    export_metrics,
    export_parameters,
    units_path,
)
from gnnhydro.graph import RiverGraph
from gnnhydro.spec import ParamSpec

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

# 101 -> 103, 102 -> 103, 103 -> 104 (outlet); ids deliberately not 0..N-1.
IDS = [101, 102, 103, 104]
DOWN = [103, 103, 104, 0]
LON = [-97.5, -97.3, -97.4, -97.2]
LAT = [30.5, 30.6, 30.3, 30.1]


@pytest.fixture
def point_graph() -> RiverGraph:
    df = pd.DataFrame({"id": IDS, "downstream_id": DOWN, "lon": LON, "lat": LAT})
    return RiverGraph.from_dataframe(df, lon_col="lon", lat_col="lat")


@pytest.fixture
def line_graph() -> RiverGraph:
    # UTM zone 14N (Texas) reaches, flowing roughly south-east; no lon/lat columns.
    lines = [
        LineString([(600_000, 3_380_000), (610_000, 3_370_000)]),
        LineString([(620_000, 3_385_000), (610_000, 3_370_000)]),
        LineString([(610_000, 3_370_000), (615_000, 3_360_000)]),
        LineString([(615_000, 3_360_000), (625_000, 3_350_000), (630_000, 3_345_000)]),
    ]
    gdf = gpd.GeoDataFrame({"id": IDS, "downstream_id": DOWN}, geometry=lines, crs="EPSG:32614")
    return RiverGraph.from_dataframe(gdf)


@pytest.fixture
def bare_graph() -> RiverGraph:
    return RiverGraph.from_edges(["a", "b", "c"], downstream=["c", "c", None])


def _params() -> tuple[dict, dict]:
    k = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    beta = torch.arange(12, dtype=torch.float32).reshape(4, 3) + 1.0  # nmul = 3
    fc = np.array([100.0, 200.0, 300.0, 400.0])
    specs = {
        "k": ParamSpec("k", "1/day", 0.0, 1.0, 0.5),
        "beta": ParamSpec("beta", "-", 1.0, 20.0, 2.0),
        "fc": ParamSpec("fc", "mm", 50.0, 1000.0, 200.0),
    }
    return {"k": k, "beta": beta, "fc": fc}, specs


EXPECTED_UNITS = {
    "k": "1/day",
    "beta_0": "-",
    "beta_1": "-",
    "beta_2": "-",
    "beta": "-",
    "fc": "mm",
}


def _check_values(table: pd.DataFrame) -> None:
    assert list(table["id"]) == IDS
    np.testing.assert_allclose(table["k"], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    beta = np.arange(12, dtype=np.float64).reshape(4, 3) + 1.0
    for j in range(3):
        np.testing.assert_allclose(table[f"beta_{j}"], beta[:, j])
    np.testing.assert_allclose(table["beta"], beta.mean(axis=1))
    np.testing.assert_allclose(table["fc"], [100.0, 200.0, 300.0, 400.0])


def test_gpkg_points_from_lonlat(point_graph, tmp_path):
    params, specs = _params()
    path = export_parameters(point_graph, params, tmp_path / "sub" / "params.gpkg", specs=specs)
    assert path.exists()
    gdf = gpd.read_file(path, layer="parameters")
    _check_values(gdf)
    assert gdf.crs.to_epsg() == 4326
    np.testing.assert_allclose(gdf.geometry.x, LON)
    np.testing.assert_allclose(gdf.geometry.y, LAT)
    meta = pyogrio.read_info(path, layer="parameters")["layer_metadata"]
    assert json.loads(meta["gnnhydro_units"]) == EXPECTED_UNITS
    assert [name for name, _ in pyogrio.list_layers(path)] == ["parameters"]  # one layer


def test_gpkg_source_linestrings_keep_geometry_and_crs(line_graph, tmp_path):
    params, specs = _params()
    path = export_parameters(
        line_graph, params, tmp_path / "lines.gpkg", specs=specs, units={"k": "1/h"}
    )
    gdf = gpd.read_file(path, layer="parameters")
    _check_values(gdf)
    assert gdf.crs.to_epsg() == 32614
    assert all(gdf.geom_type == "LineString")
    for got, want in zip(gdf.geometry, line_graph.geometry, strict=True):
        assert got.equals(want)
    meta = json.loads(
        pyogrio.read_info(path, layer="parameters")["layer_metadata"]["gnnhydro_units"]
    )
    assert meta["k"] == "1/h"  # explicit units override the spec


def test_geoparquet_points_and_lines(point_graph, line_graph, tmp_path):
    params, specs = _params()
    for graph, epsg, name in (
        (point_graph, 4326, "p.parquet"),
        (line_graph, 32614, "l.geoparquet"),
    ):
        path = export_parameters(graph, params, tmp_path / name, specs=specs)
        gdf = gpd.read_parquet(path)
        _check_values(gdf)
        assert gdf.crs.to_epsg() == epsg
        schema = pq.read_schema(path)
        assert json.loads(schema.metadata[b"gnnhydro:units"]) == EXPECTED_UNITS
        assert b"geo" in schema.metadata  # still valid GeoParquet
    lines = gpd.read_parquet(tmp_path / "l.geoparquet")
    assert lines.geometry.iloc[3].equals(line_graph.geometry[3])


def test_netcdf_parameters(point_graph, tmp_path):
    params, specs = _params()
    path = export_parameters(point_graph, params, tmp_path / "params.nc", specs=specs)
    with xr.open_dataset(path) as ds:
        assert ds["k"].dims == ("node",)
        assert list(ds["id"].values) == IDS
        _check_values(ds.to_dataframe().reset_index())
        for col, unit in EXPECTED_UNITS.items():
            assert ds[col].attrs["units"] == unit
        np.testing.assert_allclose(ds["lon"], LON)
        assert ds["lat"].attrs["units"] == "degrees_north"


def test_csv_parameters_with_units_sidecar(point_graph, tmp_path):
    params, specs = _params()
    path = export_parameters(point_graph, params, tmp_path / "params.csv", specs=specs)
    table = pd.read_csv(path)
    _check_values(table)
    np.testing.assert_allclose(table["lat"], LAT)
    assert units_path(path) == tmp_path / "params.units.json"
    units = json.loads(units_path(path).read_text())
    assert {k: units[k] for k in EXPECTED_UNITS} == EXPECTED_UNITS
    assert units["lon"] == "degrees_east"


def test_no_geometry_gpkg_raises_but_netcdf_and_csv_work(bare_graph, tmp_path):
    params = {"k": np.array([1.0, 2.0, 3.0])}
    for suffix in (".gpkg", ".parquet"):
        with pytest.raises(ValueError, match="no geometry"):
            export_parameters(bare_graph, params, tmp_path / f"p{suffix}")
    nc = export_parameters(bare_graph, params, tmp_path / "p.nc", units={"k": "d"})
    with xr.open_dataset(nc) as ds:
        assert list(ds["id"].values) == ["a", "b", "c"]
        np.testing.assert_allclose(ds["k"], [1.0, 2.0, 3.0])
        assert "lon" not in ds
    csv = export_parameters(bare_graph, params, tmp_path / "p.txt", format="csv")
    assert list(pd.read_csv(csv)["id"]) == ["a", "b", "c"]
    assert json.loads(units_path(csv).read_text())["k"] == ""


def test_time_varying_parameters_map_as_their_time_mean(point_graph, tmp_path):
    series = np.arange(4 * 3 * 2, dtype=float).reshape(4, 3, 2)  # [N, T, M]
    time = np.datetime64("2000-01-01") + np.arange(3) * np.timedelta64(1, "D")
    path = export_parameters(point_graph, {"b": series}, tmp_path / "p.nc", time=time)
    ds = xr.open_dataset(path)
    np.testing.assert_allclose(ds["b_1"].values, series[:, :, 1].mean(1))
    np.testing.assert_allclose(ds["b"].values, series.mean(axis=(1, 2)))
    np.testing.assert_allclose(ds["b_series"].values, series.mean(2))
    assert ds["b_series"].dims == ("node", "time") and ds.sizes["time"] == 3


def test_parameter_validation_messages(point_graph, tmp_path):
    with pytest.raises(ValueError, match=r"parameter 'k' has shape \[3\]"):
        export_parameters(point_graph, {"k": np.ones(3)}, tmp_path / "x.nc")
    with pytest.raises(ValueError, match=r"parameter 'b' has shape \[4, 2, 2, 1\]"):
        export_parameters(point_graph, {"b": np.ones((4, 2, 2, 1))}, tmp_path / "x.nc")
    with pytest.raises(ValueError, match="cannot infer the export format"):
        export_parameters(point_graph, {"k": np.ones(4)}, tmp_path / "x.xlsx")
    with pytest.raises(ValueError, match="unknown export format"):
        export_parameters(point_graph, {"k": np.ones(4)}, tmp_path / "x.nc", format="shp")
    with pytest.raises(ValueError, match="reserved"):
        export_parameters(point_graph, {"lon": np.ones(4)}, tmp_path / "x.nc")
    with pytest.raises(ValueError, match="produced twice"):
        export_parameters(point_graph, {"b": np.ones((4, 2)), "b_0": np.ones(4)}, tmp_path / "x.nc")


# ---------------------------------------------------------------------------- discharge
def _time(steps: int) -> np.ndarray:
    return np.datetime64("2021-08-23T13:00") + np.arange(steps) * np.timedelta64(1, "h")


def test_discharge_cf_timeseries_round_trip(point_graph, tmp_path):
    steps = 5
    q = torch.arange(4 * steps, dtype=torch.float32).reshape(4, steps) * 0.5
    obs = q.numpy() + 1.0
    obs[1, 2] = np.nan
    time = _time(steps)
    path = export_discharge(point_graph, q, time, tmp_path / "q.nc", observed=obs)
    with xr.open_dataset(path) as ds:
        assert ds.attrs["featureType"] == "timeSeries"
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert ds["discharge"].dims == ("time", "station")
        assert ds["discharge"].attrs["units"] == "m3 s-1"
        assert ds["discharge"].attrs["standard_name"] == DISCHARGE_STANDARD_NAME
        assert ds["observed_discharge"].attrs["standard_name"] == DISCHARGE_STANDARD_NAME
        assert ds["station_id"].attrs["cf_role"] == "timeseries_id"
        assert list(ds["station_id"].values) == IDS
        np.testing.assert_array_equal(ds["time"].values, time.astype("datetime64[ns]"))
        np.testing.assert_allclose(ds["discharge"].values, q.numpy().T)
        np.testing.assert_allclose(ds["observed_discharge"].values, obs.T)  # NaN kept
        np.testing.assert_allclose(ds["lon"], LON)
        np.testing.assert_allclose(ds["lat"], LAT)
        assert ds["lat"].attrs["units"] == "degrees_north"
    with xr.open_dataset(path, decode_times=False) as raw:
        assert raw["time"].attrs["units"] == "seconds since 1970-01-01 00:00:00"
        assert raw["time"].attrs["calendar"] == "standard"
        t0 = (time[0] - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "s")
        assert raw["time"].values[0] == t0
        assert np.issubdtype(raw["time"].dtype, np.integer)


def test_discharge_subset_matches_by_id_and_by_index(point_graph, tmp_path):
    q = np.arange(4 * 3, dtype=np.float64).reshape(4, 3)
    time = _time(3)
    by_id = export_discharge(point_graph, q, time, tmp_path / "a.nc", node_subset=[104, 102])
    with xr.open_dataset(by_id) as ds:
        assert list(ds["station_id"].values) == [104, 102]
        np.testing.assert_allclose(ds["discharge"].values, q[[3, 1]].T)
        np.testing.assert_allclose(ds["lon"], [LON[3], LON[1]])
    by_index = export_discharge(
        point_graph, q, time, tmp_path / "b.nc", node_subset=torch.tensor([0, 2])
    )
    with xr.open_dataset(by_index) as ds:
        assert list(ds["station_id"].values) == [101, 103]
        np.testing.assert_allclose(ds["discharge"].values, q[[0, 2]].T)
    mask = torch.tensor([False, True, True, False])
    by_mask = export_discharge(point_graph, q, time, tmp_path / "c.nc", node_subset=mask)
    with xr.open_dataset(by_mask) as ds:
        assert list(ds["station_id"].values) == [102, 103]
    with pytest.raises(ValueError, match="999"):
        export_discharge(point_graph, q, time, tmp_path / "d.nc", node_subset=[999])


def test_discharge_lonlat_from_projected_geometry_and_string_ids(line_graph, bare_graph, tmp_path):
    from pyproj import Transformer

    q = np.ones((4, 2))
    path = export_discharge(line_graph, q, _time(2), tmp_path / "lines.nc")
    to_wgs84 = Transformer.from_crs("EPSG:32614", "EPSG:4326", always_xy=True)
    with xr.open_dataset(path) as ds:
        for k, geom in enumerate(line_graph.geometry):
            lon, lat = to_wgs84.transform(*np.asarray(geom.coords).T)
            assert lon.min() - 1e-9 <= float(ds["lon"][k]) <= lon.max() + 1e-9
            assert lat.min() - 1e-9 <= float(ds["lat"][k]) <= lat.max() + 1e-9
    path = export_discharge(bare_graph, np.zeros((3, 2)), _time(2), tmp_path / "bare.nc")
    with xr.open_dataset(path) as ds:
        assert list(ds["station_id"].values) == ["a", "b", "c"]
        assert "lat" not in ds.variables


def test_discharge_validation(point_graph, tmp_path):
    time = _time(3)
    with pytest.raises(ValueError, match=r"discharge has shape \[3, 3\]"):
        export_discharge(point_graph, np.ones((3, 3)), time, tmp_path / "q.nc")
    with pytest.raises(ValueError, match=r"observed has shape \[4, 2\]"):
        export_discharge(
            point_graph, np.ones((4, 3)), time, tmp_path / "q.nc", observed=np.ones((4, 2))
        )
    with pytest.raises(ValueError, match=r"time has shape \[2\]"):
        export_discharge(point_graph, np.ones((4, 3)), time[:2], tmp_path / "q.nc")


def test_export_metrics_round_trip(tmp_path):
    df = pd.DataFrame(
        {"nse": [0.5, 0.7], "kge": [0.4, np.nan]}, index=pd.Index(["g1", "g2"], name="gauge")
    )
    path = export_metrics(df, tmp_path / "m" / "metrics.csv")
    back = pd.read_csv(path, index_col="gauge")
    pd.testing.assert_frame_equal(back, df)
    plain = export_metrics({"nse": [0.1, 0.2]}, tmp_path / "plain.csv")
    assert list(pd.read_csv(plain).columns) == ["nse"]


# ---------------------------------------------------------------------------- real data
def test_routelink_parameter_map_to_gpkg(tmp_path):
    routelink = SHARED_DATA / "lower_colorado_tx" / "domain" / "RouteLink.nc"
    if not routelink.exists():
        pytest.skip(f"shared data not found at {routelink}")
    graph = RiverGraph.from_routelink(routelink)
    path = export_parameters(
        graph, {"musk": graph.musk_s}, tmp_path / "routelink.gpkg", units={"musk": "s"}
    )
    gdf = pyogrio.read_dataframe(path, layer="parameters")
    assert len(gdf) == graph.num_nodes == 11_248
    assert gdf.crs.to_epsg() == 4326
    with xr.open_dataset(routelink) as ds:
        link = ds["link"].values.astype(np.int64)
        musk = ds["MusK"].values.astype(np.float64)
        lon = ds["lon"].values.astype(np.float64)
    np.testing.assert_array_equal(gdf["id"].to_numpy(), link)
    np.testing.assert_allclose(gdf["musk"].to_numpy(), musk, rtol=1e-6)
    np.testing.assert_allclose(gdf.geometry.x.to_numpy(), lon, rtol=1e-6)
    meta = pyogrio.read_info(path, layer="parameters")["layer_metadata"]
    assert json.loads(meta["gnnhydro_units"]) == {"musk": "s"}


def test_point_geometry_is_shapely_point(point_graph, tmp_path):
    path = export_parameters(point_graph, {"k": np.ones(4)}, tmp_path / "k.gpkg")
    gdf = gpd.read_file(path, layer="parameters")
    assert gdf.geometry.iloc[0].equals(Point(LON[0], LAT[0]))


def test_source_geometry_without_crs_warns(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"id": ["01022500", "b"], "downstream_id": ["b", None]},
        geometry=[LineString([(0, 0), (1, 1)]), LineString([(1, 1), (2, 1)])],
    )
    graph = RiverGraph.from_dataframe(gdf)
    with pytest.warns(UserWarning, match="no CRS"):
        path = export_parameters(graph, {"k": np.array([1.0, 2.0])}, tmp_path / "nocrs.parquet")
    back = gpd.read_parquet(path)
    assert back.crs is None
    assert list(back["id"]) == ["01022500", "b"]  # string ids kept, leading zero included


def test_reservoir_parameters_only_at_reservoirs(point_graph, tmp_path):
    """A learned reservoir's parameters are predicted at every node but mean something only at
    the reservoir nodes: the maps leave them empty elsewhere; other parameters are untouched."""
    from gnnhydro.export import parameter_table

    point_graph.reservoir_mask = torch.tensor([False, False, True, False])
    params = {"reservoir_release_days": torch.tensor([10.0, 20, 30, 40]), "k": torch.ones(4)}
    columns, _ = parameter_table(point_graph, params)
    np.testing.assert_array_equal(columns["reservoir_release_days"], [np.nan, np.nan, 30, np.nan])
    np.testing.assert_array_equal(columns["k"], np.ones(4))
    path = export_parameters(point_graph, params, tmp_path / "p.csv")
    table = pd.read_csv(path)
    assert table["reservoir_release_days"].isna().tolist() == [True, True, False, True]

"""Tests for gnnhydro.plot: every figure is written as a non-empty, non-blank PNG."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from shapely.geometry import LineString

from gnnhydro.graph import RiverGraph
from gnnhydro.plot import plot_hydrographs, plot_metric_cdf, plot_parameter_map

IDS = [101, 102, 103, 104]
DOWN = [103, 103, 104, 0]


def _assert_png(path: Path) -> tuple[int, int]:
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > 1.0  # something was drawn
    return pixels.shape


@pytest.fixture
def point_graph() -> RiverGraph:
    df = pd.DataFrame(
        {
            "id": IDS,
            "downstream_id": DOWN,
            "lon": [-97.5, -97.3, -97.4, -97.2],
            "lat": [30.5, 30.6, 30.3, 30.1],
        }
    )
    return RiverGraph.from_dataframe(df, lon_col="lon", lat_col="lat")


@pytest.fixture
def line_graph() -> RiverGraph:
    lines = [
        LineString([(0, 10), (5, 5)]),
        LineString([(10, 10), (5, 5)]),
        LineString([(5, 5), (5, 0)]),
        LineString([(5, 0), (8, -5)]),
    ]
    gdf = gpd.GeoDataFrame({"id": IDS, "downstream_id": DOWN}, geometry=lines, crs="EPSG:32614")
    return RiverGraph.from_dataframe(gdf)


def test_hydrographs(tmp_path):
    steps = 60
    time = np.datetime64("2000-01-01") + np.arange(steps) * np.timedelta64(1, "D")
    sim = np.abs(np.sin(np.linspace(0, 6, steps)))[None] * np.arange(1, 15)[:, None]
    obs = sim * 1.1
    obs[:, 10:20] = np.nan
    path = plot_hydrographs(
        time, obs, torch.as_tensor(sim), [f"g{i}" for i in range(14)], tmp_path / "h.png"
    )
    assert path == tmp_path / "h.png"
    _assert_png(path)
    single = plot_hydrographs(time, None, sim[0], ["only"], tmp_path / "one.png", max_gauges=3)
    _assert_png(single)
    with pytest.raises(ValueError, match="observation has shape"):
        plot_hydrographs(time, obs[:, :10], sim, list(range(14)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="gauge_ids has 2 entries"):
        plot_hydrographs(time, obs, sim, [1, 2], tmp_path / "x.png")


def test_parameter_map_points_lines_and_errors(point_graph, line_graph, tmp_path):
    values = torch.tensor([0.1, 0.5, 0.3, 0.9])
    _assert_png(plot_parameter_map(point_graph, values, "k", "1/day", tmp_path / "pts.png"))
    _assert_png(
        plot_parameter_map(
            line_graph, np.ones((4, 3)) * values.numpy()[:, None], "beta", "-", tmp_path / "ln.png"
        )
    )
    bare = RiverGraph.from_edges(["a", "b"], downstream=["b", None])
    with pytest.raises(ValueError, match="neither geometry nor pos"):
        plot_parameter_map(bare, np.ones(2), "k", "1/day", tmp_path / "bare.png")
    with pytest.raises(ValueError, match=r"values of 'k' have shape \[3\]"):
        plot_parameter_map(point_graph, np.ones(3), "k", "1/day", tmp_path / "bad.png")


def test_metric_cdf_dataframe_and_dict(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "nse": np.concatenate([rng.uniform(0.3, 0.9, 20), rng.uniform(-3, 0.8, 20)]),
            "split": ["train"] * 20 + ["test"] * 20,
        }
    )
    df.loc[3, "nse"] = np.nan
    _assert_png(plot_metric_cdf(df, tmp_path / "cdf.png"))
    _assert_png(
        plot_metric_cdf(
            {"model a": rng.uniform(0, 1, 10), "model b": torch.rand(10)},
            tmp_path / "d.png",
            metric="kge",
        )
    )
    _assert_png(plot_metric_cdf(df.drop(columns="split"), tmp_path / "one.png"))
    with pytest.raises(ValueError, match="metric column 'kge'"):
        plot_metric_cdf(df, tmp_path / "x.png", metric="kge")
    with pytest.raises(ValueError, match="no finite"):
        plot_metric_cdf({"a": [np.nan]}, tmp_path / "x.png")

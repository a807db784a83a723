"""Tests for gnnhydro.plot: every figure is written as a non-empty, non-blank PNG; colour
scales, colour-bar labels, panel titles and time axes are checked on the drawn figures."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import LogNorm
from PIL import Image
from shapely.geometry import LineString

from gnnhydro import plot
from gnnhydro.graph import RiverGraph
from gnnhydro.plot import plot_hydrographs, plot_metric_cdf, plot_parameter_map, spans_decades

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
def chain_graph() -> RiverGraph:
    """50 reaches in a chain, as points at (lon, lat)."""
    n = 50
    df = pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "downstream_id": [*range(2, n + 1), 0],
            "lon": np.linspace(-98.0, -97.0, n),
            "lat": 30.0 + 0.1 * np.sin(np.arange(n)),
        }
    )
    return RiverGraph.from_dataframe(df, lon_col="lon", lat_col="lat")


@pytest.fixture
def figures(monkeypatch) -> list:
    """Figures the plot functions would save, kept open for inspection (nothing is written)."""
    kept: list = []

    def keep(fig, path, dpi):
        kept.append(fig)
        return Path(path)

    monkeypatch.setattr(plot, "_save", keep)
    return kept


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


def test_spans_decades():
    assert spans_decades(0.1, 10.0)  # exactly two decades
    assert spans_decades(1e-3, 1.0)
    assert not spans_decades(1.0, 99.0)
    assert not spans_decades(0.0, 1000.0)  # zero lower bound: no log scale
    assert not spans_decades(-1.0, 1000.0)
    assert not spans_decades(1.0, float("inf"))
    assert spans_decades(1.0, 10.0, ratio=10.0)


def test_parameter_map_colour_scale_is_2nd_to_98th_percentile(chain_graph, figures, tmp_path):
    rng = np.random.default_rng(1)
    values = rng.uniform(10.0, 20.0, 50)
    values[7] = 500.0  # an outlier that would squash a min-max colour scale
    values[9] = np.nan
    plot_parameter_map(chain_graph, values, "fc", "mm", tmp_path / "fc.png")
    fig = figures[-1]
    scatter = fig.axes[0].collections[-1]
    finite = values[np.isfinite(values)]
    assert not isinstance(scatter.norm, LogNorm)
    assert scatter.norm.vmin == pytest.approx(np.percentile(finite, 2))
    assert scatter.norm.vmax == pytest.approx(np.percentile(finite, 98))
    assert scatter.norm.vmax < 500.0
    colourbar = fig.axes[-1]
    assert colourbar.get_ylabel() == "fc [mm]"
    assert scatter.colorbar.extend == "both"  # values beyond both limits
    # percentiles=None: the full range
    plot_parameter_map(chain_graph, values, "fc", "mm", tmp_path / "fc.png", percentiles=None)
    norm = figures[-1].axes[0].collections[-1].norm
    assert (norm.vmin, norm.vmax) == (pytest.approx(finite.min()), 500.0)
    with pytest.raises(ValueError, match="percentiles"):
        plot_parameter_map(
            chain_graph, values, "fc", "mm", tmp_path / "x.png", percentiles=(98.0, 2.0)
        )


def test_parameter_map_log_scale(chain_graph, line_graph, figures, tmp_path):
    values = np.logspace(-3, 1, 50)  # four decades
    values[3] = 0.0  # not representable on a log scale: drawn grey, ignored by the limits
    plot_parameter_map(chain_graph, values, "k", "1/day", tmp_path / "k.png", log=True)
    fig = figures[-1]
    norm = fig.axes[0].collections[-1].norm
    positive = values[values > 0]
    assert isinstance(norm, LogNorm)
    assert norm.vmin == pytest.approx(np.percentile(positive, 2))
    assert norm.vmax == pytest.approx(np.percentile(positive, 98))
    assert "[1/day]" in fig.axes[-1].get_ylabel()
    # the geometry (GeoPandas) path: same norm and label
    plot_parameter_map(
        line_graph, np.array([0.01, 0.1, 1.0, 10.0]), "k", "1/day", tmp_path / "kl.png", log=True
    )
    fig = figures[-1]
    assert isinstance(fig.axes[0].collections[-1].norm, LogNorm)
    assert fig.axes[-1].get_ylabel() == "k [1/day]"
    with pytest.raises(ValueError, match="needs positive values"):
        plot_parameter_map(chain_graph, -values, "k", "1/day", tmp_path / "x.png", log=True)


def _nse_kge_by_hand(o, s):
    ok = np.isfinite(o) & np.isfinite(s)
    o, s = o[ok], s[ok]
    nse = 1 - np.sum((s - o) ** 2) / np.sum((o - o.mean()) ** 2)
    r = np.corrcoef(o, s)[0, 1]
    kge = 1 - np.sqrt((r - 1) ** 2 + (s.std() / o.std() - 1) ** 2 + (s.mean() / o.mean() - 1) ** 2)
    return nse, kge


def test_hydrograph_titles_roles_scores_and_year_axis(figures, tmp_path):
    steps = 4 * 365
    time = np.datetime64("2001-01-01") + np.arange(steps) * np.timedelta64(1, "D")
    rng = np.random.default_rng(2)
    season = 2.0 + np.sin(2 * np.pi * np.arange(steps) / 365.25)
    obs = season[None] * np.array([[1.0], [2.0], [3.0]]) + rng.gamma(1.0, 0.3, (3, steps))
    sim = obs * rng.uniform(0.6, 1.3, (3, steps))
    obs[1, 100:300] = np.nan  # missing observations are left out of the scores
    obs[2] = np.nan  # a gauge without observations: scores undefined
    plot_hydrographs(
        time,
        obs,
        sim,
        ["01234567", "07654321", "0999"],
        tmp_path / "h.png",
        roles=["train", "holdout", "train"],
    )
    fig = figures[-1]
    axes = fig.axes
    nse0, kge0 = _nse_kge_by_hand(obs[0], sim[0])
    nse1, kge1 = _nse_kge_by_hand(obs[1], sim[1])
    assert axes[0].get_title() == f"01234567 (training) NSE {nse0:.2f} KGE {kge0:.2f}"
    assert axes[1].get_title() == f"07654321 (held out) NSE {nse1:.2f} KGE {kge1:.2f}"
    assert axes[2].get_title() == "0999 (training) NSE n/a KGE n/a"
    fig.canvas.draw()
    years = [t.get_text() for t in axes[0].get_xticklabels() if t.get_text()]
    assert years and all(y.isdigit() and 2001 <= int(y) <= 2005 for y in years)
    # without roles and observations: the id alone; a short record is labelled year-month
    plot_hydrographs(time[:90], None, sim[:1, :90], ["g"], tmp_path / "g.png")
    ax = figures[-1].axes[0]
    assert ax.get_title() == "g"
    figures[-1].canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(lab.startswith("2001-") for lab in labels)
    with pytest.raises(ValueError, match="unknown gauge role"):
        plot_hydrographs(time, obs, sim, [1, 2, 3], tmp_path / "x.png", roles=["a", "b", "c"])
    with pytest.raises(ValueError, match="roles has 1 entries"):
        plot_hydrographs(time, obs, sim, [1, 2, 3], tmp_path / "x.png", roles=["train"])

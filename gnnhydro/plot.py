"""Figures for model output: hydrographs, parameter maps and metric CDFs (PNG, matplotlib Agg).

Every function draws on its own :class:`matplotlib.figure.Figure` (no pyplot state, no GUI
backend), saves it, releases it and returns the written path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["plot_hydrographs", "plot_parameter_map", "plot_metric_cdf"]


def _array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}: cannot convert {type(value).__name__} to a numeric array ({err})"
        ) from err


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    fig.clear()
    return path


def plot_hydrographs(
    time: Any,
    observation: Tensor | np.ndarray | None,
    simulation: Tensor | np.ndarray,
    gauge_ids: Sequence[Any],
    path: str | Path,
    max_gauges: int = 12,
    *,
    units: str = "m³/s",
    ncols: int = 3,
    dpi: int = 100,
) -> Path:
    """Observed and simulated hydrographs, one panel per gauge (the first ``max_gauges``).

    Args:
        time: ``[T]`` datetime64 (or numeric) time stamps.
        observation: ``[G, T]`` observed discharge (NaN = missing), or None.
        simulation: ``[G, T]`` simulated discharge, in the same gauge order.
        gauge_ids: ``[G]`` ids shown as panel titles.
        path: output PNG.
        max_gauges: at most this many panels (the first gauges).
        units: discharge units for the axis label.

    Shapes:
        observation, simulation ``[G, T]``; time ``[T]``; gauge_ids ``[G]``.
    """
    import matplotlib.dates as mdates

    sim = _array(simulation, "simulation")
    if sim.ndim == 1:
        sim = sim[None]
    if sim.ndim != 2:
        raise ValueError(f"simulation has shape {list(sim.shape)}; expected [G, T]")
    obs = None
    if observation is not None:
        obs = _array(observation, "observation")
        if obs.ndim == 1:
            obs = obs[None]
        if obs.shape != sim.shape:
            raise ValueError(
                f"observation has shape {list(obs.shape)} but simulation has {list(sim.shape)}"
            )
    t = np.asarray(time)
    if t.shape != (sim.shape[1],):
        raise ValueError(
            f"time has shape {list(t.shape)}; expected [{sim.shape[1]}] (T of simulation)"
        )
    ids = list(gauge_ids)
    if len(ids) != sim.shape[0]:
        raise ValueError(f"gauge_ids has {len(ids)} entries for {sim.shape[0]} hydrographs")
    if max_gauges < 1:
        raise ValueError(f"max_gauges must be >= 1, got {max_gauges}")
    g = min(sim.shape[0], max_gauges)
    cols = max(1, min(ncols, g))
    rows = math.ceil(g / cols)
    fig = _new_figure(4.5 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k in range(g):
        ax = axes[k]
        if obs is not None:
            ax.plot(t, obs[k], color="black", lw=1.0, label="observed")
        ax.plot(t, sim[k], color="tab:blue", lw=1.0, label="simulated")
        ax.set_title(str(ids[k]), fontsize=9)
        ax.set_ylabel(f"discharge [{units}]", fontsize=8)
        ax.tick_params(labelsize=7)
        if np.issubdtype(t.dtype, np.datetime64):
            locator = mdates.AutoDateLocator(maxticks=6)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in axes[g:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="upper right")
    if sim.shape[0] > g:
        fig.suptitle(f"first {g} of {sim.shape[0]} gauges", fontsize=9)
    return _save(fig, path, dpi)


def _river_segments(edge_index: Any, xy: np.ndarray) -> np.ndarray:
    ei = np.asarray(
        edge_index.detach().cpu().numpy() if isinstance(edge_index, Tensor) else edge_index
    )
    if ei.size == 0:
        return np.zeros((0, 2, 2))
    return np.stack([xy[ei[0]], xy[ei[1]]], axis=1)


def plot_parameter_map(
    graph: Any,
    values: Tensor | np.ndarray,
    name: str,
    units: str,
    path: str | Path,
    *,
    cmap: str = "viridis",
    dpi: int = 100,
) -> Path:
    """Map of one per-node value (a parameter) coloured by value.

    Uses the source geometry (``graph.geometry``, any CRS: lines, polygons or points) when
    known, else points at ``graph.pos`` (lon, lat). River edges are drawn as thin lines between
    node positions (``pos``, or the nodes' point geometries).

    Args:
        graph: the :class:`~gnnhydro.graph.RiverGraph`.
        values: ``[N]`` values, or ``[N, M]`` components (their mean is mapped).
        name / units: colour-bar label ``"name [units]"``.
        path: output PNG.

    Shapes:
        values ``[N]`` or ``[N, M]``.
    """
    from matplotlib.collections import LineCollection

    v = _array(values, f"values of {name!r}")
    n = int(graph.num_nodes)
    if v.ndim == 2 and v.shape[0] == n:
        v = v.mean(axis=1)
    if v.shape != (n,):
        raise ValueError(
            f"values of {name!r} have shape {list(v.shape)}; expected [N] or [N, M] with N={n}"
        )
    geometry = getattr(graph, "geometry", None)
    pos = getattr(graph, "pos", None)
    if geometry is None and pos is None:
        raise ValueError(f"cannot map {name!r}: the graph has neither geometry nor pos (lon, lat)")
    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    label = f"{name} [{units}]" if units else name
    finite = v[np.isfinite(v)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    size = float(np.clip(3000.0 / n, 1.0, 30.0))  # marker area [pt²]: smaller for large networks
    if geometry is not None:
        import geopandas as gpd

        gdf = gpd.GeoDataFrame(
            {"value": v}, geometry=list(geometry), crs=getattr(graph, "crs", None)
        )
        types = set(gdf.geom_type.dropna())
        if types <= {"Point"} and len(gdf):
            xy = np.stack([gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()], axis=1)
            ax.add_collection(
                LineCollection(
                    _river_segments(graph.edge_index, xy), colors="0.6", lw=0.6, zorder=1
                )
            )
        gdf.plot(
            column="value",
            ax=ax,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            legend=True,
            legend_kwds={"label": label},
            linewidth=1.5 if types & {"LineString", "MultiLineString"} else 0.3,
            markersize=size,
            zorder=2,
            missing_kwds={"color": "lightgrey"},
        )
        crs = getattr(graph, "crs", None)
        ax.set_xlabel(f"x ({crs})" if crs else "x")
        ax.set_ylabel(f"y ({crs})" if crs else "y")
    else:
        xy = _array(pos, "graph.pos")
        ax.add_collection(
            LineCollection(_river_segments(graph.edge_index, xy), colors="0.6", lw=0.6, zorder=1)
        )
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, cmap=cmap, vmin=vmin, vmax=vmax, s=size, zorder=2)
        fig.colorbar(sc, ax=ax, label=label)
        ax.set_xlabel("longitude [°]")
        ax.set_ylabel("latitude [°]")
        ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(name)
    return _save(fig, path, dpi)


def plot_metric_cdf(
    metrics: Any,
    path: str | Path,
    metric: str = "nse",
    by: str | None = "split",
    *,
    xlim: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Empirical CDF of a metric across gauges, one curve per group.

    Args:
        metrics: a DataFrame with a column ``metric`` (and optionally a column ``by``, one curve
            per value; without it one curve), or a mapping curve name → ``[G]`` values.
        path: output PNG.
        metric: the metric column (``"nse"``, ``"kge"``, ...). NaNs are dropped.
        by: the grouping column of a DataFrame (e.g. ``"split"``: train/validation/test).
        xlim: x-axis range; default for NSE/KGE ``(max(min, -1), 1)``, else the data range.
    """
    import pandas as pd

    groups: dict[str, np.ndarray] = {}
    if isinstance(metrics, pd.DataFrame):
        if metric not in metrics.columns:
            raise ValueError(
                f"metric column {metric!r} not in the table; columns are {list(metrics.columns)}"
            )
        if by is not None and by in metrics.columns:
            for key, part in metrics.groupby(by, sort=True):
                groups[str(key)] = part[metric].to_numpy(dtype=np.float64)
        else:
            groups[metric] = metrics[metric].to_numpy(dtype=np.float64)
    elif isinstance(metrics, Mapping):
        if not metrics:
            raise ValueError("metrics mapping is empty")
        groups = {str(k): _array(v, f"metrics[{k!r}]").ravel() for k, v in metrics.items()}
    else:
        raise ValueError(
            f"metrics must be a DataFrame or a mapping name -> values, got {type(metrics).__name__}"
        )
    fig = _new_figure(6.0, 4.5)
    ax = fig.add_subplot()
    lows: list[float] = []
    highs: list[float] = []
    for key, vals in groups.items():
        vals = np.sort(vals[np.isfinite(vals)])
        if vals.size == 0:
            continue
        cdf = np.arange(0, vals.size + 1) / vals.size
        ax.step(
            np.concatenate([vals[:1], vals]),
            cdf,
            where="post",
            label=f"{key} (n={vals.size}, median={np.median(vals):.3f})",
        )
        lows.append(float(vals[0]))
        highs.append(float(vals[-1]))
    if not lows:
        raise ValueError(f"no finite {metric!r} values to plot")
    if xlim is None and metric.lower() in ("nse", "kge"):
        xlim = (max(min(lows), -1.0), 1.0)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(metric.upper() if len(metric) <= 4 else metric)
    ax.set_ylabel("fraction of gauges ≤ x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path, dpi)

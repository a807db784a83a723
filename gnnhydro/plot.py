"""Figures for model output: hydrographs, parameter maps and metric CDFs (PNG, matplotlib Agg).

Every function draws on its own :class:`matplotlib.figure.Figure` (no pyplot state, no GUI
backend), saves it, releases it and returns the written path.

Parameter maps label the colour bar ``"name [units]"`` and scale colours robustly (2nd–98th
percentile, or logarithmically for parameters spanning decades, see :func:`spans_decades`);
hydrograph panels name the gauge, its role (training or held out) and its NSE and KGE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["plot_hydrographs", "plot_parameter_map", "plot_metric_cdf", "spans_decades"]

#: gauge roles accepted by :func:`plot_hydrographs` and the words shown in panel titles
ROLE_LABELS = {"train": "training", "holdout": "held out"}


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


def _format_metric(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "n/a"


def _panel_title(gauge_id: Any, role: str | None, obs: np.ndarray | None, sim: np.ndarray) -> str:
    from gnnhydro.training.metrics import kge, nse

    title = str(gauge_id)
    if role is not None:
        title += f" ({ROLE_LABELS[role]})"
    if obs is not None:
        scores = nse(observation=obs, simulation=sim), kge(observation=obs, simulation=sim)
        title += f" NSE {_format_metric(float(scores[0]))} KGE {_format_metric(float(scores[1]))}"
    return title


def _year_axis(ax: Any, t: np.ndarray) -> None:
    """Date ticks labelled by year (``%Y``); by month (``%Y-%m``) for records under 2 years."""
    import matplotlib.dates as mdates

    if t.size == 0:
        return
    ax.set_xlim(t.min(), t.max())  # no margins: ticks fall inside the record
    span_years = (t.max() - t.min()) / np.timedelta64(1, "D") / 365.25
    if span_years >= 2:
        ax.xaxis.set_major_locator(mdates.YearLocator(base=max(1, math.ceil(span_years / 6))))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    else:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=2, maxticks=5))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))


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
    roles: Sequence[str] | None = None,
) -> Path:
    """Observed and simulated hydrographs, one panel per gauge (the first ``max_gauges``).

    Each panel is titled ``"<gauge id> (<role>) NSE <nse> KGE <kge>"``, e.g.
    ``"01234567 (held out) NSE 0.71 KGE 0.65"``: the role only when ``roles`` is given, the
    scores (:func:`~gnnhydro.training.metrics.nse`, :func:`~gnnhydro.training.metrics.kge` over
    the steps where both series are finite; ``n/a`` when undefined) only with observations.
    Datetime axes are labelled by year (by month for records under two years).

    Args:
        time: ``[T]`` datetime64 (or numeric) time stamps.
        observation: ``[G, T]`` observed discharge (NaN = missing), or None.
        simulation: ``[G, T]`` simulated discharge, in the same gauge order.
        gauge_ids: ``[G]`` ids shown in the panel titles.
        path: output PNG.
        max_gauges: at most this many panels (the first gauges).
        units: discharge units for the axis label.
        ncols: panels per row.
        dpi: resolution of the PNG.
        roles: ``[G]`` ``"train"`` (gauge used in training) or ``"holdout"`` (held out of
            training) per gauge; default None (no role shown).

    Shapes:
        observation, simulation ``[G, T]``; time ``[T]``; gauge_ids, roles ``[G]``.
    """
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
    role_list: list[str | None] = [None] * len(ids)
    if roles is not None:
        role_list = [str(r) for r in roles]
        if len(role_list) != len(ids):
            raise ValueError(f"roles has {len(role_list)} entries for {len(ids)} gauges")
        bad = sorted(set(role_list) - set(ROLE_LABELS))
        if bad:
            raise ValueError(f"unknown gauge role(s) {bad}; expected one of {sorted(ROLE_LABELS)}")
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
        ax.set_title(
            _panel_title(ids[k], role_list[k], None if obs is None else obs[k], sim[k]),
            fontsize=9,
            color="tab:red" if role_list[k] == "holdout" else "black",
        )
        ax.set_ylabel(f"discharge [{units}]", fontsize=8)
        ax.tick_params(labelsize=7)
        if np.issubdtype(t.dtype, np.datetime64):
            _year_axis(ax, t)
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


def spans_decades(low: float, high: float, *, ratio: float = 100.0) -> bool:
    """Whether the range ``[low, high]`` is positive and spans at least ``ratio`` (two decades).

    The test for drawing a parameter on a logarithmic colour scale, e.g. with the bounds of its
    :class:`~gnnhydro.spec.ParamSpec`: ``log=spans_decades(spec.low, spec.high)``. False for
    ``low <= 0`` or non-finite bounds.
    """
    low, high = float(low), float(high)
    return bool(np.isfinite(low) and np.isfinite(high) and low > 0 and high / low >= ratio)


def _colour_norm(
    values: np.ndarray, *, log: bool, percentiles: tuple[float, float] | None, name: str
) -> tuple[Any, str]:
    """Colour norm (``Normalize`` or ``LogNorm``) and colour-bar ``extend`` for ``values``.

    Limits: the ``percentiles`` of the finite values (positive values for ``log``), or their
    range when ``percentiles`` is None; a constant field gets a small range around its value.
    """
    from matplotlib.colors import LogNorm, Normalize

    finite = values[np.isfinite(values)]
    if log:
        finite = finite[finite > 0]
        if finite.size == 0:
            raise ValueError(f"log colour scale for {name!r} needs positive values; it has none")
    if percentiles is not None:
        lo, hi = (float(p) for p in percentiles)
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if finite.size == 0:
        vmin, vmax = 0.0, 1.0
    elif percentiles is None:
        vmin, vmax = float(finite.min()), float(finite.max())
    else:
        vmin, vmax = (float(q) for q in np.percentile(finite, [lo, hi]))
    if vmin == vmax:  # a constant field: centre it in a small range
        if log:
            vmin, vmax = vmin / 1.1, vmax * 1.1
        else:
            pad = 0.05 * abs(vmin) if vmin != 0 else 0.5
            vmin, vmax = vmin - pad, vmax + pad
    below = bool(finite.size and finite.min() < vmin)
    above = bool(finite.size and finite.max() > vmax)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither"
    )
    norm = LogNorm(vmin=vmin, vmax=vmax) if log else Normalize(vmin=vmin, vmax=vmax)
    return norm, extend


def plot_parameter_map(
    graph: Any,
    values: Tensor | np.ndarray,
    name: str,
    units: str,
    path: str | Path,
    *,
    cmap: str = "viridis",
    dpi: int = 100,
    log: bool = False,
    percentiles: tuple[float, float] | None = (2.0, 98.0),
) -> Path:
    """Map of one per-node value (a parameter) coloured by value, with a labelled colour bar.

    Uses the source geometry (``graph.geometry``, any CRS: lines, polygons or points) when
    known, else points at ``graph.pos`` (lon, lat). River edges are drawn as thin lines between
    node positions (``pos``, or the nodes' point geometries).

    The colour scale is robust to outliers: it spans the 2nd–98th percentile of the finite
    values (``percentiles``), values beyond are drawn in the end colours and the colour bar is
    extended (arrows) on that side. With ``log=True`` it is logarithmic
    (:class:`matplotlib.colors.LogNorm`, percentiles of the positive values; values ``<= 0`` and
    NaN drawn grey): pass ``log=spans_decades(spec.low, spec.high)`` for parameters whose bounds
    span two decades or more.

    Args:
        graph: the :class:`~gnnhydro.graph.RiverGraph`.
        values: ``[N]`` values, or ``[N, M]`` components (their mean is mapped).
        name: parameter name, the map title.
        units: the values' units; colour-bar label ``"name [units]"`` (``"name"`` when empty).
        path: output PNG.
        cmap: matplotlib colour-map name.
        dpi: resolution of the PNG.
        log: logarithmic colour scale (default False: linear).
        percentiles: ``(low, high)`` percentiles giving the colour limits (default ``(2, 98)``);
            None = the full range.

    Shapes:
        values ``[N]`` or ``[N, M]``.
    """
    import matplotlib as mpl
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
    norm, extend = _colour_norm(v, log=log, percentiles=percentiles, name=name)
    colours = mpl.colormaps[cmap].with_extremes(bad="lightgrey")
    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    label = f"{name} [{units}]" if units else name
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
            cmap=colours,
            norm=norm,
            legend=True,
            legend_kwds={"label": label, "extend": extend},
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
        sc = ax.scatter(
            xy[:, 0], xy[:, 1], c=v, cmap=colours, norm=norm, s=size, zorder=2, plotnonfinite=True
        )
        fig.colorbar(sc, ax=ax, label=label, extend=extend)
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

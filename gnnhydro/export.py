"""Export model output: parameter maps (GeoPackage, GeoParquet, netCDF, CSV), discharge
(CF-1.8 ``timeSeries`` netCDF) and metric tables (CSV).

Parameter maps have one row per node, in node order, with the node ``id`` and one column per
parameter. A parameter with several components (``[N, M]``, e.g. HBV's ``nmul`` parallel
stores) becomes the columns ``name_0 .. name_{M-1}`` plus ``name``, the mean over components.
Units go into the file's metadata, keyed by column name:

==========  ===========================================================================
format      where the units are
==========  ===========================================================================
gpkg        layer metadata item ``gnnhydro_units`` (JSON) in the GeoPackage metadata
            extension (``pyogrio.read_info(path, layer)["layer_metadata"]``) and the layer
            description; the file has one layer, so ``geopandas.read_file(path)`` reads it
parquet     Arrow schema metadata key ``gnnhydro:units`` (JSON); GeoParquet ``geo`` metadata
            (geometry encoding, CRS) as written by geopandas
netcdf      a ``units`` attribute on every variable (dimension ``node``, coordinate ``id``)
csv         a sidecar ``<stem>.units.json`` next to the CSV (``foo.csv`` → ``foo.units.json``)
==========  ===========================================================================

Geometry (GeoPackage, GeoParquet): the source geometry when the graph carries one
(``graph.geometry`` with ``graph.crs``), otherwise points at ``graph.pos`` (lon, lat) in
EPSG:4326; netCDF and CSV carry ``lon``/``lat`` columns when ``pos`` is known and need no
geometry. String ids with leading zeros (USGS gauge ids) survive every format, but read a CSV
back with ``pd.read_csv(path, dtype={"id": str})``.

Time-varying (dynamic) parameters ``[N, T, M]`` are mapped as their time mean (columns as for
``[N, M]``); netCDF also holds the series ``<name>_series(node, time)`` (component mean).
``attrs`` (e.g. provenance: run, data root, time written) go into the file's metadata:
gpkg layer metadata ``gnnhydro_provenance`` (JSON), parquet key ``gnnhydro:provenance``, netCDF
global attributes, and the CSV's units sidecar under ``"_provenance"``.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.spec import ParamSpec

__all__ = [
    "export_parameters",
    "export_discharge",
    "DischargeZarrWriter",
    "export_metrics",
    "parameter_table",
    "units_path",
    "FORMATS",
    "DISCHARGE_STANDARD_NAME",
]

#: Parameter-map formats and the file suffixes that select them.
FORMATS: dict[str, tuple[str, ...]] = {
    "gpkg": (".gpkg",),
    "parquet": (".parquet", ".geoparquet", ".pq"),
    "netcdf": (".nc", ".nc4", ".netcdf"),
    "csv": (".csv",),
}
_ALIASES = {"geopackage": "gpkg", "geoparquet": "parquet", "nc": "netcdf", "netcdf4": "netcdf"}

#: CF standard name of river discharge (volume flux along the channel) [m3 s-1].
DISCHARGE_STANDARD_NAME = "water_volume_transport_in_river_channel"
_TIME_UNITS = "seconds since 1970-01-01 00:00:00"
_Q_ATTRS = {"units": "m3 s-1", "standard_name": DISCHARGE_STANDARD_NAME}
_RESERVED = ("id", "geometry", "lon", "lat")
_UNITS_KEY_PARQUET = b"gnnhydro:units"
_UNITS_KEY_GPKG = "gnnhydro_units"


# ---------------------------------------------------------------------------- helpers
def _version() -> str:
    try:
        from gnnhydro import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - only when the package is half-imported
        return "unknown"


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor/array (detached, on CPU); names ``name`` on failure."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() or value.is_complex():
            value = value.double()
        return value.numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}: cannot convert {type(value).__name__} to a numeric array ({err})"
        ) from err


def _id_array(ids: Sequence[Any]) -> np.ndarray:
    """Node ids as int64 when all are integers, else as strings."""
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return np.asarray(ids, dtype=np.int64)
    return np.asarray([str(i) for i in ids], dtype=object)


def _resolve_format(path: Path, format: str | None) -> str:
    if format is not None:
        key = format.lower().lstrip(".")
        key = _ALIASES.get(key, key)
        if key not in FORMATS:
            raise ValueError(f"unknown export format {format!r}; choose one of {sorted(FORMATS)}")
        return key
    suffix = path.suffix.lower()
    for key, suffixes in FORMATS.items():
        if suffix in suffixes:
            return key
    known = sorted(s for suffixes in FORMATS.values() for s in suffixes)
    raise ValueError(
        f"cannot infer the export format from the suffix {suffix!r} of {path}; "
        f"use one of {known} or pass format= ({sorted(FORMATS)})"
    )


def _node_positions(graph: Any) -> np.ndarray | None:
    pos = getattr(graph, "pos", None)
    if pos is None:
        return None
    pos = _to_numpy(pos, "graph.pos")
    if pos.shape != (graph.num_nodes, 2):
        raise ValueError(
            f"graph.pos must be [N, 2] (lon, lat) with N={graph.num_nodes}, got {list(pos.shape)}"
        )
    return pos


def _node_geometry(graph: Any) -> tuple[list[Any], str | None, str]:
    """``(geometries, crs, source)`` for the nodes: the source geometry, else points at ``pos``.

    Raises:
        ValueError: the graph has neither ``geometry`` nor ``pos``.
    """
    geometry = getattr(graph, "geometry", None)
    crs = getattr(graph, "crs", None)
    if geometry is not None:
        geometry = list(geometry)
        if len(geometry) != graph.num_nodes:
            raise ValueError(
                f"graph.geometry has {len(geometry)} entries for {graph.num_nodes} nodes"
            )
        return geometry, crs, "source"
    pos = _node_positions(graph)
    if pos is not None:
        from shapely import points

        return list(points(pos[:, 0], pos[:, 1])), crs or "EPSG:4326", "pos"
    raise ValueError(
        "the graph has no geometry: neither graph.geometry (source geometries with graph.crs) nor "
        "graph.pos (lon, lat) is set, so GeoPackage/GeoParquet cannot be written; "
        "export to netCDF or CSV instead, or build the graph with lon_col/lat_col or a GeoDataFrame"
    )


def parameter_table(
    graph: Any,
    params: Mapping[str, Tensor | np.ndarray],
    units: Mapping[str, str] | None = None,
    specs: Mapping[str, ParamSpec] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Validate ``params`` against ``graph`` and flatten them into per-node columns.

    Args:
        graph: the :class:`~gnnhydro.graph.RiverGraph` the parameters belong to.
        params: name → ``[N]``, ``[N, M]`` (``M`` components, e.g. ``nmul``) or ``[N, T, M]``
            (time-varying: its time mean) values.
        units: name → units string; overrides ``specs``.
        specs: name → :class:`~gnnhydro.spec.ParamSpec` (units taken from ``spec.units``).

    Returns:
        ``(columns, column_units)``: ordered name → ``[N]`` float64 arrays (``name_0 ..
        name_{M-1}`` then ``name`` = component mean for ``[N, M]`` with ``M > 1``; ``[N, 1]``
        gives just ``name``) and column name → units (``""`` where unknown). Reservoir
        operator parameters are NaN away from the graph's ``reservoir_mask`` nodes.

    Shapes:
        params[name] ``[N]``, ``[N, M]`` or ``[N, T, M]``; every column ``[N]``.
    """
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty mapping name -> [N] or [N, M] values")
    n = int(graph.num_nodes)
    units = dict(units or {})
    spec_units = {k: s.units for k, s in (specs or {}).items()}
    reservoirs = getattr(graph, "reservoir_mask", None)
    if reservoirs is not None:  # reservoir parameters mean something at reservoirs only
        from gnnhydro.routing.reservoirs import reservoir_parameter_names

        at_reservoirs = reservoir_parameter_names()
        elsewhere = ~np.asarray(_to_numpy(reservoirs, "reservoir_mask"), dtype=bool)
    columns: dict[str, np.ndarray] = {}
    column_units: dict[str, str] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
        if name in _RESERVED:
            raise ValueError(
                f"parameter name {name!r} clashes with a reserved column {list(_RESERVED)}"
            )
        arr = _to_numpy(value, f"parameter {name!r}")
        if arr.ndim not in (1, 2, 3) or arr.shape[0] != n:
            raise ValueError(
                f"parameter {name!r} has shape {list(arr.shape)}; expected [N], [N, M] or "
                f"[N, T, M] with N={n} (the graph's number of nodes)"
            )
        if arr.ndim == 3:  # time-varying: mapped as the time mean
            arr = arr.mean(axis=1)
        if reservoirs is not None and name in at_reservoirs:
            arr = np.array(arr, dtype=np.float64)
            arr[elsewhere] = np.nan
        unit = units.get(name, spec_units.get(name, ""))
        if arr.ndim == 2 and arr.shape[1] == 0:
            raise ValueError(f"parameter {name!r} has shape {list(arr.shape)}: no components")
        names: list[tuple[str, np.ndarray]] = []
        if arr.ndim == 2 and arr.shape[1] > 1:
            names += [(f"{name}_{j}", arr[:, j]) for j in range(arr.shape[1])]
            names.append((name, arr.mean(axis=1)))
        else:
            names.append((name, arr.reshape(n)))
        for col, values in names:
            if col in columns:
                raise ValueError(
                    f"column {col!r} (from parameter {name!r}) is produced twice; rename one of the parameters"
                )
            columns[col] = values
            column_units[col] = unit
    return columns, column_units


# ---------------------------------------------------------------------------- parameters
def export_parameters(
    graph: Any,
    params: Mapping[str, Tensor | np.ndarray],
    path: str | Path,
    format: str | None = None,
    units: Mapping[str, str] | None = None,
    specs: Mapping[str, ParamSpec] | None = None,
    *,
    layer: str = "parameters",
    time: np.ndarray | Sequence[Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a parameter map: one row per node (node order), one column per parameter.

    Args:
        graph: the :class:`~gnnhydro.graph.RiverGraph` (ids, geometry/CRS or ``pos``).
        params: name → ``[N]`` or ``[N, M]`` values (tensor or array; gradients are detached).
            ``[N, M]`` with ``M > 1`` gives ``name_0 .. name_{M-1}`` and the mean ``name``.
        path: output file; parent directories are created; an existing file is replaced.
        format: ``"gpkg"``, ``"parquet"``, ``"netcdf"`` or ``"csv"``; default from the suffix
            (``.gpkg``, ``.parquet``/``.geoparquet``, ``.nc``, ``.csv``).
        units: name → units string (overrides ``specs``).
        specs: name → :class:`~gnnhydro.spec.ParamSpec`; units default to ``spec.units``.
        layer: GeoPackage layer name.
        time: ``[T]`` time stamps of time-varying parameters (netCDF ``<name>_series``).
        attrs: metadata written into the file (e.g. provenance), JSON-serialisable values.

    Returns:
        The written path. See the module docstring for where units are stored.

    Raises:
        ValueError: a parameter has the wrong shape, the format is unknown, or a
            GeoPackage/GeoParquet is requested for a graph with neither geometry nor ``pos``.

    Shapes:
        params[name] ``[N]``, ``[N, M]`` or ``[N, T, M]``; time ``[T]``.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    columns, column_units = parameter_table(graph, params, units=units, specs=specs)
    attrs = dict(attrs or {})
    ids = _id_array(list(graph.node_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("gpkg", "parquet"):
        geometry, crs, source = _node_geometry(graph)
        if crs is None:
            warnings.warn(
                f"writing {path.name}: the graph's source geometry has no CRS (graph.crs is None)",
                stacklevel=2,
            )
        import geopandas as gpd

        gdf = gpd.GeoDataFrame({"id": ids, **columns}, geometry=geometry, crs=crs)
        if fmt == "gpkg":
            _write_gpkg(gdf, path, layer, column_units, source, attrs)
        else:
            _write_geoparquet(gdf, path, column_units, attrs)
    elif fmt == "netcdf":
        series = {
            name: _to_numpy(value, f"parameter {name!r}")
            for name, value in params.items()
            if _to_numpy(value, f"parameter {name!r}").ndim == 3
        }
        _write_parameters_netcdf(graph, ids, columns, column_units, path, series, time, attrs)
    else:
        _write_parameters_csv(graph, ids, columns, column_units, path, attrs)
    return path


def _write_gpkg(
    gdf: Any, path: Path, layer: str, column_units: dict[str, str], source: str, attrs: dict
) -> None:
    import pyogrio

    if path.exists():
        path.unlink()
    description = (
        f"gnnhydro {_version()} parameter map, one row per node; geometry: "
        f"{'source geometry' if source == 'source' else 'points at (lon, lat)'}; units: "
        + ", ".join(f"{k} [{v}]" for k, v in column_units.items())
    )
    metadata = {_UNITS_KEY_GPKG: json.dumps(column_units)}
    if attrs:
        metadata["gnnhydro_provenance"] = json.dumps(attrs, default=str)
    pyogrio.write_dataframe(
        gdf,
        path,
        layer=layer,
        driver="GPKG",
        layer_options={"DESCRIPTION": description},
        layer_metadata=metadata,
    )


def _write_geoparquet(gdf: Any, path: Path, column_units: dict[str, str], attrs: dict) -> None:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    gdf.to_parquet(buffer, index=False)
    buffer.seek(0)
    table = pq.read_table(buffer)
    meta = dict(table.schema.metadata or {})
    meta[_UNITS_KEY_PARQUET] = json.dumps(column_units).encode()
    meta[b"gnnhydro:version"] = _version().encode()
    if attrs:
        meta[b"gnnhydro:provenance"] = json.dumps(attrs, default=str).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _write_parameters_netcdf(
    graph: Any,
    ids: np.ndarray,
    columns: dict[str, np.ndarray],
    column_units: dict[str, str],
    path: Path,
    series: dict[str, np.ndarray] | None = None,
    time: Any = None,
    attrs: dict | None = None,
) -> None:
    import xarray as xr

    coords: dict[str, Any] = {"id": ("node", ids, {"long_name": "node id"})}
    pos = _node_positions(graph)
    if pos is not None:
        coords["lon"] = ("node", pos[:, 0], {"standard_name": "longitude", "units": "degrees_east"})
        coords["lat"] = ("node", pos[:, 1], {"standard_name": "latitude", "units": "degrees_north"})
    data = {
        name: ("node", values, {"units": column_units[name]}) for name, values in columns.items()
    }
    for name, values in (series or {}).items():  # [N, T, M] -> component mean [N, T]
        if f"{name}_series" in data:
            raise ValueError(f"column {name}_series clashes with the series of {name!r}")
        data[f"{name}_series"] = (
            ("node", "time"),
            values.mean(axis=2),
            {"units": column_units.get(name, ""), "long_name": f"{name} (time-varying)"},
        )
    if series:
        steps = next(iter(series.values())).shape[1]
        if time is not None:
            coords["time"] = ("time", _time_array(time, steps))
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "title": "gnnhydro parameter map",
            "source": f"gnnhydro {_version()}",
            "history": f"{datetime.now(UTC).isoformat(timespec='seconds')} written by gnnhydro.export",
            "gnnhydro_units": json.dumps(column_units),
            **{f"gnnhydro_{k}": _attr(v) for k, v in (attrs or {}).items()},
        }
    )
    if getattr(graph, "crs", None):
        ds.attrs["crs"] = str(graph.crs)
    if path.exists():
        path.unlink()
    ds.to_netcdf(path)


def _write_parameters_csv(
    graph: Any,
    ids: np.ndarray,
    columns: dict[str, np.ndarray],
    column_units: dict[str, str],
    path: Path,
    attrs: dict | None = None,
) -> None:
    import pandas as pd

    data: dict[str, Any] = {"id": ids}
    units = {"id": ""}
    pos = _node_positions(graph)
    if pos is not None:
        data["lon"], data["lat"] = pos[:, 0], pos[:, 1]
        units.update({"lon": "degrees_east", "lat": "degrees_north"})
    data.update(columns)
    units.update(column_units)
    pd.DataFrame(data).to_csv(path, index=False)
    sidecar: dict[str, Any] = dict(units)
    if attrs:
        sidecar["_provenance"] = attrs
    units_path(path).write_text(json.dumps(sidecar, indent=2, default=str))


def _attr(value: Any) -> Any:
    """A netCDF attribute value: numbers and strings as they are, the rest as JSON."""
    return value if isinstance(value, str | int | float) else json.dumps(value, default=str)


def units_path(csv_path: str | Path) -> Path:
    """The units sidecar of a CSV export: ``foo.csv`` → ``foo.units.json``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.units.json")


# ---------------------------------------------------------------------------- discharge
def _select_nodes(graph: Any, node_subset: Any) -> np.ndarray:
    """Node indices of ``node_subset``: a ``torch.Tensor`` is indices (long) or a mask (bool);
    anything else is a sequence of node ids, matched by id."""
    n = int(graph.num_nodes)
    if node_subset is None:
        return np.arange(n)
    if isinstance(node_subset, Tensor):
        t = node_subset.detach().cpu()
        if t.dtype == torch.bool:
            if t.shape != (n,):
                raise ValueError(f"node_subset mask has shape {list(t.shape)}; expected [{n}]")
            return t.nonzero().flatten().numpy()
        if t.is_floating_point() or t.dim() != 1:
            raise ValueError(
                f"node_subset tensor must be 1-d node indices (long) or a bool mask, got "
                f"{t.dtype} {list(t.shape)}"
            )
        idx = t.long().numpy()
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ValueError(f"node_subset indices {bad[:20].tolist()} are outside 0..{n - 1}")
        return idx
    if isinstance(node_subset, (str, bytes)):
        node_subset = [node_subset]
    return graph.index_of(list(node_subset)).numpy()


def _station_lonlat(graph: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    pos = _node_positions(graph)
    if pos is not None:
        return pos[idx, 0], pos[idx, 1]
    geometry = getattr(graph, "geometry", None)
    crs = getattr(graph, "crs", None)
    if geometry is None or crs is None:
        return None
    import geopandas as gpd

    pts = (
        gpd.GeoSeries([geometry[int(i)] for i in idx], crs=crs)
        .representative_point()
        .to_crs("EPSG:4326")
    )
    return pts.x.to_numpy(), pts.y.to_numpy()


def _time_array(time: Any, steps: int) -> np.ndarray:
    try:
        t = np.asarray(time).astype("datetime64[ns]")
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"time must be a datetime64 array, got {type(time).__name__} ({err})"
        ) from err
    if t.ndim != 1 or t.shape[0] != steps:
        raise ValueError(
            f"time has shape {list(t.shape)}; expected [{steps}] to match discharge [N, T={steps}]"
        )
    if np.isnat(t).any():
        raise ValueError("time contains NaT")
    return t


def _encode_time(t: np.ndarray) -> np.ndarray:
    """Seconds since 1970-01-01 00:00:00 (int64 when all stamps are whole seconds, else float64)."""
    ns = (t - np.datetime64("1970-01-01T00:00:00", "ns")).astype("timedelta64[ns]").astype(np.int64)
    if np.all(ns % 1_000_000_000 == 0):
        return ns // 1_000_000_000
    return ns / 1e9


def _discharge_dataset(
    graph: Any,
    idx: np.ndarray,
    t: np.ndarray,
    data: dict[str, Any],
    warmup_steps: int,
    title: str,
    attrs: Mapping[str, Any] | None,
) -> Any:
    """The CF-1.8 ``timeSeries`` dataset of stations ``idx`` around the ``(time, station)``
    variables ``data`` (numpy or dask arrays): coordinates, warm-up flag and global attributes
    (one layout for the netCDF and the zarr writer)."""
    import xarray as xr

    steps = t.shape[0]
    ids = _id_array([graph.node_id[int(i)] for i in idx])
    if not 0 <= int(warmup_steps) <= steps:
        raise ValueError(f"warmup_steps={warmup_steps} is outside 0..{steps}")
    flag = np.zeros(steps, dtype=np.int8)
    flag[: int(warmup_steps)] = 1
    data["warmup"] = (
        ("time",),
        flag,
        {
            "long_name": "model warm-up (states still filling; not evaluated)",
            "flag_values": np.array([0, 1], dtype=np.int8),
            "flag_meanings": "after_warmup warmup",
        },
    )
    coords: dict[str, Any] = {
        "time": (
            "time",
            _encode_time(t),
            {
                "standard_name": "time",
                "long_name": "time",
                "axis": "T",
                "units": _TIME_UNITS,
                "calendar": "standard",
            },
        ),
        "station_id": (
            "station",
            ids,
            {"cf_role": "timeseries_id", "long_name": "station (node) id"},
        ),
    }
    lonlat = _station_lonlat(graph, idx)
    if lonlat is not None:
        for name, values, quantity, units in (
            ("lon", lonlat[0], "longitude", "degrees_east"),
            ("lat", lonlat[1], "latitude", "degrees_north"),
        ):
            coords[name] = (
                "station",
                values.astype(np.float64),
                {"standard_name": quantity, "long_name": f"station {quantity}", "units": units},
            )
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "featureType": "timeSeries",
            "title": title,
            "source": f"gnnhydro {_version()}",
            "history": f"{datetime.now(UTC).isoformat(timespec='seconds')} written by gnnhydro.export",
            "warmup_steps": int(warmup_steps),
            **{f"gnnhydro_{k}": _attr(v) for k, v in (attrs or {}).items()},
        }
    )
    return ds


def export_discharge(
    graph: Any,
    discharge: Tensor | np.ndarray,
    time: np.ndarray | Sequence[Any],
    path: str | Path,
    observed: Tensor | np.ndarray | None = None,
    node_subset: Any = None,
    *,
    title: str = "gnnhydro simulated river discharge",
    warmup_steps: int = 0,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write discharge as a CF-1.8 ``timeSeries`` discrete-sampling-geometry netCDF.

    Layout (orthogonal multidimensional representation, time varying slowest as in NWM
    ``CHRTOUT``/``streamflow(time, feature_id)`` files)::

        dimensions: time = T; station = S
        time(time)            units "seconds since 1970-01-01 00:00:00", calendar "standard"
        station_id(station)   cf_role "timeseries_id" (node id: int64 or string)
        lon(station), lat(station)     when the graph has pos (or geometry with a CRS)
        discharge(time, station)       units "m3 s-1",
                                       standard_name "water_volume_transport_in_river_channel"
        observed_discharge(time, station)   the same, when ``observed`` is given (NaN = missing)
        warmup(time)          1 during the model's warm-up (states still filling: do not
                              evaluate), 0 after; flag_values/flag_meanings
        global: featureType "timeSeries", Conventions "CF-1.8", ``attrs`` as ``gnnhydro_<key>``

    Args:
        graph: the :class:`~gnnhydro.graph.RiverGraph` (ids; lon/lat when known).
        discharge: ``[N, T]`` simulated discharge [m³/s] in node order.
        time: ``[T]`` datetime64 time stamps.
        path: output ``.nc`` file (replaced if present; parents created).
        observed: optional ``[N, T]`` observed discharge [m³/s], NaN where missing.
        node_subset: which nodes become stations: a ``torch.Tensor`` of node indices (e.g.
            ``graph.gauge_index``) or a bool mask ``[N]``; any other sequence is node ids,
            matched by id. Default: all nodes.
        warmup_steps: the first steps that are the model's warm-up (flagged in ``warmup``).
        attrs: global attributes (e.g. provenance), written as ``gnnhydro_<key>``.

    Shapes:
        discharge, observed ``[N, T]``; time ``[T]``.
    """
    path = Path(path)
    q = _to_numpy(discharge, "discharge")
    n = int(graph.num_nodes)
    if q.ndim != 2 or q.shape[0] != n:
        raise ValueError(
            f"discharge has shape {list(q.shape)}; expected [N, T] with N={n} (graph nodes)"
        )
    steps = q.shape[1]
    t = _time_array(time, steps)
    obs = None
    if observed is not None:
        obs = _to_numpy(observed, "observed")
        if obs.shape != q.shape:
            raise ValueError(
                f"observed has shape {list(obs.shape)}; expected {list(q.shape)} like discharge"
            )
    idx = _select_nodes(graph, node_subset)
    if idx.size == 0:
        raise ValueError("node_subset selects no nodes")
    data = {
        "discharge": (
            ("time", "station"),
            q[idx].T.astype(np.float32),
            {**_Q_ATTRS, "long_name": "simulated river discharge"},
        )
    }
    if obs is not None:
        data["observed_discharge"] = (
            ("time", "station"),
            obs[idx].T.astype(np.float32),
            {**_Q_ATTRS, "long_name": "observed river discharge"},
        )
    ds = _discharge_dataset(graph, idx, t, data, int(warmup_steps), title, attrs)
    # time is encoded here rather than by xarray, which would shorten the units string to
    # "seconds since 1970-01-01"; the attributes decode the same either way.
    encoding = {k: {"_FillValue": None} for k in ("time", "lon", "lat") if k in ds.variables}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    ds.to_netcdf(path, encoding=encoding)
    return path


class DischargeZarrWriter:
    """Discharge of every node written to a zarr store chunk by chunk, as a simulation streams
    (:func:`~gnnhydro.models.streaming.stream_discharge`), never holding the whole ``[N, T]``.

    The store has the layout of :func:`export_discharge` (CF-1.8 ``timeSeries``:
    ``discharge(time, station)`` m³/s, ``station_id``, ``lon``/``lat``, ``warmup``, global
    attributes) and opens with ``xarray.open_zarr``. The coordinates and metadata are written
    on construction, the data by :meth:`write` (time chunks aligned with the store's chunks);
    steps never written read as NaN, and the global attribute ``complete`` turns 1 only in
    :meth:`close`, so an interrupted run is recognisable. :meth:`to_netcdf` converts the
    finished store (streamed by dask).

    Args:
        path: the ``.zarr`` store to create (an existing one is replaced).
        graph: the network (ids; lon/lat when known).
        time: ``[T]`` datetime64 time stamps.
        time_chunk: steps per zarr chunk (the size of each :meth:`write`).
        station_chunk: stations per zarr chunk (default: all, up to 65,536).
        warmup_steps, attrs, title: as for :func:`export_discharge`.

    Shapes:
        :meth:`write` takes ``[N, t]`` m³/s for steps ``[t0, t0 + t)``.
    """

    def __init__(
        self,
        path: str | Path,
        graph: Any,
        time: np.ndarray | Sequence[Any],
        *,
        time_chunk: int,
        station_chunk: int | None = None,
        warmup_steps: int = 0,
        attrs: Mapping[str, Any] | None = None,
        title: str = "gnnhydro simulated river discharge",
    ) -> None:
        import dask.array as da
        import zarr

        self.path = Path(path)
        n = int(graph.num_nodes)
        t = _time_array(time, len(time))
        self.num_steps = t.shape[0]
        self.num_nodes = n
        chunks = (int(time_chunk), int(station_chunk or min(n, 65_536)))
        template = da.full((self.num_steps, n), np.nan, dtype=np.float32, chunks=chunks)
        data = {
            "discharge": (
                ("time", "station"),
                template,
                {**_Q_ATTRS, "long_name": "simulated river discharge"},
            )
        }
        ds = _discharge_dataset(graph, np.arange(n), t, data, int(warmup_steps), title, attrs)
        ds.attrs["complete"] = 0
        encoding = {k: {"_FillValue": None} for k in ("time", "lon", "lat") if k in ds.variables}
        encoding["discharge"] = {"chunks": chunks, "_FillValue": np.float32("nan")}
        if self.path.exists():
            import shutil

            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_zarr(
            self.path, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=2
        )
        self._group = zarr.open_group(self.path, mode="r+")
        self._array = self._group["discharge"]

    def write(self, t0: int, discharge: Tensor | np.ndarray) -> None:
        """Write ``discharge`` ``[N, t]`` m³/s as steps ``[t0, t0 + t)``."""
        q = discharge.detach().cpu().numpy() if isinstance(discharge, Tensor) else discharge
        if q.ndim != 2 or q.shape[0] != self.num_nodes or t0 + q.shape[1] > self.num_steps:
            raise ValueError(
                f"discharge chunk {list(q.shape)} at step {t0} does not fit the store's "
                f"[N={self.num_nodes}, T={self.num_steps}]"
            )
        self._array[t0 : t0 + q.shape[1], :] = np.ascontiguousarray(q.T, dtype=np.float32)

    def close(self) -> Path:
        """Mark the store complete and consolidate its metadata."""
        import zarr

        self._group.attrs["complete"] = 1
        zarr.consolidate_metadata(self.path)
        return self.path

    def to_netcdf(self, path: str | Path) -> Path:
        """The finished store as a netCDF file of the same layout (streamed chunk by chunk)."""
        return self.to_netcdf_of(self.path, path)

    @staticmethod
    def to_netcdf_of(store: str | Path, path: str | Path) -> Path:
        """A finished discharge store ``store`` as the netCDF file ``path``."""
        import xarray as xr

        path = Path(path)
        with xr.open_zarr(store) as ds:
            encoding = {
                k: {"_FillValue": None} for k in ("time", "lon", "lat") if k in ds.variables
            }
            ds.to_netcdf(path, encoding=encoding)
        return path


# ---------------------------------------------------------------------------- metrics
def export_metrics(metrics: Any, path: str | Path) -> Path:
    """Write a metrics table (a DataFrame, or a mapping column → values) as CSV.

    A named or non-range index (e.g. gauge ids) is written as the first column.
    """
    import pandas as pd

    df = metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame(dict(metrics))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_index = df.index.name is not None or not isinstance(df.index, pd.RangeIndex)
    df.to_csv(path, index=keep_index)
    return path

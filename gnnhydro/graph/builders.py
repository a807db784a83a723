"""Builders: river networks from networkx, (Geo)DataFrames, RAPID, NWM RouteLink and NHM/PRMS
files; and back to networkx and GeoDataFrames. Every builder validates the network."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.graph.errors import (
    DuplicateIdError,
    EmptyNetworkError,
    SplitFractionError,
    UnknownDownstreamError,
    format_ids,
)
from gnnhydro.graph.river_graph import DEFAULT_OUTLET_MARKERS, RiverGraph, normalize_id

__all__ = [
    "from_edges",
    "from_networkx",
    "from_dataframe",
    "from_rapid",
    "from_routelink",
    "from_prms",
    "to_networkx",
    "to_geodataframe",
]


def _tensor(value: Any, dtype=None) -> Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(np.array(value, dtype=np.float64))
    return t.to(dtype or torch.get_default_dtype())


def from_edges(
    node_ids: Sequence[Hashable],
    downstream: Sequence[Any] | None = None,
    *,
    edges: Iterable[tuple[Hashable, Hashable]] | None = None,
    weights: Sequence[float] | None = None,
    outlet_markers: Sequence[Any] = DEFAULT_OUTLET_MARKERS,
    unknown_downstream: str = "raise",
    area_km2: Any = None,
    length_m: Any = None,
    slope: Any = None,
    pos: Any = None,
    x: Any = None,
    x_names: Sequence[str] | None = None,
    geometry: Sequence[Any] | None = None,
    crs: str | None = None,
    **attrs: Any,
) -> RiverGraph:
    """Build a :class:`RiverGraph` from ids and either one downstream id per node or edge pairs.

    Args:
        node_ids: the ids, in node order.
        downstream: per node, the id it drains into; a value in ``outlet_markers`` (NaN, None,
            empty, -1, 0 by default) marks an outlet unless it is itself a node id.
        edges: alternatively ``(upstream_id, downstream_id)`` pairs (DAGs with bifurcations).
        weights: split fraction per edge in ``edges`` (required where a node has several).
        unknown_downstream: ``"raise"`` (default) or ``"outlet"``: what a downstream id that is
            not a node of the network means.
        area_km2, length_m, slope: per-node ``[N]`` local area [km²], length [m], slope [m/m].
        pos: ``[N, 2]`` (lon, lat) in degrees. x / x_names: static attributes ``[N, F]``.
        geometry / crs: source geometries kept for export.
    """
    ids = [normalize_id(i) for i in node_ids]
    if not ids:
        raise EmptyNetworkError("river network is empty: it has no nodes")
    lookup: dict = {}
    dups = []
    for k, i in enumerate(ids):
        if i in lookup:
            dups.append(i)
        else:
            lookup[i] = k
    if dups:
        raise DuplicateIdError(f"duplicate node ids: {format_ids(sorted(set(dups), key=str))}")
    if (downstream is None) == (edges is None):
        raise ValueError("give exactly one of `downstream` (one id per node) or `edges` (pairs)")
    markers = {normalize_id(m) for m in outlet_markers}
    src: list[int] = []
    dst: list[int] = []
    unknown: list[tuple] = []
    if downstream is not None:
        if len(downstream) != len(ids):
            raise ValueError(f"downstream has {len(downstream)} entries for {len(ids)} node ids")
        pairs = zip(ids, downstream, strict=True)
    else:
        pairs = ((normalize_id(u), d) for u, d in edges)
    edge_w: list[float] = []
    weights_list = list(weights) if weights is not None else None
    for k, (up, down) in enumerate(pairs):
        d = normalize_id(down)
        if d in lookup:
            if up not in lookup:
                raise UnknownDownstreamError(
                    f"edge upstream id {up!r} is not a node of the network"
                )
            src.append(lookup[up])
            dst.append(lookup[d])
            edge_w.append(1.0 if weights_list is None else float(weights_list[k]))
        elif d is None or (isinstance(d, float) and math.isnan(d)) or d in markers:
            continue
        elif unknown_downstream == "outlet":
            continue
        elif unknown_downstream == "raise":
            unknown.append((up, d))
        else:
            raise ValueError(
                f"unknown_downstream must be 'raise' or 'outlet', got {unknown_downstream!r}"
            )
    if unknown:
        detail = ", ".join(f"{u!r} -> {d!r}" for u, d in unknown[:20])
        raise UnknownDownstreamError(
            f"{len(unknown)} downstream id(s) not in the network: {format_ids([d for _, d in unknown])} "
            f"(from {detail}); pass unknown_downstream='outlet' to treat them as outlets"
        )
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    if weights_list is None and edge_index.numel():
        outdeg = torch.bincount(edge_index[0], minlength=len(ids))
        multi = (outdeg > 1).nonzero().flatten()
        if multi.numel():
            raise SplitFractionError(
                f"ids {format_ids([ids[int(i)] for i in multi])} have several downstream nodes but no "
                "split fractions were given (pass `weights`, or edge attribute 'weight')"
            )
    pos_t = _tensor(pos)
    return RiverGraph(
        edge_index=edge_index,
        edge_weight=torch.tensor(edge_w, dtype=torch.get_default_dtype()),
        node_id=ids,
        x=_tensor(x),
        x_names=x_names,
        area_km2=_tensor(area_km2),
        length_m=_tensor(length_m),
        slope=_tensor(slope),
        pos=pos_t,
        geometry=geometry,
        crs=crs,
        **attrs,
    )


def _node_attr(G: Any, names: Sequence[str]) -> np.ndarray | None:
    for name in names:
        values = [G.nodes[n].get(name) for n in G.nodes]
        if all(v is not None for v in values):
            return np.asarray(values, dtype=np.float64)
    return None


def from_networkx(
    G: Any, *, weight_attr: str = "weight", attr_names: Sequence[str] | None = None, **kwargs: Any
) -> RiverGraph:
    """From a ``networkx.DiGraph`` with edges upstream→downstream; node order is ``list(G.nodes)``.

    Node attributes ``area_km2``, ``length_m``, ``slope`` and ``pos`` (lon, lat) (or ``lon``/``lat``)
    are picked up when every node has them; ``attr_names`` lists node attributes to stack into
    ``x``. Edge attribute ``weight_attr`` gives split fractions.
    """
    import networkx as nx

    if not isinstance(G, nx.DiGraph):
        raise TypeError(
            f"from_networkx needs a networkx.DiGraph (edges upstream→downstream), got {type(G).__name__}"
        )
    nodes = list(G.nodes)
    edges = list(G.edges(data=True))
    has_w = [weight_attr in d for _, _, d in edges]
    weights = [d.get(weight_attr, 1.0) for _, _, d in edges] if any(has_w) else None
    pos = None
    if all("pos" in G.nodes[n] for n in nodes) and nodes:
        pos = np.asarray([G.nodes[n]["pos"] for n in nodes], dtype=np.float64)
    else:
        lon, lat = _node_attr(G, ["lon"]), _node_attr(G, ["lat"])
        if lon is not None and lat is not None:
            pos = np.stack([lon, lat], axis=1)
    x = None
    if attr_names:
        x = np.stack(
            [np.asarray([G.nodes[n][a] for n in nodes], dtype=np.float64) for a in attr_names], 1
        )
    return from_edges(
        nodes,
        edges=[(u, v) for u, v, _ in edges],
        weights=weights,
        area_km2=_node_attr(G, ["area_km2"]),
        length_m=_node_attr(G, ["length_m"]),
        slope=_node_attr(G, ["slope"]),
        pos=pos,
        x=x,
        x_names=list(attr_names) if attr_names else None,
        **kwargs,
    )


def from_dataframe(
    df: Any,
    id_col: str = "id",
    downstream_col: str = "downstream_id",
    area_col: str | None = None,
    *,
    length_col: str | None = None,
    slope_col: str | None = None,
    lon_col: str | None = None,
    lat_col: str | None = None,
    attr_cols: Sequence[str] | None = None,
    outlet_markers: Sequence[Any] = DEFAULT_OUTLET_MARKERS,
    unknown_downstream: str = "raise",
    **kwargs: Any,
) -> RiverGraph:
    """From a pandas DataFrame or GeoDataFrame with one row per node; node order is row order.

    Args:
        id_col / downstream_col: the id and the id it drains into (outlet markers: NaN, None,
            empty, -1, 0 by default; an id not in the table raises unless
            ``unknown_downstream="outlet"``).
        area_col: local contributing area [km²]; length_col [m]; slope_col [m/m];
            lon_col/lat_col [degrees].
        attr_cols: columns stacked into ``x`` (static attributes), named in ``x_names``.

    A GeoDataFrame's geometry and CRS are kept for export.
    """
    for col in [
        id_col,
        downstream_col,
        area_col,
        length_col,
        slope_col,
        lon_col,
        lat_col,
        *(attr_cols or []),
    ]:
        if col is not None and col not in df.columns:
            raise KeyError(f"column {col!r} not in the table; columns are {list(df.columns)}")
    geometry, crs = None, None
    if hasattr(df, "geometry") and getattr(df, "_geometry_column_name", None) in df.columns:
        geometry = list(df.geometry)
        crs = df.crs.to_string() if df.crs is not None else None

    def col(name):
        return None if name is None else df[name].to_numpy(dtype=np.float64)

    pos = None
    if lon_col is not None and lat_col is not None:
        pos = np.stack([col(lon_col), col(lat_col)], axis=1)
    x = None
    if attr_cols:
        x = df[list(attr_cols)].to_numpy(dtype=np.float64)
    return from_edges(
        df[id_col].tolist(),
        downstream=df[downstream_col].tolist(),
        outlet_markers=outlet_markers,
        unknown_downstream=unknown_downstream,
        area_km2=col(area_col),
        length_m=col(length_col),
        slope=col(slope_col),
        pos=pos,
        x=x,
        x_names=list(attr_cols) if attr_cols else None,
        geometry=geometry,
        crs=crs,
        **kwargs,
    )


def from_rapid(path: str | Path, *, unknown_downstream: str = "raise", **kwargs: Any) -> RiverGraph:
    """From a RAPID ``rapid_connect.csv`` (no header: id, downstream id (0 = outlet), number of
    upstream reaches, upstream ids...). Node order is row order."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"RAPID connectivity file not found: {path}")
    rows = pd.read_csv(path, header=None, usecols=[0, 1], dtype=np.int64)
    return from_edges(
        rows[0].tolist(),
        downstream=rows[1].tolist(),
        outlet_markers=(0,),
        unknown_downstream=unknown_downstream,
        **kwargs,
    )


def from_routelink(
    path: str | Path, *, unknown_downstream: str = "outlet", **kwargs: Any
) -> RiverGraph:
    """From a US National Water Model RouteLink netCDF (``link``, ``to``; ``to = 0`` = outlet).

    Keeps ``Length`` as ``length_m`` [m], ``So`` as ``slope`` [m/m], (lon, lat) as ``pos``, and
    the NWM Muskingum parameters ``MusK`` [s] / ``MusX`` [-], Manning's ``n``, channel geometry
    and the ``gages`` strings as extra attributes (``musk_s``, ``musx``, ``mannings_n``,
    ``bottom_width_m``, ``side_slope``, ``gages``). A ``to`` not in the file (a domain cut out of
    CONUS) is an outlet by default.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"RouteLink file not found: {path}")
    with xr.open_dataset(path, decode_times=False) as ds:
        for var in ("link", "to"):
            if var not in ds:
                raise KeyError(
                    f"{path}: RouteLink variable {var!r} missing; has {list(ds.variables)}"
                )

        def get(name):
            return ds[name].values.astype(np.float64) if name in ds else None

        link = ds["link"].values.astype(np.int64)
        to = ds["to"].values.astype(np.int64)
        lon, lat = get("lon"), get("lat")
        length, slope = get("Length"), get("So")
        extra = {}
        for src_name, dst_name in (
            ("MusK", "musk_s"),
            ("MusX", "musx"),
            ("n", "mannings_n"),
            ("BtmWdth", "bottom_width_m"),
            ("ChSlp", "side_slope"),
        ):
            v = get(src_name)
            if v is not None:
                extra[dst_name] = torch.as_tensor(v, dtype=torch.get_default_dtype())
        if "gages" in ds:
            extra["gages"] = [normalize_id(g) for g in ds["gages"].values]
    return from_edges(
        link.tolist(),
        downstream=to.tolist(),
        outlet_markers=(0,),
        unknown_downstream=unknown_downstream,
        length_m=length,
        slope=slope,
        pos=np.stack([lon, lat], 1) if lon is not None and lat is not None else None,
        crs="EPSG:4326" if lon is not None else None,
        **extra,
        **kwargs,
    )


def from_prms(path: str | Path, *, use_nhm_ids: bool = True, **kwargs: Any) -> RiverGraph:
    """From NHM/PRMS segment parameters (netCDF with ``tosegment``: 1-based, 0 = outlet).

    Node order is segment order; ids are ``nhm_seg`` when present (else 1-based segment
    numbers). Keeps ``seg_length`` [m] as ``length_m``, ``seg_slope`` as ``slope``, and
    ``seg_cum_area`` [acres] (when present) converted to ``cum_area_km2``. The 1-based local
    segment number is kept as ``segment_number``.
    """
    import xarray as xr

    from gnnhydro.units import acres_to_km2

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"PRMS parameter file not found: {path}")
    with xr.open_dataset(path, decode_times=False) as ds:
        if "tosegment" not in ds:
            raise KeyError(f"{path}: PRMS variable 'tosegment' missing; has {list(ds.variables)}")
        tosegment = ds["tosegment"].values.astype(np.int64)
        n = tosegment.size
        if use_nhm_ids and "nhm_seg" in ds:
            ids = ds["nhm_seg"].values.astype(np.int64).tolist()
        else:
            ids = list(range(1, n + 1))
        bad = np.flatnonzero((tosegment < 0) | (tosegment > n))
        if bad.size:
            raise UnknownDownstreamError(
                f"{path}: tosegment refers to segments outside 1..{n} for segments "
                f"{format_ids([ids[i] for i in bad])} (values {format_ids(tosegment[bad].tolist())})"
            )
        downstream = [ids[t - 1] if t > 0 else None for t in tosegment.tolist()]

        def get(name):
            return ds[name].values.astype(np.float64) if name in ds else None

        extra: dict[str, Any] = {"segment_number": torch.arange(1, n + 1)}
        cum = get("seg_cum_area")
        if cum is not None:
            extra["cum_area_km2"] = torch.as_tensor(
                acres_to_km2(cum), dtype=torch.get_default_dtype()
            )
        length, slope = get("seg_length"), get("seg_slope")
    return from_edges(
        ids,
        downstream=downstream,
        outlet_markers=(),
        length_m=length,
        slope=slope,
        **extra,
        **kwargs,
    )


def to_networkx(graph: RiverGraph) -> Any:
    """A ``networkx.DiGraph`` with the original ids as nodes, edges upstream→downstream carrying
    ``weight`` (split fraction), and node attributes area_km2/length_m/slope/pos when known."""
    import networkx as nx

    G = nx.DiGraph()
    ids = graph.node_id
    per_node = {
        name: getattr(graph, name, None) for name in ("area_km2", "length_m", "slope", "pos")
    }
    for k, i in enumerate(ids):
        attrs = {}
        for name, value in per_node.items():
            if value is not None:
                attrs[name] = value[k].tolist()
        G.add_node(i, **attrs)
    w = graph.edge_weight
    for e, (u, v) in enumerate(graph.edge_index.t().tolist()):
        G.add_edge(ids[u], ids[v], weight=float(w[e]) if w is not None else 1.0)
    return G


def to_geodataframe(graph: RiverGraph, columns: dict[str, Any] | None = None) -> Any:
    """A GeoDataFrame, one row per node in node order: ``id``, ``downstream_id`` (the primary
    downstream id; None at outlets), known per-node attributes, static attributes ``x``, any
    extra ``columns`` (name → ``[N]`` values); geometry from the source when known, otherwise
    points at (lon, lat) with CRS EPSG:4326, otherwise empty."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point

    n = graph.num_nodes
    ids = graph.node_id
    downstream: list[Any] = [None] * n
    w = graph.edge_weight if graph.edge_weight is not None else torch.ones(graph.edge_index.size(1))
    best = [-1.0] * n
    for e, (u, v) in enumerate(graph.edge_index.t().tolist()):
        if float(w[e]) > best[u]:
            best[u] = float(w[e])
            downstream[u] = ids[v]
    data: dict[str, Any] = {"id": ids, "downstream_id": pd.array(downstream, dtype=object)}
    for name in ("area_km2", "length_m", "slope"):
        value = getattr(graph, name, None)
        if value is not None:
            data[name] = value.detach().cpu().numpy()
    pos = getattr(graph, "pos", None)
    if pos is not None:
        data["lon"] = pos[:, 0].detach().cpu().numpy()
        data["lat"] = pos[:, 1].detach().cpu().numpy()
    x = getattr(graph, "x", None)
    names = getattr(graph, "x_names", None)
    if x is not None and x.dim() == 2:
        names = names or [f"x{j}" for j in range(x.size(1))]
        for j, name in enumerate(names):
            data[name] = x[:, j].detach().cpu().numpy()
    for name, values in (columns or {}).items():
        values = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
        if values.shape[0] != n:
            raise ValueError(f"column {name!r} has {values.shape[0]} values for {n} nodes")
        data[name] = values
    geometry = getattr(graph, "geometry", None)
    crs = getattr(graph, "crs", None)
    if geometry is None and pos is not None:
        geometry = [Point(float(a), float(b)) for a, b in pos.detach().cpu().tolist()]
        crs = crs or "EPSG:4326"
    return gpd.GeoDataFrame(
        data, geometry=geometry if geometry is not None else [None] * n, crs=crs
    )

"""A river dataset from plain files: a node table and a (time, id) time-series file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnhydro.datasets.base import RiverDataset
from gnnhydro.datasets.forcing import OBS_PREFIX, ForcingReader, warn_no_temperature
from gnnhydro.graph import RiverGraph
from gnnhydro.graph.errors import format_ids

__all__ = ["GenericRiverDataset", "read_node_table", "reservoir_columns", "NODE_COLUMNS"]

#: Optional reservoir columns of the node table: graph attributes (``reservoir_mask``,
#: ``reservoir_capacity_m3``, ``reservoir_area_km2``), never static attributes
RESERVOIR_COLUMNS = ("reservoir", "reservoir_capacity_m3", "reservoir_area_km2")
#: Columns of the node table with a fixed meaning; every other numeric column is an attribute.
NODE_COLUMNS = (
    "id",
    "downstream_id",
    "area_km2",
    "length_m",
    "slope",
    "lat",
    "lon",
    *RESERVOIR_COLUMNS,
)
_NODE_FILES = ("nodes.csv", "nodes.parquet", "nodes.gpkg")
_SERIES_FILES = ("timeseries.nc", "timeseries.zarr")


def read_node_table(path: str | Path) -> Any:
    """Read ``nodes.csv`` / ``.parquet`` / ``.gpkg``; ``id`` and ``downstream_id`` as strings
    (empty = outlet)."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype={"id": str, "downstream_id": str})
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".gpkg":
        import geopandas as gpd

        df = gpd.read_file(path)
    else:
        raise ValueError(
            f"node table {path}: unsupported format {path.suffix!r} (csv, parquet, gpkg)"
        )
    for col in ("id", "downstream_id"):
        if col not in df.columns:
            raise ValueError(
                f"node table {path}: column {col!r} missing; columns are {list(df.columns)}"
            )
    from gnnhydro.graph.river_graph import normalize_id

    def as_str(v: Any) -> Any:
        v = normalize_id(v)
        if v is None or v == "":
            return None
        v = str(v)
        return (
            v[: v.index(".")] if re.fullmatch(r"-?\d+\.0+", v) else v
        )  # "103.0" written by pandas

    df = df.copy()
    df["id"] = [as_str(v) for v in df["id"]]
    df["downstream_id"] = [as_str(v) for v in df["downstream_id"]]
    empty = [k for k, v in enumerate(df["id"]) if v is None]
    if empty:
        raise ValueError(f"node table {path}: empty id in row(s) {empty[:20]}")
    return df


def reservoir_columns(df: Any, what: str = "node table") -> dict[str, np.ndarray]:
    """The reservoir columns of a node table, checked: ``reservoir_mask`` ``[N]`` bool (column
    ``reservoir``: 0/1, empty = 0), ``reservoir_capacity_m3`` [m³] and ``reservoir_area_km2``
    [km²] ``[N]`` float64 (NaN where empty) — ``{}`` without a ``reservoir`` column.

    Raises a one-line ``ValueError`` naming the column and the ids: a ``reservoir`` value other
    than 0/1; capacity/area columns without a ``reservoir`` column; reservoir rows without a
    ``reservoir_capacity_m3`` column, or with an empty, non-numeric or non-positive capacity, or
    a negative area.
    """
    import pandas as pd

    ids = df["id"].tolist()

    def bad_ids(bad: np.ndarray) -> str:
        return format_ids([ids[i] for i in np.flatnonzero(bad)])

    if "reservoir" not in df.columns:
        extra = [c for c in RESERVOIR_COLUMNS[1:] if c in df.columns]
        if extra:
            raise ValueError(
                f"{what}: column(s) {extra} need a 'reservoir' column (1 = reservoir, 0 = reach)"
            )
        return {}
    raw = df["reservoir"]
    flag = pd.to_numeric(raw.map(lambda v: int(v) if isinstance(v, bool) else v), errors="coerce")
    flag = np.array(flag, dtype=np.float64)
    empty = np.asarray(raw.isna())
    flag[empty] = 0.0
    bad = ~np.isin(flag, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"{what}: column 'reservoir' must be 0 or 1, got {sorted({str(v) for v in raw[bad]})} "
            f"at ids {bad_ids(bad)}"
        )
    mask = flag == 1.0
    out: dict[str, np.ndarray] = {"reservoir_mask": mask}
    for col in RESERVOIR_COLUMNS[1:]:
        if col in df.columns:
            out[col] = np.array(pd.to_numeric(df[col], errors="coerce"), dtype=np.float64)
    if mask.any() and "reservoir_capacity_m3" not in out:
        raise ValueError(
            f"{what}: column 'reservoir_capacity_m3' (m³) missing; it is required for the "
            f"reservoir rows (ids {bad_ids(mask)})"
        )
    if "reservoir_capacity_m3" in out:
        cap = out["reservoir_capacity_m3"]
        bad = mask & ~(cap > 0)  # NaN (empty / not a number) too
        if bad.any():
            raise ValueError(
                f"{what}: column 'reservoir_capacity_m3' must be a positive number (m³) at "
                f"reservoir ids {bad_ids(bad)}"
            )
    if "reservoir_area_km2" in out:
        bad = mask & (out["reservoir_area_km2"] < 0)
        if bad.any():
            raise ValueError(
                f"{what}: column 'reservoir_area_km2' is negative at reservoir ids {bad_ids(bad)}"
            )
    return out


class GenericRiverDataset(RiverDataset):
    r"""A river network and its time series from plain files (one item).

    Layout of ``root/raw/``:

    * ``nodes.csv`` (or ``nodes.parquet`` / ``nodes.gpkg``): one row per node: ``id``,
      ``downstream_id`` (empty at outlets; ``0``/``-1`` also mean outlet unless they are ids),
      ``area_km2`` (local contributing area, km²), optional ``length_m`` [m], ``slope`` [m/m],
      ``lat``/``lon`` [degrees]. Every other numeric column is a static attribute (``x``); its
      units may be given in an optional ``attribute_units.json`` (``{"column": "unit"}``).
      Ids are handled as strings. Optional reservoir columns (:func:`reservoir_columns`):
      ``reservoir`` (1 = reservoir, 0 or empty = plain reach), ``reservoir_capacity_m3`` [m³]
      (required at reservoir rows when any row is one; may be empty elsewhere) and
      ``reservoir_area_km2`` [km²]; they become the graph attributes ``reservoir_mask`` (bool),
      ``reservoir_capacity_m3`` and ``reservoir_area_km2`` (NaN where empty), not attributes
      ``x`` (``model.routing.reservoir``).
    * ``timeseries.nc`` (or ``timeseries.zarr``): an xarray Dataset with dims ``(time, id)``:
      ``precipitation`` and ``pet`` [mm/day or mm per step], optional ``temperature`` [°C] and
      ``discharge`` [m³/s] (NaN = missing; gauges are nodes with any observation). ``units``
      attributes are honoured (``in``, ``degF``, ``K``, ``ft3 s-1``, rates per day/hour/second)
      and unknown units rejected; without a ``units`` attribute the canonical unit is assumed.
      Without ``temperature``, ``forcing_names`` is ``["precipitation", "pet"]`` (a warning
      says so): runoff models with a snow routine run without snow.

    The network may be a tree (or forest) or isolated catchments: every node with an empty
    ``downstream_id`` is its own outlet, so a table of lumped catchments has no edges at all.

    Every problem raises a ``ValueError`` naming it: ids of the series not in the network or
    the reverse, unknown downstream ids, cycles, negative/NaN areas, NaN forcing (variable, ids,
    first time), negative precipitation/PET (ids), missing variables, unknown units, time gaps
    (the first one). A temperature that looks like kelvin or °F (no or wrong ``units``) warns.

    Args:
        root: dataset root.
        lazy: keep forcing on disk: items carry ``time`` but no ``forcing``/``q_obs``; use
            :attr:`reader` (a :class:`ForcingReader`), e.g. ``TimeWindows(..., reader=ds.reader)``,
            to read one window at a time.
        extra_forcing: further ``(time, id)`` variables to stack into ``forcing`` (canonical
            units required, see :data:`~gnnhydro.datasets.forcing.CANONICAL_UNITS`).
        transform / pre_transform / pre_filter / force_reload: see :class:`RiverDataset`.
    """

    name = "generic"
    processed_version = 1  # 1: the reservoir columns of nodes.csv as graph attributes

    def __init__(
        self,
        root: str | Path,
        lazy: bool = False,
        extra_forcing: Sequence[str] = (),
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
    ) -> None:
        self.lazy = bool(lazy)
        self.extra_forcing = list(extra_forcing)
        self._reader: ForcingReader | None = None
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, source_dir)

    def config(self) -> dict[str, Any]:
        return {
            "lazy": self.lazy,
            "extra_forcing": self.extra_forcing,
            "files": self.raw_file_names,
        }

    def _find(self, names: Sequence[str]) -> str:
        for n in names:
            if (Path(self.raw_dir) / n).exists():
                return n
        return names[0]

    @property
    def raw_file_names(self) -> list[str]:
        return [self._find(_NODE_FILES), self._find(_SERIES_FILES)]

    def download(self) -> None:
        if self.source_dir is not None:
            return super().download()
        raise FileNotFoundError(
            f"GenericRiverDataset: put the node table ({' / '.join(_NODE_FILES)}) and the time series "
            f"({' / '.join(_SERIES_FILES)}) into {self.raw_dir}"
        )

    def check_forcing(self, graphs: list[RiverGraph]) -> None:
        """Nothing more to do: the :class:`ForcingReader` checked the forcing while reading it,
        in the file's own units (eager and lazy alike)."""

    # ------------------------------------------------------------------ reading
    def _series_variables(self, ds: Any, announce: bool) -> tuple[list[str], str | None]:
        forcing = (
            ["precipitation", "temperature", "pet"]
            if "temperature" in ds.data_vars
            else ["precipitation", "pet"]
        )
        if "temperature" not in ds.data_vars and announce:
            warn_no_temperature(f"GenericRiverDataset({self.root})")
        forcing += self.extra_forcing
        return forcing, ("discharge" if "discharge" in ds.data_vars else None)

    def _open_reader(
        self, node_ids: Sequence[str], check_nan: bool, observed: Sequence[str] = ()
    ) -> ForcingReader:
        from gnnhydro.datasets.forcing import open_timeseries

        path = Path(self.raw_dir) / self.raw_file_names[1]
        with open_timeseries(path) as ds:
            forcing, discharge = self._series_variables(ds, announce=check_nan)  # once, at build
        return ForcingReader(
            path,
            node_ids,
            forcing,
            discharge,
            ids_as_str=True,
            check_nan=check_nan,
            what=f"time series {path.name}",
            observed=observed,
        )

    @property
    def reader(self) -> ForcingReader:
        """The lazy :class:`ForcingReader` over ``raw/timeseries.*`` (node order of the graph)."""
        if self._reader is None:
            self._reader = self._open_reader(self._graphs[0].node_id, check_nan=False)
        return self._reader

    def build(self) -> list[RiverGraph]:
        path = Path(self.raw_dir) / self.raw_file_names[0]
        df = read_node_table(path)
        reservoirs = reservoir_columns(df, f"node table {path.name}")
        present = [c for c in ("area_km2", "length_m", "slope", "lat", "lon") if c in df.columns]
        if "area_km2" not in df.columns:
            raise ValueError(f"node table {path.name}: column 'area_km2' (local area, km²) missing")
        skip = set(NODE_COLUMNS) | {"geometry"}
        attr_cols = [
            c
            for c in df.columns
            if c not in skip and np.issubdtype(np.asarray(df[c]).dtype, np.number)
        ]
        for col in present + attr_cols:
            values = np.asarray(df[col], dtype=np.float64)
            bad = np.flatnonzero(np.isnan(values))
            if bad.size:
                what = "area" if col == "area_km2" else "column"
                raise ValueError(
                    f"node table {path.name}: {what} {col!r} is NaN at ids {format_ids(df['id'].iloc[bad].tolist())}"
                )
        if (np.asarray(df["area_km2"], dtype=np.float64) < 0).any():
            bad = np.flatnonzero(np.asarray(df["area_km2"], dtype=np.float64) < 0)
            raise ValueError(
                f"node table {path.name}: negative area_km2 at ids {format_ids(df['id'].iloc[bad].tolist())}"
            )
        graph = RiverGraph.from_dataframe(
            df,
            id_col="id",
            downstream_col="downstream_id",
            area_col="area_km2",
            length_col="length_m" if "length_m" in df.columns else None,
            slope_col="slope" if "slope" in df.columns else None,
            lon_col="lon" if {"lon", "lat"} <= set(df.columns) else None,
            lat_col="lat" if {"lon", "lat"} <= set(df.columns) else None,
            attr_cols=attr_cols or None,
            outlet_markers=(None, "", "0", "-1"),
        )
        n = graph.num_nodes
        if graph.x is None:
            graph.x = torch.zeros(n, 0)
            graph.x_names = []
        graph.x = graph.x.float()
        units_file = Path(self.raw_dir) / "attribute_units.json"
        units = json.loads(units_file.read_text()) if units_file.exists() else {}
        graph.x_units = [str(units.get(c, "")) for c in graph.x_names]
        graph.area_km2 = graph.area_km2.float()
        if reservoirs:  # node order is row order; matched by id all the same
            row = {v: k for k, v in enumerate(df["id"].tolist())}
            order = [row[i] for i in graph.node_id]
            graph.reservoir_mask = torch.from_numpy(reservoirs.pop("reservoir_mask")[order])
            for name, values in reservoirs.items():
                graph[name] = torch.from_numpy(values[order]).float()

        reader = self._open_reader(graph.node_id, check_nan=True)
        observed = [v for v in reader.ds.data_vars if str(v).startswith(OBS_PREFIX)]
        if observed and self.lazy:
            raise ValueError(
                f"GenericRiverDataset({self.root}): observed variables {observed} are read into "
                "memory only; drop dataset.lazy or the obs_ variables"
            )
        graph.time = reader.time
        graph.step_seconds = float(reader.step_seconds)
        graph.forcing_names = list(reader.forcing_names)
        graph.forcing_units = list(reader.forcing_units)
        if self.lazy:
            graph.num_time_steps = reader.num_steps
            gauged = torch.from_numpy(reader.gauged())
        else:
            graph.forcing = reader.read()
            graph.q_obs = reader.read_discharge()
            if observed:  # observed fluxes/states (trainer.constraints), in canonical units
                obs = self._open_reader(graph.node_id, check_nan=False, observed=observed)
                for name in observed:
                    graph[name] = obs.read_observed(name)
                obs.close()
            gauged = ~torch.isnan(graph.q_obs).all(1)
        reader.close()
        graph.gauge_mask = gauged
        graph.gauge_index = gauged.nonzero().flatten()
        graph.gauge_id = [graph.node_id[int(i)] for i in graph.gauge_index]
        return [graph]

"""Lazy forcing: an xarray + dask reader that validates a (time, id) forcing file once and then
reads one time window at a time (netCDF or zarr), converting units on the fly."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.datasets._checks import (
    check_forcing_plausible,
    infer_step_seconds,
    match_ids,
    to_canonical,
)
from gnnhydro.graph.errors import format_ids

__all__ = ["ForcingReader", "open_timeseries", "CANONICAL_UNITS"]

#: Canonical units of the known time-series variables (depths are per time step).
CANONICAL_UNITS: dict[str, str] = {
    "precipitation": "mm",
    "pet": "mm",
    "temperature": "degC",
    "discharge": "m3/s",
    "lateral_inflow": "m3/s",
}

_UNIT_LABEL = {"mm": "mm/step", "degC": "degC", "m3/s": "m3/s"}
#: variables ``obs_<name>``: observations of a simulated flux or state (mm per step, or mm)
OBS_PREFIX = "obs_"


def canonical_unit(name: str) -> str | None:
    """The canonical unit of a time-series variable (``obs_<name>``: mm), or None if unknown."""
    return CANONICAL_UNITS.get(name) or ("mm" if name.startswith(OBS_PREFIX) else None)


def open_timeseries(path: str | Path, *, chunks: Any = {}) -> Any:  # noqa: B006
    """Open a netCDF file or zarr store lazily as an ``xarray.Dataset``: dask-backed in the
    file's own chunks (``chunks={}``, for reductions that stream chunk by chunk), or with
    ``chunks=None`` lazily indexed without dask (a small read touches only its own chunks)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"time-series file not found: {path}")
    if path.suffix == ".zarr" or (
        path.is_dir() and any((path / m).exists() for m in (".zgroup", "zarr.json"))
    ):
        return xr.open_zarr(path, chunks=chunks)
    return xr.open_dataset(path, chunks=chunks)


class ForcingReader:
    r"""Reads windows of ``(time, id)`` variables from a netCDF/zarr file without loading the rest.

    On construction it checks, without loading the data into memory at once (dask reductions
    stream over chunks): that the requested variables exist with dims exactly ``(time, id)`` in
    any order; that the file's ids and ``node_ids`` match both ways; that the time axis is
    regular (naming the first gap); that the units (``units`` attribute; absent = canonical)
    are known; and, with ``check_nan=True``, that forcing has no NaN/inf (naming the variable,
    the ids and the first time) and no physically implausible values (negative precipitation or
    PET raise, a temperature that looks like kelvin or °F warns; see
    :func:`~gnnhydro.datasets._checks.check_forcing_plausible`).

    Args:
        source: path to a netCDF file / zarr store, or an open ``xarray.Dataset``.
        node_ids: the network's node ids; windows come out in this order.
        forcing: names of forcing variables (each in :data:`CANONICAL_UNITS` or with
            ``extra_units``), stacked along the last axis.
        discharge: name of the observed-discharge variable (``None``: no observations).
        id_dim / time_dim: dimension names in the file.
        ids_as_str: compare ids as strings (generic datasets).
        check_nan: check the forcing for NaN/inf and implausible values on construction.

    Shapes:
        :meth:`read` → ``[N, stop - start, F]`` float32 (canonical units, depths per step);
        :meth:`read_discharge` → ``[N, stop - start]`` float32 m³/s (NaN = missing).
    """

    def __init__(
        self,
        source: Any,
        node_ids: Sequence[Hashable],
        forcing: Sequence[str] = ("precipitation", "temperature", "pet"),
        discharge: str | None = "discharge",
        *,
        id_dim: str = "id",
        time_dim: str = "time",
        ids_as_str: bool = False,
        check_nan: bool = True,
        what: str | None = None,
        observed: Sequence[str] = (),
    ) -> None:
        self.ds = open_timeseries(source) if isinstance(source, (str, Path)) else source
        # windows are read without dask: only the chunks a window touches are decoded
        self._direct = (
            open_timeseries(source, chunks=None) if isinstance(source, (str, Path)) else source
        )
        self.what = what or (
            f"time series {source}" if isinstance(source, (str, Path)) else "time series"
        )
        self.id_dim, self.time_dim = id_dim, time_dim
        self.forcing_names = list(forcing)
        self.discharge_name = discharge
        #: ``obs_<name>`` variables (observed fluxes/states, NaN = missing)
        self.observed_names = list(observed)
        ds = self.ds
        for dim in (id_dim, time_dim):
            if dim not in ds.dims:
                raise ValueError(
                    f"{self.what}: dimension {dim!r} missing; dims are {list(ds.dims)}"
                )
        needed = list(forcing) + ([discharge] if discharge is not None else [])
        needed += self.observed_names
        missing = [v for v in needed if v not in ds.data_vars]
        if missing:
            raise ValueError(
                f"{self.what}: variable(s) {missing} missing; it has {list(ds.data_vars)}"
            )
        for v in needed:
            if set(ds[v].dims) != {id_dim, time_dim}:
                raise ValueError(
                    f"{self.what}: variable {v!r} has dims {ds[v].dims}, expected ({time_dim!r}, {id_dim!r})"
                )
        file_ids = ds[id_dim].values.tolist()
        if ids_as_str:
            from gnnhydro.graph.river_graph import normalize_id

            file_ids = [str(normalize_id(i)) for i in file_ids]
            node_ids = [str(i) for i in node_ids]
        self.node_ids = list(node_ids)
        self.positions = match_ids(file_ids, self.node_ids, what=self.what)
        self._identity_order = bool(np.array_equal(self.positions, np.arange(len(self.positions))))
        self.time = np.asarray(ds[time_dim].values)
        if not np.issubdtype(self.time.dtype, np.datetime64):
            raise ValueError(
                f"{self.what}: coordinate {time_dim!r} is not a decodable date/time ({self.time.dtype})"
            )
        self.time = self.time.astype("datetime64[ns]")
        self.step_seconds = infer_step_seconds(self.time, what=self.what)
        self.units: dict[str, str | None] = {}
        for v in needed:
            units = ds[v].attrs.get("units")
            expected = canonical_unit(v)
            if expected is None:
                raise ValueError(
                    f"{self.what}: variable {v!r} has no known canonical unit; known variables: {sorted(CANONICAL_UNITS)}"
                )
            to_canonical(
                np.zeros(1), units, expected, variable=v, step_seconds=self.step_seconds
            )  # validate
            self.units[v] = units
        self.forcing_units = [_UNIT_LABEL[CANONICAL_UNITS[v]] for v in self.forcing_names]
        if check_nan:
            self.check_forcing_finite()
            self.check_forcing_values()

    @property
    def num_steps(self) -> int:
        return len(self.time)

    def check_forcing_finite(self) -> None:
        """Raise ``ValueError`` naming variable, ids and first time of any NaN/inf forcing value.

        Computed as dask reductions (chunk by chunk), so it never holds the whole array."""
        for v in self.forcing_names:
            da = self.ds[v]
            bad = ~np.isfinite(da)
            per_id = np.asarray(bad.any(self.time_dim).values)
            if not per_id.any():
                continue
            per_t = np.asarray(bad.any(self.id_dim).values)
            file_ids = self.ds[self.id_dim].values.tolist()
            bad_ids = [file_ids[i] for i in np.flatnonzero(per_id)]
            raise ValueError(
                f"{self.what}: forcing variable {v!r} has NaN/inf values at ids {format_ids(bad_ids)}; first at "
                f"time {self.time[int(np.argmax(per_t))]}. Forcing must be complete."
            )

    def check_forcing_values(self) -> None:
        """Physical plausibility of the forcing, naming network ids (per-id min/mean/max as dask
        reductions, one pass per variable, converted to canonical units: the conversions are
        increasing and affine, so they commute with these statistics)."""
        import xarray as xr

        for v in self.forcing_names:
            da = self.ds[v]
            stats = xr.Dataset(
                {
                    "min": da.min(self.time_dim),
                    "mean": da.mean(self.time_dim),
                    "max": da.max(self.time_dim),
                }
            ).compute()
            summary = {
                k: to_canonical(
                    np.asarray(stats[k].values, dtype=np.float64)[self.positions],
                    self.units[v],
                    CANONICAL_UNITS[v],
                    variable=v,
                    step_seconds=self.step_seconds,
                )
                for k in ("min", "mean", "max")
            }
            check_forcing_plausible(
                v, summary, ids=self.node_ids, what=self.what, units=self.units[v]
            )

    def _read(
        self, name: str, start: int, stop: int, nodes: np.ndarray | slice | None = None
    ) -> np.ndarray:
        if not 0 <= start < stop <= self.num_steps:
            raise ValueError(
                f"window [{start}, {stop}) outside the {self.num_steps} steps of {self.what}"
            )
        da = self._direct[name].isel({self.time_dim: slice(start, stop)})
        if nodes is not None:  # only these nodes (network order) are read from the file
            da = da.isel({self.id_dim: _contiguous(self.positions[nodes])})
        elif not self._identity_order:
            da = da.isel({self.id_dim: self.positions})
        # read in the file's own order, transpose in memory (a lazy transpose reads slowly)
        values = np.asarray(da.values, dtype=np.float64)
        if da.dims[0] != self.id_dim:
            values = values.T
        return to_canonical(
            values,
            self.units[name],
            canonical_unit(name),
            variable=name,
            step_seconds=self.step_seconds,
        )

    def read(self, start: int = 0, stop: int | None = None, nodes: Any = None) -> Tensor:
        """Forcing of steps ``[start, stop)`` as ``[N, stop - start, F]`` float32 (``[M, ...]``
        for the node indices ``nodes`` of the network — an index array or a slice — read alone
        from the file)."""
        stop = self.num_steps if stop is None else stop
        arrays = [self._read(v, start, stop, _indices(nodes)) for v in self.forcing_names]
        return torch.from_numpy(np.stack(arrays, axis=-1).astype(np.float32))

    def read_variable(
        self, name: str, start: int = 0, stop: int | None = None, nodes: Any = None
    ) -> Tensor:
        """One forcing variable of steps ``[start, stop)`` as ``[N, stop - start]`` float32, in
        the units :meth:`read` gives (``[M, ...]`` for the node indices ``nodes``)."""
        if name not in self.forcing_names:
            raise ValueError(f"forcing has no {name!r}; it has {self.forcing_names}")
        stop = self.num_steps if stop is None else stop
        return torch.from_numpy(self._read(name, start, stop, _indices(nodes)).astype(np.float32))

    def read_observed(self, name: str, start: int = 0, stop: int | None = None) -> Tensor:
        """Observations ``obs_<name>`` of steps ``[start, stop)`` as ``[N, stop - start]``
        float32 (mm per step for a rate, mm for a state; NaN = missing)."""
        if name not in self.observed_names:
            raise ValueError(
                f"{self.what}: no observed variable {name!r}; it has {self.observed_names}"
            )
        stop = self.num_steps if stop is None else stop
        return torch.from_numpy(self._read(name, start, stop).astype(np.float32))

    def read_discharge(self, start: int = 0, stop: int | None = None, nodes: Any = None) -> Tensor:
        """Observed discharge of steps ``[start, stop)`` as ``[N, stop - start]`` float32 m³/s
        (``[M, ...]`` for the node indices ``nodes``)."""
        stop = self.num_steps if stop is None else stop
        index = _indices(nodes)
        if self.discharge_name is None:
            count = len(np.arange(len(self.node_ids))[index if index is not None else slice(None)])
            return torch.full((count, stop - start), float("nan"))
        values = self._read(self.discharge_name, start, stop, index)
        return torch.from_numpy(values.astype(np.float32))

    def gauged(self) -> np.ndarray:
        """Bool ``[N]`` (network order): nodes with at least one observation (dask reduction)."""
        if self.discharge_name is None:
            return np.zeros(len(self.node_ids), dtype=bool)
        has = np.asarray(self.ds[self.discharge_name].notnull().any(self.time_dim).values)
        return has[self.positions]

    def fill(self, graph: Any, start: int, stop: int, nodes: Any = None) -> Any:
        """Set ``forcing`` (and ``q_obs`` when a discharge variable is read) of a window graph that
        covers steps ``[start, stop)`` of this file; ``nodes``: the network indices of the
        graph's nodes when it is a node subset (only those are read)."""
        graph.forcing = self.read(start, stop, nodes)
        graph.forcing_names = list(self.forcing_names)
        graph.forcing_units = list(self.forcing_units)
        if self.discharge_name is not None:
            graph.q_obs = self.read_discharge(start, stop, nodes)
        return graph

    def close(self) -> None:
        self.ds.close()
        self._direct.close()


def _indices(nodes: Any) -> np.ndarray | slice | None:
    if nodes is None or isinstance(nodes, slice):
        return nodes
    if isinstance(nodes, Tensor):
        nodes = nodes.cpu().numpy()
    return np.asarray(nodes, dtype=np.int64)


def _contiguous(positions: np.ndarray) -> np.ndarray | slice:
    """File positions as a slice when they are one ascending run (a contiguous read)."""
    if positions.size and np.all(np.diff(positions) == 1):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def warn_no_temperature(what: str) -> None:
    """The one warning for forcing without ``temperature`` (every dataset that can lack it)."""
    warnings.warn(
        f"{what}: no 'temperature' variable; forcing is precipitation and pet only, so runoff "
        "models with a snow routine (HBV) run without snow: all precipitation is liquid and "
        "nothing melts",
        UserWarning,
        stacklevel=3,
    )

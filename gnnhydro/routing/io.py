"""Checked readers of the routing file formats (one per format, used by the datasets and by the
``gnnhydro route`` command alike) and the RAPID-style ``Qout`` netCDF writer.

* RAPID (David et al. 2011): ``rapid_connect.csv`` (id, downstream id, ...), one-column CSVs
  ``k.csv`` [s] and ``x.csv`` [-] (:func:`read_rapid_column`, :func:`read_muskingum_kx`), and an
  ``m3_riv`` netCDF of lateral inflow *volumes* per time step [m³] on a ``rivid`` axis
  (:func:`read_m3_riv`). Output: ``Qout(time, rivid)`` [m³/s].
* NWM: ``RouteLink.nc`` (network, ``MusK`` [s], ``MusX`` [-]) and hourly ``CHRTOUT`` files with
  ``q_lateral`` [m³/s] per ``feature_id`` (:func:`read_chrtout`).

All inputs are matched to graph nodes by id, never by position; units are checked and
converted; time axes are sorted by the files' time and must have one constant step (a gap is an
error naming it). Time-valued parameters are returned in units of the input time step, ready for
:func:`gnnhydro.routing.route`. This module imports nothing of :mod:`gnnhydro.datasets`
(which re-exports its readers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.checks import infer_step_seconds, match_ids
from gnnhydro.graph.errors import format_ids
from gnnhydro.units import to_canonical

__all__ = [
    "RoutingInputs",
    "read_chrtout",
    "read_rapid_column",
    "read_muskingum_kx",
    "read_m3_riv",
    "read_rapid",
    "read_nwm",
    "write_qout",
    "route_files",
]

#: CHRTOUT variables that must be complete (finite everywhere): a lateral inflow with NaN cannot
#: be routed. ``streamflow`` may be NaN (NWM writes none at lake reaches).
CHRTOUT_COMPLETE = ("q_lateral",)


@dataclass
class RoutingInputs:
    """Everything :func:`gnnhydro.routing.route` needs for a real domain.

    Attributes:
        graph: the river network (node order = connectivity / RouteLink order).
        lateral: ``[N, T]`` lateral inflow [m³/s] in graph node order.
        params: ``{"k": [N] (input time steps), "x": [N]}`` Muskingum parameters.
        times: ``[T]`` numpy datetime64 of each step (end of step).
        step_seconds: length of one time step [s].
    """

    graph: object
    lateral: Tensor
    params: dict[str, Tensor]
    times: np.ndarray | None
    step_seconds: float


def read_chrtout(
    files: Sequence[str | Path],
    link: Sequence[int],
    variables: tuple[str, ...] = ("q_lateral", "streamflow"),
    *,
    step_seconds: float | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read NWM CHRTOUT files into ``[N, T]`` arrays in ``link`` order (matched by
    ``feature_id``), sorted by their ``time`` (not their names); units converted to m³/s.

    ``step_seconds`` (optional) is the expected time step; it is required to read one file.
    Raises ``ValueError`` naming feature ids not in the network (and network links absent),
    missing variables, units that are not a discharge, NaN/inf in :data:`CHRTOUT_COMPLETE`
    variables, and time gaps or duplicate times.

    Shapes: each array ``[N, T]`` (N = ``len(link)``, T = number of files); time ``[T]``
    datetime64[ns].
    """
    import xarray as xr

    if not files:
        raise ValueError("no CHRTOUT files found")
    if len(files) == 1 and step_seconds is None:
        raise ValueError(
            f"{Path(files[0]).name}: one CHRTOUT file, so the time step is unknown; pass "
            "step_seconds (or more files)"
        )
    times, columns = [], {v: [] for v in variables}
    for f in map(Path, files):
        with xr.open_dataset(f) as ds:
            missing = [v for v in (*variables, "feature_id", "time") if v not in ds.variables]
            if missing:
                raise ValueError(
                    f"{f.name}: variable(s) {missing} missing; it has {list(ds.variables)}"
                )
            fid = ds["feature_id"].values.tolist()
            pos = match_ids(fid, link, what=f"{f.name} feature_id")
            time_f = np.asarray(ds["time"].values).astype("datetime64[ns]").reshape(-1)[0]
            for v in variables:
                values = to_canonical(
                    np.asarray(ds[v].values, dtype=np.float64).reshape(-1),
                    ds[v].attrs.get("units"),
                    "m3/s",
                    variable=f"{f.name}:{v}",
                )
                if v in CHRTOUT_COMPLETE and not np.isfinite(values).all():
                    bad = [fid[i] for i in np.flatnonzero(~np.isfinite(values))]
                    raise ValueError(
                        f"{f.name}: {v} has NaN/inf at feature_id {format_ids(bad)} (time {time_f})"
                    )
                columns[v].append(values[pos])
            times.append(time_f)
    time = np.asarray(times, dtype="datetime64[ns]")
    order = np.argsort(time, kind="stable")
    time = time[order]
    infer_step_seconds(time, what="CHRTOUT files", step_seconds=step_seconds)
    return {v: np.stack(columns[v], 1)[:, order] for v in variables}, time


def read_rapid_column(path: str | Path, dtype: Any = np.float64) -> np.ndarray:
    """A one-column RAPID CSV (``riv_bas_id.csv``, ``k.csv``, ``x.csv``): no header, one value
    per line. Raises ``FileNotFoundError``, and ``ValueError`` naming the lines of NaN/inf values
    (float ``dtype``)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"RAPID file not found: {path}")
    values = pd.read_csv(path, header=None, usecols=[0]).iloc[:, 0].to_numpy()
    if (
        np.issubdtype(np.dtype(dtype), np.floating)
        and not np.isfinite(values.astype(np.float64)).all()
    ):
        raise ValueError(
            f"{path.name}: NaN/inf values at lines {(np.flatnonzero(~np.isfinite(values.astype(float))) + 1)[:20].tolist()}"
        )
    return values.astype(dtype)


def read_muskingum_kx(
    k_csv: str | Path, x_csv: str | Path, ids: Sequence[int], *, order: str
) -> tuple[np.ndarray, np.ndarray]:
    """RAPID Muskingum parameters ``k`` [s] and ``x`` [-], one value per reach of ``ids`` (in
    that order, named by ``order`` in errors, e.g. ``"riv_bas_id.csv"``).

    Raises ``ValueError`` on a count that differs from ``len(ids)``, ``k <= 0`` or ``x`` outside
    ``[0, 0.5]``, naming the reaches.

    Shapes: both ``[N]`` float64.
    """
    k = read_rapid_column(k_csv)
    x = read_rapid_column(x_csv)
    for path, values in ((k_csv, k), (x_csv, x)):
        if len(values) != len(ids):
            raise ValueError(
                f"{Path(path).name} has {len(values)} values for {len(ids)} reaches in {order}"
            )
    if (k <= 0).any():
        bad = [ids[i] for i in np.flatnonzero(k <= 0)]
        raise ValueError(
            f"{Path(k_csv).name}: non-positive Muskingum k at reaches {format_ids(bad)}"
        )
    if ((x < 0) | (x > 0.5)).any():
        bad = [ids[i] for i in np.flatnonzero((x < 0) | (x > 0.5))]
        raise ValueError(
            f"{Path(x_csv).name}: Muskingum x outside [0, 0.5] at reaches {format_ids(bad)}"
        )
    return k, x


def read_m3_riv(
    path: str | Path, *, start_time: Any = None, step_seconds: float | None = None
) -> tuple[np.ndarray, list[int], np.ndarray, float]:
    """Read a RAPID inflow file (``m3_riv`` [m³ per time step], dims ``(time, rivid)`` or the
    older ``(Time, COMID)``).

    Returns ``(volume [T, R] m³, river ids [R], time [T] datetime64, step [s])``. The time axis is
    the file's ``time`` coordinate (CF-decoded) or, without one, ``start_time + k·step_seconds``.
    Units ``m3`` (volume per step) or ``m3/s`` (converted to volumes). Raises ``ValueError`` on
    other units, time gaps and NaN/inf (naming the rivids).
    """
    import pandas as pd
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"RAPID inflow file not found: {path}")
    with xr.open_dataset(path) as ds:
        if "m3_riv" not in ds:
            raise ValueError(f"{path.name}: variable 'm3_riv' missing; it has {list(ds.data_vars)}")
        da = ds["m3_riv"]
        id_dim = next((d for d in ("rivid", "COMID") if d in da.dims), None)
        time_dim = next((d for d in ("time", "Time") if d in da.dims), None)
        if id_dim is None or time_dim is None or da.ndim != 2:
            raise ValueError(f"{path.name}: m3_riv has dims {da.dims}, expected (time, rivid)")
        units = str(da.attrs.get("units", "m3")).replace(" ", "").lower()
        volume = np.asarray(da.transpose(time_dim, id_dim).values, dtype=np.float64)
        ids = [
            int(i)
            for i in (ds[id_dim].values if id_dim in ds.variables else range(volume.shape[1]))
        ]
        t = ds[time_dim].values if time_dim in ds.variables else None
    if t is not None and np.issubdtype(np.asarray(t).dtype, np.datetime64):
        time = np.asarray(t).astype("datetime64[ns]")
    else:
        if start_time is None or step_seconds is None:
            raise ValueError(
                f"{path.name}: no decodable time coordinate; pass start_time= and step_seconds="
            )
        time = pd.date_range(
            pd.Timestamp(start_time),
            periods=volume.shape[0],
            freq=pd.Timedelta(seconds=step_seconds),
        ).to_numpy()
    step = infer_step_seconds(
        time, what=path.name, step_seconds=step_seconds if len(time) == 1 else None
    )
    if units in ("m3", "m^3"):
        pass
    elif units in ("m3/s", "m3s-1", "m^3/s"):
        volume = volume * step
    else:
        raise ValueError(
            f"{path.name}: m3_riv has unknown units {units!r}; expected 'm3' (volume per step)"
        )
    bad = ~np.isfinite(volume)
    if bad.any():
        cols = np.flatnonzero(bad.any(0))
        raise ValueError(
            f"{path.name}: m3_riv has NaN/inf at rivid {format_ids([ids[c] for c in cols])}; first at time "
            f"{time[int(np.argmax(bad.any(1)))]}"
        )
    return volume, ids, time, step


def read_rapid(
    connect_csv: str | Path,
    k_csv: str | Path,
    x_csv: str | Path,
    m3_riv_nc: str | Path,
    *,
    start_time: Any = None,
    step_seconds: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> RoutingInputs:
    """Read a RAPID domain: the network of ``rapid_connect.csv``, ``k`` [s] and ``x`` [-] in
    its order (:func:`read_muskingum_kx`), and the ``m3_riv`` volumes (:func:`read_m3_riv`:
    units and time axis checked; ``start_time``/``step_seconds`` for files without a time
    coordinate) matched by ``rivid``. Volumes [m³ per step] become discharge [m³/s]; ``k`` [s]
    becomes input time steps.

    Shapes: result ``lateral`` ``[N, T]``; params ``[N]``.
    """
    from gnnhydro.graph import RiverGraph

    graph = RiverGraph.from_rapid(connect_csv)
    ids = [int(i) for i in graph.node_id]
    k_s, x = read_muskingum_kx(k_csv, x_csv, ids, order=Path(connect_csv).name)
    volume, rivid, times, dt = read_m3_riv(
        m3_riv_nc, start_time=start_time, step_seconds=step_seconds
    )
    pos = match_ids(rivid, ids, what=f"{Path(m3_riv_nc).name} rivid")
    lateral = volume[:, pos].T / dt  # m³ per step → m³/s, [N, T]
    return RoutingInputs(
        graph=graph,
        lateral=torch.from_numpy(np.ascontiguousarray(lateral)).to(dtype),
        params={"k": torch.tensor(k_s / dt, dtype=dtype), "x": torch.tensor(x, dtype=dtype)},
        times=times,
        step_seconds=dt,
    )


def chrtout_files(chrtout: Sequence[str | Path] | str | Path) -> list[Path]:
    """CHRTOUT files of ``chrtout``: a list of files, one file, or a directory (its files with
    ``CHRTOUT`` in the name). Their order does not matter: :func:`read_chrtout` sorts by time."""
    if isinstance(chrtout, str | Path):
        path = Path(chrtout)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if "CHRTOUT" in p.name)
            if not files:
                raise ValueError(f"no CHRTOUT files found in {path}")
            return files
        return [path]
    return [Path(p) for p in chrtout]


def read_nwm(
    routelink: str | Path,
    chrtout: Sequence[str | Path] | str | Path,
    *,
    step_seconds: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> RoutingInputs:
    """Read an NWM domain: ``RouteLink.nc`` and ``CHRTOUT`` files (a list, one file, or a
    directory; see :func:`chrtout_files`) with ``q_lateral`` [m³/s], read by
    :func:`read_chrtout` (matched by ``feature_id``, units checked, sorted by time, gaps are an
    error). ``step_seconds`` is the expected step (required for a single file).

    Shapes: result ``lateral`` ``[N, T]`` (graph = RouteLink ``link`` order); params ``[N]``.
    """
    from gnnhydro.graph import RiverGraph

    graph = RiverGraph.from_routelink(routelink)
    musk = getattr(graph, "musk_s", None)
    musx = getattr(graph, "musx", None)
    if musk is None or musx is None:
        raise ValueError(f"{routelink}: RouteLink has no MusK/MusX")
    series, times = read_chrtout(
        chrtout_files(chrtout),
        [int(i) for i in graph.node_id],
        variables=("q_lateral",),
        step_seconds=step_seconds,
    )
    dt = infer_step_seconds(times, what="CHRTOUT files", step_seconds=step_seconds)
    musk = torch.as_tensor(musk, dtype=torch.float64)
    return RoutingInputs(
        graph=graph,
        lateral=torch.from_numpy(series["q_lateral"]).to(dtype),
        params={"k": (musk / dt).to(dtype), "x": torch.as_tensor(musx).to(dtype)},
        times=times,
        step_seconds=dt,
    )


def write_qout(
    path: str | Path,
    discharge: Tensor | np.ndarray,
    rivid: Sequence[int],
    times: np.ndarray | None = None,
    *,
    lat: Sequence[float] | None = None,
    lon: Sequence[float] | None = None,
) -> Path:
    """Write discharge as a RAPID-style CF netCDF ``Qout(time, rivid)`` [m³/s].

    Shapes: discharge ``[N, T]`` (graph node order, matching ``rivid``).
    """
    import xarray as xr

    q = discharge.detach().cpu().numpy() if isinstance(discharge, Tensor) else np.asarray(discharge)
    if q.ndim != 2 or q.shape[0] != len(rivid):
        raise ValueError(f"discharge must be [N, T] with N = {len(rivid)} reaches, got {q.shape}")
    T = q.shape[1]
    time = np.arange(T) if times is None else np.asarray(times)
    ds = xr.Dataset(
        {
            "Qout": (
                ("time", "rivid"),
                q.T.astype(np.float32),
                {
                    "long_name": "average river water discharge downstream of each river reach",
                    "units": "m3 s-1",
                    "coordinates": "lon lat",
                },
            )
        },
        coords={
            "rivid": (
                "rivid",
                np.asarray(rivid, dtype=np.int64),
                {"long_name": "unique identifier for each river reach", "cf_role": "timeseries_id"},
            ),
            "time": ("time", time),
        },
        attrs={"Conventions": "CF-1.6", "featureType": "timeSeries", "source": "gnnhydro.routing"},
    )
    if lat is not None and lon is not None:
        ds = ds.assign_coords(
            lat=("rivid", np.asarray(lat, np.float64)), lon=("rivid", np.asarray(lon, np.float64))
        )
    path = Path(path)
    ds.to_netcdf(path)
    return path


def route_files(
    *,
    out: str | Path,
    routelink: str | Path | None = None,
    chrtout: str | Path | None = None,
    rapid_connect: str | Path | None = None,
    k: str | Path | None = None,
    x: str | Path | None = None,
    inflow: str | Path | None = None,
    irf: str = "muskingum",
    substeps: int | str = 1,
) -> Path:
    """Route a real domain from files (the ``gnnhydro route`` command).

    Either an NWM domain (``routelink`` + ``chrtout``: a directory or a glob of CHRTOUT files,
    ``q_lateral`` m³/s, Muskingum k/x from RouteLink; :func:`read_nwm`) written as CF-1.8
    ``timeSeries`` netCDF, or a RAPID domain (``rapid_connect``, ``k``, ``x``, ``inflow`` =
    m3_riv netCDF; :func:`read_rapid`) written as RAPID ``Qout(time, rivid)`` netCDF. Invalid
    files raise the checked readers' ``ValueError`` (exit status 2 from the CLI). Muskingum parameters come from the files, so ``irf`` must be
    ``muskingum``.
    """
    import glob

    from gnnhydro.routing.lti import parse_substeps, route

    if irf != "muskingum":
        raise ValueError(
            f"routing from files takes Muskingum k, x from the files; irf={irf!r} is not supported"
        )
    if out is None:
        raise ValueError("route needs out=PATH (the netCDF file to write)")
    if routelink is not None:
        if chrtout is None:
            raise ValueError("an NWM domain needs chrtout=DIR or a glob of CHRTOUT files")
        files: object = chrtout
        if any(ch in str(chrtout) for ch in "*?["):
            files = sorted(glob.glob(str(chrtout)))
            if not files:
                raise FileNotFoundError(f"no CHRTOUT files match {chrtout!r}")
        inputs = read_nwm(routelink, files)
    elif rapid_connect is not None:
        missing = [
            name for name, value in (("k", k), ("x", x), ("inflow", inflow)) if value is None
        ]
        if missing:
            raise ValueError(f"a RAPID domain needs {missing} (k=PATH x=PATH inflow=m3_riv.nc)")
        inputs = read_rapid(rapid_connect, k, x, inflow)
    else:
        raise ValueError(
            "give routelink=... chrtout=... (NWM) or rapid_connect=... k=... x=... inflow=... (RAPID)"
        )
    discharge = route(
        inputs.lateral,
        inputs.graph,
        irf="muskingum",
        params=inputs.params,
        substeps=parse_substeps(substeps),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if routelink is not None:
        from gnnhydro.export import export_discharge

        times = inputs.times if inputs.times is not None else np.arange(discharge.shape[-1])
        return export_discharge(inputs.graph, discharge, times, out)
    return write_qout(out, discharge, inputs.graph.node_id, inputs.times)

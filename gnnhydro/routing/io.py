"""Routing I/O: RAPID and US National Water Model inputs, RAPID-style ``Qout`` netCDF output.

* RAPID (David et al. 2011): ``rapid_connect.csv`` (id, downstream id, ...), ``k.csv`` [s] and
  ``x.csv`` [-] (one value per reach, connectivity order), and an ``m3_riv`` netCDF of lateral
  inflow *volumes* per time step [m³] on a ``rivid`` axis. Output: ``Qout(time, rivid)`` [m³/s].
* NWM: ``RouteLink.nc`` (network, ``MusK`` [s], ``MusX`` [-]) and ``CHRTOUT`` files with
  ``q_lateral`` [m³/s] per ``feature_id``.

All inputs are matched to graph nodes by id, never by position. Time-valued parameters are
returned in units of the input time step, ready for :func:`gnnhydro.routing.route`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["RoutingInputs", "read_rapid", "read_nwm", "write_qout"]


@dataclass
class RoutingInputs:
    """Everything :func:`gnnhydro.routing.route` needs for a real domain.

    Attributes:
        graph: the river network (node order = connectivity / RouteLink order).
        lateral: ``[N, T]`` lateral inflow [m³/s] in graph node order.
        params: ``{"k": [N] (input time steps), "x": [N]}`` Muskingum parameters.
        times: ``[T]`` numpy datetime64 (or float seconds) of each step (end of step), or None.
        step_seconds: length of one time step [s].
    """

    graph: object
    lateral: Tensor
    params: dict[str, Tensor]
    times: np.ndarray | None
    step_seconds: float


def _align(ids_file: np.ndarray, values: np.ndarray, graph, what: str) -> np.ndarray:
    """Reorder ``values [T, M]`` given on ``ids_file`` to graph node order (missing → error)."""
    idx = graph.index_of([int(i) for i in ids_file])  # raises ValueError naming unknown ids
    out = np.zeros((values.shape[0], graph.num_nodes), dtype=np.float64)
    out[:, idx.numpy()] = values
    covered = np.zeros(graph.num_nodes, dtype=bool)
    covered[idx.numpy()] = True
    if not covered.all():
        missing = [graph.node_id[i] for i in np.flatnonzero(~covered)[:20]]
        raise ValueError(f"{what}: no values for {int((~covered).sum())} reach(es), ids {missing}")
    return out


def _step_seconds(times: np.ndarray | None, given: float | None, what: str) -> float:
    if given is not None:
        return float(given)
    if times is None or len(times) < 2:
        raise ValueError(f"{what}: cannot infer the time step; pass step_seconds")
    t = np.asarray(times)
    if np.issubdtype(t.dtype, np.datetime64):
        d = np.diff(t).astype("timedelta64[s]").astype(np.float64)
    else:
        d = np.diff(t.astype(np.float64))
    if not np.allclose(d, d[0]):
        raise ValueError(f"{what}: time steps are not uniform ({np.unique(d)[:5]} s)")
    return float(d[0])


def read_rapid(
    connect_csv: str | Path,
    k_csv: str | Path,
    x_csv: str | Path,
    m3_riv_nc: str | Path,
    *,
    step_seconds: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> RoutingInputs:
    """Read a RAPID domain. ``m3_riv`` volumes [m³ per step] become discharge [m³/s];
    ``k`` [s] becomes input time steps.

    Shapes: result ``lateral`` ``[N, T]``; params ``[N]``.
    """
    import pandas as pd
    import xarray as xr

    from gnnhydro.graph import RiverGraph

    graph = RiverGraph.from_rapid(connect_csv)
    k_s = pd.read_csv(k_csv, header=None).iloc[:, 0].to_numpy(np.float64)
    x = pd.read_csv(x_csv, header=None).iloc[:, 0].to_numpy(np.float64)
    for name, arr in (("k", k_s), ("x", x)):
        if arr.size != graph.num_nodes:
            raise ValueError(
                f"RAPID {name}.csv has {arr.size} values for {graph.num_nodes} reaches"
            )
    with xr.open_dataset(m3_riv_nc) as ds:
        if "m3_riv" not in ds:
            raise ValueError(f"{m3_riv_nc}: no variable 'm3_riv' (lateral inflow volume, m3)")
        var = ds["m3_riv"]
        rivid = ds["rivid"].values if "rivid" in ds else ds[var.dims[-1]].values
        vol = var.transpose(..., var.dims[-1]).values.astype(np.float64)  # [T, M]
        times = ds["time"].values if "time" in ds else None
    dt = _step_seconds(times, step_seconds, "RAPID m3_riv")
    lateral = _align(rivid, vol, graph, "RAPID m3_riv") / dt  # m³ per step → m³/s
    return RoutingInputs(
        graph=graph,
        lateral=torch.from_numpy(lateral.T.copy()).to(dtype),
        params={"k": torch.tensor(k_s / dt, dtype=dtype), "x": torch.tensor(x, dtype=dtype)},
        times=times,
        step_seconds=dt,
    )


def read_nwm(
    routelink: str | Path,
    chrtout: Sequence[str | Path] | str | Path,
    *,
    step_seconds: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> RoutingInputs:
    """Read an NWM domain: ``RouteLink.nc`` and ``CHRTOUT`` files (a list, or a directory whose
    ``*CHRTOUT*`` files are taken in name order = time order) with ``q_lateral`` [m³/s].

    Shapes: result ``lateral`` ``[N, T]`` (graph = RouteLink ``link`` order); params ``[N]``.
    """
    import xarray as xr

    from gnnhydro.graph import RiverGraph

    graph = RiverGraph.from_routelink(routelink)
    if isinstance(chrtout, str | Path) and Path(chrtout).is_dir():
        files = sorted(p for p in Path(chrtout).iterdir() if "CHRTOUT" in p.name)
    elif isinstance(chrtout, str | Path):
        files = [Path(chrtout)]
    else:
        files = [Path(p) for p in chrtout]
    if not files:
        raise ValueError(f"no CHRTOUT files found in {chrtout}")
    columns, times = [], []
    feature_ids = None
    for f in files:
        with xr.open_dataset(f) as ds:
            if "q_lateral" not in ds:
                raise ValueError(f"{f}: no variable 'q_lateral'")
            fid = ds["feature_id"].values
            if feature_ids is None:
                feature_ids = fid
            elif not np.array_equal(fid, feature_ids):  # match by id when files differ
                order = {int(v): i for i, v in enumerate(fid)}
                try:
                    perm = np.array([order[int(v)] for v in feature_ids])
                except KeyError as err:
                    raise ValueError(f"{f}: feature_id {err.args[0]} missing") from None
                columns.append(ds["q_lateral"].values.reshape(-1)[perm])
                times.append(ds["time"].values[0])
                continue
            columns.append(ds["q_lateral"].values.reshape(-1))
            times.append(ds["time"].values[0])
    q = np.stack(columns)  # [T, M] m³/s
    times_arr = np.asarray(times)
    dt = _step_seconds(times_arr, step_seconds, "NWM CHRTOUT")
    lateral = _align(feature_ids, q, graph, "NWM CHRTOUT q_lateral")
    musk = getattr(graph, "musk_s", None)
    musx = getattr(graph, "musx", None)
    if musk is None or musx is None:
        raise ValueError(f"{routelink}: RouteLink has no MusK/MusX")
    musk = torch.as_tensor(musk, dtype=torch.float64)
    return RoutingInputs(
        graph=graph,
        lateral=torch.from_numpy(lateral.T.copy()).to(dtype),
        params={"k": (musk / dt).to(dtype), "x": torch.as_tensor(musx).to(dtype)},
        times=times_arr,
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
    ``q_lateral`` m³/s, Muskingum k/x from RouteLink) written as CF-1.8 ``timeSeries`` netCDF, or
    a RAPID domain (``rapid_connect``, ``k``, ``x``, ``inflow`` = m3_riv netCDF) written as RAPID
    ``Qout(time, rivid)`` netCDF. Muskingum parameters come from the files, so ``irf`` must be
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

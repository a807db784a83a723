"""RAPID (David et al. 2011) routing inputs as a routing dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnhydro.datasets._checks import infer_step_seconds, match_ids
from gnnhydro.datasets.base import RiverDataset
from gnnhydro.graph import RiverGraph
from gnnhydro.graph.errors import format_ids

__all__ = ["RapidDataset", "read_rapid_column", "read_m3_riv"]


def read_rapid_column(path: str | Path, dtype: Any = np.float64) -> np.ndarray:
    """A one-column RAPID CSV (``riv_bas_id.csv``, ``k.csv``, ``x.csv``): no header, one value per line."""
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


def read_m3_riv(
    path: str | Path, *, start_time: Any = None, step_seconds: float | None = None
) -> tuple[np.ndarray, list[int], np.ndarray, float]:
    """Read a RAPID inflow file (``m3_riv`` [m³ per time step], dims ``(time, rivid)`` or the
    older ``(Time, COMID)``).

    Returns ``(volume [T, R] m³, river ids [R], time [T] datetime64, step [s])``. The time axis is
    the file's ``time`` coordinate (CF-decoded) or, without one, ``start_time + k·step_seconds``.
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


class RapidDataset(RiverDataset):
    r"""A RAPID routing problem (one item).

    Files in ``root/raw/``: ``rapid_connect.csv`` (id, downstream id (0 = outlet), ...),
    ``riv_bas_id.csv`` (the reaches routed, in computation order), ``k.csv`` [s] and ``x.csv``
    [-] (Muskingum parameters in ``riv_bas_id`` order), the inflow file ``m3_riv.nc`` (volume
    per step [m³] of lateral inflow), and optionally ``Qobs.csv`` (rows = time steps, columns =
    gauges, m³/s, negative/NaN = missing) with ``obs_tot_id.csv`` (gauge reach ids).

    Item: nodes = ``riv_bas_id`` reaches in that order (a reach draining out of the routed set
    is an outlet); ``lateral_inflow`` ``[N, T]`` m³/s = ``m3_riv`` / step (matched by ``rivid``);
    ``musk_s`` ``[N]`` [s] and ``musx`` ``[N]`` (also as ``x`` with ``x_names``); ``q_obs`` when
    observation files are present.

    Args:
        root: dataset root.
        inflow_file: name of the inflow netCDF in ``raw/``.
        start_time / step_seconds: time axis for inflow files without a time coordinate.
    """

    name = "rapid"

    def __init__(
        self,
        root: str | Path,
        inflow_file: str = "m3_riv.nc",
        start_time: Any = None,
        step_seconds: float | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
    ) -> None:
        self.inflow_file = inflow_file
        self.start_time = start_time
        self.step_seconds = step_seconds
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, source_dir)

    def config(self) -> dict[str, Any]:
        return {
            "inflow_file": self.inflow_file,
            "start_time": str(self.start_time),
            "step_seconds": self.step_seconds,
        }

    @property
    def raw_file_names(self) -> list[str]:
        return ["rapid_connect.csv", "riv_bas_id.csv", "k.csv", "x.csv", self.inflow_file]

    def download(self) -> None:
        if self.source_dir is not None:
            return super().download()
        raise FileNotFoundError(
            f"RapidDataset: put {self.raw_file_names} (RAPID input files) into {self.raw_dir}; RAPID inputs "
            "are produced per basin (e.g. with RAPIDpy), there is no public default to download"
        )

    def build(self) -> list[RiverGraph]:
        raw = Path(self.raw_dir)
        full = RiverGraph.from_rapid(raw / "rapid_connect.csv")
        bas = read_rapid_column(raw / "riv_bas_id.csv", np.int64).tolist()
        k = read_rapid_column(raw / "k.csv")
        x = read_rapid_column(raw / "x.csv")
        for name, values in (("k.csv", k), ("x.csv", x)):
            if len(values) != len(bas):
                raise ValueError(
                    f"{name} has {len(values)} values for {len(bas)} reaches in riv_bas_id.csv"
                )
        if (k <= 0).any():
            raise ValueError(
                f"k.csv: non-positive Muskingum k at reaches {format_ids([bas[i] for i in np.flatnonzero(k <= 0)])}"
            )
        if ((x < 0) | (x > 0.5)).any():
            bad = [bas[i] for i in np.flatnonzero((x < 0) | (x > 0.5))]
            raise ValueError(f"x.csv: Muskingum x outside [0, 0.5] at reaches {format_ids(bad)}")
        graph = full.subgraph_nodes(full.index_of(bas)) if list(full.node_id) != bas else full
        volume, rivid, time, step = read_m3_riv(
            raw / self.inflow_file, start_time=self.start_time, step_seconds=self.step_seconds
        )
        pos = match_ids(rivid, bas, what=f"{self.inflow_file} rivid")
        graph.lateral_inflow = torch.as_tensor((volume[:, pos] / step).T, dtype=torch.float32)
        graph.musk_s = torch.as_tensor(k, dtype=torch.float32)
        graph.musx = torch.as_tensor(x, dtype=torch.float32)
        graph.x = torch.stack([graph.musk_s, graph.musx], 1)
        graph.x_names = ["musk_s", "musx"]
        graph.x_units = ["s", "-"]
        graph.time = time
        graph.step_seconds = step
        self._attach_observations(graph, raw, len(time))
        return [graph]

    def _attach_observations(self, graph: RiverGraph, raw: Path, num_steps: int) -> None:
        import pandas as pd

        n = graph.num_nodes
        q_obs = np.full((n, num_steps), np.nan)
        qfile, idfile = raw / "Qobs.csv", raw / "obs_tot_id.csv"
        gauge_nodes = np.zeros(0, dtype=np.int64)
        if qfile.exists() and idfile.exists():
            ids = read_rapid_column(idfile, np.int64).tolist()
            q = pd.read_csv(qfile, header=None).to_numpy(np.float64)
            if q.shape[1] != len(ids):
                raise ValueError(
                    f"Qobs.csv has {q.shape[1]} columns for {len(ids)} gauges in obs_tot_id.csv"
                )
            if q.shape[0] != num_steps:
                raise ValueError(
                    f"Qobs.csv has {q.shape[0]} rows, the inflow has {num_steps} time steps"
                )
            gauge_nodes = graph.index_of(ids).numpy()
            q_obs[gauge_nodes] = np.where(q >= 0, q, np.nan).T
        elif qfile.exists() != idfile.exists():
            raise ValueError("RAPID observations need both Qobs.csv and obs_tot_id.csv")
        graph.q_obs = torch.as_tensor(q_obs, dtype=torch.float32)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(gauge_nodes)] = True
        graph.gauge_mask = mask
        graph.gauge_index = mask.nonzero().flatten()
        graph.gauge_id = [str(graph.node_id[int(i)]) for i in graph.gauge_index]

"""US National Water Model (NWM v2.1) routing domains: RouteLink + CHRTOUT + USGS TimeSlices."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from gnnhydro.datasets._checks import infer_step_seconds, to_canonical
from gnnhydro.datasets.base import RiverDataset, copy_source_files, download_url_to
from gnnhydro.graph import RiverGraph
from gnnhydro.graph.errors import format_ids
from gnnhydro.routing.io import read_chrtout  # the one checked CHRTOUT reader, re-exported

__all__ = ["NWMDomain", "read_chrtout", "read_usgs_timeslices", "read_lake_reservoirs"]

#: LAKEPARM.nc variable → graph attribute of the level-pool reservoir operator
LAKEPARM_ATTRIBUTES = {
    "LkArea": "reservoir_area_km2",
    "LkMxE": "reservoir_max_elevation_m",
    "WeirE": "reservoir_weir_elevation_m",
    "WeirC": "reservoir_weir_coefficient",
    "WeirL": "reservoir_weir_length_m",
    "Dam_Length": "reservoir_dam_length_m",
    "OrificeE": "reservoir_orifice_elevation_m",
    "OrificeC": "reservoir_orifice_coefficient",
    "OrificeA": "reservoir_orifice_area_m2",
    "ifd": "reservoir_initial_fraction",
}


def read_lake_reservoirs(
    lakeparm: str | Path, waterbody: np.ndarray, link: np.ndarray, to: np.ndarray
) -> dict[str, np.ndarray]:
    """Reservoir nodes and level-pool properties of an NWM domain, per reach ``[N]``.

    A lake is the set of reaches with the same RouteLink ``NHDWaterbodyComID`` (``waterbody``);
    its reservoir node is its outlet reach, the one whose ``to`` leaves the lake (the other
    reaches of the lake route as plain reaches into it). Returns ``reservoir_mask`` (bool),
    ``reservoir_lake_id`` (-1 elsewhere), the LAKEPARM properties under the names of
    :data:`LAKEPARM_ATTRIBUTES` and ``reservoir_capacity_m3`` = ``LkArea``·(``LkMxE`` −
    ``OrificeE``) (the level pool's active storage), NaN at other reaches. Raises
    ``ValueError`` naming lakes missing from LAKEPARM or with several outlets.
    """
    import xarray as xr

    n = link.size
    with xr.open_dataset(lakeparm, decode_times=False) as lp:
        missing = [v for v in (*LAKEPARM_ATTRIBUTES, "lake_id") if v not in lp]
        if missing:
            raise ValueError(f"{Path(lakeparm).name}: variable(s) {missing} missing")
        ids = lp["lake_id"].values.astype(np.int64)
        props = {v: lp[v].values.astype(np.float64) for v in LAKEPARM_ATTRIBUTES}
    row = {int(i): k for k, i in enumerate(ids.tolist())}
    out = {name: np.full(n, np.nan) for name in LAKEPARM_ATTRIBUTES.values()}
    out["reservoir_capacity_m3"] = np.full(n, np.nan)
    mask = np.zeros(n, dtype=bool)
    lake_of = np.full(n, -1, dtype=np.int64)
    lakes = np.unique(waterbody[waterbody > 0])
    absent = [int(w) for w in lakes if int(w) not in row]
    if absent:
        raise ValueError(f"NWM domain: waterbodies {format_ids(absent)} are not in LAKEPARM.nc")
    several = []
    for w in lakes.tolist():
        members = np.flatnonzero(waterbody == w)
        inside = set(link[members].tolist())
        outlets = [i for i in members.tolist() if int(to[i]) not in inside]
        if len(outlets) != 1:
            several.append(int(w))
            continue
        i, k = outlets[0], row[int(w)]
        mask[i] = True
        lake_of[i] = w
        for var, name in LAKEPARM_ATTRIBUTES.items():
            out[name][i] = props[var][k]
        out["reservoir_capacity_m3"][i] = (
            props["LkArea"][k] * 1e6 * max(props["LkMxE"][k] - props["OrificeE"][k], 0.0)
        )
    if several:
        raise ValueError(f"NWM domain: lakes {format_ids(several)} have no single outlet reach")
    out["reservoir_mask"] = mask
    out["reservoir_lake_id"] = lake_of
    return out

TROUTE_URL = "https://raw.githubusercontent.com/NOAA-OWP/t-route/master/test/LowerColorado_TX/"


def read_usgs_timeslices(files: list[Path]) -> Any:
    """All observations of NWM ``usgsTimeSlice`` files as a pandas table ``station, time,
    discharge`` [m³/s], keeping rows with finite, non-negative discharge and quality > 0; a
    (station, time) repeated in several files keeps the last file's value."""
    import pandas as pd
    import xarray as xr

    frames = []
    for f in sorted(files):
        with xr.open_dataset(f, decode_times=False) as ds:
            for v in ("stationId", "time", "discharge"):
                if v not in ds:
                    raise ValueError(
                        f"{f.name}: variable {v!r} missing; it has {list(ds.variables)}"
                    )
            station = [
                s.decode().strip() if isinstance(s, bytes) else str(s).strip()
                for s in ds["stationId"].values
            ]
            when = [
                s.decode().strip() if isinstance(s, bytes) else str(s).strip()
                for s in ds["time"].values
            ]
            q = to_canonical(
                np.asarray(ds["discharge"].values, dtype=np.float64),
                ds["discharge"].attrs.get("units", "m3/s"),
                "m3/s",
                variable=f"{f.name}:discharge",
            )
            quality = (
                np.asarray(ds["discharge_quality"].values)
                if "discharge_quality" in ds
                else np.full(q.shape, 100)
            )
        frames.append(
            pd.DataFrame(
                {
                    "station": station,
                    "time": pd.to_datetime(when, format="%Y-%m-%d_%H:%M:%S"),
                    "discharge": q,
                    "quality": quality,
                }
            )
        )
    if not frames:
        return pd.DataFrame({"station": [], "time": [], "discharge": []})
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["station", "time"], keep="last")
    ok = np.isfinite(df["discharge"]) & (df["discharge"] >= 0) & (df["quality"] > 0)
    return df.loc[ok, ["station", "time", "discharge"]].reset_index(drop=True)


class NWMDomain(RiverDataset):
    r"""A National Water Model routing domain (default: Lower Colorado River, Texas; one item).

    * Network from ``domain/RouteLink.nc`` (:meth:`RiverGraph.from_routelink`: ids ``link``,
      ``to = 0`` or a link outside the domain = outlet); static attributes ``x`` from RouteLink
      (length, slope, Manning's n, bottom/top width, side slope, altitude, stream order, NWM
      Muskingum K [s] and X, lake flag). There is no catchment area in RouteLink: this is a
      routing dataset (no ``area_km2``, no ``forcing``).
    * ``lateral_inflow`` ``[N, T]`` m³/s = ``q_lateral`` of the hourly ``channel_forcing/*.CHRTOUT*``
      files (matched by ``feature_id``); NWM-simulated ``streamflow`` kept as ``q_nwm`` ``[N, T]``.
    * ``q_obs`` ``[N, T]`` m³/s from the 15-min ``usgs_TimeSlice/*.ncdf`` files: observations with
      quality > 0, averaged per hour over ``[t − 30 min, t + 30 min)`` (centred on NWM's
      instantaneous output time ``t``), matched to reaches by gauge id (RouteLink ``gages``).
      Stations not in RouteLink are reported (warning and ``unmatched_gauge_id``), not used.
    * Lakes: ``lake_mask`` ``[N]`` for reaches with ``NHDWaterbodyComID > 0``, ``lake_id`` ``[N]``
      (the waterbody id, -1 = none) and ``lake_area_km2`` ``[N]`` from ``LAKEPARM.nc`` (0 = none).
      Reservoirs (:func:`read_lake_reservoirs`): ``reservoir_mask`` marks each lake's outlet
      reach, with the level-pool properties of ``LAKEPARM.nc`` (``reservoir_area_km2``,
      ``reservoir_weir_elevation_m``, …, NaN at other reaches) and ``reservoir_capacity_m3``.

    Source: NOAA-OWP/t-route ``test/LowerColorado_TX`` (Apache-2.0); downloaded from GitHub
    when ``root/raw`` lacks the files, or copied from ``source_dir``.
    """

    name = "nwm"
    processed_version = 1  # 1: lakes as reservoir nodes with their LAKEPARM properties
    url = TROUTE_URL
    #: files of the default (Lower Colorado) domain, for download.
    chrtout_hours = ("2021-08-23 13:00", "2021-08-24 16:00")
    timeslice_range = ("2021-08-23 00:00", "2021-08-23 23:45")

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, source_dir)

    @property
    def raw_file_names(self) -> list[str]:
        return ["domain/RouteLink.nc", "domain/LAKEPARM.nc", "channel_forcing", "usgs_TimeSlice"]

    def download(self) -> None:
        if self.source_dir is not None:
            copy_source_files(self.source_dir, self.raw_dir, self.raw_file_names)
            return
        import pandas as pd

        names = ["domain/RouteLink.nc", "domain/LAKEPARM.nc"]
        names += [
            f"channel_forcing/{t:%Y%m%d%H%M}.CHRTOUT_DOMAIN1"
            for t in pd.date_range(*self.chrtout_hours, freq="1h")
        ]
        names += [
            f"usgs_TimeSlice/{t:%Y-%m-%d_%H:%M:%S}.15min.usgsTimeSlice.ncdf"
            for t in pd.date_range(*self.timeslice_range, freq="15min")
        ]
        for name in names:
            target = Path(self.raw_dir) / name
            if not target.exists():
                download_url_to(self.url + quote(name), target)

    def build(self) -> list[RiverGraph]:
        import xarray as xr

        raw = Path(self.raw_dir)
        graph = RiverGraph.from_routelink(raw / "domain/RouteLink.nc")
        n = graph.num_nodes
        link = list(graph.node_id)
        with xr.open_dataset(raw / "domain/RouteLink.nc", decode_times=False) as rl:
            comid = (
                rl["NHDWaterbodyComID"].values.astype(np.int64)
                if "NHDWaterbodyComID" in rl
                else np.full(n, -9999)
            )
            alt = rl["alt"].values.astype(np.float64)
            to_link = rl["to"].values.astype(np.int64)
            order = rl["order"].values.astype(np.float64)
            top = rl["TopWdth"].values.astype(np.float64) if "TopWdth" in rl else np.zeros(n)
        lake_mask = comid > 0
        lake_area = np.zeros(n)
        lakeparm = raw / "domain/LAKEPARM.nc"
        if lakeparm.exists():
            with xr.open_dataset(lakeparm, decode_times=False) as lp:
                ids = lp["lake_id"].values.astype(np.int64)
                area = lp["LkArea"].values.astype(np.float64)
            lookup = dict(zip(ids.tolist(), area.tolist(), strict=True))
            unknown = sorted({int(c) for c in comid[lake_mask] if int(c) not in lookup})
            if unknown:
                warnings.warn(
                    f"NWM domain: waterbodies {format_ids(unknown)} are not in LAKEPARM.nc",
                    stacklevel=2,
                )
            lake_area = np.array(
                [
                    lookup.get(int(c), 0.0) if m else 0.0
                    for c, m in zip(comid, lake_mask, strict=True)
                ]
            )
        graph.lake_mask = torch.as_tensor(lake_mask)
        if lakeparm.exists() and lake_mask.any():  # level-pool reservoirs at the lakes' outlets
            lakes = read_lake_reservoirs(lakeparm, comid, np.asarray(link, dtype=np.int64), to_link)
            graph.reservoir_mask = torch.as_tensor(lakes.pop("reservoir_mask"))
            graph.reservoir_lake_id = torch.as_tensor(lakes.pop("reservoir_lake_id"))
            for name, values in lakes.items():
                setattr(graph, name, torch.as_tensor(values, dtype=torch.float32))
        graph.lake_id = torch.as_tensor(np.where(lake_mask, comid, -1), dtype=torch.long)
        graph.lake_area_km2 = torch.as_tensor(lake_area, dtype=torch.float32)

        cols = [
            ("length_m", graph.length_m.double().numpy(), "m"),
            ("slope", graph.slope.double().numpy(), "m/m"),
            ("mannings_n", graph.mannings_n.double().numpy(), "s/m^(1/3)"),
            ("bottom_width_m", graph.bottom_width_m.double().numpy(), "m"),
            ("top_width_m", top, "m"),
            ("side_slope", graph.side_slope.double().numpy(), "m/m"),
            ("altitude_m", alt, "m"),
            ("stream_order", order, "-"),
            ("musk_s", graph.musk_s.double().numpy(), "s"),
            ("musx", graph.musx.double().numpy(), "-"),
            ("lake", lake_mask.astype(np.float64), "-"),
        ]
        x = np.stack([c[1] for c in cols], 1)
        bad = [c[0] for c in cols if not np.isfinite(c[1]).all()]
        if bad:
            raise ValueError(f"RouteLink attributes {bad} have NaN/inf values")
        graph.x = torch.as_tensor(x, dtype=torch.float32)
        graph.x_names = [c[0] for c in cols]
        graph.x_units = [c[2] for c in cols]

        files = sorted((raw / "channel_forcing").glob("*CHRTOUT*"))
        series, time = read_chrtout(files, link)
        graph.lateral_inflow = torch.as_tensor(series["q_lateral"], dtype=torch.float32)
        graph.q_nwm = torch.as_tensor(series["streamflow"], dtype=torch.float32)
        graph.time = time
        graph.step_seconds = infer_step_seconds(time, what="CHRTOUT files")

        self._attach_observations(
            graph, time, sorted((raw / "usgs_TimeSlice").glob("*usgsTimeSlice*"))
        )
        return [graph]

    def _attach_observations(self, graph: RiverGraph, time: np.ndarray, files: list[Path]) -> None:
        import pandas as pd

        n = graph.num_nodes
        gages = [g if isinstance(g, str) else str(g) for g in getattr(graph, "gages", [""] * n)]
        where: dict[str, int] = {}
        dups = []
        for i, g in enumerate(gages):
            g = g.strip()
            if not g:
                continue
            if g in where:
                dups.append(g)
            where[g] = i
        if dups:
            raise ValueError(
                f"RouteLink: gauge ids {format_ids(sorted(set(dups)))} appear on several reaches"
            )
        obs = read_usgs_timeslices(files)
        q_obs = np.full((n, len(time)), np.nan)
        unmatched = sorted(set(obs["station"]) - set(where))
        if unmatched:
            warnings.warn(
                f"NWM domain: USGS stations {format_ids(unmatched)} are not in RouteLink 'gages'; not used",
                stacklevel=2,
            )
        obs = obs[obs["station"].isin(list(where))]
        if len(obs):
            step = pd.Timedelta(seconds=float(graph.step_seconds))
            label = (obs["time"] + step / 2).dt.floor(step)
            hourly = (
                obs.assign(label=label)
                .groupby(["station", "label"])["discharge"]
                .mean()
                .reset_index()
            )
            t_index = {t: k for k, t in enumerate(pd.DatetimeIndex(time))}
            for st, lab, q in zip(
                hourly["station"], hourly["label"], hourly["discharge"], strict=True
            ):
                k = t_index.get(lab)
                if k is not None:
                    q_obs[where[st], k] = q
        graph.q_obs = torch.as_tensor(q_obs, dtype=torch.float32)
        mask = torch.as_tensor(~np.isnan(q_obs).all(1))
        graph.gauge_mask = mask
        graph.gauge_index = mask.nonzero().flatten()
        graph.gauge_id = [gages[int(i)].strip() for i in graph.gauge_index]
        graph.unmatched_gauge_id = unmatched

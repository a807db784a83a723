"""Delaware River Basin: the USGS National Hydrologic Model (PRMS) test domain of pywatershed."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnhydro.datasets._checks import check_finite, infer_step_seconds, match_ids, to_canonical
from gnnhydro.datasets.base import RiverDataset, copy_source_files, download_url_to
from gnnhydro.datasets.pet import DEFAULT_PET_METHOD, check_pet_method, potential_evapotranspiration
from gnnhydro.graph import CatchmentInterpolation, RiverGraph
from gnnhydro.graph.errors import format_ids
from gnnhydro.units import acres_to_km2, inches_to_mm

__all__ = ["DelawareRiverBasin", "donor_reaches", "prms_climate_adjustment"]

PYWATERSHED_URL = "https://raw.githubusercontent.com/EC-USGS/pywatershed/develop/test_data/drb_2yr/"

#: HRU parameters aggregated to reaches by area-weighted mean: (file, variable, name, units, scale).
_HRU_CONTINUOUS: tuple[tuple[str, str, str, str, Callable | None], ...] = (
    ("parameters_dis_hru.nc", "hru_elev", "elevation_m", "m", None),
    ("parameters_dis_hru.nc", "hru_slope", "hru_slope", "m/m", None),
    ("parameters_dis_hru.nc", "hru_lat", "lat", "deg", None),
    ("parameters_dis_hru.nc", "hru_lon", "lon", "deg", None),
    ("parameters_PRMSSoilzone.nc", "soil_moist_max", "soil_moist_max_mm", "mm", inches_to_mm),
    ("parameters_PRMSSoilzone.nc", "soil_rechr_max_frac", "soil_rechr_max_frac", "-", None),
    ("parameters_PRMSSoilzone.nc", "sat_threshold", "sat_threshold_mm", "mm", inches_to_mm),
    ("parameters_PRMSSoilzone.nc", "ssr2gw_rate", "ssr2gw_rate", "1/day", None),
    ("parameters_PRMSSoilzone.nc", "slowcoef_lin", "slowcoef_lin", "1/day", None),
    ("parameters_PRMSSoilzone.nc", "fastcoef_lin", "fastcoef_lin", "1/day", None),
    ("parameters_PRMSSoilzone.nc", "pref_flow_den", "pref_flow_den", "-", None),
    ("parameters_PRMSRunoff.nc", "hru_percent_imperv", "impervious_frac", "-", None),
    ("parameters_PRMSRunoff.nc", "dprst_frac", "depression_frac", "-", None),
    ("parameters_PRMSRunoff.nc", "carea_max", "carea_max", "-", None),
    ("parameters_PRMSRunoff.nc", "smidx_coef", "smidx_coef", "-", None),
    ("parameters_PRMSRunoff.nc", "smidx_exp", "smidx_exp", "1/in", None),
    ("parameters_PRMSCanopy.nc", "covden_sum", "covden_sum", "-", None),
    ("parameters_PRMSCanopy.nc", "covden_win", "covden_win", "-", None),
    ("parameters_PRMSGroundwater.nc", "gwflow_coef", "gwflow_coef", "1/day", None),
    ("parameters_PRMSSnow.nc", "rad_trncf", "rad_trncf", "-", None),
    ("parameters_PRMSSnow.nc", "snarea_thresh", "snarea_thresh_mm", "mm", inches_to_mm),
)
#: Categorical HRU parameters turned into area fractions: (file, variable, {code: name}).
_HRU_CLASSES: tuple[tuple[str, str, dict[int, str]], ...] = (
    (
        "parameters_PRMSSoilzone.nc",
        "soil_type",
        {1: "soil_sand_frac", 2: "soil_loam_frac", 3: "soil_clay_frac"},
    ),
    (
        "parameters_PRMSCanopy.nc",
        "cov_type",
        {
            0: "cover_bare_frac",
            1: "cover_grass_frac",
            2: "cover_shrub_frac",
            3: "cover_trees_frac",
            4: "cover_conifer_frac",
        },
    ),
)
#: Segment parameters: (file, variable, name, units).
_SEGMENT: tuple[tuple[str, str, str, str], ...] = (
    ("parameters_dis_seg.nc", "seg_length", "seg_length_m", "m"),
    ("parameters_dis_seg.nc", "seg_slope", "seg_slope", "m/m"),
    ("parameters_dis_seg.nc", "seg_width", "seg_width_m", "m"),
    ("parameters_dis_seg.nc", "seg_depth", "seg_depth_m", "m"),
    ("parameters_dis_seg.nc", "seg_elev", "seg_elev_m", "m"),
    ("parameters_PRMSChannel.nc", "mann_n", "mannings_n", "s/m^(1/3)"),
    ("parameters_PRMSChannel.nc", "x_coef", "prms_muskingum_x", "-"),
)


#: PRMS monthly climate adjustments (``parameters_PRMSAtmosphere.nc``, each ``[12, nhru]``).
_PRMS_CLIMATE = (
    "tmax_cbh_adj",
    "tmin_cbh_adj",
    "tmax_allsnow",
    "tmax_allrain_offset",
    "rain_cbh_adj",
    "snow_cbh_adj",
    "adjmix_rain",
)
CLIMATE_ADJUSTMENTS = ("none", "prms")


def prms_climate_adjustment(
    precipitation: np.ndarray,
    tmax: np.ndarray,
    tmin: np.ndarray,
    month: np.ndarray,
    adjustment: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The NHM's calibrated monthly climate adjustments, as PRMS applies them to its
    climate-by-HRU input before any process runs.

    Temperatures are shifted by ``tmax_cbh_adj``/``tmin_cbh_adj``. Each day is then all snow
    (adjusted tmax ≤ ``tmax_allsnow``), all rain (adjusted tmin > ``tmax_allsnow`` or adjusted
    tmax ≥ ``tmax_allsnow + tmax_allrain_offset``) or mixed with rain fraction
    ``clip((tmax − tmax_allsnow) / (tmax − tmin) · adjmix_rain, 0, 1)``; precipitation is
    multiplied by ``rain_cbh_adj`` on all-rain days and by ``snow_cbh_adj`` otherwise.

    Args:
        precipitation: ``[U, T]`` mm/day.
        tmax, tmin: ``[U, T]`` °C.
        month: ``[T]`` month index 0..11 of every day.
        adjustment: the seven parameters of ``_PRMS_CLIMATE``, each ``[12, U]``, temperatures in
            °F (PRMS ``temp_units = 0``): offsets are converted with 5/9, thresholds with
            (°F − 32)·5/9.

    Shapes:
        returns adjusted ``precipitation`` ``[U, T]`` mm/day, ``tmax`` and ``tmin`` ``[U, T]`` °C.
    """
    per_day = {k: np.asarray(v, dtype=np.float64)[month].T for k, v in adjustment.items()}
    to_c = 5.0 / 9.0
    tmax = tmax + to_c * per_day["tmax_cbh_adj"]
    tmin = tmin + to_c * per_day["tmin_cbh_adj"]
    all_snow_below = (per_day["tmax_allsnow"] - 32.0) * to_c
    all_rain_above = all_snow_below + to_c * per_day["tmax_allrain_offset"]
    spread = np.where(tmax - tmin < 1e-5, 1e-4 * to_c, tmax - tmin)
    rain_fraction = np.clip((tmax - all_snow_below) / spread * per_day["adjmix_rain"], 0.0, 1.0)
    rain_fraction = np.where((tmin > all_snow_below) | (tmax >= all_rain_above), 1.0, rain_fraction)
    rain_fraction = np.where(tmax <= all_snow_below, 0.0, rain_fraction)
    factor = np.where(rain_fraction >= 1.0, per_day["rain_cbh_adj"], per_day["snow_cbh_adj"])
    return precipitation * factor, tmax, tmin


def donor_reaches(graph: RiverGraph, has_catchment: np.ndarray) -> np.ndarray:
    """For every reach without catchment (``has_catchment`` False) the reach whose catchment
    values it borrows: the first reach downstream that has one; if none, the nearest reach
    upstream (breadth-first) that has one; else ``-1`` (use the basin mean). Reaches with a
    catchment are their own donor.

    Shapes:
        has_catchment ``[N]`` bool → ``[N]`` int64.
    """
    n = graph.num_nodes
    src, dst = graph.edge_index.numpy()
    down = np.full(n, -1, dtype=np.int64)
    down[src] = dst  # PRMS networks are trees: one downstream reach
    ups: list[list[int]] = [[] for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist(), strict=True):
        ups[d].append(s)
    donor = np.where(has_catchment, np.arange(n), -1)
    for i in np.flatnonzero(~has_catchment):
        j = down[i]
        while j >= 0 and not has_catchment[j]:
            j = down[j]
        if j >= 0:
            donor[i] = j
            continue
        frontier, seen = list(ups[i]), {i}
        while frontier:
            hit = [k for k in frontier if has_catchment[k]]
            if hit:
                donor[i] = min(hit)
                break
            seen.update(frontier)
            frontier = [u for k in frontier for u in ups[k] if u not in seen]
    return donor


class DelawareRiverBasin(RiverDataset):
    r"""Delaware River Basin (DRB) NHM/PRMS domain, 1979-01-01 .. 1980-12-31, daily (one item).

    456 river segments (nodes; ids ``nhm_seg``) in 6 outlet trees, 765 HRUs aggregated to the
    segments they drain to (``hru_segment``: 1-based, 0 = none) with
    :class:`~gnnhydro.graph.CatchmentInterpolation`:

    * ``area_km2``: sum of the segment's HRU areas (``hru_area`` acres → km²); 0 for segments
      without HRU (``has_catchment`` False). HRUs with ``hru_segment = 0`` drain to no segment;
      their area is reported in ``unmapped_hru_area_km2``.
    * ``forcing`` ``[N, T, 3]``: ``precipitation`` (``prcp`` inches → mm/day), ``temperature``
      (mean of ``tmax``/``tmin`` °F → °C) and ``pet`` (``pet_method``, default Hargreaves, from
      HRU ``tmin``/``tmax`` and ``hru_lat``: :mod:`gnnhydro.datasets.pet`), each an area-weighted mean over the segment's HRUs (HRUs matched to
      the forcing files by ``nhm_id``).
    * ``x``: area-weighted means of HRU parameters (elevation, slope, soil and cover
      fractions, soil storage, runoff and groundwater coefficients) and segment parameters
      (length, slope, width, depth, elevation, Manning's n, PRMS Muskingum x); names and units
      in ``x_names``/``x_units``. ``hru_elev`` (units ``elev_units``, a flag not in the files) is
      taken as metres: its range (1..932) matches the basin's terrain in metres, not in feet.
    * Segments without HRU take the HRU-derived attributes and forcing of a donor
      (:func:`donor_reaches`: first segment downstream with HRUs, else the nearest upstream one,
      else the basin area-weighted mean); their area stays 0, so they generate no runoff.
    * ``q_obs`` ``[N, T]`` m³/s (cfs converted): gauges at ``poi_gage_segment`` (1-based),
      observation series matched by ``poi_gage_id`` (the observation file's order differs).
      ``gauge_index``/``gauge_id``/``gauge_mask`` list the gauges with at least one observation
      in the period (103 of 168); the others are named in ``gauge_id_no_data``.

    * ``climate_adjustment="prms"`` applies the NHM's calibrated monthly climate adjustments
      (:func:`prms_climate_adjustment`, ``parameters_PRMSAtmosphere.nc``) to the HRU forcing
      before aggregation — the forcing the NHM itself runs on (e.g. rain × 0.75 in
      August–October); ``"none"`` (default) keeps the raw climate-by-HRU files.
    * ``pet_method``: ``hargreaves`` (default), ``oudin`` or ``hamon`` (the files have no
      radiation for ``priestley_taylor``); in the cache name only when not the default.

    Source: EC-USGS/pywatershed ``test_data/drb_2yr`` (CC0); downloaded from GitHub when
    ``root/raw`` lacks the files, or copied from ``source_dir``.
    """

    name = "drb"
    url = PYWATERSHED_URL

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
        climate_adjustment: str = "none",
        pet_method: str = DEFAULT_PET_METHOD,
    ) -> None:
        self.pet_method = check_pet_method(str(pet_method), "DelawareRiverBasin: ")
        if climate_adjustment not in CLIMATE_ADJUSTMENTS:
            raise ValueError(
                f"climate_adjustment must be one of {CLIMATE_ADJUSTMENTS}, got {climate_adjustment!r}"
            )
        self.climate_adjustment = climate_adjustment
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, source_dir)

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"climate_adjustment": self.climate_adjustment}
        if self.pet_method != DEFAULT_PET_METHOD:  # the default keeps existing caches
            config["pet_method"] = self.pet_method
        return config

    @property
    def raw_file_names(self) -> list[str]:
        extra = ["parameters_PRMSAtmosphere.nc"] if self.climate_adjustment == "prms" else []
        return extra + [
            "parameters_dis_seg.nc",
            "parameters_dis_hru.nc",
            "parameters_PRMSChannel.nc",
            "parameters_PRMSSoilzone.nc",
            "parameters_PRMSRunoff.nc",
            "parameters_PRMSCanopy.nc",
            "parameters_PRMSGroundwater.nc",
            "parameters_PRMSSnow.nc",
            "prcp.nc",
            "tmax.nc",
            "tmin.nc",
            "drb_2yr_gage_poi_obs.nc",
        ]

    def download(self) -> None:
        if self.source_dir is not None:
            copy_source_files(self.source_dir, self.raw_dir, self.raw_file_names)
            return
        for name in self.raw_file_names:
            target = Path(self.raw_dir) / name
            if not target.exists():
                download_url_to(self.url + name, target)

    # ------------------------------------------------------------------ processing
    def _open(self, name: str) -> Any:
        import xarray as xr

        return xr.open_dataset(Path(self.raw_dir) / name, decode_times=False)

    def _forcing(self, name: str, var: str, hru_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[U, T]`` values in parameter-file HRU order (matched by nhm_id), and the time axis."""
        import xarray as xr

        with xr.open_dataset(Path(self.raw_dir) / name) as ds:
            if var not in ds:
                raise ValueError(f"{name}: variable {var!r} missing; it has {list(ds.data_vars)}")
            da = ds[var]
            id_dim = next(d for d in da.dims if d != "time")
            pos = match_ids(ds[id_dim].values.tolist(), hru_ids.tolist(), what=f"{name} HRU ids")
            values = np.asarray(da.transpose(id_dim, "time").values, dtype=np.float64)[pos]
            time = np.asarray(ds["time"].values).astype("datetime64[ns]")
            units = da.attrs.get("units")
        expected = "mm" if var == "prcp" else "degC"
        step = infer_step_seconds(time, what=name)
        values = to_canonical(values, units, expected, variable=f"{name}:{var}", step_seconds=step)
        check_finite(values, variable=var, ids=hru_ids.tolist(), time=time)
        return values, time

    def build(self) -> list[RiverGraph]:
        graph = RiverGraph.from_prms(Path(self.raw_dir) / "parameters_dis_seg.nc")
        n = graph.num_nodes
        seg_ids = list(graph.node_id)

        # --- HRUs → reaches
        with (
            self._open("parameters_dis_hru.nc") as hru,
            self._open("parameters_PRMSChannel.nc") as chan,
        ):
            hru_ids = hru["nhm_id"].values.astype(np.int64)
            if not np.array_equal(chan["nhm_id"].values.astype(np.int64), hru_ids):
                raise ValueError(
                    "parameters_PRMSChannel.nc and parameters_dis_hru.nc list HRUs in different orders"
                )
            hru_segment = chan["hru_segment"].values.astype(np.int64)
            area_units = hru["hru_area"].attrs.get("units", "acres")
            if str(area_units).lower() not in ("acres", "acre"):
                raise ValueError(
                    f"parameters_dis_hru.nc: hru_area units {area_units!r}, expected 'acres'"
                )
            hru_area_km2 = acres_to_km2(hru["hru_area"].values.astype(np.float64))
            hru_lat = hru["hru_lat"].values.astype(np.float64)
        bad = np.flatnonzero((hru_segment < 0) | (hru_segment > n))
        if bad.size:
            raise ValueError(
                f"hru_segment outside 0..{n} for HRUs (nhm_id) {format_ids(hru_ids[bad].tolist())}"
            )
        if (np.isnan(hru_area_km2) | (hru_area_km2 <= 0)).any():
            bad = np.flatnonzero(np.isnan(hru_area_km2) | (hru_area_km2 <= 0))
            raise ValueError(
                f"hru_area is NaN or not positive for HRUs (nhm_id) {format_ids(hru_ids[bad].tolist())}"
            )
        unit_to_reach = [seg_ids[s - 1] if s > 0 else None for s in hru_segment.tolist()]
        interp = CatchmentInterpolation.from_mapping(
            graph, unit_to_reach, hru_area_km2, unmapped=(None,)
        )
        area = interp.reach_area_km2.double()
        has = (area > 0).numpy()
        donor = donor_reaches(graph, has)
        weights = torch.as_tensor(hru_area_km2)
        mapped = torch.zeros(len(hru_ids), dtype=torch.bool)
        mapped[interp.unit_index] = True

        def to_reach(values_u: np.ndarray) -> np.ndarray:
            """Area-weighted mean ``[U, ...]`` → ``[N, ...]`` with donor filling."""
            v = torch.as_tensor(values_u, dtype=torch.float64)
            out = interp.mean(v).numpy()
            w = weights[mapped].view(-1, *([1] * (v.dim() - 1)))
            basin_mean = ((v[mapped] * w).sum(0) / w.sum()).numpy()
            filled = out.copy()
            for i in np.flatnonzero(~has):
                filled[i] = out[donor[i]] if donor[i] >= 0 else basin_mean
            return filled

        # --- static attributes
        names, units, columns = [], [], []
        cache: dict[str, Any] = {}
        try:
            for fname, var, name, unit, scale in _HRU_CONTINUOUS:
                ds = cache[fname] if fname in cache else cache.setdefault(fname, self._open(fname))
                if var not in ds:
                    raise ValueError(f"{fname}: parameter {var!r} missing")
                v = ds[var].values.astype(np.float64)
                columns.append(to_reach(scale(v) if scale else v))
                names.append(name)
                units.append(unit)
            for fname, var, classes in _HRU_CLASSES:
                ds = cache[fname] if fname in cache else cache.setdefault(fname, self._open(fname))
                codes = ds[var].values.astype(np.int64)
                unknown = sorted(set(codes.tolist()) - set(classes))
                if unknown:
                    raise ValueError(f"{fname}: {var} has unknown class codes {unknown}")
                for code, name in classes.items():
                    columns.append(to_reach((codes == code).astype(np.float64)))
                    names.append(name)
                    units.append("-")
                if var == "cov_type":
                    columns.append(to_reach(np.isin(codes, (3, 4)).astype(np.float64)))
                    names.append("forest_frac")
                    units.append("-")
            for fname, var, name, unit in _SEGMENT:
                ds = cache[fname] if fname in cache else cache.setdefault(fname, self._open(fname))
                if ds[var].dims != ("nsegment",):
                    raise ValueError(
                        f"{fname}: {var} has dims {ds[var].dims}, expected ('nsegment',)"
                    )
                columns.append(ds[var].values.astype(np.float64))
                names.append(name)
                units.append(unit)
            seg = cache["parameters_dis_seg.nc"]
            poi_segment = seg["poi_gage_segment"].values.astype(np.int64)
            poi_id = [str(s).strip() for s in seg["poi_gage_id"].values.tolist()]
        finally:
            for ds in cache.values():
                ds.close()
        graph.area_km2 = area.float()
        upstream = graph.accumulate(area).numpy()
        columns.append(upstream)
        names.append("upstream_area_km2")
        units.append("km2")
        x = np.stack(columns, 1)
        bad_cols = [names[j] for j in range(x.shape[1]) if not np.isfinite(x[:, j]).all()]
        if bad_cols:
            raise ValueError(f"DRB attributes have NaN/inf values in {bad_cols}")
        graph.x = torch.as_tensor(x, dtype=torch.float32)
        graph.x_names = names
        graph.x_units = units
        graph.pos = torch.as_tensor(
            np.stack([x[:, names.index("lon")], x[:, names.index("lat")]], 1), dtype=torch.float32
        )
        graph.crs = "EPSG:4326"
        graph.has_catchment = torch.as_tensor(has)
        graph.unmapped_hru_area_km2 = float(hru_area_km2[~mapped.numpy()].sum())

        # --- forcing
        prcp, time = self._forcing("prcp.nc", "prcp", hru_ids)
        tmax, time_x = self._forcing("tmax.nc", "tmax", hru_ids)
        tmin, time_n = self._forcing("tmin.nc", "tmin", hru_ids)
        if not (np.array_equal(time, time_x) and np.array_equal(time, time_n)):
            raise ValueError("prcp.nc, tmax.nc and tmin.nc have different time axes")
        step = infer_step_seconds(time, what="prcp.nc")
        if step != 86_400.0:
            raise ValueError(f"DRB forcing must be daily, got a step of {step} s")
        import pandas as pd

        if (tmax < tmin).any():
            k = np.argwhere(tmax < tmin)[0]
            warnings.warn(
                f"DRB forcing: tmax < tmin on {int((tmax < tmin).sum())} HRU-days (first HRU {hru_ids[k[0]]} at "
                f"{time[k[1]]}); Hargreaves uses max(tmax - tmin, 0)",
                stacklevel=2,
            )
        if self.climate_adjustment == "prms":
            prcp, tmax, tmin = prms_climate_adjustment(
                prcp,
                tmax,
                tmin,
                pd.DatetimeIndex(time).month.to_numpy() - 1,
                self._prms_climate(hru_ids),
            )
        pet = potential_evapotranspiration(
            self.pet_method,
            tmin=tmin,
            tmax=tmax,
            latitude_deg=hru_lat,
            time=time,
            what="DelawareRiverBasin: ",
        )
        temp = 0.5 * (tmax + tmin)
        forcing = np.stack([to_reach(prcp), to_reach(temp), to_reach(pet)], -1)
        graph.forcing = torch.as_tensor(forcing, dtype=torch.float32)
        graph.forcing_names = ["precipitation", "temperature", "pet"]
        graph.forcing_units = ["mm/step", "degC", "mm/step"]
        graph.time = time
        graph.step_seconds = step

        # --- observations, matched by gauge id
        self._attach_observations(graph, poi_segment, poi_id, time)
        return [graph]

    def _prms_climate(self, hru_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The monthly adjustment parameters ``[12, U]`` in parameter-file HRU order."""
        name = "parameters_PRMSAtmosphere.nc"
        with self._open(name) as ds:
            missing = [v for v in (*_PRMS_CLIMATE, "temp_units") if v not in ds]
            if missing:
                raise ValueError(f"{name}: parameter(s) {missing} missing")
            if int(np.asarray(ds["temp_units"].values).ravel()[0]) != 0:
                raise ValueError(
                    f"{name}: temp_units is {ds['temp_units'].values}, expected 0 (Fahrenheit)"
                )
            ids = ds["nhm_id"].values.astype(np.int64).tolist()
            pos = match_ids(ids, hru_ids.tolist(), what=f"{name} HRU ids")
            out = {}
            for var in _PRMS_CLIMATE:
                da = ds[var]
                if da.dims != ("nmonth", "nhru") or da.shape[0] != 12:
                    raise ValueError(
                        f"{name}: {var} has dims {da.dims}, expected (nmonth=12, nhru)"
                    )
                out[var] = np.asarray(da.values, dtype=np.float64)[:, pos]
        return out

    def _attach_observations(
        self, graph: RiverGraph, poi_segment: np.ndarray, poi_id: list[str], time: np.ndarray
    ) -> None:
        import xarray as xr

        n = graph.num_nodes
        bad = [g for g, s in zip(poi_id, poi_segment.tolist(), strict=True) if not 1 <= s <= n]
        if bad:
            raise ValueError(f"poi_gage_segment is outside 1..{n} for gauges {format_ids(bad)}")
        nodes = poi_segment - 1
        uniq, counts = np.unique(nodes, return_counts=True)
        if (counts > 1).any():
            dup = [graph.node_id[int(i)] for i in uniq[counts > 1]]
            raise ValueError(
                f"several gauges on the same segment(s) {format_ids(dup)}: q_obs holds one per node"
            )
        with xr.open_dataset(Path(self.raw_dir) / "drb_2yr_gage_poi_obs.nc") as obs:
            obs_ids = [str(s).strip() for s in obs["poi_id"].values.tolist()]
            pos = match_ids(
                obs_ids, poi_id, what="drb_2yr_gage_poi_obs.nc gauge ids (poi_id vs poi_gage_id)"
            )
            q = np.asarray(obs["discharge"].transpose("poi_id", "time").values, dtype=np.float64)[
                pos
            ]
            q = to_canonical(
                q, obs["discharge"].attrs.get("units", "cfs"), "m3/s", variable="discharge"
            )
            obs_time = np.asarray(obs["time"].values).astype("datetime64[ns]")
        q_obs = np.full((n, len(time)), np.nan)
        where = np.searchsorted(time, obs_time)
        inside = (where < len(time)) & (time[np.minimum(where, len(time) - 1)] == obs_time)
        order = np.argsort(nodes)
        q_obs[nodes[:, None], where[inside][None, :]] = q[:, inside]
        graph.q_obs = torch.as_tensor(q_obs, dtype=torch.float32)
        has_data = np.isfinite(q_obs[nodes]).any(1)
        order = order[has_data[order]]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(nodes[order])] = True
        graph.gauge_mask = mask
        graph.gauge_index = torch.as_tensor(nodes[order], dtype=torch.long)
        graph.gauge_id = [poi_id[i] for i in order.tolist()]
        graph.gauge_id_no_data = [poi_id[i] for i in np.flatnonzero(~has_data).tolist()]

"""CAMELS-US (Newman et al. 2015; Addor et al. 2017) in its original text formats: one item
per basin, each a single-node river graph."""

from __future__ import annotations

import logging
import shutil
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnhydro.datasets._checks import check_finite
from gnnhydro.datasets.base import RiverDataset, copy_source_files, download_url_to
from gnnhydro.datasets.pet import DEFAULT_PET_METHOD, check_pet_method, potential_evapotranspiration
from gnnhydro.graph import RiverGraph
from gnnhydro.graph.errors import format_ids
from gnnhydro.units import cfs_to_m3s

__all__ = ["CamelsUS", "read_camels_forcing", "read_camels_streamflow", "read_camels_attributes"]

#: Official NCAR sources (GDEX, formerly RAL). Override on the class if they move.
CAMELS_TIMESERIES_URL = (
    "https://gdex.ucar.edu/dataset/camels/file/basin_timeseries_v1p2_metForcing_obsFlow.zip"
)
CAMELS_ATTRIBUTES_URL = "https://gdex.ucar.edu/dataset/camels/file/camels_attributes_v2.0.zip"

logger = logging.getLogger("gnnhydro")

_FORCING_PATTERN = {
    "daymet": "{id}_lump_cida_forcing_leap.txt",
    "maurer": "{id}_lump_maurer_forcing_leap.txt",
    "maurer_extended": "{id}_lump_maurer_forcing_leap.txt",
    "nldas": "{id}_lump_nldas_forcing_leap.txt",
    "nldas_extended": "{id}_lump_nldas_forcing_leap.txt",
}
#: attribute tables used by default; ``camels_hydro`` (signatures computed from the discharge
#: the models are trained on) is left out unless asked for.
DEFAULT_ATTRIBUTE_TABLES = ("topo", "clim", "soil", "vege", "geol")
_NON_NUMERIC = {"huc_02", "gauge_name", "gauge_id"}
_ATTRIBUTE_UNITS = {
    "gauge_lat": "deg", "gauge_lon": "deg", "elev_mean": "m", "slope_mean": "m/km", "area_gages2": "km2",
    "area_geospa_fabric": "km2", "p_mean": "mm/day", "pet_mean": "mm/day", "high_prec_dur": "day",
    "low_prec_dur": "day", "high_prec_freq": "day/yr", "low_prec_freq": "day/yr", "soil_depth_pelletier": "m",
    "soil_depth_statsgo": "m", "soil_conductivity": "cm/h", "max_water_content": "m", "sand_frac": "%",
    "silt_frac": "%", "clay_frac": "%", "water_frac": "%", "organic_frac": "%", "other_frac": "%",
    "root_depth_50": "m", "root_depth_99": "m", "geol_permeability": "log10(m2)", "q_mean": "mm/day",
}  # fmt: skip


def _find(root: Path, pattern: str) -> Path | None:
    hits = sorted(root.rglob(pattern)) if root.exists() else []
    return hits[0] if hits else None


def read_camels_forcing(path: str | Path) -> tuple[dict[str, float], Any]:
    """Read a CAMELS basin-mean forcing file: header (latitude [deg], elevation [m], area [m²])
    and a daily table with lower-case column names (``prcp(mm/day)``, ``tmax(c)``, ...) indexed by
    date."""
    import pandas as pd

    path = Path(path)
    with open(path) as fh:
        lat, elev, area = (float(fh.readline()) for _ in range(3))
    df = pd.read_csv(path, sep=r"\s+", skiprows=3)
    df.columns = [c.lower() for c in df.columns]
    for col in ("year", "mnth", "day"):
        if col not in df.columns:
            raise ValueError(f"{path.name}: column {col!r} missing; columns are {list(df.columns)}")
    df.index = pd.to_datetime(dict(year=df["year"], month=df["mnth"], day=df["day"]))
    return {"lat": lat, "elevation_m": elev, "area_m2": area}, df


def read_camels_streamflow(path: str | Path) -> Any:
    """Read a CAMELS ``*_streamflow_qc.txt`` file: daily discharge in m³/s (cfs converted;
    ``-999`` → NaN) as a pandas Series indexed by date."""
    import pandas as pd

    df = pd.read_csv(
        path, sep=r"\s+", header=None, usecols=[1, 2, 3, 4], names=["year", "month", "day", "q"]
    )
    q = df["q"].astype(np.float64).where(df["q"] >= 0)  # -999 = missing
    q.index = pd.to_datetime(df[["year", "month", "day"]])
    return cfs_to_m3s(q)


def read_camels_attributes(
    directory: str | Path, tables: Sequence[str] = DEFAULT_ATTRIBUTE_TABLES
) -> Any:
    """Read ``camels_<table>.txt`` (``;``-separated, ``gauge_id`` as string) and join the numeric
    columns into one table indexed by gauge id."""
    import pandas as pd

    directory = Path(directory)
    frames = []
    for t in tables:
        path = directory / f"camels_{t}.txt"
        if not path.exists():
            raise FileNotFoundError(f"CAMELS attribute table {path} not found")
        df = pd.read_csv(path, sep=";", dtype={"gauge_id": str}).set_index("gauge_id")
        keep = [
            c for c in df.columns if c not in _NON_NUMERIC and pd.api.types.is_numeric_dtype(df[c])
        ]
        frames.append(df[keep])
    return pd.concat(frames, axis=1)


class CamelsUS(RiverDataset):
    r"""CAMELS-US basins, one item per basin (a single-node graph, gauged at its only node).

    Layout of ``root/raw/`` (the original CAMELS layout; HUC sub-folders optional):
    ``basin_mean_forcing/<source>/[<huc>/]<id>_lump_<...>_forcing_leap.txt``,
    ``usgs_streamflow/[<huc>/]<id>_streamflow_qc.txt``, ``camels_attributes_v2.0/camels_*.txt``.

    * ``forcing`` ``[1, T, 3]``: ``precipitation`` = ``prcp`` [mm/day], ``temperature`` = mean of
      ``tmax``/``tmin`` [°C], ``pet`` [mm/day] = the file's PET column when present, otherwise
      ``pet_method`` (default Hargreaves) from ``tmin``/``tmax`` and the header latitude (the
      Maurer/NLDAS files have ``tmax == tmin``, which gives Hargreaves PET = 0: prefer
      ``daymet``). ``extra_forcing`` adds raw columns (``srad``, ``vp``, ``dayl``, ``swe``,
      ``tmax``, ``tmin``) in their units.
    * ``q_obs`` ``[1, T]`` m³/s (cfs converted, ``-999`` → NaN; NaN outside the basin's
      streamflow record).
    * ``time`` ``[T]``: one daily axis shared by every item (so that they batch into one
      disjoint graph): ``start``..``end`` when given, which every basin's forcing must cover
      (else a ``ValueError`` names the basins and their forcing spans); by default the span that
      every basin's forcing covers (the forcing must be complete: a model cannot run without
      it). Streamflow records of any length fit on it; observed days outside it are left out
      with a warning naming the basins.
    * ``x`` ``[1, F]``: numeric columns of the attribute tables (default: topo, clim, soil, vege,
      geol; ``hydro`` signatures only if asked, they are computed from the target discharge).
      Missing values (``NA``) are filled with the mean over all 671 CAMELS basins, with a
      warning naming basins and attributes.
    * ``area_km2`` = ``area_gages2`` (else the forcing header's area).

    Args:
        root: dataset root.
        basins: gauge ids (8-digit strings; ints are zero-padded), or a text file with one id
            per line (default: every basin with a forcing file for ``forcing_source``).
        forcing_source: ``daymet`` (default), ``maurer``, ``maurer_extended``, ``nldas``,
            ``nldas_extended``.
        start / end: optional dates (inclusive) of the common time axis; ``None``: the span
            every basin's forcing covers.
        attribute_tables: CAMELS attribute tables to read.
        extra_forcing: raw forcing columns to append.
        pet_method: PET when the file has no PET column (:mod:`gnnhydro.datasets.pet`):
            ``hargreaves`` (default), ``oudin``, ``hamon``, ``priestley_taylor`` (``daymet``
            only: incoming shortwave = ``srad`` × ``dayl``, elevation from the file header);
            a method other than the default also replaces a PET column.

    Citation: Newman et al. (2015), HESS 19, 209–223, doi:10.5194/hess-19-209-2015; Addor et al.
    (2017), HESS 21, 5293–5313, doi:10.5194/hess-21-5293-2017. Downloaded from NCAR GDEX
    (:data:`CAMELS_TIMESERIES_URL`, :data:`CAMELS_ATTRIBUTES_URL`) when absent.
    """

    name = "camels_us"
    timeseries_url = CAMELS_TIMESERIES_URL
    attributes_url = CAMELS_ATTRIBUTES_URL

    def __init__(
        self,
        root: str | Path,
        basins: Sequence[str] | None = None,
        forcing_source: str = "daymet",
        start: Any = None,
        end: Any = None,
        attribute_tables: Sequence[str] = DEFAULT_ATTRIBUTE_TABLES,
        extra_forcing: Sequence[str] = (),
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
        pet_method: str = DEFAULT_PET_METHOD,
    ) -> None:
        self.pet_method = check_pet_method(str(pet_method), "CamelsUS: ")
        if forcing_source not in _FORCING_PATTERN:
            raise ValueError(
                f"forcing_source must be one of {sorted(_FORCING_PATTERN)}, got {forcing_source!r}"
            )
        self._int_basins = False
        if basins is not None:
            if isinstance(basins, (str, Path)) and Path(basins).is_file():
                basins = Path(basins).read_text().split()  # a basin list file, one id per line
            elif isinstance(basins, (str, int)):
                basins = [basins]
            self._int_basins = any(isinstance(b, int) for b in basins)
            basins = [str(b).strip().zfill(8) for b in basins]
            dups = sorted({b for b in basins if basins.count(b) > 1})
            if dups:
                raise ValueError(f"CamelsUS: basins lists {format_ids(dups)} more than once")
        self.basins = basins
        self.forcing_source = forcing_source
        self.start, self.end = start, end
        self.attribute_tables = list(attribute_tables)
        self.extra_forcing = [c.lower() for c in extra_forcing]
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, source_dir)

    def config(self) -> dict[str, Any]:
        return {
            "basins": self.basins,
            "forcing_source": self.forcing_source,
            "start": str(self.start),
            "end": str(self.end),
            "attribute_tables": self.attribute_tables,
            "extra_forcing": self.extra_forcing,
            # the default stays out of the hash: existing caches remain valid
            **({"pet_method": self.pet_method} if self.pet_method != DEFAULT_PET_METHOD else {}),
        }

    @property
    def raw_file_names(self) -> list[str]:
        return [
            f"basin_mean_forcing/{self.forcing_source}",
            "usgs_streamflow",
            "camels_attributes_v2.0",
        ]

    def download(self) -> None:
        if self.source_dir is not None:
            copy_source_files(self.source_dir, self.raw_dir, self.raw_file_names)
            return
        raw = Path(self.raw_dir)
        for url in (self.timeseries_url, self.attributes_url):
            archive = raw / Path(url).name
            if not archive.exists():
                download_url_to(url, archive)
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(raw / "_extract")
        ext = raw / "_extract"
        for name in ("basin_mean_forcing", "usgs_streamflow", "camels_attributes_v2.0"):
            hits = sorted(p for p in ext.rglob(name) if p.is_dir())
            if not hits:
                raise FileNotFoundError(f"CAMELS archives in {raw} contain no {name!r} folder")
            shutil.copytree(hits[0], raw / name, dirs_exist_ok=True)
        for f in ext.rglob("camels_*.txt"):  # the attribute archive may have no folder
            (raw / "camels_attributes_v2.0").mkdir(exist_ok=True)
            shutil.copyfile(f, raw / "camels_attributes_v2.0" / f.name)
        shutil.rmtree(ext)

    # ------------------------------------------------------------------ processing
    def _basin_ids(self) -> list[str]:
        if self.basins is not None:
            return self.basins
        root = Path(self.raw_dir) / "basin_mean_forcing" / self.forcing_source
        suffix = _FORCING_PATTERN[self.forcing_source].format(id="")
        ids = sorted({p.name[: -len(suffix)] for p in root.rglob(f"*{suffix}")})
        if not ids:
            raise FileNotFoundError(f"no CAMELS forcing files *{suffix} under {root}")
        return ids

    def _read_basin(
        self, b: str, forcing_root: Path
    ) -> tuple[dict[str, float], Any, np.ndarray, list[str], list[str]]:
        """One basin's whole forcing file: header, date index, ``[T_b, F]`` float32 series in
        canonical units, and the forcing names/units."""
        fpath = _find(forcing_root, _FORCING_PATTERN[self.forcing_source].format(id=b))
        if fpath is None:
            raise FileNotFoundError(
                f"CAMELS basin {b}: no {self.forcing_source} forcing file under {forcing_root}"
            )
        header, df = read_camels_forcing(fpath)
        cols = {c.split("(")[0]: c for c in df.columns}
        missing = [c for c in ("prcp", "tmax", "tmin") if c not in cols]
        if missing:
            raise ValueError(
                f"{fpath.name}: forcing column(s) {missing} missing; columns are {list(df.columns)}"
            )
        prcp = df[cols["prcp"]].to_numpy(np.float64)
        tmax = df[cols["tmax"]].to_numpy(np.float64)
        tmin = df[cols["tmin"]].to_numpy(np.float64)
        if "pet" in cols and self.pet_method == DEFAULT_PET_METHOD:  # the file's own PET
            pet = df[cols["pet"]].to_numpy(np.float64)
        else:
            radiation = None
            if self.forcing_source == "daymet" and "srad" in cols and "dayl" in cols:
                # Daymet's srad is the mean flux over the daylight period [W m-2] × dayl [s]
                srad, dayl = (df[cols[c]].to_numpy(np.float64) for c in ("srad", "dayl"))
                radiation = (srad * dayl / 1e6)[None]  # MJ m-2 d-1
            pet = potential_evapotranspiration(
                self.pet_method,
                tmin=tmin[None],
                tmax=tmax[None],
                latitude_deg=header["lat"],
                time=df.index,
                radiation=radiation,
                elevation_m=header["elevation_m"],
                what=f"CamelsUS basin {b}: ",
            )[0]
        series = [prcp, 0.5 * (tmax + tmin), pet]
        fnames = ["precipitation", "temperature", "pet"]
        funits = ["mm/step", "degC", "mm/step"]
        for extra in self.extra_forcing:
            if extra not in cols:
                raise ValueError(
                    f"{fpath.name}: extra forcing column {extra!r} missing; columns are {list(df.columns)}"
                )
            series.append(df[cols[extra]].to_numpy(np.float64))
            fnames.append(extra)
            funits.append(cols[extra][len(extra) :].strip("()") or "-")
        header["file"] = fpath.name
        return header, df.index, np.stack(series, -1).astype(np.float32), fnames, funits

    def _time_axis(self, spans: dict[str, tuple[Any, Any]], flow: dict[str, Any]) -> Any:
        """The one daily time axis of every item: ``start``..``end`` when given (every basin's
        forcing must cover it), else the span that every basin's forcing covers."""
        import pandas as pd

        def fmt(bs: Sequence[str]) -> str:
            return ", ".join(f"{b} ({spans[b][0].date()}..{spans[b][1].date()})" for b in bs)

        first = max(s for s, _ in spans.values())
        last = min(e for _, e in spans.values())
        if first > last:
            raise ValueError(
                f"CAMELS-US: the forcing records do not overlap: {fmt(list(spans))}. Choose "
                "basins= whose records overlap."
            )
        t0 = pd.Timestamp(self.start) if self.start is not None else first
        t1 = pd.Timestamp(self.end) if self.end is not None else last
        if t1 < t0:
            raise ValueError(f"CAMELS-US: start {t0.date()} is after end {t1.date()}")
        short = [b for b, (s, e) in spans.items() if s > t0 or e < t1]
        if short:
            raise ValueError(
                f"CAMELS-US: the forcing of basins {fmt(short)} does not cover the requested "
                f"period {t0.date()}..{t1.date()} (forcing must be complete on the common time "
                f"axis). Every basin has forcing on {first.date()}..{last.date()}: choose start/end "
                "inside it, leave them null, or leave those basins out with basins=."
            )
        # sides chosen automatically (start/end null) that cut a basin's longer forcing
        cut_start = self.start is None and any(s < t0 for s, _ in spans.values())
        cut_end = self.end is None and any(e > t1 for _, e in spans.values())
        if cut_start or cut_end:
            trimmed = [
                b for b, (s, e) in spans.items() if (cut_start and s < t0) or (cut_end and e > t1)
            ]
            lost = {}
            for b in trimmed:
                q = flow[b]
                outside = ((q.index < t0) & cut_start) | ((q.index > t1) & cut_end)
                if n := int(q[outside].notna().sum()):
                    lost[b] = n
            msg = (
                f"CAMELS-US: forcing records differ; every item uses {t0.date()}..{t1.date()}, "
                f"the span every basin's forcing covers (forcing of {fmt(trimmed)} trimmed)"
            )
            if lost:
                warnings.warn(
                    f"{msg}; observed discharge outside it is not used: "
                    + ", ".join(f"{b}: {n} days" for b, n in lost.items()),
                    stacklevel=3,
                )
            else:
                logger.info(msg)
        axis = pd.date_range(t0, t1, freq="D")
        return axis

    def build(self) -> list[RiverGraph]:
        raw = Path(self.raw_dir)
        basins = self._basin_ids()
        attrs_all = read_camels_attributes(raw / "camels_attributes_v2.0", self.attribute_tables)
        unknown = [b for b in basins if b not in attrs_all.index]
        if unknown:
            hint = ""
            if self._int_basins:
                hint = (
                    " (gauge ids are 8-digit strings: quote them in YAML, '01022500'; an "
                    "unquoted 01022500 is read as an octal number)"
                )
            raise ValueError(
                f"CAMELS basins {format_ids(unknown)} are not in the attribute tables{hint}"
            )
        means = attrs_all.mean(numeric_only=True)
        sub = attrs_all.loc[basins]
        holes = sub.isna()
        if holes.to_numpy().any():
            detail = {
                b: list(sub.columns[holes.loc[b].to_numpy()]) for b in basins if holes.loc[b].any()
            }
            warnings.warn(
                f"CAMELS attributes missing (filled with the all-basin mean): {detail}",
                stacklevel=2,
            )
        sub = sub.fillna(means)
        names = list(sub.columns)
        units = [_ATTRIBUTE_UNITS.get(c, "-") for c in names]
        forcing_root = raw / "basin_mean_forcing" / self.forcing_source
        flow_root = raw / "usgs_streamflow"
        records, flow, spans = {}, {}, {}
        for b in basins:
            qpath = _find(flow_root, f"{b}_streamflow_qc.txt")
            if qpath is None:
                raise FileNotFoundError(f"CAMELS basin {b}: no streamflow file under {flow_root}")
            records[b] = self._read_basin(b, forcing_root)
            index = records[b][1]
            if len(index) == 0:
                raise ValueError(f"CAMELS basin {b}: forcing file {records[b][0]['file']} is empty")
            if not index.is_unique:
                raise ValueError(
                    f"CAMELS basin {b}: {records[b][0]['file']} has duplicate dates, first "
                    f"{index[index.duplicated()][0].date()}"
                )
            spans[b] = (index.min(), index.max())
            flow[b] = read_camels_streamflow(qpath)
            if not flow[b].index.is_unique:
                dup = flow[b].index[flow[b].index.duplicated()]
                raise ValueError(f"{qpath.name}: duplicate dates, first {dup[0].date()}")
        axis = self._time_axis(spans, flow)
        time = axis.to_numpy().astype("datetime64[ns]")
        graphs = []
        for b in basins:
            header, index, values, fnames, funits = records.pop(b)
            pos = index.get_indexer(axis)
            if (pos < 0).any():
                raise ValueError(
                    f"CAMELS basin {b}: {header['file']} lacks {int((pos < 0).sum())} day(s) of the "
                    f"time axis {axis[0].date()}..{axis[-1].date()}, first {axis[pos < 0][0].date()} "
                    "(forcing must be complete)"
                )
            forcing = values[pos][None]  # [1, T, F] on the common axis
            for k, name in enumerate(fnames):
                check_finite(forcing[:, :, k], variable=name, ids=[b], time=time)
            q = flow.pop(b).reindex(axis)  # NaN outside the basin's record
            area = (
                float(sub.loc[b, "area_gages2"])
                if "area_gages2" in sub.columns
                else header["area_m2"] / 1e6
            )
            lon = float(sub.loc[b, "gauge_lon"]) if "gauge_lon" in sub.columns else float("nan")
            g = RiverGraph(
                edge_index=torch.zeros(2, 0, dtype=torch.long),
                node_id=[b],
                x=torch.as_tensor(sub.loc[[b]].to_numpy(np.float64), dtype=torch.float32),
                x_names=names,
                area_km2=torch.tensor([area], dtype=torch.float32),
                pos=torch.tensor([[lon, header["lat"]]], dtype=torch.float32),
            )
            g.x_units = units
            g.forcing = torch.from_numpy(np.ascontiguousarray(forcing))
            g.forcing_names = fnames
            g.forcing_units = funits
            g.q_obs = torch.tensor(q.to_numpy(np.float64)[None], dtype=torch.float32)
            g.gauge_mask = torch.tensor([True])
            g.gauge_index = torch.tensor([0])
            g.gauge_id = [b]
            g.time = time
            g.step_seconds = 86_400.0
            g.elevation_m = float(header["elevation_m"])
            graphs.append(g)
        return graphs

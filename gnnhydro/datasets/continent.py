"""A synthetic continent: 10^5–10^6 reaches, thousands of nested gauges, decades of daily forcing,
written chunk-wise to zarr in bounded memory (for ``gnnhydro bench scale`` and scale tests).

:func:`generate_continent` writes the documented generic layout
(:class:`~gnnhydro.datasets.GenericRiverDataset`): ``raw/nodes.parquet`` (network and static
attributes) and ``raw/timeseries.zarr`` (``precipitation``, ``temperature``, ``pet``,
``discharge``; dims ``(time, id)``, chunks of ``time_chunk`` steps × ``node_chunk`` reaches), so
``GenericRiverDataset(root, lazy=True)`` reads it per sample, and ``dataset=continent`` generates
and caches it under the data root. Deterministic from the seed. Never is an ``[N, T]`` array of
the whole network in memory: forcing is produced and written node block by node block, and the
"true" discharge is simulated by :func:`~gnnhydro.models.streaming.stream_discharge` (time
chunks × node blocks, states carried) keeping the gauges' series only.

Construction:

1. **Network**: a forest of river basins with power-law sizes (the largest ≈ 30 % of the
   reaches), each a deep random network (:func:`~gnnhydro.graph.synthetic.random_river_network`
   with links of ``mean_chain`` reaches: hundreds of topological levels at 2·10^5 reaches).
   Reaches are numbered in depth-first preorder from each outlet, so every basin — the upstream
   area of any reach — is one contiguous id range (one contiguous read from the store).
2. **Layout**: x along the preorder (subtrees side by side), y the along-channel distance to the
   outlet; the continent spans ``√(N · 10 km²)``; lon/lat from it (30–45 °N).
3. **Attributes** (the names of the embedded synthetic basin, so
   :func:`~gnnhydro.datasets.synthetic.true_parameter_function` gives the true parameters):
   elevation rising inland plus a random field, soils and forest from Gaussian random fields
   (random Fourier features, evaluated block-wise), climate means from the forcing.
4. **Weather**: regions of ~250 km, each its own stochastic weather generator
   (:func:`~gnnhydro.datasets.synthetic.weather_generator`) over cells of ~50 km; a reach takes
   its cell's series, its temperature lapse-corrected to its own elevation.
5. **Truth and gauges**: HBV (``nmul=1``, the first year cycled three times as spin-up) and
   Muskingum with the true parameters, streamed; gauges are drawn among reaches with 10–5,000
   reaches upstream (nested where they fall in each other's basins), observed with 5 %
   log-normal noise; ``discharge`` is NaN elsewhere (such chunks are not even stored).
"""

from __future__ import annotations

import json
import math
import shutil
import time as _time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor, nn

from gnnhydro.datasets.generic import GenericRiverDataset
from gnnhydro.datasets.synthetic import (
    ATTRIBUTE_NAMES,
    ATTRIBUTE_UNITS,
    _sigmoid,
    weather_generator,
)

__all__ = ["generate_continent", "SyntheticContinent", "CONTINENT_VERSION"]

#: bumped whenever the generator's output changes (part of the cache folder name)
CONTINENT_VERSION = 1

_MEAN_AREA_KM2 = 10.0
_REGION_KM = 250.0
_CELL_KM = 50.0
_MAX_GAUGE_BASIN = 5_000  # reaches upstream of a gauge (≈ 50,000 km²)
_MIN_GAUGE_BASIN = 10


class _FixedParameters(nn.Module):
    """A parameterizer that returns given parameters (the truth) whatever its input."""

    uses_topology = False

    def __init__(self, params: dict[str, Tensor]) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor, edge_index: Tensor, **_: Any) -> dict[str, Tensor]:
        return self.params


def _forest(num_nodes: int, rng: np.random.Generator, mean_chain: float) -> np.ndarray:
    """Downstream index (−1 at outlets) of a forest of deep basins with power-law sizes,
    renumbered in depth-first preorder from each outlet."""
    from gnnhydro.graph.synthetic import random_river_network

    sizes: list[int] = []
    left = num_nodes
    while left > 0:  # each basin takes a random share of what is left: a few big, many small
        size = max(1, min(left, int(left * rng.uniform(0.15, 0.45))))
        if left < 64:
            size = left
        sizes.append(size)
        left -= size
    parent = np.empty(num_nodes, dtype=np.int64)
    offset = 0
    for size in sizes:
        g = random_river_network(
            size, depth="deep", seed=int(rng.integers(2**31)), mean_chain=mean_chain
        )
        down = np.full(size, -1, dtype=np.int64)
        src, dst = g.edge_index.numpy()
        down[src] = dst
        outlet = int(np.flatnonzero(down < 0)[0])
        order = _preorder(down, outlet)
        rank = np.empty(size, dtype=np.int64)
        rank[order] = np.arange(size)
        relabelled = np.where(down[order] >= 0, rank[np.maximum(down[order], 0)], -1)
        parent[offset : offset + size] = np.where(relabelled >= 0, relabelled + offset, -1)
        offset += size
    return parent


def _preorder(down: np.ndarray, root: int) -> np.ndarray:
    """Depth-first preorder of a tree given by downstream indices, from ``root``."""
    n = down.size
    src = np.flatnonzero(down >= 0)
    order = np.argsort(down[src], kind="stable")
    children = src[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(down[src], minlength=n), out=indptr[1:])
    return _preorder_walk(children, indptr, root, n)


@njit(cache=True)
def _preorder_walk(children: np.ndarray, indptr: np.ndarray, root: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    stack[0] = root
    top, k = 1, 0
    while top:
        top -= 1
        v = stack[top]
        out[k] = v
        k += 1
        for j in range(indptr[v + 1] - 1, indptr[v] - 1, -1):
            stack[top] = children[j]
            top += 1
    return out[:k]


def _field(
    pos_km: np.ndarray, rng: np.random.Generator, length_km: float, k: int = 128
) -> np.ndarray:
    """A unit-variance Gaussian random field at ``pos_km`` ``[N, 2]`` (random Fourier features),
    evaluated in blocks so memory stays ``O(block · k)``."""
    omega = rng.normal(size=(k, 2)) / length_km
    phase = rng.uniform(0.0, 2.0 * math.pi, size=k)
    weight = rng.normal(size=k) * math.sqrt(2.0 / k)
    out = np.empty(pos_km.shape[0])
    for a in range(0, pos_km.shape[0], 65_536):
        block = pos_km[a : a + 65_536]
        out[a : a + block.shape[0]] = np.cos(block @ omega.T + phase) @ weight
    return out


@njit(cache=True)
def _upstream_counts(parent: np.ndarray) -> np.ndarray:
    """Reaches upstream of each reach, itself included (preorder: parents before children)."""
    out = np.ones(parent.size)
    for i in range(parent.size - 1, -1, -1):
        if parent[i] >= 0:
            out[parent[i]] += out[i]
    return out


@njit(cache=True)
def _distance_to_outlet(parent: np.ndarray, length_km: np.ndarray) -> np.ndarray:
    """Along-channel distance from each reach to its outlet [km] (preorder)."""
    out = length_km.copy()
    for i in range(parent.size):
        if parent[i] >= 0:
            out[i] += out[parent[i]]
    return out


def generate_continent(
    root: str | Path,
    *,
    num_nodes: int,
    years: int,
    num_gauges: int,
    seed: int = 0,
    start: str = "2000-01-01",
    node_chunk: int = 2048,
    time_chunk: int = 365,
    mean_chain: float = 8.0,
    log: Any = print,
) -> Path:
    """Write a synthetic continent into ``root/raw`` (see the module docstring); returns ``root``.

    The files appear at once when complete (written to ``raw.partial`` first), with
    ``raw/continent.json`` recording the arguments, the version and the generation time.

    Args:
        root: dataset root.
        num_nodes: reaches N (≥ 100).
        years: calendar years of daily forcing (≥ 1).
        num_gauges: gauges G (≤ the reaches with 10–5,000 reaches upstream).
        seed: random seed.
        start: first day (``YYYY-01-01``).
        node_chunk / time_chunk: zarr chunk shape (reaches × steps).
        mean_chain: mean reaches per link (sets the depth).
        log: called with progress lines (``None``: silent).
    """
    t_start = _time.perf_counter()
    say = log or (lambda *_: None)
    n, years, g_count = int(num_nodes), int(years), int(num_gauges)
    if n < 100 or years < 1 or g_count < 1:
        raise ValueError(
            f"continent: need num_nodes >= 100, years >= 1, num_gauges >= 1; got {n}, {years}, {g_count}"
        )
    root = Path(root)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    parent = _forest(n, rng, mean_chain)
    length_m = rng.lognormal(np.log(2000.0), 0.6, n)
    area = rng.lognormal(np.log(_MEAN_AREA_KM2), 0.8, n)
    count = _upstream_counts(parent)
    candidates = np.flatnonzero((count >= _MIN_GAUGE_BASIN) & (count <= _MAX_GAUGE_BASIN))
    if g_count > candidates.size:  # before the weather: an impossible request costs nothing
        raise ValueError(
            f"continent: {g_count} gauges asked for, but only {candidates.size} reaches have "
            f"{_MIN_GAUGE_BASIN}-{_MAX_GAUGE_BASIN} reaches upstream; use fewer gauges or more nodes"
        )
    dist = _distance_to_outlet(parent, length_m / 1e3)
    width = math.sqrt(n * _MEAN_AREA_KM2)
    # basins side by side along x (preorder), inland along y (distance to the outlet)
    xy = np.stack([np.arange(n) / n * width, dist / max(dist.max(), 1e-9) * width], axis=1)
    lat = 30.0 + 15.0 * xy[:, 1] / width
    lon = -110.0 + xy[:, 0] / (111.2 * np.cos(np.radians(lat)))
    relief = _field(xy, rng, 150.0)
    elevation = np.clip(50.0 + 0.9 * xy[:, 1] + 250.0 * relief, 0.0, None)
    # channel slope steepens upstream (small basins) and with relief
    slope = np.exp(np.log(2e-3) - 0.35 * np.log(count) + 0.5 * _field(xy, rng, 80.0))
    slope = np.clip(slope * rng.lognormal(0.0, 0.3, n), 1e-5, 0.2)
    ls = np.log(slope / 2e-3)
    soil = 0.3 + 1.4 * _sigmoid(0.9 * _field(xy, rng, 120.0) - 0.8 * ls)
    clay = 0.05 + 0.40 * _sigmoid(1.2 * _field(xy, rng, 90.0) - 0.3 * ls)
    silt = 0.25 + 0.20 * _sigmoid(_field(xy, rng, 90.0))
    sand = np.clip(1.0 - clay - silt, 0.03, None)
    ekm = elevation / 1e3
    forest = np.clip(
        _sigmoid(0.9 * _field(xy, rng, 75.0) + 2.2 - 2.0 * (ekm - 1.0) ** 2 - 0.8), 0.02, 0.98
    )
    say(f"continent: network of {n} reaches in {_time.perf_counter() - t_start:.1f} s")

    # weather: regions of ~250 km, each with its own generator over cells of ~50 km
    first = np.datetime64(start, "D")
    end = np.datetime64(f"{int(str(first)[:4]) + years}{str(first)[4:]}", "D")
    dates = np.arange(first, end, dtype="datetime64[D]")
    steps = dates.size
    cells_per_side = max(1, int(round(width / _CELL_KM)))
    cell_xy = np.clip((xy / width * cells_per_side).astype(np.int64), 0, cells_per_side - 1)
    cell = cell_xy[:, 0] * cells_per_side + cell_xy[:, 1]
    num_cells = cells_per_side**2
    cell_count = np.bincount(cell, minlength=num_cells)
    cell_elev = np.bincount(cell, weights=elevation, minlength=num_cells) / np.maximum(
        cell_count, 1
    )
    centre = (np.stack(np.divmod(np.arange(num_cells), cells_per_side), 1) + 0.5) * (
        width / cells_per_side
    )
    cell_lat = 30.0 + 15.0 * centre[:, 1] / width
    regions_per_side = max(1, int(round(width / _REGION_KM)))
    region = np.clip(
        (centre[:, 0] / width * regions_per_side).astype(int), 0, regions_per_side - 1
    ) * regions_per_side + np.clip(
        (centre[:, 1] / width * regions_per_side).astype(int), 0, regions_per_side - 1
    )
    weather = {
        v: np.empty((num_cells, steps), np.float32) for v in ("precipitation", "temperature", "pet")
    }
    for r in np.unique(region):
        members = np.flatnonzero(region == r)
        # the generator's spacing is that of the small basin: scale positions to its km
        w = weather_generator(
            centre[members] / _CELL_KM * math.sqrt(80.0),
            cell_lat[members],
            cell_elev[members],
            dates,
            np.random.Generator(np.random.PCG64([int(seed), int(r), 7])),
        )
        for v in weather:
            weather[v][members] = w[v]
    say(f"continent: weather of {num_cells} cells x {steps} days")

    def node_forcing(t0: int, t1: int, nodes: Any) -> Tensor:
        if isinstance(nodes, Tensor):
            nodes = nodes.numpy()
        c = cell[nodes]
        temp = weather["temperature"][c, t0:t1] - 6.5e-3 * (elevation[nodes] - cell_elev[c])[:, None]
        values = np.stack(
            [weather["precipitation"][c, t0:t1], temp, weather["pet"][c, t0:t1]], axis=-1
        )
        return torch.from_numpy(values.astype(np.float32))

    p_mean = weather["precipitation"].mean(1, dtype=np.float64)[cell]
    pet_mean = weather["pet"].mean(1, dtype=np.float64)[cell]
    t_mean = weather["temperature"].mean(1, dtype=np.float64)[cell] - 6.5e-3 * (
        elevation - cell_elev[cell]
    )
    attrs = {
        "area_km2": area,
        "length_m": length_m,
        "elevation_m": elevation,
        "slope": slope,
        "aridity": pet_mean / np.maximum(p_mean, 1e-3),
        "p_mean": p_mean,
        "t_mean": t_mean,
        "soil_depth_m": soil,
        "clay_frac": clay,
        "sand_frac": sand,
        "forest_frac": forest,
    }
    x = torch.from_numpy(np.stack([attrs[v] for v in ATTRIBUTE_NAMES], axis=1).astype(np.float32))

    # gauges: nested, on reaches with 10–5,000 reaches upstream
    gauges = np.sort(rng.choice(candidates, size=g_count, replace=False))

    staging = root / "raw.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _write_nodes(staging / "nodes.parquet", parent, attrs, lon, lat)
    graph = _network(parent, x)
    _write_truth(staging / "true_parameters.parquet", x)
    q_gauges = _true_discharge(graph, node_forcing, steps, gauges)
    say(f"continent: true discharge at {g_count} gauges ({_time.perf_counter() - t_start:.0f} s)")
    noise = rng.lognormal(-0.5 * 0.05**2, 0.05, size=q_gauges.shape)
    observed = (q_gauges * noise).astype(np.float32)
    _write_series(
        staging / "timeseries.zarr",
        dates,
        n,
        node_forcing,
        gauges,
        observed,
        node_chunk,
        time_chunk,
        say,
    )
    manifest = {
        "num_nodes": n,
        "years": years,
        "num_gauges": g_count,
        "seed": int(seed),
        "start": start,
        "steps": int(steps),
        "levels": int(graph.topo_level.max()) + 1,
        "version": CONTINENT_VERSION,
        "seconds": round(_time.perf_counter() - t_start, 1),
    }
    (staging / "continent.json").write_text(json.dumps(manifest, indent=2))
    raw = root / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    staging.rename(raw)
    say(f"continent: written to {raw} in {manifest['seconds']:.0f} s")
    return root


def _write_nodes(
    path: Path, parent: np.ndarray, attrs: dict, lon: np.ndarray, lat: np.ndarray
) -> None:
    import pandas as pd

    ids = np.arange(parent.size).astype(str)
    table = pd.DataFrame(
        {"id": ids, "downstream_id": np.where(parent >= 0, ids[np.maximum(parent, 0)], "")}
    )
    table["lon"], table["lat"] = lon, lat
    for name in ATTRIBUTE_NAMES:
        table[name] = attrs[name].astype(np.float32)
    table.to_parquet(path, index=False)
    units = dict(zip(ATTRIBUTE_NAMES, ATTRIBUTE_UNITS, strict=True))
    (path.parent / "attribute_units.json").write_text(json.dumps(units))


def _write_truth(path: Path, x: Tensor) -> None:
    """The true HBV (nmul 1) and Muskingum parameters of every reach (row = reach id)."""
    import pandas as pd

    from gnnhydro.datasets.synthetic import true_parameter_function

    truth = true_parameter_function(x, ATTRIBUTE_NAMES)
    pd.DataFrame({k: v.numpy() for k, v in truth.items()}).to_parquet(path, index=False)


def _network(parent: np.ndarray, x: Tensor) -> Any:
    from gnnhydro.graph import RiverGraph

    src = np.flatnonzero(parent >= 0)
    graph = RiverGraph(
        edge_index=torch.from_numpy(np.stack([src, parent[src]])),
        node_id=list(range(parent.size)),
        x=x,
        area_km2=x[:, ATTRIBUTE_NAMES.index("area_km2")].clone(),
        length_m=x[:, ATTRIBUTE_NAMES.index("length_m")].clone(),
        slope=x[:, ATTRIBUTE_NAMES.index("slope")].clone(),
        validate=False,
    )
    graph.step_seconds = 86_400.0
    return graph


def _true_discharge(graph: Any, forcing: Any, steps: int, gauges: np.ndarray) -> np.ndarray:
    """``[G, T]`` m³/s: HBV + Muskingum with the true parameters, streamed."""
    from gnnhydro.datasets.synthetic import ROUTING_PARAMS, RUNOFF_PARAMS, true_parameter_function
    from gnnhydro.models import HydroModel
    from gnnhydro.models.streaming import stream_discharge
    from gnnhydro.runoff import HBV

    x = graph.x
    truth = true_parameter_function(x, ATTRIBUTE_NAMES)
    params = {k: truth[k].unsqueeze(-1) for k in RUNOFF_PARAMS}
    params.update({k: truth[k] for k in ROUTING_PARAMS})
    model = HydroModel(
        _FixedParameters(params),
        HBV(nmul=1),
        "muskingum",
        spinup_steps=min(365, steps),
        spinup_cycles=3,
    )
    out = np.empty((gauges.size, steps), np.float32)
    index = torch.from_numpy(gauges)

    def keep(t0: int, q: Tensor) -> None:
        out[:, t0 : t0 + q.shape[1]] = q[index].numpy()

    stream_discharge(
        model,
        graph,
        forcing,
        ["precipitation", "temperature", "pet"],
        keep,
        num_steps=steps,
        time_chunk=365,
        node_chunk=32_768,
    )
    return out


def _write_series(
    path: Path,
    dates: np.ndarray,
    n: int,
    forcing: Any,
    gauges: np.ndarray,
    observed: np.ndarray,
    node_chunk: int,
    time_chunk: int,
    say: Any,
) -> None:
    """``timeseries.zarr`` written node block by node block (blocks = zarr chunks)."""
    import dask.array as da
    import xarray as xr
    import zarr

    steps = dates.size
    chunks = (min(time_chunk, steps), min(node_chunk, n))
    units = {"precipitation": "mm/day", "temperature": "degC", "pet": "mm/day", "discharge": "m3/s"}
    template = xr.Dataset(
        {
            v: (
                ("time", "id"),
                da.full((steps, n), np.nan, dtype=np.float32, chunks=chunks),
                {"units": u},
            )
            for v, u in units.items()
        },
        coords={"time": dates.astype("datetime64[ns]"), "id": np.arange(n, dtype=np.int64)},
    )
    encoding = {v: {"chunks": chunks, "_FillValue": np.float32("nan")} for v in units}
    template.to_zarr(
        path, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=2
    )
    group = zarr.open_group(path, mode="r+")
    arrays = {v: group[v] for v in units}
    block = chunks[1]
    for a in range(0, n, block):
        b = min(n, a + block)
        values = forcing(0, steps, slice(a, b)).numpy()
        for k, v in enumerate(("precipitation", "temperature", "pet")):
            arrays[v][:, a:b] = np.ascontiguousarray(values[:, :, k].T)
        inside = (gauges >= a) & (gauges < b)
        if inside.any():
            q = np.full((steps, b - a), np.nan, np.float32)
            q[:, gauges[inside] - a] = observed[inside].T
            arrays["discharge"][:, a:b] = q
        if a // block % 20 == 0:
            say(f"continent: forcing written for {b}/{n} reaches")
    zarr.consolidate_metadata(path)


class SyntheticContinent(GenericRiverDataset):
    """The synthetic continent (:func:`generate_continent`) as a dataset: generated on first use
    into ``root/raw``, then read like any generic dataset (lazy by default: forcing stays in the
    zarr store and is read per sample).

    Args:
        root: dataset root (``dataset=continent`` puts each size in its own folder under the
            data root).
        num_nodes, years, num_gauges, seed: see :func:`generate_continent`.
        lazy: keep forcing on disk (default ``True``).
    """

    name = "continent"

    def __init__(
        self,
        root: str | Path,
        num_nodes: int = 20_000,
        years: int = 2,
        num_gauges: int = 200,
        seed: int = 0,
        lazy: bool = True,
        force_reload: bool = False,
    ) -> None:
        self.num_nodes, self.years = int(num_nodes), int(years)
        self.num_gauges, self.seed = int(num_gauges), int(seed)
        super().__init__(root, lazy=lazy, force_reload=force_reload)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "num_nodes": self.num_nodes,
            "years": self.years,
            "num_gauges": self.num_gauges,
            "seed": self.seed,
            "version": CONTINENT_VERSION,
        }

    @property
    def raw_file_names(self) -> list[str]:
        return ["nodes.parquet", "timeseries.zarr", "continent.json"]

    def build(self) -> list[Any]:
        """The generic item, plus ``true_params`` ``{name: [N]}`` (the parameters that made the
        discharge) so that learned parameter maps can be checked against the truth."""
        import pandas as pd

        graphs = super().build()
        path = Path(self.raw_dir) / "true_parameters.parquet"
        if path.exists():
            table = pd.read_parquet(path)
            order = np.asarray([int(i) for i in graphs[0].node_id])
            graphs[0].true_params = {
                k: torch.from_numpy(table[k].to_numpy()[order]).float() for k in table.columns
            }
        return graphs

    def download(self) -> None:
        generate_continent(
            self.root,
            num_nodes=self.num_nodes,
            years=self.years,
            num_gauges=self.num_gauges,
            seed=self.seed,
        )

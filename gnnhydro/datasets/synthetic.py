"""The embedded default dataset: a synthetic river basin with known "true" parameters.

:class:`SyntheticRiverBasin` generates, offline and deterministically from a seed, a river network
of a few hundred reaches, spatially correlated static attributes, twelve years of daily weather
from a stochastic weather generator (seasons, storms, snow), "true" HBV and Muskingum parameter
maps that are known smooth functions of the attributes (:func:`true_parameter_function`), and
discharge simulated with gnnhydro's own HBV and Muskingum router from those maps, observed with
noise and gaps at a few dozen gauges.  Because the parameters are known, a learned parameterizer
can be checked against the truth, not only against discharge.

Generation steps (all numpy ``Generator(PCG64(seed))`` draws in a fixed order, float64 until the
data are stored as float32):

1. **Network** (:func:`random_basin_network`): catchment centroids by best-candidate sampling in a
   lobed, north–south elongated basin outline (≈ 80 km² per catchment, centred near 42 °N);
   local areas are the Voronoi cells inside the outline (Monte-Carlo); the river tree is the
   shortest-path tree over the Delaunay neighbours with spatially correlated random edge costs,
   grown from 1–3 outlets on the southern rim (the main outlet drains most of the basin).
   Reach length = centroid-to-downstream-centroid distance × sinuosity (1.1–1.4); channel slope
   grows upstream and with a random uplift field; elevations accumulate ``slope × length`` from
   the outlets upward.
2. **Attributes** (:data:`ATTRIBUTE_NAMES`): Gaussian random fields over the centroids (random
   Fourier features) combined with terrain (soil depth thins on steep slopes, forest peaks at
   mid-elevations), plus climate attributes computed from the generated forcing.
3. **Weather** (:func:`weather_generator`): a basin-wide two-state (wet/dry) Markov chain with
   seasonal transition probabilities; gamma wet-day amounts with occasional storm multipliers;
   a moving, spatially correlated anomaly field decides local coverage and intensity; orographic
   enhancement with elevation; isolated summer showers on dry days.  Temperature: seasonal cycle,
   lapse rate 6.5 °C/km, latitude gradient, AR(1) regional anomaly, a small spatial anomaly field,
   cooler wet days.  PET: Hargreaves–Samani from daily Tmin/Tmax (:func:`gnnhydro.units.hargreaves_pet`),
   or the option ``pet_method`` (:mod:`gnnhydro.datasets.pet`: ``oudin``, ``hamon``).
4. **Truth**: :func:`true_parameter_function` of the attributes; HBV (``nmul=1``) run with a three-
   year warm-up (weather generated for it, then dropped), runoff in mm/day → m³/s by :func:`gnnhydro.units.mm_per_step_to_m3s`, routed by
   Muskingum through the network → ``q_true``.
5. **Observations**: ~13 % of the nodes are gauged (all outlets, mainstem, headwater and mid-size
   catchments, nested); ``q_obs`` = ``q_true`` × lognormal AR(1) error (σ = 7 %) + small additive
   noise, with a few gaps and isolated missing days; NaN elsewhere.

Two options change the truth, each off by default (then the output is bit-identical to the
generator without them):

* ``hidden_field = h`` in [0, 1] (:func:`hidden_parameter_field`, :func:`blend_hidden_field`):
  the parameters in :data:`HIDDEN_FIELD_PARAMS` get a share ``h`` of their (unbounded) spatial
  variance from a smooth random field that is *not* among the attributes (orthogonal to every
  attribute column), so no function of ``x`` recovers them fully.
* ``isolated = True``: the same catchments without the river network (no edges, every reach its
  own outlet, CAMELS-style); each catchment's discharge is its own routed runoff.
* ``reservoirs = K``: K reaches with a large upstream area (not outlets, not nested where the
  network allows, :func:`choose_reservoirs`) become reservoirs whose capacity is
  :data:`RESERVOIR_CAPACITY_DAYS` of their mean free-flowing inflow; the truth is routed through
  the ``learned`` reservoir operator with true parameters (:data:`RESERVOIR_PARAMS`, drawn per
  reservoir) and each reservoir's reach (its release: the flow below the dam) is gauged.
* ``pet_method`` (default ``hargreaves``; ``oudin``, ``hamon``: :mod:`gnnhydro.datasets.pet`):
  the PET of the forcing, the truth simulated with it and the ``aridity`` attribute computed
  from it; it draws no random numbers, so the weather, gauges and noise are those of the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnhydro.datasets.base import RiverDataset
from gnnhydro.datasets.pet import DEFAULT_PET_METHOD, check_pet_method, potential_evapotranspiration
from gnnhydro.graph import RiverGraph
from gnnhydro.spec import from_bounds, to_bounds
from gnnhydro.units import mm_per_step_to_m3s

__all__ = [
    "SyntheticRiverBasin",
    "generate_synthetic_basin",
    "random_basin_network",
    "weather_generator",
    "simulate_discharge",
    "true_parameter_function",
    "hidden_parameter_field",
    "blend_hidden_field",
    "ATTRIBUTE_NAMES",
    "ATTRIBUTE_UNITS",
    "RUNOFF_PARAMS",
    "ROUTING_PARAMS",
    "HIDDEN_FIELD_PARAMS",
    "RESERVOIR_PARAMS",
    "RESERVOIR_CAPACITY_DAYS",
    "choose_reservoirs",
    "SYNTHETIC_VERSION",
]

#: Bumped whenever the generator changes its output (part of the processed file name).
SYNTHETIC_VERSION = 2

#: Static attributes in ``x`` (raw physical units, see :data:`ATTRIBUTE_UNITS`).
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "area_km2",  # local (incremental) catchment area
    "length_m",  # reach length
    "elevation_m",  # mean catchment elevation
    "slope",  # channel slope
    "aridity",  # mean PET / mean precipitation
    "p_mean",  # mean daily precipitation
    "t_mean",  # mean daily air temperature
    "soil_depth_m",  # soil depth
    "clay_frac",  # clay fraction of the soil
    "sand_frac",  # sand fraction of the soil
    "forest_frac",  # forest cover fraction
)
ATTRIBUTE_UNITS: tuple[str, ...] = (
    "km2",
    "m",
    "m",
    "m/m",
    "-",
    "mm/day",
    "°C",
    "m",
    "-",
    "-",
    "-",
)
#: HBV parameters given by :func:`true_parameter_function` (``HBV(nmul=1)``'s default set).
RUNOFF_PARAMS: tuple[str, ...] = (
    "beta",
    "fc",
    "k0",
    "k1",
    "k2",
    "lp",
    "perc",
    "uzl",
    "tt",
    "cfmax",
    "cfr",
    "cwh",
)
#: Muskingum parameters given by :func:`true_parameter_function` (``k`` in days = time steps).
ROUTING_PARAMS: tuple[str, ...] = ("k", "x")
#: HBV parameters that take part of their spatial pattern from the hidden field (option
#: ``hidden_field``), with the sign of the field in each: one unmapped subsurface property —
#: deeper, more permeable ground stores more (``fc``), recharges more non-linearly (``beta``),
#: percolates more (``perc``) and drains more slowly (``k1``, ``k2``).
HIDDEN_FIELD_PARAMS: dict[str, float] = {
    "fc": 1.0,
    "beta": 1.0,
    "perc": 1.0,
    "k1": -1.0,
    "k2": -1.0,
}

#: true parameters of the ``learned`` reservoir operator (option ``reservoirs``): the range each
#: reservoir's value is drawn from, uniformly (release_days in days, the others –)
RESERVOIR_PARAMS: dict[str, tuple[float, float]] = {
    "reservoir_release_days": (20.0, 60.0),
    "reservoir_exponent": (1.0, 1.6),
    "reservoir_dead_fraction": (0.05, 0.25),
}
#: reservoir capacity (option ``reservoirs``) in days of the reach's mean free-flowing inflow
RESERVOIR_CAPACITY_DAYS = 120.0

_LON0, _LAT0 = -100.0, 42.0  # centre of the basin [degrees]
_KM_PER_DEG_LAT = 111.2
_MEAN_AREA_KM2 = 80.0
_WARMUP_DAYS = 3 * 365  # spin-up of stores and channels before the record (dropped)
_STEP_SECONDS = 86_400.0


# ---------------------------------------------------------------------------------- fields
def _rff_basis(
    pos_km: np.ndarray, rng: np.random.Generator, length_km: float, k: int
) -> np.ndarray:
    """Random Fourier features of a squared-exponential kernel with length scale ``length_km``.

    ``basis @ w`` with ``w ~ N(0, I_k)`` is (approximately) a unit-variance Gaussian random field
    with covariance ``exp(−d²/(2ℓ²))``.

    Shapes:
        pos_km ``[N, 2]`` km → ``[N, k]``.
    """
    omega = rng.normal(size=(k, 2)) / length_km
    phase = rng.uniform(0.0, 2.0 * math.pi, size=k)
    return math.sqrt(2.0 / k) * np.cos(pos_km @ omega.T + phase)


def _grf(
    pos_km: np.ndarray, rng: np.random.Generator, length_km: float, k: int = 256
) -> np.ndarray:
    """One unit-variance Gaussian random field sample at ``pos_km`` ``[N, 2]`` → ``[N]``."""
    basis = _rff_basis(pos_km, rng, length_km, k)
    return basis @ rng.normal(size=k)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


# --------------------------------------------------------------------------------- network
def _outline_radius(theta: np.ndarray, harmonics: np.ndarray) -> np.ndarray:
    """Normalised radius of the lobed basin outline at polar angle ``theta``."""
    r = np.ones_like(theta)
    for order, (amp, phase) in enumerate(harmonics, start=2):
        r = r + amp * np.cos(order * theta + phase)
    return r


def _inside(xy: np.ndarray, half_axes: tuple[float, float], harmonics: np.ndarray) -> np.ndarray:
    a, b = half_axes
    u, v = xy[:, 0] / a, xy[:, 1] / b
    return np.hypot(u, v) < _outline_radius(np.arctan2(v, u), harmonics)


def random_basin_network(
    num_nodes: int, rng: np.random.Generator, mean_area_km2: float = _MEAN_AREA_KM2
) -> dict[str, np.ndarray]:
    """Random river network laid out in a basin-shaped outline (see the module docstring).

    Args:
        num_nodes: number of reaches (catchments), ≥ 3.
        rng: numpy random generator (consumed in a fixed order).
        mean_area_km2: target mean local catchment area [km²].

    Returns:
        dict with ``downstream`` ``[N]`` int (−1 at outlets), ``xy_km`` ``[N, 2]`` km from the
        basin centre (east, north), ``lonlat`` ``[N, 2]`` degrees, ``area_km2`` ``[N]``,
        ``length_m`` ``[N]``, ``slope`` ``[N]`` m/m, ``z_channel_m`` ``[N]`` channel elevation
        at the reach's upstream end [m], ``outlets`` ``[O]`` int.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    from scipy.spatial import Delaunay, cKDTree

    n = int(num_nodes)
    if n < 3:
        raise ValueError(f"random_basin_network: num_nodes must be ≥ 3, got {n}")
    # outline: ellipse elongated north–south with 2nd..5th harmonics; area ≈ π a b
    aspect = rng.uniform(1.3, 1.8)
    total_area = n * mean_area_km2
    a = math.sqrt(total_area / (math.pi * aspect))
    b = a * aspect
    harmonics = np.stack(
        [rng.uniform(0.03, 0.10, size=4), rng.uniform(0.0, 2.0 * math.pi, size=4)], axis=1
    )
    rmax = 1.0 + harmonics[:, 0].sum()
    box = np.array([a * rmax, b * rmax])

    def sample_inside(count: int) -> np.ndarray:
        out = np.empty((0, 2))
        while out.shape[0] < count:
            cand = rng.uniform(-box, box, size=(2 * count + 8, 2))
            out = np.concatenate([out, cand[_inside(cand, (a, b), harmonics)]])
        return out[:count]

    # best-candidate (Mitchell) sampling: well spread but irregular catchment centroids
    pts = np.empty((n, 2))
    pts[0] = sample_inside(1)[0]
    cand_all = sample_inside(4 * (n - 1))
    for i in range(1, n):
        cand = cand_all[4 * (i - 1) : 4 * i]
        d = np.min(np.linalg.norm(cand[:, None, :] - pts[None, :i, :], axis=-1), axis=1)
        pts[i] = cand[int(np.argmax(d))]
    # local areas: Voronoi cells inside the outline, by Monte-Carlo counting
    samples = sample_inside(400 * n)
    owner = cKDTree(pts).query(samples)[1]
    area = np.bincount(owner, minlength=n) * (total_area / samples.shape[0])
    area = np.maximum(area, 0.25 * mean_area_km2)

    # outlets on the southern rim: the main one drains most of the basin
    rho = np.hypot(pts[:, 0] / a, pts[:, 1] / b)
    rim = rho / _outline_radius(np.arctan2(pts[:, 1] / b, pts[:, 0] / a), harmonics)
    main = int(np.argmin(pts[:, 1] - 0.5 * b * rim))
    n_extra = int(rng.integers(0, 3))
    far = np.linalg.norm(pts - pts[main], axis=1) > 0.6 * a
    cand = np.flatnonzero((rim > 0.75) & (pts[:, 1] < 0.2 * b) & far)
    extra = rng.choice(cand, size=min(n_extra, cand.size), replace=False) if cand.size else []
    outlets = np.array([main, *sorted(int(e) for e in extra)], dtype=np.int64)

    # shortest-path tree over Delaunay neighbours with correlated random edge costs
    tri = Delaunay(pts)
    s = tri.simplices
    edges = np.concatenate([s[:, [0, 1]], s[:, [1, 2]], s[:, [0, 2]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    dist = np.linalg.norm(pts[edges[:, 0]] - pts[edges[:, 1]], axis=1)
    spacing = math.sqrt(mean_area_km2)
    mid = 0.5 * (pts[edges[:, 0]] + pts[edges[:, 1]])
    ok = (dist < 2.5 * spacing) & _inside(mid, (a, b), harmonics)
    valley = _grf(mid, rng, length_km=3.0 * spacing)
    cost = dist * np.exp(0.45 * valley + 0.25 * rng.normal(size=dist.size))
    ei, ci = edges[ok], cost[ok]
    penalty = np.concatenate([[0.0], rng.uniform(1.2, 2.4, size=outlets.size - 1) * a])
    rows = np.concatenate([ei[:, 0], ei[:, 1], np.full(outlets.size, n)])
    cols = np.concatenate([ei[:, 1], ei[:, 0], outlets])
    vals = np.concatenate([ci, ci, penalty + 1e-9])
    adj = coo_matrix((vals, (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    dist_to_sea, pred = dijkstra(adj, directed=True, indices=n, return_predecessors=True)
    # any node cut off by the edge filter drains to its nearest connected node
    unreached = np.flatnonzero(~np.isfinite(dist_to_sea[:n]))
    for i in unreached:
        reach = np.flatnonzero(np.isfinite(dist_to_sea[:n]))
        j = reach[np.argmin(np.linalg.norm(pts[reach] - pts[i], axis=1))]
        pred[i] = j
        dist_to_sea[i] = dist_to_sea[j] + np.linalg.norm(pts[i] - pts[j])
    downstream = np.where(pred[:n] == n, -1, pred[:n]).astype(np.int64)

    # reach geometry and terrain
    sinuosity = rng.uniform(1.1, 1.4, size=n)
    has_down = downstream >= 0
    gap = np.where(
        has_down, np.linalg.norm(pts - pts[np.maximum(downstream, 0)], axis=1), 0.6 * np.sqrt(area)
    )
    length_m = 1e3 * np.maximum(gap, 0.3 * spacing) * sinuosity
    order = np.argsort(dist_to_sea[:n], kind="stable")  # outlets first (downstream → upstream)
    flow_km = np.zeros(n)
    for i in order:
        d = downstream[i]
        flow_km[i] = length_m[i] / 1e3 + (flow_km[d] if d >= 0 else 0.0)
    u = flow_km / flow_km.max()
    uplift = _grf(pts, rng, length_km=4.0 * spacing)
    log_slope = (
        math.log(2.5e-4)
        + math.log(150.0) * np.clip(0.75 * u**0.9 + 0.25 * _sigmoid(1.5 * uplift), 0.0, 1.0)
        + 0.3 * _grf(pts, rng, length_km=1.5 * spacing)
    )
    slope = np.clip(np.exp(log_slope), 1e-4, 0.08)
    z = np.zeros(n)
    z_outlet = rng.uniform(30.0, 150.0)
    for i in order:
        d = downstream[i]
        z[i] = (z[d] if d >= 0 else z_outlet) + slope[i] * length_m[i]
    lat = _LAT0 + pts[:, 1] / _KM_PER_DEG_LAT
    lon = _LON0 + pts[:, 0] / (_KM_PER_DEG_LAT * math.cos(math.radians(_LAT0)))
    return {
        "downstream": downstream,
        "xy_km": pts,
        "lonlat": np.stack([lon, lat], axis=1),
        "area_km2": area,
        "length_m": length_m,
        "slope": slope,
        "z_channel_m": z,
        "outlets": outlets,
    }


# ------------------------------------------------------------------------------ attributes
def _terrain_attributes(
    net: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Elevation, soils and forest (the non-climate attributes), spatially correlated."""
    pts = net["xy_km"]
    slope = net["slope"]
    area = net["area_km2"]
    spacing = math.sqrt(_MEAN_AREA_KM2)
    # mean catchment elevation: channel elevation + half the hillslope relief
    hill = np.minimum(6.0 * slope, 0.45)
    elevation = net["z_channel_m"] + 0.25 * hill * 1e3 * np.sqrt(area)
    ls = np.log(slope / 2e-3)
    soil_depth = 0.3 + 1.4 * _sigmoid(0.9 * _grf(pts, rng, 4.0 * spacing) - 0.8 * ls)
    clay = 0.05 + 0.40 * _sigmoid(1.2 * _grf(pts, rng, 3.0 * spacing) - 0.3 * ls)
    silt = 0.25 + 0.20 * _sigmoid(_grf(pts, rng, 3.0 * spacing))
    sand = np.clip(1.0 - clay - silt, 0.03, None)
    ekm = elevation / 1e3
    forest = _sigmoid(0.9 * _grf(pts, rng, 2.5 * spacing) + 2.2 - 2.0 * (ekm - 1.0) ** 2 - 0.8)
    forest = np.clip(forest, 0.02, 0.98)
    return {
        "elevation_m": elevation,
        "soil_depth_m": soil_depth,
        "clay_frac": clay,
        "sand_frac": sand,
        "forest_frac": forest,
    }


# --------------------------------------------------------------------------------- weather
def weather_generator(
    xy_km: np.ndarray,
    lat_deg: np.ndarray,
    elevation_m: np.ndarray,
    dates: np.ndarray,
    rng: np.random.Generator,
    pet_method: str = DEFAULT_PET_METHOD,
) -> dict[str, np.ndarray]:
    """Daily stochastic weather over the catchments (see the module docstring).

    Args:
        xy_km: ``[N, 2]`` catchment centroids [km]; lat_deg: ``[N]`` [°N];
        elevation_m: ``[N]`` mean catchment elevation [m]; dates: ``[T]`` datetime64 days.
        rng: numpy random generator.
        pet_method: PET method (:func:`gnnhydro.datasets.pet.potential_evapotranspiration`;
            no radiation here, so not ``priestley_taylor``); it draws no random numbers.

    Returns:
        ``precipitation`` [mm/day], ``temperature`` (daily mean), ``tmin``, ``tmax`` [°C],
        ``pet`` [mm/day] (by ``pet_method``, default Hargreaves), each ``[N, T]`` float64.
    """
    n, t_len = xy_km.shape[0], dates.shape[0]
    if lat_deg.shape != (n,) or elevation_m.shape != (n,):
        raise ValueError(
            f"weather_generator: lat_deg {lat_deg.shape} and elevation_m {elevation_m.shape} "
            f"must be [{n}] like xy_km {xy_km.shape}"
        )
    days = dates.astype("datetime64[D]")
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64) + 1  # 1..366
    season = 2.0 * math.pi * (doy - 15.0) / 365.25  # 0 in mid-January
    spacing = math.sqrt(_MEAN_AREA_KM2)

    # basin-wide occurrence: two-state Markov chain with seasonal transitions
    p01 = 0.30 + 0.04 * np.cos(season)  # dry → wet (wetter winters)
    p11 = 0.62 + 0.05 * np.cos(season)  # wet → wet
    draw = rng.uniform(size=t_len)
    wet = np.zeros(t_len, dtype=bool)
    state = draw[0] < 0.45
    for i in range(t_len):
        state = draw[i] < (p11[i] if state else p01[i])
        wet[i] = state
    mean_amount = 7.0 * (1.0 + 0.15 * np.cos(season))  # mm on a basin-wide wet day
    shape = 0.8
    amount = rng.gamma(shape, 1.0, size=t_len) * mean_amount / shape
    storm_p = 0.04 + 0.03 * np.cos(season - 4.5)  # more storms in late summer/autumn
    storm = rng.uniform(size=t_len) < storm_p
    amount = amount * np.where(storm, rng.uniform(1.5, 2.5, size=t_len), 1.0)

    # moving, spatially correlated anomaly field (AR(1) coefficients on random features)
    k = 64
    basis = _rff_basis(xy_km, rng, 3.0 * spacing, k)  # [N, k]
    rho = 0.6
    innov = rng.normal(size=(t_len, k))
    coef = np.empty((t_len, k))
    coef[0] = innov[0]
    for i in range(1, t_len):
        coef[i] = rho * coef[i - 1] + math.sqrt(1.0 - rho**2) * innov[i]
    g = basis @ coef.T  # [N, T], ~unit variance
    orographic = np.clip(1.0 + 0.45 * (elevation_m - 200.0) / 1e3, 0.7, None)[:, None]
    precip_wet = amount[None, :] * np.exp(0.55 * g - 0.15) * (g > -0.8)
    # isolated showers on basin-wide dry days, mostly in summer
    shower_thresh = 1.9 + 0.4 * np.cos(season)
    shower_amount = rng.gamma(0.7, 3.0 / 0.7, size=t_len)
    precip_dry = (g > shower_thresh[None, :]) * shower_amount[None, :]
    precip = orographic * np.where(wet[None, :], precip_wet, precip_dry)
    precip = np.where(precip < 0.1, 0.0, precip)

    # temperature: seasonal cycle, lapse rate, latitude, AR(1) regional anomaly, spatial anomaly
    cycle = 11.0 + 12.5 * np.cos(2.0 * math.pi * (doy - 200.0) / 365.25)
    phi, sd = 0.75, 3.0
    eps = rng.normal(size=t_len) * sd * math.sqrt(1.0 - phi**2)
    anom = np.empty(t_len)
    anom[0] = rng.normal() * sd
    for i in range(1, t_len):
        anom[i] = phi * anom[i - 1] + eps[i]
    basis_t = _rff_basis(xy_km, rng, 6.0 * spacing, 16)
    coef_t = np.empty((t_len, 16))
    innov_t = rng.normal(size=(t_len, 16))
    coef_t[0] = innov_t[0]
    for i in range(1, t_len):
        coef_t[i] = 0.8 * coef_t[i - 1] + 0.6 * innov_t[i]
    wet_frac = np.minimum(precip / 5.0, 1.0)
    temp = (
        cycle[None, :]
        - 6.5e-3 * elevation_m[:, None]
        - 0.7 * (lat_deg[:, None] - _LAT0)
        + anom[None, :]
        + 0.8 * (basis_t @ coef_t.T)
        - 1.5 * wet_frac
    )
    dtr = 11.0 + 2.0 * np.cos(2.0 * math.pi * (doy - 200.0) / 365.25)[None, :] - 5.0 * wet_frac
    tmin, tmax = temp - 0.5 * dtr, temp + 0.5 * dtr
    pet = potential_evapotranspiration(
        pet_method,
        tmin=tmin,
        tmax=tmax,
        tmean=temp,
        latitude_deg=lat_deg,
        time=days,
        elevation_m=elevation_m,
        what="SyntheticRiverBasin: ",
    )
    return {"precipitation": precip, "temperature": temp, "tmin": tmin, "tmax": tmax, "pet": pet}


# ------------------------------------------------------------------------- true parameters
def true_parameter_function(x: Tensor, x_names: Sequence[str]) -> dict[str, Tensor]:
    r"""The "true" HBV and Muskingum parameters as smooth functions of the static attributes.

    A pure function (no randomness, no state): it looks attributes up by NAME in ``x_names``.
    With ``E = elevation_m/1000`` [km], ``S = slope`` [m/m], ``L = length_m/1000`` [km],
    ``D = soil_depth_m``, ``C = clay_frac``, ``Sa = sand_frac``, ``F = forest_frac``,
    ``AI = aridity``:

    ========  ==============================================================  =========
    name      formula                                                          units
    ========  ==============================================================  =========
    fc        ``60 + 380·D``                                                   mm
    beta      ``1.2 + 7·C``                                                    \-
    lp        ``0.45 + 0.45·F``                                                \-
    k0        ``0.10 + 0.40·tanh(S / 0.02)``                                   1/day
    k1        ``0.03 + 0.17·tanh(S / 0.03)``                                   1/day
    k2        ``0.005 + 0.06·exp(−1.5·AI)``                                    1/day
    perc      ``0.4 + 4.0·Sa``                                                 mm/day
    uzl       ``5 + 35·F``                                                     mm
    tt        ``0.6 − 0.5·E + 0.4·(F − 0.5)``                                  °C
    cfmax     ``1.8 + 3.5·(1 − F) + 0.6·E``                                    mm/°C/day
    cfr       ``0.05`` (constant)                                              \-
    cwh       ``0.10`` (constant)                                              \-
    x         ``0.30 − 0.15·exp(−S / 0.004)``                                  \-
    k         ``0.5/(1 − x) + L / (86.4·c)``, ``c = 0.6·(S/0.001)^0.3`` m/s     days
    ========  ==============================================================  =========

    Muskingum ``k`` is the time step (Δt = 1 day) criterion ``Δt/(2(1 − x))`` plus the
    kinematic travel time ``L / c``, so every Muskingum coefficient ``C0, C1, C2`` is ≥ 0 for
    ``k·x ≤ Δt/2`` (true for the generated reaches).  All values lie inside the HBV and Muskingum
    :class:`~gnnhydro.spec.ParamSpec` bounds for the attribute ranges the generator produces.

    Args:
        x: ``[N, F]`` attributes in physical units (any float dtype).
        x_names: names of the ``F`` columns; must include ``elevation_m``, ``slope``,
            ``length_m``, ``soil_depth_m``, ``clay_frac``, ``sand_frac``, ``forest_frac``,
            ``aridity``.

    Returns:
        ``{name: [N]}`` in :data:`RUNOFF_PARAMS` + :data:`ROUTING_PARAMS`, dtype of ``x``.

    Shapes:
        x ``[N, F]`` → each value ``[N]``.
    """
    names = list(x_names)
    needed = (
        "elevation_m",
        "slope",
        "length_m",
        "soil_depth_m",
        "clay_frac",
        "sand_frac",
        "forest_frac",
        "aridity",
    )
    missing = [v for v in needed if v not in names]
    if missing:
        raise ValueError(f"true_parameter_function: attributes {missing} not in x_names {names}")
    if x.dim() != 2 or x.shape[1] != len(names):
        raise ValueError(
            f"true_parameter_function: x must be [N, {len(names)}] for x_names {names}, "
            f"got {list(x.shape)}"
        )
    col = {v: x[:, names.index(v)].double() for v in needed}
    e_km = col["elevation_m"] / 1e3
    s = col["slope"]
    l_km = col["length_m"] / 1e3
    f = col["forest_frac"]
    out: dict[str, Tensor] = {
        "beta": 1.2 + 7.0 * col["clay_frac"],
        "fc": 60.0 + 380.0 * col["soil_depth_m"],
        "k0": 0.10 + 0.40 * torch.tanh(s / 0.02),
        "k1": 0.03 + 0.17 * torch.tanh(s / 0.03),
        "k2": 0.005 + 0.06 * torch.exp(-1.5 * col["aridity"]),
        "lp": 0.45 + 0.45 * f,
        "perc": 0.4 + 4.0 * col["sand_frac"],
        "uzl": 5.0 + 35.0 * f,
        "tt": 0.6 - 0.5 * e_km + 0.4 * (f - 0.5),
        "cfmax": 1.8 + 3.5 * (1.0 - f) + 0.6 * e_km,
        "cfr": torch.full_like(s, 0.05),
        "cwh": torch.full_like(s, 0.10),
    }
    xm = 0.30 - 0.15 * torch.exp(-s / 0.004)
    celerity = 0.6 * (s / 1e-3) ** 0.3  # m/s
    out["x"] = xm
    out["k"] = 0.5 / (1.0 - xm) + l_km / (86.4 * celerity)
    return {k: v.to(x.dtype) for k, v in out.items()}


# --------------------------------------------------------------------------- hidden field
def hidden_parameter_field(
    xy_km: np.ndarray, attributes: np.ndarray, rng: np.random.Generator, num_features: int = 256
) -> np.ndarray:
    """The hidden field of option ``hidden_field``: a smooth Gaussian random field over the
    catchment centroids that no linear combination of the attributes explains.

    A squared-exponential random field (random Fourier features, :func:`_rff_basis`) with length
    scale a third of the basin size (the larger of the east–west and north–south extents of the
    centroids), conditioned to be uncorrelated over the nodes with every attribute column: its
    weights are projected onto the null space of ``[1, x]ᵀ·basis``, so the field stays a
    combination of the same smooth features (smooth in space) but is exactly orthogonal to
    the intercept and to each attribute.  Without this step the attributes, themselves smooth
    fields (``t_mean`` and ``elevation_m`` nearly give latitude), linearly explain 60–90 % of a
    field this smooth, and it would not be hidden.  Finally standardised to mean 0 and
    variance 1 over the nodes.

    Removing the attribute-explained part leaves the shorter-scale part of the field: the
    correlation between nearest-neighbour centroids is 0.93–0.96 for N = 300, 0.75–0.93 for
    N = 150, but only 0.55–0.75 for N = 60 (seeds 0–5; too few nodes for a smooth field
    orthogonal to 11 attributes).

    Args:
        xy_km: catchment centroids [km] (east, north).
        attributes: static attributes ``x`` in any units (columns that do not vary are skipped).
        rng: numpy random generator (``num_features`` frequencies, phases and weights are drawn).
        num_features: number of random Fourier features.

    Returns:
        the field [–] at each centroid, float64, mean 0, variance 1 (``ddof = 0``).

    Shapes:
        xy_km ``[N, 2]``, attributes ``[N, F]`` → ``[N]``.
    """
    n = xy_km.shape[0]
    if attributes.ndim != 2 or attributes.shape[0] != n:
        raise ValueError(
            f"hidden_parameter_field: attributes {attributes.shape} must be [{n}, F] "
            f"like xy_km {xy_km.shape}"
        )
    spread = attributes.std(axis=0)
    varying = attributes[:, spread > 0]
    constraints = np.concatenate(
        [np.ones((n, 1)), (varying - varying.mean(axis=0)) / varying.std(axis=0)], axis=1
    )
    if n < 4 * constraints.shape[1]:
        raise ValueError(
            f"hidden_parameter_field: {n} nodes are too few for a smooth field orthogonal to "
            f"{constraints.shape[1] - 1} attributes; use num_nodes ≥ {4 * constraints.shape[1]}"
        )
    extent_km = float(np.ptp(xy_km, axis=0).max())
    basis = _rff_basis(xy_km, rng, max(extent_km, 1.0) / 3.0, num_features)  # [N, k]
    weights = rng.normal(size=num_features)
    # the smallest change of the weights that makes the field orthogonal to every constraint
    gram = constraints.T @ basis  # [F + 1, k]
    weights = weights - np.linalg.lstsq(gram, gram @ weights, rcond=None)[0]
    field = basis @ weights
    return (field - field.mean()) / field.std()


def blend_hidden_field(params: dict[str, Tensor], field: Tensor, share: float) -> dict[str, Tensor]:
    """Blend the hidden field into the parameters of :data:`HIDDEN_FIELD_PARAMS`.

    For each such parameter ``p`` with HBV bounds ``[lo, hi]`` (its
    :class:`~gnnhydro.spec.ParamSpec`), the unbounded value ``z = logit((p − lo)/(hi − lo))``
    (:func:`~gnnhydro.spec.from_bounds`, the space a parameterizer's output lives in) with node
    mean ``μ`` and standard deviation ``σ`` becomes
    ``z' = μ + σ·(√(1 − h)·(z − μ)/σ + s·√h·field)`` and is bounded again
    (:func:`~gnnhydro.spec.to_bounds`); ``s = ±1`` is the sign in :data:`HIDDEN_FIELD_PARAMS`.
    With a unit-variance field uncorrelated with ``z`` (:func:`hidden_parameter_field` is
    orthogonal to the attributes, and ``z`` is a near-linear function of them), the field
    explains a share ``h`` of the variance of ``z'`` and ``z'`` keeps the mean and spread of
    ``z``.  Other parameters are returned unchanged.

    Args:
        params: ``{name: [N]}`` true parameters from :func:`true_parameter_function` (physical
            units); must hold every name of :data:`HIDDEN_FIELD_PARAMS`.
        field: the hidden field [–] (zero mean, unit variance over the nodes).
        share: ``h`` in [0, 1], the variance share of the field.

    Returns:
        ``{name: [N]}``, a new dict, in the dtype of ``params``.

    Shapes:
        params values ``[N]``, field ``[N]`` → values ``[N]``.
    """
    from gnnhydro.runoff import HBV

    h = float(share)
    if not 0.0 <= h <= 1.0:
        raise ValueError(f"blend_hidden_field: share must be in [0, 1], got {share}")
    specs = HBV(nmul=1).param_spec
    out = dict(params)
    for name, sign in HIDDEN_FIELD_PARAMS.items():
        value = params[name]
        if field.shape != value.shape:
            raise ValueError(
                f"blend_hidden_field: field {list(field.shape)} and {name!r} "
                f"{list(value.shape)} must both be [N]"
            )
        z = from_bounds(value, specs[name])
        z_mean, z_std = z.mean(), z.std(correction=0)
        z_attr = (z - z_mean) / z_std
        z_new = math.sqrt(1.0 - h) * z_attr + sign * math.sqrt(h) * field.to(value.dtype)
        out[name] = to_bounds(z_mean + z_std * z_new, specs[name])
    return out


# ------------------------------------------------------------------------------ simulation
def simulate_discharge(
    graph: RiverGraph,
    forcing: dict[str, Tensor],
    params: dict[str, Tensor],
    *,
    step_seconds: float = _STEP_SECONDS,
    warmup_steps: int = 0,
    reservoir_nodes: Tensor | None = None,
    reservoir_params: dict[str, Tensor] | None = None,
    reservoir_capacity_days: float = RESERVOIR_CAPACITY_DAYS,
) -> dict[str, Any]:
    """Run the "true" model: HBV (``nmul=1``) per node, then Muskingum routing through ``graph``
    (and, with ``reservoir_nodes``, the ``learned`` reservoir operator at those nodes).

    The first ``warmup_steps`` spin up the HBV stores (from HBV's near-empty initial state) and
    the channels (from empty); they are dropped from the outputs.  The HBV states at the end of
    the warm-up are returned, so the record can be re-simulated exactly from them.

    Args:
        graph: the river network (``area_km2`` [km²] used for the unit conversion).
        forcing: ``precipitation``, ``temperature``, ``pet`` ``[N, T]`` (mm/step, °C, mm/step).
        params: ``{name: [N]}`` with :data:`RUNOFF_PARAMS` and :data:`ROUTING_PARAMS`.
        step_seconds: time step length [s].
        warmup_steps: leading steps used only to spin up stores and channels.
        reservoir_nodes: ``[R]`` node indices of reservoirs, or None (none).
        reservoir_params: ``{name: [N]}`` the ``learned`` operator's parameters
            (:data:`RESERVOIR_PARAMS`; values at other nodes are ignored).
        reservoir_capacity_days: capacity of each reservoir in days of its mean free-flowing
            inflow (the discharge of its reach routed without reservoirs, after the warm-up).

    Returns:
        ``runoff`` [mm/step], ``evapotranspiration`` [mm/step], ``storage`` [mm] (HBV stores at
        the end of each step), ``lateral_inflow`` [m³/s] and ``discharge`` [m³/s], each
        ``[N, T − warmup_steps]``; ``initial_states`` ``{state: [N]}`` [mm], the HBV states at
        the start of the record. With reservoirs also ``reservoir_capacity_m3`` ``[N]`` (NaN
        at other nodes) and ``reservoir_storage`` ``[R, T − warmup_steps]`` m³.
    """
    from gnnhydro.routing import route
    from gnnhydro.runoff import HBV

    hbv = HBV(nmul=1)
    hbv_params = {name: params[name].unsqueeze(-1) for name in hbv.param_spec}
    w = int(warmup_steps)
    f = {v: forcing[v] for v in hbv.forcing_names}
    with torch.no_grad():
        if w > 0:
            spin = hbv(
                forcing={v: x[:, :w] for v, x in f.items()}, params=hbv_params, return_states=True
            )
            states = hbv.final_states(spin)
            spin_runoff = spin["runoff"]
        else:
            states = hbv.init_states(graph.num_nodes, dtype=f["precipitation"].dtype)
            spin_runoff = f["precipitation"][:, :0]
        out = hbv(forcing={v: x[:, w:] for v, x in f.items()}, params=hbv_params, states=states)
        runoff = torch.cat([spin_runoff, out["runoff"]], dim=1)
        area = graph.area_km2.to(runoff.dtype)
        lateral = mm_per_step_to_m3s(runoff, area, step_seconds)
        discharge = route(lateral, graph, "muskingum", params={"k": params["k"], "x": params["x"]})
        extra = {}
        if reservoir_nodes is not None:
            nodes = torch.as_tensor(reservoir_nodes).long()
            capacity = torch.full_like(discharge[:, 0], float("nan"))
            mean_inflow = discharge[nodes, w:].mean(-1)
            capacity[nodes] = mean_inflow * step_seconds * float(reservoir_capacity_days)
            discharge, res = route(
                lateral,
                graph,
                "muskingum",
                params={"k": params["k"], "x": params["x"]},
                step_seconds=step_seconds,
                reservoir="learned",
                reservoir_nodes=nodes,
                reservoir_params={
                    **{n: reservoir_params[n] for n in RESERVOIR_PARAMS},
                    "reservoir_capacity_m3": capacity,
                },
                return_reservoirs=True,
            )
            extra = {"reservoir_capacity_m3": capacity, "reservoir_storage": res.storage[:, w:]}
    return {
        "runoff": out["runoff"],
        "evapotranspiration": out["evapotranspiration"],
        "storage": out["storage"],
        "fluxes": {k: v for k, v in out.items() if isinstance(v, Tensor) and v.dim() == 2},
        "lateral_inflow": lateral[:, w:],
        "discharge": discharge[:, w:],
        "initial_states": {k: v[:, 0] for k, v in states.items()},
        **extra,
    }


def choose_reservoirs(graph: RiverGraph, count: int) -> np.ndarray:
    """``count`` reservoir nodes: reaches that are not outlets, by decreasing upstream area
    among those draining 5–50 % of the largest outlet's area, none upstream of another and no
    two above the same reach; where too few such reaches exist, the largest remaining
    non-outlet reaches (nested then). Deterministic in the network.

    Returns:
        ``[K]`` int64 node indices, ascending.
    """
    k = int(count)
    n = graph.num_nodes
    up = graph.upstream_area_km2.double().numpy()
    down = np.full(n, -1, dtype=np.int64)
    ei = graph.edge_index.numpy()
    down[ei[0]] = ei[1]
    inner = np.flatnonzero(down >= 0)
    if k > inner.size:
        raise ValueError(
            f"SyntheticRiverBasin: reservoirs={k} but the network has {inner.size} reaches that "
            "are not outlets"
        )
    largest = up[graph.outlets.numpy()].max()

    def path_down(i: int) -> set[int]:
        out = set()
        while i >= 0:
            out.add(int(i))
            i = down[i]
        return out

    order = inner[np.argsort(-up[inner], kind="stable")]
    chosen: list[int] = []
    below: set[int] = set()  # every node downstream of (and at) a chosen reservoir
    taken: set[int] = set()  # the reaches directly below the chosen reservoirs
    for i in order:
        if len(chosen) == k:
            break
        if not 0.05 * largest <= up[i] <= 0.5 * largest:
            continue
        path = path_down(int(i))
        if int(i) in below or any(c in path for c in chosen) or int(down[i]) in taken:
            continue
        chosen.append(int(i))
        below |= path
        taken.add(int(down[i]))
    for i in order:  # too few independent reaches: the largest others
        if len(chosen) == k:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _choose_gauges(graph: RiverGraph, num_gauges: int, rng: np.random.Generator) -> np.ndarray:
    """Gauged node indices, ordered by decreasing upstream area.

    All outlets draining ≥ 3 mean catchments are gauged; the rest are drawn in equal parts from
    headwater-size (< 300 km² upstream), mid-size (300–2000 km²) and mainstem (> 2000 km²)
    catchments, so gauges are nested and mixed.
    """
    up = graph.upstream_area_km2.double().numpy()
    n = graph.num_nodes
    outlets = graph.outlets.numpy()
    chosen = [int(o) for o in outlets if up[o] >= 3 * _MEAN_AREA_KM2]
    if not chosen:
        chosen = [int(outlets[np.argmax(up[outlets])])]
    chosen = chosen[:num_gauges]
    free = np.setdiff1d(np.arange(n), chosen)
    classes = [
        free[up[free] < 300.0],
        free[(up[free] >= 300.0) & (up[free] <= 2000.0)],
        free[up[free] > 2000.0],
    ]
    classes = [rng.permutation(c) for c in classes]
    need = num_gauges - len(chosen)
    per = [need // 3 + (1 if i < need % 3 else 0) for i in range(3)]
    picks = [c[:p] for c, p in zip(classes, per)]
    rest = np.concatenate([c[p:] for c, p in zip(classes, per)])
    short = need - sum(len(p) for p in picks)
    extra = rng.permutation(rest)[:short] if short > 0 else np.empty(0, dtype=np.int64)
    idx = np.concatenate([np.asarray(chosen, dtype=np.int64), *picks, extra]).astype(np.int64)
    return idx[np.argsort(-up[idx], kind="stable")]


def _observe(q_true: np.ndarray, gauges: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``q_obs`` ``[N, T]``: noisy, gappy observations at ``gauges``, NaN elsewhere.

    Error model per gauge: ``q·exp(σ·e_t − σ²/2) + η_t`` with ``e`` a unit-variance AR(1)
    (ρ = 0.9; slowly drifting rating-curve error), σ = 0.07, and additive white noise ``η`` of
    standard deviation 0.5 % of the gauge's mean flow; negative values clipped to 0.  Gaps:
    Poisson(1) gaps of 5–60 days per gauge plus isolated missing days (0.5 %).
    """
    n, t_len = q_true.shape
    q_obs = np.full((n, t_len), np.nan)
    sigma, rho = 0.07, 0.9
    for g in gauges:
        q = q_true[g]
        innov = rng.normal(size=t_len)
        e = np.empty(t_len)
        e[0] = innov[0]
        for i in range(1, t_len):
            e[i] = rho * e[i - 1] + math.sqrt(1.0 - rho**2) * innov[i]
        noisy = q * np.exp(sigma * e - 0.5 * sigma**2) + rng.normal(size=t_len) * 0.005 * q.mean()
        noisy = np.maximum(noisy, 0.0)
        missing = rng.uniform(size=t_len) < 0.005
        for _ in range(int(rng.poisson(1.0))):
            length = int(rng.integers(5, 61))
            start = int(rng.integers(0, max(t_len - length, 1)))
            missing[start : start + length] = True
        noisy[missing] = np.nan
        q_obs[g] = noisy
    return q_obs


def generate_synthetic_basin(
    seed: int = 0,
    num_nodes: int = 300,
    years: int = 12,
    num_gauges: int | None = None,
    start: str = "2000-01-01",
    hidden_field: float = 0.0,
    isolated: bool = False,
    reservoirs: int = 0,
    pet_method: str = DEFAULT_PET_METHOD,
    observed_variables: Sequence[str] = (),
) -> RiverGraph:
    """Generate the synthetic basin item (see the module docstring); deterministic in its args.

    Args:
        seed: random seed (numpy ``PCG64``).
        num_nodes: number of reaches N (≥ 10).
        years: length of the daily record in calendar years (three further years before ``start``
            are simulated as warm-up and dropped).
        num_gauges: number of gauges; default ``max(3, round(0.133·N))`` (40 for N = 300).
        start: first day of the record (``YYYY-MM-DD``; the year must start on January 1st
            for ``years`` to be whole calendar years).
        hidden_field: ``h`` in [0, 1]: share of the unbounded spatial variance of the parameters
            in :data:`HIDDEN_FIELD_PARAMS` that comes from a smooth random field which is not an
            attribute (:func:`hidden_parameter_field`, :func:`blend_hidden_field`; needs
            ``num_nodes`` ≥ 48, smooth from ≈ 150).  The field is drawn, only for ``h > 0``,
            from a child stream of the seeded generator
            (``rng.spawn``), so attributes, weather, gauges, gaps and noise draws are those of
            ``h = 0`` and the field is the same for every ``h > 0``.  ``0`` (default) leaves
            every output bit-identical to the generator without the option.
        isolated: every reach its own outlet (CAMELS-style isolated catchments): the same
            attributes, weather and positions, but no edges; the truth is simulated on the
            edgeless network, so each catchment's discharge is its own routed runoff.  Gauges
            are chosen by the same rule on that network.
        reservoirs: ``K`` reaches become reservoirs (:func:`choose_reservoirs`) with a capacity
            of :data:`RESERVOIR_CAPACITY_DAYS` of their mean free-flowing inflow; the truth is
            routed through the ``learned`` operator with true parameters drawn per reservoir
            from :data:`RESERVOIR_PARAMS` (a child stream of the seeded generator, so weather,
            gauges and noise draws are those of ``K = 0``), and each reservoir's reach is gauged
            (its discharge is the release: the flow below the dam; added to the
            ``num_gauges`` of the rule when not among them).
            ``0`` (default) leaves every output bit-identical to the generator without it.
        pet_method: PET of the forcing (:mod:`gnnhydro.datasets.pet`; ``hargreaves`` default,
            ``oudin``, ``hamon``; the generator has no radiation for ``priestley_taylor``).
            The truth is simulated with it, and the ``aridity`` attribute uses it.
        observed_variables: true HBV outputs to observe at every node besides discharge
            (e.g. ``evapotranspiration``, ``snowpack``, ``soil_moisture``): ``obs_<name>``
            ``[N, T]`` (mm/step or mm) = the truth × (1 + 0.1·ε), ε standard normal, clipped at
            0 (a child stream of the seeded generator: the other draws are those without it),
            for ``trainer.constraints`` (:mod:`gnnhydro.training.constraints`).

    Returns:
        A :class:`RiverGraph` following the dataset item conventions, with in addition
        ``q_true`` ``[N, T]`` m³/s (noise-free discharge), ``lateral_inflow`` ``[N, T]`` m³/s
        (the true HBV runoff of each catchment, for routing-only training),
        ``true_initial_states`` ``{state: [N]}`` mm (HBV stores on the first day, after the
        spin-up), ``true_params``
        ``{name: [N]}`` (float32, ``true_parameter_function`` of the float32 ``x``),
        ``true_runoff_model`` (``"hbv"``), ``true_irf`` (``"muskingum"``),
        ``holdout_gauge_ids`` (suggested spatial hold-out, ~25 % of the gauges), ``seed``.
        With ``hidden_field > 0`` also ``hidden_field`` ``[N]`` float32 (the field, –) and
        ``hidden_field_params`` (names of the parameters it enters); ``true_params`` are then the
        blended parameters the truth was simulated with.  With ``reservoirs > 0`` also
        ``reservoir_mask`` ``[N]`` bool, ``reservoir_capacity_m3`` ``[N]`` m³ (NaN at other
        nodes), ``true_reservoir_storage`` ``[K, T]`` m³, and the reservoir parameters in
        ``true_params`` (NaN at other nodes); ``true_reservoir`` (``"learned"``).
    """
    n = int(num_nodes)
    if n < 10:
        raise ValueError(f"SyntheticRiverBasin: num_nodes must be ≥ 10, got {n}")
    if int(years) < 1:
        raise ValueError(f"SyntheticRiverBasin: years must be ≥ 1, got {years}")
    g_count = int(num_gauges) if num_gauges is not None else max(3, round(0.133 * n))
    if not 1 <= g_count <= n:
        raise ValueError(f"SyntheticRiverBasin: num_gauges must be in [1, {n}], got {g_count}")
    share = float(hidden_field)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"SyntheticRiverBasin: hidden_field must be in [0, 1], got {hidden_field}")
    k_res = int(reservoirs)
    if k_res < 0:
        raise ValueError(f"SyntheticRiverBasin: reservoirs must be ≥ 0, got {reservoirs}")
    if k_res and isolated:
        raise ValueError("SyntheticRiverBasin: reservoirs need a river network (isolated=True)")
    rng = np.random.Generator(np.random.PCG64(int(seed)))

    net = random_basin_network(n, rng)
    terrain = _terrain_attributes(net, rng)
    first = np.datetime64(start, "D")
    end = np.datetime64(f"{int(str(first)[:4]) + int(years)}{str(first)[4:]}", "D")
    dates = np.arange(first - _WARMUP_DAYS, end, dtype="datetime64[D]")
    w = _WARMUP_DAYS
    lat = net["lonlat"][:, 1]
    weather = weather_generator(
        net["xy_km"], lat, terrain["elevation_m"], dates, rng, pet_method=pet_method
    )
    p_mean = weather["precipitation"][:, w:].mean(axis=1)
    pet_mean = weather["pet"][:, w:].mean(axis=1)
    attrs = {
        "area_km2": net["area_km2"],
        "length_m": net["length_m"],
        "elevation_m": terrain["elevation_m"],
        "slope": net["slope"],
        "aridity": pet_mean / p_mean,
        "p_mean": p_mean,
        "t_mean": weather["temperature"][:, w:].mean(axis=1),
        "soil_depth_m": terrain["soil_depth_m"],
        "clay_frac": terrain["clay_frac"],
        "sand_frac": terrain["sand_frac"],
        "forest_frac": terrain["forest_frac"],
    }
    # float32 attributes are the stored truth; parameters are a function of exactly those
    x = torch.from_numpy(np.stack([attrs[v] for v in ATTRIBUTE_NAMES], axis=1)).float()
    params = true_parameter_function(x.double(), ATTRIBUTE_NAMES)
    field = None
    if share > 0.0:
        # a child stream: the main stream (gauges, noise) stays that of h = 0
        field_rng = rng.spawn(1)[0]
        field_np = hidden_parameter_field(net["xy_km"], x.double().numpy(), field_rng)
        field = torch.from_numpy(field_np).float()
        params = blend_hidden_field(params, field.double(), share)
    # simulate with exactly the stored (float32) parameters, in float64
    params = {k: v.float().double() for k, v in params.items()}

    down = net["downstream"]
    if isolated:
        edge_index = torch.empty((2, 0), dtype=torch.long)
    else:
        src = np.flatnonzero(down >= 0)
        edge_index = torch.from_numpy(np.stack([src, down[src]])).long()
    node_id = [1001 + i for i in range(n)]
    graph = RiverGraph(
        edge_index=edge_index,
        node_id=node_id,
        x=x,
        x_names=list(ATTRIBUTE_NAMES),
        area_km2=x[:, ATTRIBUTE_NAMES.index("area_km2")].clone(),
        length_m=x[:, ATTRIBUTE_NAMES.index("length_m")].clone(),
        slope=x[:, ATTRIBUTE_NAMES.index("slope")].clone(),
        pos=torch.from_numpy(net["lonlat"]).float(),
        crs="EPSG:4326",
    )
    graph.x_units = list(ATTRIBUTE_UNITS)

    forcing = {
        v: torch.from_numpy(weather[v]).float().double()
        for v in ("precipitation", "temperature", "pet")
    }
    res_nodes = res_params = None
    if k_res:
        res_nodes = torch.from_numpy(choose_reservoirs(graph, k_res))
        res_rng = rng.spawn(1)[0]  # a child stream: the main stream (gauges, noise) stays
        res_params = {}
        for name, (lo, hi) in RESERVOIR_PARAMS.items():
            value = torch.full((n,), float("nan"), dtype=torch.float64)
            value[res_nodes] = (
                torch.from_numpy(res_rng.uniform(lo, hi, size=k_res)).float().double()
            )
            res_params[name] = value
    sim = simulate_discharge(
        graph,
        forcing,
        params,
        warmup_steps=w,
        reservoir_nodes=res_nodes,
        reservoir_params=res_params,
    )
    q_true = sim["discharge"].numpy()
    gauges = _choose_gauges(graph, g_count, rng)
    if k_res:  # every dam's release is gauged (the reservoir's reach: the flow below the dam)
        up = graph.upstream_area_km2.double().numpy()
        gauges = np.union1d(gauges, res_nodes.numpy()).astype(np.int64)
        gauges = gauges[np.argsort(-up[gauges], kind="stable")]
    q_obs = _observe(q_true, gauges, rng)

    graph.forcing = torch.stack([forcing[v][:, w:] for v in forcing], dim=-1).float()
    graph.forcing_names = ["precipitation", "temperature", "pet"]
    graph.forcing_units = ["mm/day", "°C", "mm/day"]
    graph.q_obs = torch.from_numpy(q_obs).float()
    graph.q_true = torch.from_numpy(q_true).float()
    graph.lateral_inflow = sim["lateral_inflow"].float()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(gauges)] = True
    graph.gauge_mask = mask
    graph.gauge_index = torch.from_numpy(gauges).long()
    graph.gauge_id = [f"G{i + 1:03d}" for i in range(gauges.size)]
    graph.time = dates[w:].astype("datetime64[ns]")
    graph.step_seconds = _STEP_SECONDS
    graph.true_params = {k: v.float() for k, v in params.items()}
    if field is not None:
        graph.hidden_field = field
        graph.hidden_field_params = list(HIDDEN_FIELD_PARAMS)
    if k_res:
        mask_res = torch.zeros(n, dtype=torch.bool)
        mask_res[res_nodes] = True
        graph.reservoir_mask = mask_res
        graph.reservoir_capacity_m3 = sim["reservoir_capacity_m3"].float()
        graph.true_reservoir_storage = sim["reservoir_storage"].float()
        graph.true_reservoir = "learned"
        graph.true_params.update({k: v.float() for k, v in res_params.items()})
    if observed_variables:
        unknown = sorted(set(observed_variables) - set(sim["fluxes"]))
        if unknown:
            raise ValueError(
                f"SyntheticRiverBasin: observed_variables {unknown} are not HBV outputs; "
                f"choose from {sorted(sim['fluxes'])}"
            )
        obs_rng = np.random.default_rng([int(seed), 7])  # child stream: other draws unchanged
        for name in sorted(observed_variables):
            truth = sim["fluxes"][name].double().numpy()  # after the spin-up, like q_true
            noisy = truth * (1.0 + 0.1 * obs_rng.standard_normal(truth.shape))
            setattr(graph, f"obs_{name}", torch.from_numpy(np.maximum(noisy, 0.0)).float())
    graph.true_runoff_model = "hbv"
    graph.true_initial_states = {k: v.float() for k, v in sim["initial_states"].items()}
    graph.true_irf = "muskingum"
    graph.seed = int(seed)
    graph.holdout_gauge_ids = _holdout(graph, int(seed))
    return graph


def _holdout(graph: RiverGraph, seed: int) -> list[str]:
    """Suggested spatial hold-out: ~25 % of the gauges, random but fixed by the seed, closed
    downstream (a held-out gauge's downstream gauges are held out too), so the held-out gauges
    have exclusive areas never seen in training: a truly ungauged test."""
    if graph.gauge_index.numel() < 2:
        return []
    from gnnhydro.datasets.splits import spatial_holdout

    return list(spatial_holdout(graph, 0.25, seed=seed, downstream_closed=True).holdout_gauge_id)


# --------------------------------------------------------------------------------- dataset
class SyntheticRiverBasin(RiverDataset):
    """The embedded default dataset: a synthetic basin with known true parameters.

    Generated offline (no download) and deterministically from ``seed`` by
    :func:`generate_synthetic_basin` (same arguments → bit-identical processed data), then cached
    in ``root/processed/`` under a name that hashes the arguments.  One item: a
    :class:`~gnnhydro.graph.RiverGraph` following the dataset item conventions plus the truth
    (``q_true``, ``lateral_inflow``, ``true_params``, ``holdout_gauge_ids``); see
    ``datasets/synthetic/README.md``.

    Args:
        root: dataset root (``processed/`` is written there).
        seed: random seed of the generator.
        num_nodes: number of reaches N (default 300).
        years: years of daily data from 2000-01-01 (default 12: 4383 days).
        force_reload: regenerate even if the processed file exists.
        transform: applied to the item on access.
        pre_transform: applied once before saving.
        num_gauges: number of gauges (default ``max(3, round(0.133·N))``: 40 for N = 300).
        log: print PyG progress messages.
        hidden_field: ``h`` in [0, 1], the share of the unbounded spatial variance of
            :data:`HIDDEN_FIELD_PARAMS` given by a smooth field that is not an attribute
            (default 0: none; see :func:`generate_synthetic_basin`).
        isolated: every reach its own outlet, no river network (default ``False``).
        reservoirs: number of reservoirs routed with the ``learned`` operator (default 0: none;
            see :func:`generate_synthetic_basin`).
        pet_method: PET method of the forcing (default ``hargreaves``; ``oudin``, ``hamon``:
            :mod:`gnnhydro.datasets.pet`).

    The processed file name hashes ``hidden_field``, ``isolated``, ``reservoirs`` and
    ``pet_method`` only when they differ from their defaults, so the default configuration
    keeps its cache.

    Shapes:
        x ``[N, 11]``; forcing ``[N, T, 3]``; q_obs, q_true, lateral_inflow ``[N, T]``;
        gauge_index ``[G]``; true_params ``{name: [N]}``; hidden_field ``[N]`` (when ``h > 0``).
    """

    name = "synthetic"
    #: the true parameter maps as a pure function of the attributes (``x``, ``x_names``).
    true_parameter_function = staticmethod(true_parameter_function)

    def __init__(
        self,
        root: str | Path = "datasets/synthetic",
        seed: int = 0,
        num_nodes: int = 300,
        years: int = 12,
        force_reload: bool = False,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        num_gauges: int | None = None,
        log: bool = False,
        hidden_field: float = 0.0,
        isolated: bool = False,
        reservoirs: int = 0,
        pet_method: str = DEFAULT_PET_METHOD,
        observed_variables: Sequence[str] | None = None,
    ) -> None:
        self.pet_method = check_pet_method(str(pet_method), "SyntheticRiverBasin: ")
        self.observed_variables = sorted(str(v) for v in (observed_variables or ()))
        self.seed = int(seed)
        self.num_nodes = int(num_nodes)
        self.years = int(years)
        self.num_gauges = None if num_gauges is None else int(num_gauges)
        self.hidden_field = float(hidden_field)
        if not 0.0 <= self.hidden_field <= 1.0:
            raise ValueError(
                f"SyntheticRiverBasin: hidden_field must be in [0, 1], got {hidden_field}"
            )
        self.isolated = bool(isolated)
        self.reservoirs = int(reservoirs)
        if self.reservoirs < 0:
            raise ValueError(f"SyntheticRiverBasin: reservoirs must be ≥ 0, got {reservoirs}")
        super().__init__(
            root,
            transform=transform,
            pre_transform=pre_transform,
            force_reload=force_reload,
            log=log,
        )

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "seed": self.seed,
            "num_nodes": self.num_nodes,
            "years": self.years,
            "num_gauges": self.num_gauges,
            "version": SYNTHETIC_VERSION,
        }
        # options at their defaults stay out of the hash: existing caches remain valid
        if self.hidden_field != 0.0:
            config["hidden_field"] = self.hidden_field
        if self.isolated:
            config["isolated"] = True
        if self.reservoirs:
            config["reservoirs"] = self.reservoirs
        if self.pet_method != DEFAULT_PET_METHOD:
            config["pet_method"] = self.pet_method
        if self.observed_variables:
            config["observed_variables"] = self.observed_variables
        return config

    @property
    def raw_file_names(self) -> list[str]:
        return []

    def download(self) -> None:
        """Nothing to download: the data are generated in :meth:`process`."""

    def build(self) -> list[RiverGraph]:
        return [
            generate_synthetic_basin(
                seed=self.seed,
                num_nodes=self.num_nodes,
                years=self.years,
                num_gauges=self.num_gauges,
                hidden_field=self.hidden_field,
                isolated=self.isolated,
                reservoirs=self.reservoirs,
                pet_method=self.pet_method,
                observed_variables=self.observed_variables,
            )
        ]

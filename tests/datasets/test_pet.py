"""Tests of gnnhydro/datasets/pet.py: each PET method against its published equation written out
here independently (FAO-56 for the astronomy), per-node vectorisation, clipping, errors, and the
``pet_method`` option of the synthetic dataset (values and cache names)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from gnnhydro.datasets.pet import PET_METHODS, potential_evapotranspiration
from gnnhydro.datasets.synthetic import SYNTHETIC_VERSION, SyntheticRiverBasin
from gnnhydro.units import hargreaves_pet

# FAO-56 Example 8: 3 September (J = 246) at 20 °S: Ra = 32.2 MJ m-2 d-1, N = 11.7 h (Example 9)
DAYS = np.array(["2001-01-15", "2001-06-21", "2001-09-03", "2001-12-21"], dtype="datetime64[D]")
LAT = np.array([-20.0, 0.0, 45.0, 60.0])


# ---------------------------------------------------------------- published equations
def _astronomy(lat_deg: float, j: float) -> tuple[float, float]:
    """FAO-56 eqs. 21–25 and 34: extraterrestrial radiation Ra [MJ m-2 d-1], daylight hours N."""
    phi = math.radians(lat_deg)
    dr = 1.0 + 0.033 * math.cos(2.0 * math.pi * j / 365.0)
    delta = 0.409 * math.sin(2.0 * math.pi * j / 365.0 - 1.39)
    ws = math.acos(max(-1.0, min(1.0, -math.tan(phi) * math.tan(delta))))
    ra = (
        24.0
        * 60.0
        / math.pi
        * 0.0820
        * dr
        * (ws * math.sin(phi) * math.sin(delta) + math.cos(phi) * math.cos(delta) * math.sin(ws))
    )
    return ra, 24.0 / math.pi * ws


def _doy(day: np.datetime64) -> int:
    return int((day - day.astype("datetime64[Y]")).astype(int)) + 1


def _e0(t: float) -> float:
    """FAO-56 eq. 11: saturation vapour pressure [kPa]."""
    return 0.6108 * math.exp(17.27 * t / (t + 237.3))


def hargreaves_samani(tmin, tmax, lat, j):
    """Hargreaves & Samani (1985), FAO-56 eq. 52; Ra as evaporation ×0.408 [mm/day]."""
    ra, _ = _astronomy(lat, j)
    return max(0.0023 * ((tmax + tmin) / 2 + 17.8) * math.sqrt(tmax - tmin) * 0.408 * ra, 0.0)


def oudin(tmean, lat, j):
    """Oudin et al. (2005) eq. 3: PE = Re/(λρ)·(Ta+5)/100 if Ta+5 > 0 else 0 [m/day → mm/day]."""
    ra, _ = _astronomy(lat, j)
    return ra / (2.45 * 1000.0) * (tmean + 5.0) / 100.0 * 1000.0 if tmean + 5.0 > 0 else 0.0


def hamon(tmean, lat, j):
    """Hamon (1961) as Oudin et al. (2005) write it: PE = (DL/12)² exp(Ta/16) [mm/day]."""
    _, dl = _astronomy(lat, j)
    return (dl / 12.0) ** 2 * math.exp(tmean / 16.0)


def priestley_taylor(tmean, rn, elevation):
    """Priestley & Taylor (1972): α Δ/(Δ+γ) Rn/λ with α = 1.26, G = 0; Δ, γ, P of FAO-56
    (eqs. 13, 8, 7), λ = 2.501 − 0.002361 T [MJ kg-1]."""
    delta = 4098.0 * _e0(tmean) / (tmean + 237.3) ** 2
    pressure = 101.3 * ((293.0 - 0.0065 * elevation) / 293.0) ** 5.26
    gamma = 0.000665 * pressure
    lam = 2.501 - 0.002361 * tmean
    return max(1.26 * delta / (delta + gamma) * rn / lam, 0.0)


def net_radiation(rs, tmin, tmax, lat, j, elevation):
    """FAO-56 eqs. 37–39: Rn = (1 − 0.23) Rs − Rnl with ea = e°(Tmin) (eq. 48)."""
    ra, _ = _astronomy(lat, j)
    rso = (0.75 + 2e-5 * elevation) * ra
    ea = _e0(tmin)
    sigma = 4.903e-9
    rnl = (
        sigma
        * ((tmax + 273.16) ** 4 + (tmin + 273.16) ** 4)
        / 2.0
        * (0.34 - 0.14 * math.sqrt(ea))
        * (1.35 * rs / rso - 0.35)
    )
    return 0.77 * rs - rnl


# --------------------------------------------------------------------------- fixtures
def _inputs(seed: int = 0, n: int = len(LAT), days: np.ndarray = DAYS):
    rng = np.random.default_rng(seed)
    tmin = rng.uniform(-3.0, 18.0, (n, days.size))
    tmax = tmin + rng.uniform(3.0, 15.0, (n, days.size))
    return tmin, tmax


def test_fao56_example_astronomy():
    ra, dl = _astronomy(-20.0, 246)
    assert round(ra, 1) == 32.2 and round(dl, 1) == 11.7
    # Hamon at 0 °C is (N/12)²: the same daylight hours through pyet
    pet = potential_evapotranspiration(
        "hamon",
        tmin=np.zeros((1, 1)),
        tmax=np.zeros((1, 1)),
        latitude_deg=-20.0,
        time=np.array(["2001-09-03"], "datetime64[D]"),
    )
    assert 12.0 * math.sqrt(pet[0, 0]) == pytest.approx(dl, rel=1e-9)


@pytest.mark.parametrize("method", ["hargreaves", "oudin", "hamon"])
def test_temperature_methods_match_published_equations(method):
    tmin, tmax = _inputs()
    tmean = (tmin + tmax) / 2 + 0.7  # a mean that is not the mid-range (hargreaves ignores it)
    pet = potential_evapotranspiration(
        method, tmin=tmin, tmax=tmax, tmean=tmean, latitude_deg=LAT, time=DAYS
    )
    assert pet.shape == tmin.shape and pet.dtype == np.float64
    for i, lat in enumerate(LAT):
        for t, day in enumerate(DAYS):
            j = _doy(day)
            if method == "hargreaves":
                want = hargreaves_samani(tmin[i, t], tmax[i, t], lat, j)
            elif method == "oudin":
                want = oudin(tmean[i, t], lat, j)
            else:
                want = hamon(tmean[i, t], lat, j)
            assert pet[i, t] == pytest.approx(want, rel=1e-9), (method, lat, str(day))


def test_priestley_taylor_matches_published_equation():
    tmin, tmax = _inputs(1)
    elevation = np.array([0.0, 250.0, 800.0, 1500.0])
    # a clear-sky ratio Rs/Rso within FAO-56's range (0.3 ≤ Rs/Rso ≤ 1: no clipping in Rnl)
    ra = np.array([[_astronomy(lat, _doy(d))[0] for d in DAYS] for lat in LAT])
    rso = (0.75 + 2e-5 * elevation[:, None]) * ra
    rs = np.random.default_rng(2).uniform(0.35, 0.98, tmin.shape) * rso
    rn = np.random.default_rng(3).uniform(-2.0, 14.0, tmin.shape)  # some negative: PET 0
    common = dict(tmin=tmin, tmax=tmax, latitude_deg=LAT, time=DAYS, elevation_m=elevation)
    from_rn = potential_evapotranspiration("priestley_taylor", net_radiation=rn, **common)
    from_rs = potential_evapotranspiration("priestley_taylor", radiation=rs, **common)
    tmean = (tmin + tmax) / 2
    for i, lat in enumerate(LAT):
        for t, day in enumerate(DAYS):
            want = priestley_taylor(tmean[i, t], rn[i, t], elevation[i])
            assert from_rn[i, t] == pytest.approx(want, rel=1e-9, abs=1e-12)
            rn_fao = net_radiation(rs[i, t], tmin[i, t], tmax[i, t], lat, _doy(day), elevation[i])
            want = priestley_taylor(tmean[i, t], rn_fao, elevation[i])
            assert from_rs[i, t] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert (from_rn[rn < 0] == 0).all() and (from_rn[rn > 0] > 0).all()


def test_negative_values_are_clipped_where_the_definitions_do():
    days = np.array(["2001-01-15", "2001-07-15"], "datetime64[D]")
    cold = np.full((1, 2), -25.0)  # Tmean + 17.8 < 0 and Tmean + 5 < 0
    common = dict(tmin=cold - 2.0, tmax=cold + 2.0, latitude_deg=45.0, time=days)
    assert (potential_evapotranspiration("hargreaves", **common) == 0).all()
    assert (potential_evapotranspiration("oudin", **common) == 0).all()
    assert (potential_evapotranspiration("hamon", **common) > 0).all()  # exp(T/16) > 0


def test_per_node_vectorisation_equals_per_node_calls():
    days = np.arange(np.datetime64("1999-11-01"), np.datetime64("2001-02-10"))
    n = 6
    tmin, tmax = _inputs(4, n, days)
    lat = np.linspace(-35.0, 62.0, n)
    elevation = np.linspace(0.0, 2000.0, n)
    rs = np.random.default_rng(5).uniform(2.0, 25.0, tmin.shape)
    for method in PET_METHODS:
        kw = dict(time=days, radiation=rs, elevation_m=elevation)
        every = potential_evapotranspiration(method, tmin=tmin, tmax=tmax, latitude_deg=lat, **kw)
        for i in range(n):
            one = potential_evapotranspiration(
                method,
                tmin=tmin[i : i + 1],
                tmax=tmax[i : i + 1],
                latitude_deg=lat[i],
                time=days,
                radiation=rs[i : i + 1],
                elevation_m=elevation[i],
            )
            np.testing.assert_allclose(every[i], one[0], rtol=1e-13, atol=0, err_msg=method)


def test_errors_name_the_problem():
    tmin, tmax = _inputs()
    common = dict(tmin=tmin, tmax=tmax, latitude_deg=LAT, time=DAYS)
    with pytest.raises(
        ValueError,
        match=r"unknown pet_method 'penman'; choose one of "
        r"hargreaves, oudin, hamon, priestley_taylor",
    ):
        potential_evapotranspiration("penman", **common)
    with pytest.raises(ValueError, match=r"^X: pet_method 'priestley_taylor' needs radiation"):
        potential_evapotranspiration("priestley_taylor", elevation_m=0.0, what="X: ", **common)
    with pytest.raises(ValueError, match="needs elevation_m"):
        potential_evapotranspiration("priestley_taylor", radiation=tmax, **common)
    with pytest.raises(ValueError, match="radiation"):
        potential_evapotranspiration(
            "priestley_taylor", radiation=tmax[:, :2], elevation_m=0.0, **common
        )
    with pytest.raises(ValueError, match="time has 3 days"):
        potential_evapotranspiration("oudin", **{**common, "time": DAYS[:3]})
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        potential_evapotranspiration("oudin", **{**common, "latitude_deg": 100.0})


def test_pyet_hargreaves_differs_from_fao56_only_by_its_latent_heat():
    """Why ``hargreaves`` stays hand-written: pyet divides Ra by λ(T) = 2.501 − 0.002361 T
    where FAO-56 (and the cached datasets) multiply by 0.408 ≈ 1/2.45."""
    import pandas as pd
    import pyet

    tmin, tmax = _inputs(6)
    tmean = (tmin + tmax) / 2
    hand = hargreaves_pet(tmin, tmax, LAT[:, None], np.array([_doy(d) for d in DAYS])[None, :])
    index = pd.DatetimeIndex(DAYS)
    for i, lat in enumerate(LAT):
        series = [pd.Series(a[i], index=index) for a in (tmean, tmax, tmin)]
        theirs = pyet.hargreaves(*series, math.radians(lat)).to_numpy()
        lam = 2.501 - 0.002361 * tmean[i]
        np.testing.assert_allclose(theirs * lam * 0.408, hand[i], rtol=1e-9)
        assert np.abs(theirs / hand[i] - 1).max() > 1e-3  # far beyond 1e-6: not the same


# ------------------------------------------------------------------ synthetic dataset
SMALL = dict(seed=3, num_nodes=60, years=2)


def test_synthetic_pet_method_changes_pet_and_cache_name_but_not_the_default(tmp_path):
    legacy = {"class": "SyntheticRiverBasin", **SMALL, "num_gauges": None}
    legacy["version"] = SYNTHETIC_VERSION
    digest = hashlib.sha1(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()
    default = SyntheticRiverBasin(root=tmp_path / "default", **SMALL)
    explicit = SyntheticRiverBasin(root=tmp_path / "explicit", **SMALL, pet_method="hargreaves")
    oudin_ds = SyntheticRiverBasin(root=tmp_path / "oudin", **SMALL, pet_method="oudin")
    assert default.processed_file_names == [f"synthetic_{digest[:10]}.pt"]
    assert explicit.processed_file_names == default.processed_file_names
    assert oudin_ds.processed_file_names != default.processed_file_names
    a, b, c = default[0], explicit[0], oudin_ds[0]
    assert default.pet_method == "hargreaves" and oudin_ds.pet_method == "oudin"
    pet = a.forcing_names.index("pet")
    assert a.forcing.equal(b.forcing)
    # the same weather (no random draws spent on PET), another PET: Oudin's, from the temperature
    assert a.forcing[..., :pet].equal(c.forcing[..., :pet])
    assert not a.forcing[..., pet].equal(c.forcing[..., pet])
    assert (c.forcing[..., pet] >= 0).all()
    lat = c.pos[:, 1].double().numpy()
    temp = c.forcing[..., a.forcing_names.index("temperature")].double().numpy()
    j = _doy(np.datetime64(str(c.time[100])[:10]))
    want = [oudin(temp[i, 100], lat[i], j) for i in range(0, SMALL["num_nodes"], 7)]
    got = c.forcing[::7, 100, pet].double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # float32 lat/temperature
    # the attributes that depend on PET follow it
    ari = a.x_names.index("aridity")
    assert not a.x[:, ari].equal(c.x[:, ari])


def test_synthetic_pet_method_errors(tmp_path):
    with pytest.raises(ValueError, match=r"SyntheticRiverBasin: unknown pet_method 'turc'"):
        SyntheticRiverBasin(root=tmp_path, **SMALL, pet_method="turc")
    with pytest.raises(ValueError, match=r"'priestley_taylor' needs radiation"):
        SyntheticRiverBasin(root=tmp_path, **SMALL, pet_method="priestley_taylor")


# ------------------------------------------------------------------------ DRB dataset
def test_drb_pet_method(drb, drb_dir, tmp_path):
    from gnnhydro.datasets import DelawareRiverBasin

    legacy = {"class": "DelawareRiverBasin", "climate_adjustment": "none"}
    digest = hashlib.sha1(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    assert drb.processed_file_names == [f"drb_{digest[:10]}.pt"]
    hamon_ds = DelawareRiverBasin(tmp_path, source_dir=drb_dir, pet_method="hamon")
    assert hamon_ds.processed_file_names != drb.processed_file_names
    a, b = drb[0], hamon_ds[0]
    pet = a.forcing_names.index("pet")
    assert a.forcing[..., :pet].equal(b.forcing[..., :pet])
    assert not a.forcing[..., pet].equal(b.forcing[..., pet]) and (b.forcing[..., pet] > 0).all()
    with pytest.raises(ValueError, match="DelawareRiverBasin: unknown pet_method 'x'"):
        DelawareRiverBasin(tmp_path / "x", source_dir=drb_dir, pet_method="x")


# ------------------------------------------------------------------- CAMELS-US dataset
def test_camels_priestley_taylor_from_daymet_radiation(camels_dir, tmp_path):
    from gnnhydro.datasets import CamelsUS
    from gnnhydro.datasets.camels_us import read_camels_forcing

    basin = "01022500"
    default = CamelsUS(tmp_path / "default", source_dir=camels_dir, basins=[basin])
    pt = CamelsUS(
        tmp_path / "pt", source_dir=camels_dir, basins=[basin], pet_method="priestley_taylor"
    )
    assert pt.processed_file_names != default.processed_file_names
    a, b = default[0], pt[0]
    pet = a.forcing_names.index("pet")
    assert a.forcing[..., :pet].equal(b.forcing[..., :pet])
    # Priestley–Taylor of the raw file: Rs = srad × dayl, Rn by FAO-56, P from the header elevation
    path = next((camels_dir / "basin_mean_forcing" / "daymet").rglob(f"{basin}_*.txt"))
    header, df = read_camels_forcing(path)
    cols = {c.split("(")[0]: c for c in df.columns}
    day = str(b.time[200])[:10]
    row = df.loc[day]
    tmin, tmax = float(row[cols["tmin"]]), float(row[cols["tmax"]])
    rs = float(row[cols["srad"]]) * float(row[cols["dayl"]]) / 1e6
    j = _doy(np.datetime64(day))
    rn = net_radiation(rs, tmin, tmax, header["lat"], j, header["elevation_m"])
    want = priestley_taylor((tmin + tmax) / 2, rn, header["elevation_m"])
    assert float(b.forcing[0, 200, pet]) == pytest.approx(want, rel=1e-5)

"""Unit conversions and Hargreaves PET (gnnhydro/units.py) against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnhydro.units import (
    SECONDS_PER_DAY,
    acres_to_km2,
    cfs_to_m3s,
    convert_units,
    extraterrestrial_radiation_mm,
    fahrenheit_to_celsius,
    hargreaves_pet,
    inches_to_mm,
    m3s_to_mm_per_step,
    mm_per_step_to_m3s,
    to_canonical,
)

# FAO-56 (Allen et al. 1998), Example 8: 20°S, 3 September (day 246):
# dr = 0.985, δ = 0.120 rad, ωs = 1.527 rad, Ra = 32.2 MJ m⁻² day⁻¹ = 0.408 · 32.2 = 13.1 mm/day.
FAO_LAT, FAO_DOY, FAO_RA_MJ = -20.0, 246, 32.2


def test_extraterrestrial_radiation_fao56_example8():
    ra_mm = float(extraterrestrial_radiation_mm(np.array(FAO_LAT), np.array(FAO_DOY)))
    assert ra_mm / 0.408 == pytest.approx(FAO_RA_MJ, abs=0.05)  # the example rounds to 0.1 MJ
    assert ra_mm == pytest.approx(13.1, abs=0.05)
    # intermediate quantities of the example, recomputed from FAO-56 eq. 23-25
    j = FAO_DOY
    dr = 1 + 0.033 * math.cos(2 * math.pi * j / 365)
    delta = 0.409 * math.sin(2 * math.pi * j / 365 - 1.39)
    ws = math.acos(-math.tan(math.radians(FAO_LAT)) * math.tan(delta))
    assert (round(dr, 3), round(delta, 3), round(ws, 3)) == (0.985, 0.120, 1.527)


def test_hargreaves_pet_hand_computed():
    # Tmin 14 °C, Tmax 30 °C: Tmean + 17.8 = 39.8, sqrt(16) = 4;
    # PET = 0.0023 · (0.408 · 32.2) · 39.8 · 4 = 4.8105 mm/day (±0.008 from Ra's rounding)
    hand = 0.0023 * (0.408 * FAO_RA_MJ) * 39.8 * 4.0
    pet = hargreaves_pet(
        np.array([[14.0]]), np.array([[30.0]]), np.array([[FAO_LAT]]), np.array([FAO_DOY])
    )
    assert pet.shape == (1, 1)
    assert float(pet[0, 0]) == pytest.approx(hand, abs=0.01)
    # exactly the formula on the module's own Ra
    ra = float(extraterrestrial_radiation_mm(np.array(FAO_LAT), np.array(FAO_DOY)))
    assert float(pet[0, 0]) == pytest.approx(0.0023 * ra * 39.8 * 4.0, rel=1e-12)


def test_hargreaves_pet_zero_cases():
    lat = np.array([[80.0], [-20.0], [-20.0]])
    tmin = np.array([[-5.0], [20.0], [-40.0]])
    tmax = np.array([[5.0], [10.0], [-30.0]])  # polar night; Tmax < Tmin; Tmean + 17.8 < 0
    doy = np.array([355])
    assert extraterrestrial_radiation_mm(np.array(80.0), np.array(355)) == pytest.approx(0.0)
    np.testing.assert_array_equal(hargreaves_pet(tmin, tmax, lat, doy), np.zeros((3, 1)))


def test_hargreaves_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    n, t = 7, 366
    lat = rng.uniform(-70, 70, size=(n, 1))
    doy = np.arange(1, t + 1)
    tmin = rng.normal(5, 10, size=(n, t))
    tmax = tmin + rng.uniform(-2, 18, size=(n, t))  # a few Tmax < Tmin
    ref = hargreaves_pet(tmin, tmax, lat, doy)
    assert isinstance(ref, np.ndarray) and ref.shape == (n, t)
    assert (ref >= 0).all() and ref.max() > 3.0
    doy64 = torch.tensor(doy, dtype=torch.float64)
    got = hargreaves_pet(torch.tensor(tmin), torch.tensor(tmax), torch.tensor(lat), doy64)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    # an integer day-of-year tensor: torch computes the solar terms in float32 (units.py: the
    # day angle ``2π·J/365`` of an int64 tensor is float32), so agreement is to ~1e-5 only
    got_int = hargreaves_pet(
        torch.tensor(tmin), torch.tensor(tmax), torch.tensor(lat), torch.tensor(doy)
    )
    np.testing.assert_allclose(got_int.numpy(), ref, rtol=1e-4, atol=1e-4)
    got32 = hargreaves_pet(
        *(torch.tensor(a, dtype=torch.float32) for a in (tmin, tmax, lat)), torch.tensor(doy)
    )
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_hargreaves_scalar_latitude_with_tensors():
    pet = hargreaves_pet(
        torch.tensor([[14.0]]), torch.tensor([[30.0]]), FAO_LAT, torch.tensor([FAO_DOY])
    )
    assert float(pet) == pytest.approx(4.81, abs=0.01)
    # a numpy day of year with tensor latitude, and an integer day-of-year tensor in float64
    lat64 = torch.tensor([[FAO_LAT]], dtype=torch.float64)
    pet64 = hargreaves_pet(
        torch.tensor([[14.0]], dtype=torch.float64),
        torch.tensor([[30.0]], dtype=torch.float64),
        lat64,
        np.array([FAO_DOY]),
    )
    assert pet64.dtype == torch.float64
    ref = hargreaves_pet(
        np.array([[14.0]]), np.array([[30.0]]), np.array([[FAO_LAT]]), np.array([FAO_DOY])
    )
    np.testing.assert_allclose(pet64.numpy(), ref, rtol=1e-12)


def test_exact_conversion_factors():
    assert inches_to_mm(1.0) == 25.4
    assert inches_to_mm(np.array([0.0, 2.0]))[1] == 50.8
    assert fahrenheit_to_celsius(32.0) == 0.0
    assert fahrenheit_to_celsius(212.0) == pytest.approx(100.0, abs=1e-12)
    assert fahrenheit_to_celsius(-40.0) == pytest.approx(-40.0, abs=1e-12)
    # 1 ft = 0.3048 m exactly: 1 ft³/s = 0.028316846592 m³/s
    assert cfs_to_m3s(1.0) == pytest.approx(0.028316846592, rel=1e-15)
    assert cfs_to_m3s(1000.0) == pytest.approx(28.316846592, rel=1e-15)
    # 1 international acre = 4046.8564224 m² exactly; 640 acres = 1 square mile = 2.589988110336 km²
    assert acres_to_km2(1.0) == pytest.approx(4046.8564224e-6, rel=1e-15)
    assert acres_to_km2(640.0) == pytest.approx(2.589988110336, rel=1e-15)
    t = torch.tensor([1.0], dtype=torch.float64)
    assert torch.equal(inches_to_mm(t), torch.tensor([25.4], dtype=torch.float64))


def test_depth_discharge_round_trip():
    # 1 mm/day over 1 km² = 1000 m³ per 86400 s; 1 mm/h over 3.6 km² = 1 m³/s
    area = torch.tensor([1.0, 3.6], dtype=torch.float64)
    depth = torch.tensor([[1.0, 2.0], [1.0, 0.5]], dtype=torch.float64)
    q_day = mm_per_step_to_m3s(depth, area, SECONDS_PER_DAY)
    torch.testing.assert_close(q_day[0], torch.tensor([1000.0, 2000.0]).double() / 86400.0)
    q_hour = mm_per_step_to_m3s(depth, area, 3600.0)
    torch.testing.assert_close(q_hour[1], torch.tensor([1.0, 0.5], dtype=torch.float64))
    batch = torch.rand(3, 2, 5, dtype=torch.float64) * 20  # [B, N, T]
    for step in (3600.0, 86400.0):
        back = m3s_to_mm_per_step(mm_per_step_to_m3s(batch, area, step), area, step)
        torch.testing.assert_close(back, batch, rtol=1e-14, atol=0.0)


def test_convert_units_canonical_spellings():
    assert convert_units(2.0, "in", "mm") == pytest.approx(50.8)
    assert convert_units(2.0, "Inches", "mm") == pytest.approx(50.8)
    assert convert_units(50.0, "degF", "degC") == pytest.approx(10.0)
    assert convert_units(300.0, "K", "degC") == pytest.approx(26.85)
    assert convert_units(1.0, "cfs", "m3/s") == pytest.approx(0.028316846592)
    assert convert_units(1.0, "acres", "km2") == pytest.approx(4046.8564224e-6)
    assert convert_units(5.0, "m3/s", "m3/s") == 5.0
    assert convert_units(1.0, "m2", "km2") == pytest.approx(1e-6)


def test_convert_units_errors_name_variable_and_unit():
    with pytest.raises(ValueError, match=r"'tmax'.*unknown units 'flurbs'"):
        convert_units(1.0, "flurbs", "degC", variable="tmax")
    # a valid unit of another quantity says what it measures
    with pytest.raises(ValueError, match=r"'tmax'.*'furlong' measure \[length\], expected 'degC'"):
        convert_units(1.0, "furlong", "degC", variable="tmax")
    with pytest.raises(ValueError, match=r"'area'.*'cfs' measure \[length\] \*\* 3 / \[time\]"):
        convert_units(1.0, "cfs", "km2", variable="area")


def test_any_unit_pint_knows_converts():
    """Not a hand-kept list: CF/UDUNITS and pint spellings convert by their definitions."""
    assert convert_units(1.0, "mile", "m") == pytest.approx(1609.344)
    assert convert_units(1.0, "hectare", "km2") == pytest.approx(0.01)
    assert convert_units(1.0, "mi^2", "km2") == pytest.approx(2.589988110336)
    assert convert_units(1.0, "ft3 s-1", "m3/s") == pytest.approx(0.028316846592)
    assert convert_units(1.0, "L/s", "m3/s") == pytest.approx(1e-3)
    assert convert_units(1.0, "kiloliter/minute", "m3/s") == pytest.approx(1 / 60)
    assert convert_units(32.0, "degree_Fahrenheit", "degC") == pytest.approx(0.0, abs=1e-12)
    assert convert_units(0.0, "degree_Rankine", "degC") == pytest.approx(-273.15)
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(
        to_canonical(x, "cm/hour", "mm", variable="p", step_seconds=3600), x * 10
    )
    np.testing.assert_allclose(
        to_canonical(x, "mm s-1", "mm", variable="p", step_seconds=60), x * 60
    )
    np.testing.assert_allclose(to_canonical(x, "kg m-2", "mm", variable="swe"), x)
    np.testing.assert_allclose(to_canonical(x, "g cm-2", "mm", variable="swe"), x * 10)
    with pytest.raises(ValueError, match=r"variable 'p': unknown units 'mm per fortnite'"):
        to_canonical(x, "mm per fortnite", "mm", variable="p", step_seconds=60)


def test_to_canonical_rates():
    x = np.array([24.0, 48.0])
    # mm/day at an hourly step: /24; at a daily step unchanged
    np.testing.assert_allclose(
        to_canonical(x, "mm/day", "mm", variable="p", step_seconds=3600.0), [1.0, 2.0]
    )
    np.testing.assert_allclose(to_canonical(x, "mm d-1", "mm", variable="p", step_seconds=86400), x)
    # mm/h at a daily step: ×24; kg m⁻² s⁻¹ (= mm/s) at a daily step: ×86400
    np.testing.assert_allclose(
        to_canonical(x, "mm h-1", "mm", variable="p", step_seconds=86400.0), x * 24
    )
    np.testing.assert_allclose(
        to_canonical(np.array([1e-5]), "kg m-2 s-1", "mm", variable="p", step_seconds=86400.0),
        [0.864],
    )
    # inches per day at an hourly step
    np.testing.assert_allclose(
        to_canonical(np.array([2.4]), "in/day", "mm", variable="p", step_seconds=3600.0),
        [2.54],
    )
    # a plain depth is per step whatever the step
    np.testing.assert_allclose(to_canonical(x, "mm", "mm", variable="p", step_seconds=3600.0), x)
    np.testing.assert_allclose(to_canonical(x, "inches", "mm", variable="p"), x * 25.4)
    t = torch.tensor([24.0])
    assert isinstance(
        to_canonical(t, "mm/day", "mm", variable="p", step_seconds=3600.0), torch.Tensor
    )


def test_to_canonical_other_quantities_and_none():
    x = np.array([50.0])
    assert to_canonical(x, None, "degC", variable="t") is x
    np.testing.assert_allclose(to_canonical(x, "degrees_fahrenheit", "degC", variable="t"), [10.0])
    np.testing.assert_allclose(to_canonical(x, "°C", "degC", variable="t"), x)
    np.testing.assert_allclose(
        to_canonical(np.array([1.0]), "ft3/s", "m3/s", variable="q"), [0.028316846592]
    )
    np.testing.assert_allclose(to_canonical(np.array([1.0]), "m3 s-1", "m3/s", variable="q"), [1])


def test_to_canonical_errors():
    with pytest.raises(ValueError, match=r"'precip'.*'mm/day' are a rate.*time step is unknown"):
        to_canonical(np.ones(2), "mm/day", "mm", variable="precip")
    with pytest.raises(ValueError, match=r"variable 'precip'.*'degF'"):
        to_canonical(np.ones(2), "degF", "mm", variable="precip")
    with pytest.raises(ValueError, match=r"variable 'tmax'.*'furlong'"):
        to_canonical(np.ones(2), "furlong", "degC", variable="tmax")
    with pytest.raises(ValueError, match=r"variable 'q'.*'mm'"):
        to_canonical(np.ones(2), "mm", "m3/s", variable="q")

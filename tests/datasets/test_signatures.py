"""Hydrological signatures against closed forms and the published filter written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gnnhydro.datasets.signatures import (
    SIGNATURE_NAMES,
    hydrological_signatures,
    lyne_hollick_baseflow,
)

DOY = np.arange(1, 366)


def _col(values, name):
    return values[:, SIGNATURE_NAMES.index(name)]


def test_constant_flow_closed_forms():
    # 2 m³/s from 172.8 km² = 1 mm/day; 4 mm/day of rain
    q = np.full((1, 365), 2.0)
    values, ok = hydrological_signatures(q, np.array([172.8]), DOY, np.full((1, 365), 4.0))
    assert ok.tolist() == [True]
    assert _col(values, "q_mean")[0] == pytest.approx(1.0)
    assert _col(values, "runoff_ratio")[0] == pytest.approx(0.25)
    assert _col(values, "baseflow_index")[0] == pytest.approx(1.0)
    assert _col(values, "fdc_slope")[0] == pytest.approx(0.0, abs=1e-12)
    assert _col(values, "q95")[0] == pytest.approx(1.0) and _col(values, "q5")[0] == pytest.approx(
        1.0
    )
    # a uniform flow over the year has (almost) no seasonality
    assert abs(_col(values, "season_cos")[0]) < 0.01 and abs(_col(values, "season_sin")[0]) < 0.01


def test_flow_timing_and_fdc_slope_of_an_exponential_sample():
    q = np.zeros((1, 365))
    q[0, 90] = 10.0  # all the flow on day of year 91
    values, _ = hydrological_signatures(q, np.array([86.4]), DOY, min_days=10)
    angle = 2 * math.pi * 91 / 365.25
    assert _col(values, "season_cos")[0] == pytest.approx(math.cos(angle), abs=1e-9)
    assert _col(values, "season_sin")[0] == pytest.approx(math.sin(angle), abs=1e-9)
    # quantiles of an exponential distribution (mean 1 mm/day): ln q(p) = ln(-ln(1 - p))
    p = (np.arange(20000) + 0.5) / 20000
    q = -np.log(1 - p)[None] * 86.4 / 86.4  # area 86.4 km²: m³/s = mm/day
    values, _ = hydrological_signatures(q, np.array([86.4]), np.resize(DOY, q.shape[1]))
    expected = (math.log(-math.log(1 - 0.67) + 1e-3) - math.log(-math.log(1 - 0.34) + 1e-3)) / 0.33
    assert _col(values, "fdc_slope")[0] == pytest.approx(expected, rel=1e-3)


def test_lyne_hollick_filter_equals_the_published_recursion():
    rng = np.random.default_rng(1)
    q = np.abs(rng.gamma(0.5, 2.0, 400)).cumsum() % 7 + rng.uniform(0, 1, 400)

    def one_pass(series, alpha=0.925):  # Ladson et al. (2013), eq. 1 with the [0, q] clip
        f = [0.0]
        for t in range(1, len(series)):
            f.append(
                min(
                    max(alpha * f[-1] + (1 + alpha) / 2 * (series[t] - series[t - 1]), 0), series[t]
                )
            )
        return np.asarray(series) - np.asarray(f)

    expected = one_pass(one_pass(one_pass(q)[::-1])[::-1])
    assert np.allclose(lyne_hollick_baseflow(q), expected, rtol=0, atol=1e-12)
    assert (lyne_hollick_baseflow(q) <= q + 1e-12).all()


def test_too_few_observations_are_not_available_and_bad_areas_are_refused():
    q = np.full((2, 365), np.nan)
    q[0, :100] = 1.0
    q[1] = 1.0
    values, ok = hydrological_signatures(q, np.array([10.0, 10.0]), DOY, min_days=180)
    assert ok.tolist() == [False, True]
    assert np.isnan(values[0]).all() and np.isfinite(values[1, [0, 2, 3]]).all()
    with pytest.raises(ValueError, match="positive drainage areas"):
        hydrological_signatures(q, np.array([10.0, 0.0]), DOY)

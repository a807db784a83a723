"""The shared forcing plausibility checks (gnnhydro/datasets/_checks.py) on hand-made arrays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gnnhydro.datasets._checks import check_forcing_plausible, forcing_summary

IDS = ["a", "b", "c"]


def _check(variable, values, units=None):
    check_forcing_plausible(
        variable, forcing_summary(np.asarray(values)), ids=IDS, what="test", units=units
    )


def test_plausible_values_pass_quietly():
    t = np.array([[-30.0, 5.0, 35.0], [0.0, 10.0, 20.0], [-5.0, np.nan, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check("temperature", t)
        _check("precipitation", np.abs(t))
        _check("pet", np.zeros((3, 3)))
        _check("srad", -np.ones((3, 3)))  # other variables are not checked


def test_temperature_scales():
    t = np.array([[280.0, 285.0], [75.0, 80.0], [5.0, 10.0]])
    with pytest.warns(UserWarning) as record:
        _check("temperature", t)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "kelvin (mean 282" in messages[0] and "['a']" in messages[0]
    assert "Fahrenheit (mean 78" in messages[1] and "['b']" in messages[1]


def test_temperature_outside_range():
    with pytest.warns(UserWarning, match=r"plausible range.*\['c'\].*max 70"):
        _check("temperature", np.array([[5.0, 6.0], [1.0, 2.0], [10.0, 70.0]]))


def test_negative_precipitation_names_ids_and_minimum():
    p = np.ones((3, 4))
    p[0, 1], p[2, 3] = -0.5, -2.0
    with pytest.raises(
        ValueError, match=r"'precipitation' is negative at ids \['a', 'c'\] \(minimum -2"
    ):
        _check("precipitation", p)

"""The shared id and time-axis checks (gnnhydro/checks.py) on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from gnnhydro.checks import infer_step_seconds, match_ids

T0 = np.datetime64("2021-08-23T13:00", "ns")
HOUR = np.timedelta64(3600, "s")


def test_infer_step_seconds_names_the_gap():
    assert infer_step_seconds(T0 + np.arange(4) * HOUR) == 3600.0
    with pytest.raises(
        ValueError, match=r"CHRTOUT: time gap between 2021-08-23T14:00.* and 2021-08-23T16:00"
    ):
        infer_step_seconds(T0 + np.array([0, 1, 3]) * HOUR, what="CHRTOUT")
    with pytest.raises(ValueError, match="duplicate"):
        infer_step_seconds(T0 + np.array([0, 1, 1, 2]) * HOUR)
    with pytest.raises(ValueError, match="not increasing"):
        infer_step_seconds(T0 - np.arange(3) * HOUR)
    assert infer_step_seconds(T0 + np.arange(1) * HOUR, step_seconds=900.0) == 900.0


def test_match_ids_by_id_never_by_position():
    assert match_ids([30, 10, 20], [10, 20, 30], what="f").tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match=r"f: ids not in the river network: \[?99"):
        match_ids([10, 99, 20], [10, 20], what="f")
    with pytest.raises(ValueError, match=r"f: network ids missing from the time series: \[?30"):
        match_ids([10, 20], [10, 20, 30], what="f")
    assert match_ids([10], [10, 20], what="f", require_all_network=False).tolist() == [0, -1]
    with pytest.raises(ValueError, match="duplicate ids"):
        match_ids([10, 10, 20], [10, 20], what="f")


def test_dataset_checks_are_the_same_functions():
    from gnnhydro.datasets import _checks

    assert _checks.infer_step_seconds is infer_step_seconds and _checks.match_ids is match_ids

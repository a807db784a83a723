"""Tests for gnnhydro.training.metrics: closed forms, hand-computed cases, NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnhydro.training import metrics as M

O3 = np.array([1.0, 2.0, 3.0])


def test_perfect_and_mean_simulation():
    rng = np.random.default_rng(0)
    o = rng.gamma(2.0, 3.0, size=200)
    assert M.nse(observation=o, simulation=o) == pytest.approx(1.0)
    assert M.kge(observation=o, simulation=o) == pytest.approx(1.0)
    assert M.kge_prime(observation=o, simulation=o) == pytest.approx(1.0)
    assert M.log_nse(observation=o, simulation=o) == pytest.approx(1.0)
    assert M.rmse(observation=o, simulation=o) == 0.0
    for f in (M.pbias, M.fhv, M.flv, M.fms):
        assert f(observation=o, simulation=o) == pytest.approx(0.0, abs=1e-12)
    assert M.nse(observation=o, simulation=np.full_like(o, o.mean())) == pytest.approx(0.0)


def test_nse_hand_case():
    # Σ(s−o)² = 1, Σ(o−ō)² = 2
    assert M.nse(observation=O3, simulation=np.array([1.0, 2.0, 4.0])) == pytest.approx(0.5)


def test_kge_and_kge_prime_hand_cases():
    # s = 2·o: r = 1, α = 2, β = 2, γ = 1
    s = 2 * O3
    assert M.kge(observation=O3, simulation=s) == pytest.approx(1 - math.sqrt(2))
    assert M.kge_prime(observation=O3, simulation=s) == pytest.approx(0.0)
    # s = o + 1: r = 1, α = 1, β = 1.5, γ = (σ/3)/(σ/2) = 2/3
    s = O3 + 1
    assert M.kge(observation=O3, simulation=s) == pytest.approx(0.5)
    assert M.kge_prime(observation=O3, simulation=s) == pytest.approx(1 - math.sqrt(13) / 6)
    assert M.pearson_r(observation=O3, simulation=-O3) == pytest.approx(-1.0)


def test_log_nse_hand_case_and_default_epsilon():
    e = math.e
    o = np.array([0.0, e - 1, e**2 - 1])  # log(o + 1) = [0, 1, 2]
    s = np.array([0.0, e - 1, e**3 - 1])  # log(s + 1) = [0, 1, 3]
    assert M.log_nse(observation=o, simulation=s, epsilon=1.0) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    o = rng.gamma(1.0, 2.0, 50)
    s = o * rng.uniform(0.5, 1.5, 50)
    eps = 0.01 * o.mean()
    ref = M.nse(observation=np.log(o + eps), simulation=np.log(s + eps))
    assert M.log_nse(observation=o, simulation=s) == pytest.approx(ref)
    # negative simulated flows are treated as 0
    s2 = s.copy()
    s2[3] = -5.0
    s3 = s.copy()
    s3[3] = 0.0
    assert M.log_nse(observation=o, simulation=s2) == pytest.approx(
        M.log_nse(observation=o, simulation=s3)
    )


def test_rmse_and_pbias_hand_cases():
    assert M.rmse(observation=np.zeros(4), simulation=np.array([1.0, -1, 1, -1])) == 1.0
    o = np.array([1.0, 2, 3, 4])
    assert M.pbias(observation=o, simulation=np.array([2.0, 2, 3, 4])) == pytest.approx(10.0)
    assert M.pbias(observation=o, simulation=o * 0.5) == pytest.approx(-50.0)


def test_fhv_hand_case():
    o = np.arange(1.0, 101.0)  # 100 values, top 2 % = {100, 99}
    s = o.copy()
    s[-2:] *= 2  # top 2 become 198, 200
    assert M.fhv(observation=o, simulation=s) == pytest.approx(100.0 * (398 - 199) / 199)
    # FDC metrics ignore timing: a time-reversed simulation has no volume bias
    assert M.fhv(observation=o, simulation=o[::-1].copy()) == pytest.approx(0.0)
    assert M.nse(observation=o, simulation=o[::-1].copy()) < 0
    # h = 0.1 → top 10 values: sim is 10 % higher there
    assert M.fhv(observation=o, simulation=1.1 * o, h=0.1) == pytest.approx(10.0)


def test_flv_hand_case():
    logs_o = np.array([0.0, 1, 2, 5, 6, 7, 8, 9, 10, 11])  # n = 10, l = 0.3 → 3 lowest
    logs_s = np.array([0.0, 2, 4, 5, 6, 7, 8, 9, 10, 11])
    rng = np.random.default_rng(2)
    perm = rng.permutation(10)
    o, s = np.exp(logs_o)[perm], np.exp(logs_s)
    # Σ(log O − log O_min) = 3, Σ(log S − log S_min) = 6 → FLV = −100·(6 − 3)/3
    assert M.flv(observation=o, simulation=s) == pytest.approx(-100.0)
    # zero flows are floored at 1e-6 before the log
    o0 = np.array([0.0, 1.0, 2.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
    s0 = np.array([1e-6, 1.0, 2.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
    assert M.flv(observation=o0, simulation=s0) == pytest.approx(0.0, abs=1e-12)


def test_fms_hand_case():
    # n = 11: FDC ranks i = round(0.2·11) = 2 and j = round(0.7·11) = 8 (0-based, decreasing)
    o = np.exp(np.arange(11.0))  # FDC[k] = e^(10−k): log FDC[2] − log FDC[8] = 8 − 2 = 6
    s = np.exp(2 * np.arange(11.0))  # Δlog = 12
    assert M.fms(observation=o, simulation=s) == pytest.approx(100.0 * (12 - 6) / (6 + 1e-6))
    assert M.fms(observation=o, simulation=3 * o) == pytest.approx(0.0, abs=1e-9)


def test_fms_by_hand_ranks_not_quantiles():
    # n = 10: ranks round(0.2·10) = 2 and round(0.7·10) = 7 of the decreasing FDC. The log-FDC
    # is not linear between ranks, so an interpolated quantile would give another value.
    log_fdc_o = np.array([9.0, 8, 4, 3.5, 3, 2.5, 2, 1, 0.5, 0])  # FDC[2] = e^4, FDC[7] = e^1
    log_fdc_s = np.array([9.0, 8, 5, 4.5, 4, 3, 2, 1, 0, -1])  # FDC[2] = e^5, FDC[7] = e^1
    perm = np.random.default_rng(5).permutation(10)  # order in time does not matter
    o, s = np.exp(log_fdc_o)[perm], np.exp(log_fdc_s)[::-1].copy()
    # (Δs − Δo)/(Δo + 1e-6) = (4 − 3)/(3 + 1e-6), in %
    assert M.fms(observation=o, simulation=s) == pytest.approx(100.0 / (3 + 1e-6), rel=1e-12)
    # zero/negative flows count as 1e-6: FDC[7] = 0 (obs) and −3 (sim) both become 1e-6
    o0 = np.array([9.0, 8, 1e-6 * np.e**2, 5e-6, 4e-6, 3e-6, 2e-6, 0, 0, 0])  # Δlog = 2
    s0 = np.array([9.0, 8, 1e-6 * np.e**3, 1e-5, 8e-6, 5e-6, 2e-6, -3, -4, -5])  # Δlog = 3
    assert M.fms(observation=o0, simulation=s0) == pytest.approx(100.0 / (2 + 1e-6), rel=1e-9)
    # a flat observed mid-segment gives NaN
    flat = np.array([9.0, 8, 1, 1, 1, 1, 1, 1, 0.5, 0.2])
    assert np.isnan(M.fms(observation=flat, simulation=s))


def _peaks(n, where, height=10.0):
    x = np.zeros(n)
    for p in where:
        x[p] = height
        x[p - 1] = x[p + 1] = height / 2
    return x


def test_peak_timing_hand_cases():
    o = _peaks(60, [10, 40])
    s = _peaks(60, [11, 37])  # offsets 1 and 3
    assert M.peak_timing(observation=o, simulation=s, distance=5) == pytest.approx(2.0)
    # with the default distance of 100 steps only the higher (first found) peak survives
    o2 = _peaks(60, [10, 40])
    o2[10] = 20.0
    assert M.peak_timing(observation=o2, simulation=s) == pytest.approx(1.0)
    assert M.peak_timing(observation=o, simulation=o, distance=5) == 0.0
    # NaNs (dropped jointly) before the peaks shift both series equally
    o3, s3 = o.copy(), s.copy()
    o3[2] = np.nan
    s3[5] = np.nan
    assert M.peak_timing(observation=o3, simulation=s3, distance=5) == pytest.approx(2.0)
    assert np.isnan(M.peak_timing(observation=np.ones(30), simulation=np.ones(30)))


def test_peak_timing_by_hand_edges_local_peaks_and_gaps():
    o = _peaks(40, [2, 15, 30])  # three observed peaks, distance=5 keeps all of them
    s = np.zeros(40)
    s[1:4] = [1.0, 9.0, 1.0]  # whatever the simulation does at the first peak ...
    s[14:19] = [1.0, 3.0, 1.0, 8.0, 1.0]  # strict local max at 15, higher max at 17
    s[31:34] = [4.0, 6.0, 4.0]  # no local max at 30; window [27, 33] has its max at 32
    # ... the peak at 2 is skipped (its window [−1, 5] leaves the series); at 15 the local
    # maximum counts (error 0, not 2); at 30 the window's argmax 32 gives 2: mean (0 + 2)/2
    assert M.peak_timing(observation=o, simulation=s, distance=5) == pytest.approx(1.0)
    # a missing step outside every window changes nothing ...
    o_gap = o.copy()
    o_gap[8] = np.nan
    assert M.peak_timing(observation=o_gap, simulation=s, distance=5) == pytest.approx(1.0)
    # ... one inside the window of the peak at 30 ([27, 33]) drops that peak: only the 0 is left
    o_gap[28] = np.nan
    assert M.peak_timing(observation=o_gap, simulation=s, distance=5) == pytest.approx(0.0)
    # a peak too close to the end (38 + 3 ≥ 40) is skipped too: no peak left gives NaN
    assert np.isnan(M.peak_timing(observation=_peaks(40, [38]), simulation=s))


def test_nan_handling_rows_and_tensors():
    rng = np.random.default_rng(3)
    o = rng.gamma(2.0, 2.0, (3, 40))
    s = o + rng.normal(0, 0.5, (3, 40))
    o[0, 5] = np.nan
    s[0, 9] = np.nan
    o[2] = np.nan  # a gauge without any observation
    valid = np.isfinite(o[0]) & np.isfinite(s[0])
    for name in M.list_metrics():
        f = getattr(M, name)
        out = f(observation=o, simulation=s)
        assert out.shape == (3,), name
        ref0 = f(observation=o[0, valid], simulation=s[0, valid])
        assert out[0] == pytest.approx(ref0, nan_ok=True), name
        assert out[1] == pytest.approx(f(observation=o[1], simulation=s[1]), nan_ok=True), name
        assert np.isnan(out[2]), name
        tens = f(observation=torch.tensor(o), simulation=torch.tensor(s, requires_grad=True))
        np.testing.assert_allclose(tens, out)
    assert np.isnan(M.nse(observation=np.array([1.0, 1.0]), simulation=np.array([1.0, 2.0])))
    assert np.isnan(M.nse(observation=np.array([1.0]), simulation=np.array([1.0])))


def test_compute_metrics_and_summarize():
    rng = np.random.default_rng(4)
    o = rng.gamma(2.0, 2.0, (2, 3, 50))
    s = o * 1.1
    s[..., :10] = 1e6  # garbage during warm-up
    res = M.compute_metrics(
        observation=o,
        simulation=s,
        metrics=["nse", "pbias", "peak_timing"],
        warmup_steps=10,
        options={"peak_timing": {"window": 2}},
    )
    assert set(res) == {"nse", "pbias", "peak_timing"}
    assert res["nse"].shape == (2, 3)
    np.testing.assert_allclose(res["pbias"], 10.0)
    np.testing.assert_allclose(res["nse"], M.nse(observation=o[..., 10:], simulation=s[..., 10:]))
    all_metrics = M.compute_metrics(observation=o[0, 0], simulation=s[0, 0])
    assert set(all_metrics) == set(M.list_metrics())
    assert all_metrics["rmse"].shape == ()
    summary = M.summarize({"nse": np.array([0.1, np.nan, 0.5, 0.9]), "x": np.array([np.nan])})
    assert summary["nse"] == {"median": pytest.approx(0.5), "mean": pytest.approx(0.5), "count": 3}
    assert summary["x"]["count"] == 0 and math.isnan(summary["x"]["median"])
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute_metrics(observation=o, simulation=s, metrics=["nope"])
    with pytest.raises(ValueError, match="shape"):
        M.nse(observation=o, simulation=s[..., 1:])
    with pytest.raises(ValueError, match="warmup_steps"):
        M.compute_metrics(observation=o, simulation=s, warmup_steps=50)

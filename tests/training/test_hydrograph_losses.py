"""Robust, flow-duration-curve and recession losses against references computed here in numpy
(and the FDC signature metrics of gnnhydro.training.metrics), NaN masking, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnhydro.training import metrics as M
from gnnhydro.training.hydrograph_losses import recession_mask
from gnnhydro.training.losses import CombinedLoss, build_loss, list_losses

D = torch.float64
NEW = ["huber", "fdc", "fhv", "flv", "fms", "recession"]


def _hydrographs(g=4, t=200, seed=0):
    """Storm hydrographs with exponential recessions (observed) and a distorted simulation."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((g, t))
    for i in range(g):
        q = 1.0 + i
        for s in range(t):
            q = q * (0.9 - 0.02 * i) + (rng.gamma(0.6, 8.0) if rng.random() < 0.08 else 0.0)
            obs[i, s] = q + 0.2
    sim = obs * rng.uniform(0.7, 1.3, size=(g, 1)) + rng.normal(0, 0.3, size=(g, t))
    sim = np.roll(sim, 1, axis=1)
    obs[0, 10:25] = np.nan
    obs[2, ::9] = np.nan
    return torch.tensor(sim, dtype=D), torch.tensor(obs, dtype=D)


def _valid(o, s):
    m = np.isfinite(o)
    return o[m], s[m]


def test_registered_and_zero_at_a_perfect_fit():
    sim, obs = _hydrographs()
    assert set(NEW) <= set(list_losses())
    perfect = torch.nan_to_num(obs, nan=1.0)
    for name in NEW:
        assert build_loss(name)(simulation=perfect, observation=obs).item() == pytest.approx(
            0.0, abs=1e-12
        ), name
        assert build_loss(name)(simulation=sim, observation=obs).item() > 1e-4, name


def test_fdc_signature_losses_are_the_absolute_metrics():
    sim, obs = _hydrographs()
    for name, metric in (("fhv", M.fhv), ("flv", M.flv), ("fms", M.fms)):
        ref = np.nanmean(np.abs(metric(observation=obs.numpy(), simulation=sim.numpy()))) / 100
        got = build_loss(name)(simulation=sim, observation=obs).item()
        assert got == pytest.approx(ref, rel=1e-9), name
    # options reach the definitions
    ref = np.mean(np.abs(M.fhv(observation=obs.numpy(), simulation=sim.numpy(), h=0.1))) / 100
    assert build_loss("fhv", h=0.1)(simulation=sim, observation=obs).item() == pytest.approx(ref)


def test_fdc_loss_against_sorted_series():
    sim, obs = _hydrographs()
    for log, lower, upper in (
        (False, 0.0, 1.0),
        (True, 0.0, 1.0),
        (False, 0.0, 0.1),
        (True, 0.6, 1.0),
    ):
        per = []
        for o, s in zip(obs.numpy(), sim.numpy()):
            o, s = _valid(o, s)
            fo, fs = np.sort(o)[::-1], np.sort(s)[::-1]
            if log:
                fo, fs = np.log(np.maximum(fo, 1e-6)), np.log(np.where(fs > 0, fs, 1e-6))
            p = np.arange(1, o.size + 1) / (o.size + 1)
            seg = (p >= lower) & (p <= upper)
            per.append(np.mean((fs[seg] - fo[seg]) ** 2) / (fo.std() + 0.1) ** 2)
        loss = build_loss({"name": "fdc", "log": log, "lower": lower, "upper": upper})
        assert loss(simulation=sim, observation=obs).item() == pytest.approx(np.mean(per), rel=1e-9)
    # timing does not matter: a shifted copy has the same FDC
    shifted = torch.roll(torch.nan_to_num(obs, nan=0.0), 7, dims=1)
    full = torch.nan_to_num(obs, nan=0.0)
    assert build_loss("fdc")(simulation=shifted, observation=full).item() == pytest.approx(
        0, abs=1e-12
    )
    assert build_loss("nse")(simulation=shifted, observation=full).item() > 0.1


@pytest.mark.parametrize("pseudo", [False, True])
def test_huber_against_its_formula(pseudo):
    sim, obs = _hydrographs()
    delta = 0.5
    per = []
    for o, s in zip(obs.numpy(), sim.numpy()):
        o, s = _valid(o, s)
        r = (s - o) / (o.std() + 0.1)
        if pseudo:
            rho = delta**2 * (np.sqrt(1 + (r / delta) ** 2) - 1)
        else:
            rho = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
        per.append(rho.mean())
    loss = build_loss("huber", delta=delta, pseudo=pseudo)
    assert loss(simulation=sim, observation=obs).item() == pytest.approx(np.mean(per), rel=1e-9)
    # an outlier counts linearly, not quadratically: less than NSE* grows
    spike = sim.clone()
    spike[1, 50] += 1e3
    growth = loss(simulation=spike, observation=obs) - loss(simulation=sim, observation=obs)
    growth_nse = build_loss("nse")(simulation=spike, observation=obs) - build_loss("nse")(
        simulation=sim, observation=obs
    )
    assert growth < 0.1 * growth_nse


def test_recession_mask_and_constant():
    obs = np.array([[5, 4, 3, 2, 1.5, 1.2, 3, 2, 1, np.nan, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    mask = recession_mask(obs, min_length=4, skip=1)
    # runs of decreases: steps 0..5 (5 decreases: 0→1 … 4→5) kept from the 2nd; 6→7→8 too short;
    # 10..16 (6 decreases) kept from the 2nd; steps touching the NaN never
    expected = np.zeros(16, dtype=bool)
    expected[1:5] = True
    expected[11:16] = True
    np.testing.assert_array_equal(mask[0], expected)
    sim, o = _hydrographs(g=3, t=300)
    per = []
    steps = recession_mask(o.numpy(), 5, 1)
    for g in range(3):
        t = np.flatnonzero(steps[g])
        lo = np.log(o.numpy()[g])
        ls = np.log(np.where(sim.numpy()[g] > 0, sim.numpy()[g], 1e-6))
        per.append((np.mean(ls[t + 1] - ls[t]) - np.mean(lo[t + 1] - lo[t])) ** 2)
    got = build_loss("recession")(simulation=sim, observation=o).item()
    assert got == pytest.approx(np.mean(per), rel=1e-9)
    # a simulation receding like the observation at a different level has the same constant
    scaled = torch.nan_to_num(o, nan=1.0) * 3.0
    assert build_loss("recession")(simulation=scaled, observation=o).item() == pytest.approx(
        0, abs=1e-20
    )


@pytest.mark.parametrize("name", NEW)
def test_gradients_finite_with_empty_gauges_and_gradcheck(name):
    sim, obs = _hydrographs(g=3, t=80)
    obs[1] = float("nan")  # a gauge without observations
    s = sim.clone().requires_grad_(True)
    loss = build_loss(name)(simulation=s, observation=obs, warmup_steps=5)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad[1].abs().sum() == 0
    assert s.grad.abs().sum() > 0
    if name in ("huber", "fdc", "recession"):  # smooth where no ties/branches are crossed
        x = sim[:, :40].clone().abs().add(0.5).requires_grad_(True)
        o = obs[:, :40]
        f = build_loss({"name": name, "pseudo": True} if name == "huber" else name)
        assert torch.autograd.gradcheck(lambda q: f(simulation=q, observation=o), (x,))


def test_combined_by_weights_in_the_config():
    sim, obs = _hydrographs()
    combo = build_loss({"nse": 1.0, "fdc": {"weight": 0.5, "log": True}, "recession": 0.2})
    assert isinstance(combo, CombinedLoss)
    total = combo(simulation=sim, observation=obs)
    parts = combo.last_components
    ref = parts["nse"] + 0.5 * parts["fdc"] + 0.2 * parts["recession"]
    assert total.item() == pytest.approx(ref.item(), rel=1e-12)
    with pytest.raises(ValueError, match="lower < upper"):
        build_loss("fdc", lower=0.5, upper=0.2)

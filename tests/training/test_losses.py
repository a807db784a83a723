"""Tests for gnnhydro.training.losses: agreement with metric definitions, NaN masking, warm-up,
finite gradients with all-NaN gauges, gradcheck, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnhydro.training import metrics as M
from gnnhydro.training.losses import (
    CombinedLoss,
    HydroLoss,
    KGELoss,
    LogNSELoss,
    MSELoss,
    NSELoss,
    RMSELoss,
    build_loss,
    list_losses,
)

ALL = ["nse", "kge", "rmse", "mse", "log_nse"]


def _data(g=4, t=60, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.rand(g, t, generator=gen, dtype=dtype) * 5 + 0.5
    sim = obs * (0.8 + 0.4 * torch.rand(g, t, generator=gen, dtype=dtype)) + 0.1
    obs[0, 3:9] = float("nan")
    obs[1, ::7] = float("nan")
    return sim, obs


def test_nse_loss_equals_one_minus_nse_with_batch_std():
    sim, obs = _data()
    loss = NSELoss(eps=0.0)(simulation=sim, observation=obs)
    ref = np.mean(1 - M.nse(observation=obs, simulation=sim))
    assert loss.item() == pytest.approx(ref, rel=1e-10)


def test_nse_loss_with_training_std_and_reductions():
    sim, obs = _data()
    std = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=sim.dtype)
    eps = 0.1
    mask = torch.isfinite(obs)
    se = torch.where(mask, sim - torch.nan_to_num(obs), 0.0) ** 2
    w = 1 / (std + eps) ** 2
    per_gauge = w * se.sum(1) / mask.sum(1)
    got = NSELoss(eps=eps)(simulation=sim, observation=obs, obs_std=std)
    torch.testing.assert_close(got, per_gauge.mean())
    got_el = NSELoss(eps=eps, reduction="elements")(simulation=sim, observation=obs, obs_std=std)
    torch.testing.assert_close(got_el, (w * se.sum(1)).sum() / mask.sum())
    # [B, G, T] with obs_std [G] broadcast over the batch axis
    sim2, obs2 = torch.stack([sim, sim]), torch.stack([obs, obs])
    got2 = NSELoss(eps=eps)(simulation=sim2, observation=obs2, obs_std=std)
    torch.testing.assert_close(got2, got)
    with pytest.raises(ValueError, match=r"series .*\[2\]"):
        bad = std.clone()
        bad[2] = float("nan")
        NSELoss()(simulation=sim, observation=obs, obs_std=bad)
    with pytest.raises(ValueError, match="broadcast"):
        NSELoss()(simulation=sim, observation=obs, obs_std=torch.ones(3))


def test_kge_rmse_log_nse_losses_match_metrics():
    sim, obs = _data()
    kge = KGELoss(eps=1e-12)(simulation=sim, observation=obs)
    assert kge.item() == pytest.approx(np.mean(1 - M.kge(observation=obs, simulation=sim)), 1e-10)
    rmse = RMSELoss()(simulation=sim, observation=obs)
    assert rmse.item() == pytest.approx(np.mean(M.rmse(observation=obs, simulation=sim)), 1e-10)
    log_nse = LogNSELoss(eps=0.0)(simulation=sim, observation=obs)
    ref = np.mean(1 - M.log_nse(observation=obs, simulation=sim))
    assert log_nse.item() == pytest.approx(ref, rel=1e-10)
    log_fixed = LogNSELoss(eps=0.0, log_epsilon=0.3)(simulation=sim, observation=obs)
    ref = np.mean(1 - M.log_nse(observation=obs, simulation=sim, epsilon=0.3))
    assert log_fixed.item() == pytest.approx(ref, rel=1e-10)
    mask = torch.isfinite(obs)
    mse = MSELoss()(simulation=sim, observation=obs)
    assert mse.item() == pytest.approx(((sim - obs)[mask] ** 2).mean().item())


def test_perfect_simulation_gives_zero_loss_and_finite_gradients():
    _, obs = _data()
    sim = torch.nan_to_num(obs, nan=1.0).clone().requires_grad_(True)
    for name in ALL:
        loss = build_loss(name)(simulation=sim, observation=obs)
        assert loss.item() == pytest.approx(0.0, abs=1e-12), name
        (grad,) = torch.autograd.grad(loss, sim)
        assert torch.isfinite(grad).all(), name


@pytest.mark.parametrize("name", ALL + ["combined"])
def test_all_nan_gauge_is_skipped_with_finite_gradients(name):
    sim, obs = _data(dtype=torch.float32)
    obs[2] = float("nan")
    loss_fn = CombinedLoss({"nse": 1.0, "kge": 0.5}) if name == "combined" else build_loss(name)
    sim = sim.clone().requires_grad_(True)
    loss = loss_fn(simulation=sim, observation=obs)
    (grad,) = torch.autograd.grad(loss, sim)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.all(grad[2] == 0)
    assert torch.all(grad[torch.isnan(obs)] == 0)
    # same value as without that gauge
    keep = [0, 1, 3]
    ref = loss_fn(simulation=sim[keep].detach(), observation=obs[keep])
    torch.testing.assert_close(loss.detach(), ref)
    # nothing observed at all: loss 0 with zero, finite gradients
    loss = loss_fn(simulation=sim, observation=torch.full_like(obs, float("nan")))
    (grad,) = torch.autograd.grad(loss, sim)
    assert loss.item() == 0.0 and torch.all(grad == 0)


def test_kge_skips_degenerate_gauges_and_constant_simulation_is_finite():
    sim, obs = _data(dtype=torch.float32)
    obs[1] = 2.0  # zero observed variance → skipped
    obs[3, 1:] = float("nan")  # a single valid step → skipped
    sim = sim.clone()
    sim[0] = 3.0  # constant simulation: r = 0, gradient finite
    sim.requires_grad_(True)
    loss = KGELoss()(simulation=sim, observation=obs)
    (grad,) = torch.autograd.grad(loss, sim)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.all(grad[1] == 0) and torch.all(grad[3] == 0)


@pytest.mark.parametrize("name", ALL)
def test_warmup_is_dropped(name):
    sim, obs = _data()
    loss_fn = build_loss(name)
    w = 10
    garbage = sim.clone()
    garbage[:, :w] = 1e6
    garbage.requires_grad_(True)
    a = loss_fn(simulation=garbage, observation=obs, warmup_steps=w)
    b = loss_fn(simulation=sim[:, w:], observation=obs[:, w:])
    torch.testing.assert_close(a, b)
    (grad,) = torch.autograd.grad(a, garbage)
    assert torch.all(grad[:, :w] == 0)


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_float64(name):
    sim, obs = _data(g=3, t=12, seed=5)
    sim = sim.clone().requires_grad_(True)
    loss_fn = build_loss(name)

    def f(s):
        return loss_fn(simulation=s, observation=obs, warmup_steps=2)

    assert torch.autograd.gradcheck(f, (sim,))


def test_combined_loss_and_registry():
    sim, obs = _data()
    combo = build_loss({"nse": 1.0, "kge": {"weight": 0.5, "eps": 1e-6}})
    assert isinstance(combo, CombinedLoss)
    total = combo(simulation=sim, observation=obs, warmup_steps=3)
    nse = NSELoss()(simulation=sim, observation=obs, warmup_steps=3)
    kge = KGELoss()(simulation=sim, observation=obs, warmup_steps=3)
    torch.testing.assert_close(total, nse + 0.5 * kge)
    torch.testing.assert_close(combo.last_components["kge"], kge)
    single = build_loss({"name": "nse", "eps": 0.5, "reduction": "elements"})
    assert isinstance(single, NSELoss) and single.eps == 0.5 and single.reduction == "elements"
    assert set(ALL) <= set(list_losses())
    assert all(isinstance(build_loss(n), HydroLoss) for n in ALL)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_loss("nope")
    with pytest.raises(ValueError, match="unknown loss"):
        CombinedLoss({"nse": 1.0, "nope": 1.0})


def test_input_validation():
    sim, obs = _data()
    loss = NSELoss()
    with pytest.raises(ValueError, match="shape"):
        loss(simulation=sim, observation=obs[:, 1:])
    with pytest.raises(ValueError, match="warmup_steps=60"):
        loss(simulation=sim, observation=obs, warmup_steps=60)
    with pytest.raises(TypeError):
        loss(sim, obs)  # keywords only
    # numpy observations are accepted; a [T] series is one gauge
    np_obs = obs[0].numpy()
    torch.testing.assert_close(
        loss(simulation=sim[0], observation=np_obs), loss(simulation=sim[:1], observation=obs[:1])
    )

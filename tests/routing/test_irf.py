"""IRF registry and kernels against closed forms (scipy distributions, lfilter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.signal import lfilter

from gnnhydro.routing import (
    IRF_REGISTRY,
    KernelIRF,
    RecursiveIRF,
    RoutingContext,
    get_irf,
    muskingum_coefficients,
    register_irf,
)
from gnnhydro.routing.irf import regularized_gamma_p
from gnnhydro.spec import ParamSpec

D = torch.float64


def test_registry_has_builtins_and_specs():
    for name in [
        "pure_lag",
        "linear_storage",
        "nash_cascade",
        "muskingum",
        "diffusive_wave",
        "explicit",
    ]:
        assert name in IRF_REGISTRY
        irf = get_irf(name)
        for key, spec in irf.param_spec.items():
            assert isinstance(spec, ParamSpec) and spec.name == key and spec.units
    assert get_irf("muskingum").param_spec["k"].units == "time steps"


def test_unknown_irf_lists_registered():
    with pytest.raises(ValueError, match="muskingum"):
        get_irf("no_such_irf")


def test_register_user_irf_decorator():
    @register_irf("test_half_gain")
    class HalfGain(RecursiveIRF):
        param_spec = {"g": ParamSpec("g", "-", 0.0, 1.0, 0.5)}

        def coefficients(self, params, ctx):
            g = params["g"]
            return torch.stack([g, torch.zeros_like(g), torch.zeros_like(g)], -1)

    try:
        assert isinstance(get_irf("test_half_gain"), HalfGain)
        h = get_irf("test_half_gain").impulse_response({"g": torch.tensor([0.5])}, 3)
        assert torch.allclose(h, torch.tensor([[0.5, 0.0, 0.0]]))
    finally:
        IRF_REGISTRY._items.pop("test_half_gain")


def test_muskingum_coefficients_closed_form_and_negative_c0():
    k, x = torch.tensor([5.0], dtype=D), torch.tensor([0.3], dtype=D)
    c = muskingum_coefficients(k, x, 1.0)[0]
    denom = 2 * 5 * 0.7 + 1
    assert torch.allclose(
        c, torch.tensor([(1 - 3) / denom, (1 + 3) / denom, (7 - 1) / denom], dtype=D)
    )
    assert c[0] < 0  # k·x > Δt/2: negative C0, never clipped
    assert torch.isclose(c.sum(), torch.tensor(1.0, dtype=D))
    h = get_irf("muskingum").impulse_response({"k": k, "x": x}, 50)[0].numpy()
    imp = np.zeros(50)
    imp[0] = 1
    ref = lfilter([c[0].item(), c[1].item()], [1, -c[2].item()], imp)
    np.testing.assert_allclose(h, ref, rtol=1e-12, atol=1e-15)


def test_linear_storage_unit_mass_and_closed_form():
    k = torch.tensor([0.5, 3.0, 20.0], dtype=D)
    h = get_irf("linear_storage").impulse_response({"k": k}, 2000).numpy()
    a = np.exp(-1 / k.numpy())[:, None]
    np.testing.assert_allclose(h, (1 - a) * a ** np.arange(2000), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(h.sum(1), 1.0, rtol=1e-10)


def test_pure_lag_fractional():
    h = get_irf("pure_lag").impulse_response({"lag": torch.tensor([0.0, 2.25, 3.0], dtype=D)}, 6)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0, 0], [0, 0, 0.75, 0.25, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=D
    )
    assert torch.allclose(h, expected)


@pytest.mark.parametrize("n,k", [(1.0, 2.0), (2.5, 1.3), (7.2, 0.4), (1.3, 15.0)])
def test_nash_kernel_is_step_integrated_gamma(n, k):
    irf = get_irf("nash_cascade")
    params = {"n": torch.tensor([n], dtype=D), "k": torch.tensor([k], dtype=D)}
    ctx = RoutingContext(num_steps=10_000)
    h = irf.kernel(params, ctx, max_len=10_000)[0].numpy()
    t = np.arange(h.size + 1)
    ref = np.diff(stats.gamma.cdf(t, a=n, scale=k))
    np.testing.assert_allclose(h, ref, rtol=1e-9, atol=1e-14)
    assert 1 - h.sum() < 1e-9  # tail below tail_tol: no renormalisation needed


def test_diffusive_wave_kernel_is_step_integrated_inverse_gaussian():
    irf = get_irf("diffusive_wave")
    length = torch.tensor([5000.0, 20000.0], dtype=D)
    params = {
        "celerity": torch.tensor([1.0, 0.5], dtype=D),
        "diffusivity": torch.tensor([2e3, 5e4], dtype=D),
    }
    ctx = RoutingContext(num_steps=100_000, step_seconds=600.0, length_m=length)
    h = irf.kernel(params, ctx, max_len=100_000).numpy()  # very diffusive reach: long tail
    for i in range(2):
        mean = length[i].item() / params["celerity"][i].item() / 600.0
        lam = length[i].item() ** 2 / (2 * params["diffusivity"][i].item()) / 600.0
        t = np.arange(h.shape[1] + 1)
        ref = np.diff(stats.invgauss.cdf(t, mean / lam, scale=lam))
        np.testing.assert_allclose(h[i], ref, rtol=1e-7, atol=1e-13)
        assert abs(1 - h[i].sum()) < 1e-9


def test_diffusive_wave_needs_step_seconds():
    irf = get_irf("diffusive_wave")
    p = {"celerity": torch.ones(1, dtype=D), "diffusivity": torch.ones(1, dtype=D) * 1e3}
    with pytest.raises(ValueError, match="step_seconds"):
        irf.kernel(p, RoutingContext(length_m=torch.ones(1, dtype=D)), 10)


def test_regularized_gamma_p_gradcheck():
    a = torch.tensor([1.0, 1.7, 4.2, 12.0], dtype=D, requires_grad=True)
    x = torch.tensor([0.3, 2.0, 5.5, 9.0], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(regularized_gamma_p, (a, x))


@pytest.mark.parametrize(
    "name,params",
    [
        ("nash_cascade", {"n": [1.5, 3.2], "k": [0.7, 2.0]}),
        ("pure_lag", {"lag": [0.3, 2.6]}),
        ("diffusive_wave", {"celerity": [0.8, 1.5], "diffusivity": [3e3, 1e4]}),
    ],
)
def test_kernel_gradcheck(name, params):
    irf = get_irf(name)
    assert isinstance(irf, KernelIRF)
    ctx = RoutingContext(
        num_steps=8, step_seconds=1800.0, length_m=torch.tensor([3000.0, 6000.0], dtype=D)
    )
    tensors = {k: torch.tensor(v, dtype=D, requires_grad=True) for k, v in params.items()}
    names = list(tensors)

    def f(*vals):
        return irf.kernel(dict(zip(names, vals)), ctx, max_len=8)

    assert torch.autograd.gradcheck(f, tuple(tensors.values()))

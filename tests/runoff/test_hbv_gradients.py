"""Fused numba kernels and forward sensitivities against the per-step torch autograd loop."""

from __future__ import annotations

import pytest
import torch

from gnnhydro.runoff import HBV

N, T, M = 3, 40, 2
WEIGHTED = ("runoff", "evapotranspiration", "soil_moisture", "recharge", "swe")


def _loss_and_grads(model, f, p):
    out = model(f, p, return_states=True)
    g = torch.Generator().manual_seed(5)
    loss = sum(
        (out[k] * torch.randn(out[k].shape, generator=g, dtype=out[k].dtype)).sum()
        for k in WEIGHTED
    )
    loss = loss + out["final_lower_zone"].sum() + out["final_snowpack"].sum()
    return out, torch.autograd.grad(loss, list(p.values()))


OPTIONS = [
    {},
    {"betaet": True, "capillary": True},
    {"smoothing": 0.01},
    {"smoothing": 0.05, "betaet": True, "capillary": True},
    {"dynamic": ("k0", "beta", "tt")},
]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}" for k in o) or "default")
def test_numba_matches_torch_loop(opts, make_forcing, make_params):
    forcing, params = make_forcing, make_params
    f = forcing(N, T)
    ref_model = HBV(nmul=M, backend="torch", **opts)
    p = params(ref_model, N, T, dynamic=opts.get("dynamic", ()))
    out_r, g_r = _loss_and_grads(ref_model, f, p)
    out_n, g_n = _loss_and_grads(HBV(nmul=M, backend="numba", **opts), f, p)
    for k in out_r:
        torch.testing.assert_close(out_n[k], out_r[k], rtol=1e-10, atol=1e-10, msg=k)
    for name, a, b in zip(p, g_r, g_n, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}" for k in o) or "default")
def test_recorded_tape_equals_replaying_the_forward(opts, make_forcing, make_params, monkeypatch):
    """The backward over the forward's tape (states, the recharge power and log wetness of each
    step) gives the gradients of the backward that re-runs the forward cell by cell, float64."""
    from gnnhydro.runoff.kernels import hbv_numba

    f = make_forcing(N, T, seed=6)
    model = HBV(nmul=M, backend="numba", **opts)
    p = make_params(model, N, T, seed=7, dynamic=opts.get("dynamic", ()))
    _, taped = _loss_and_grads(model, f, p)
    monkeypatch.setattr(hbv_numba, "RECORD_TAPE", False)
    _, replayed = _loss_and_grads(model, f, p)
    for name, a, b in zip(p, replayed, taped, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-15, msg=name)


@pytest.mark.parametrize("opts", OPTIONS[:4], ids=lambda o: ",".join(o) or "default")
def test_sensitivity_matches_autograd_on_smoothed_model(opts, make_forcing, make_params):
    forcing, params = make_forcing, make_params
    """Forward sensitivities = reverse-mode autograd on the same (smoothed) model, float64."""
    f = forcing(N, T, seed=3)
    opts = {"smoothing": 0.01, **opts}
    ref_model = HBV(nmul=M, backend="torch", **opts)
    p = params(ref_model, N, T, seed=4)
    out_r, g_r = _loss_and_grads(ref_model, f, p)
    sens = HBV(nmul=M, gradient="sensitivity", **opts)
    out_s, g_s = _loss_and_grads(sens, f, p)
    torch.testing.assert_close(out_s["runoff"], out_r["runoff"], rtol=1e-10, atol=1e-10)
    for name, a, b in zip(p, g_r, g_s, strict=True):
        scale = a.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale) < 1e-5, name


def test_sensitivity_default_smoothing_is_documented():
    assert HBV(2, gradient="sensitivity").smoothing == 0.01
    assert HBV(2).smoothing == 0.0
    with pytest.raises(ValueError, match="static parameters only"):
        HBV(2, gradient="sensitivity", dynamic=("k0",))


def _gradcheck(model, seed, forcing, params):
    n, t = 2, 10
    f = forcing(n, t, seed=seed)
    p = params(model, n, t, seed=seed + 1)
    names = list(p)

    def fn(*vals):
        out = model(f, dict(zip(names, vals, strict=True)), return_states=True)
        return out["runoff"], out["evapotranspiration"], out["final_lower_zone"]

    return torch.autograd.gradcheck(fn, tuple(p.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "torch", "smoothing": 0.1},
        {"backend": "numba"},
        {"backend": "numba", "smoothing": 0.1, "betaet": True, "capillary": True},
        {"gradient": "sensitivity", "smoothing": 0.1},
        {"gradient": "sensitivity", "smoothing": 0.1, "betaet": True, "capillary": True},
    ],
    ids=["torch-smooth", "numba", "numba-options", "sensitivity", "sensitivity-options"],
)
def test_gradcheck(kwargs, make_forcing, make_params):
    assert _gradcheck(HBV(nmul=2, **kwargs), 11, make_forcing, make_params)


def test_initial_state_gradients(make_forcing, make_params):
    forcing, params = make_forcing, make_params
    f = forcing(N, T)
    for model in (HBV(M, backend="numba"), HBV(M, gradient="sensitivity"), HBV(M, backend="torch")):
        p = params(model, N, T)
        st = {
            k: (v + 5.0).requires_grad_()
            for k, v in model.init_states(N, dtype=torch.float64).items()
        }
        out = model(f, p, states=st)
        g = torch.autograd.grad(out["runoff"].sum(), list(st.values()))
        if model.backend == "torch":
            ref = g
        else:
            model_t = HBV(M, backend="torch", smoothing=model.smoothing)
            out_t = model_t(f, p, states=st)
            ref = torch.autograd.grad(out_t["runoff"].sum(), list(st.values()))
            for a, b in zip(ref, g, strict=True):
                torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}" for k in o) or "default")
def test_forcing_gradients_of_the_fused_adjoint_match_the_torch_loop(
    opts, make_forcing, make_params
):
    """The numba adjoint also differentiates w.r.t. precipitation, temperature and PET (a learned
    forcing correction trains through them) and still picks the fused kernel on CPU."""
    f = {k: v.clone().requires_grad_() for k, v in make_forcing(N, T, seed=7).items()}
    ref_model = HBV(nmul=M, backend="torch", **opts)
    p = make_params(ref_model, N, T, seed=8, dynamic=opts.get("dynamic", ()))
    grads = []
    for model in (ref_model, HBV(nmul=M, **opts)):
        out = model(f, p, return_states=True)
        gen = torch.Generator().manual_seed(5)
        loss = (
            sum(
                (out[k] * torch.randn(out[k].shape, generator=gen, dtype=out[k].dtype)).sum()
                for k in WEIGHTED
            )
            + out["final_lower_zone"].sum()
        )
        grads.append(torch.autograd.grad(loss, [f[k] for k in model.forcing_names]))
    assert HBV(nmul=M)._select_backend(f, p) == "numba"
    for name, a, b in zip(ref_model.forcing_names, *grads, strict=True):
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"smoothing": 0.1, "betaet": True, "capillary": True}, {"gradient": "sensitivity"}],
    ids=["numba", "numba-options", "sensitivity-falls-back-to-reverse-mode"],
)
def test_forcing_gradcheck(kwargs, make_forcing):
    model = HBV(nmul=2, **kwargs)
    f = make_forcing(2, 10, seed=21)
    from tests.runoff.conftest import params

    p = {k: v.detach() for k, v in params(model, 2, 10, seed=22).items()}
    temp = f["temperature"].detach()
    # filled stores and rain on every step: away from the kinks of the unsmoothed model
    # (empty snowpack, zero precipitation), so that finite differences are meaningful
    states = {k: v + 30.0 for k, v in model.init_states(2, dtype=torch.float64).items()}

    def fn(prec, pet):
        forcing = {"precipitation": prec, "temperature": temp, "pet": pet}
        out = model(forcing, p, states=states, return_states=True)
        return out["runoff"], out["evapotranspiration"], out["final_soil_moisture"]

    prec = (f["precipitation"] + 1.0).clone().requires_grad_()
    inputs = (prec, f["pet"].clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
